"""Targets and devices: which bundle target serves which machine and Python, and docs/devices.md.

* ``--target linux`` requirements resolve on x86-64 and aarch64 (markers evaluated by
  ``packaging``, pip's own library).
* A bundle whose target cannot serve the device's ``uname -m``/Python is refused by ``deploy``
  before anything is uploaded (a real OpenSSH server on 127.0.0.1, from tests/test_deploy.py).
* ``network``: every row of docs/devices.md resolves with ``pip download --platform …``.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_host.errors import DeployError
from toolkit.deploy.bundle import TARGETS, build_bundle, check_device_target, check_target_covers
from toolkit.deploy.requirements import DEVICE_PINS, pins_for, pins_for_machines, render_requirements

from .test_deploy import FAST_INSTALL, TINY_MODEL, _cli, snapshot, sshd, wheel  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def _chosen(requirements_text: str, python: str, machine: str):
    from packaging.requirements import Requirement

    reqs = [Requirement(line) for line in requirements_text.splitlines() if line and not line.startswith("#")]
    env = {"python_version": python, "platform_machine": machine}
    return sorted(f"{r.name}=={next(iter(r.specifier)).version}" for r in reqs if r.marker is None or r.marker.evaluate(env))


# ----------------------------------------------------------------------------- targets
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_machine_and_python_gets_one_interpreter_and_numpy(target):
    """What the target's requirements.txt installs on each machine it names, per Python."""
    profile = TARGETS[target]
    text = render_requirements(pins_for_machines(profile.machines))
    for machine in profile.machines:
        for python in PYTHONS:
            chosen = _chosen(text, python, machine)
            assert chosen == sorted(pins_for(python, machine, pins_for_machines(profile.machines)))
            interpreters = [c for c in chosen if c.split("==")[0] in ("ai-edge-litert", "tflite-runtime")]
            try:
                check_target_covers(target, machine, python)
            except DeployError:
                assert interpreters == [], (target, machine, python)  # refused exactly when uncovered
                continue
            assert len(interpreters) == 1 and any(c.startswith("numpy==") for c in chosen), (machine, python)
            if interpreters[0].startswith("tflite-runtime"):
                assert "numpy==1.26.4" in chosen  # tflite-runtime is built against numpy 1.x


def test_linux_target_resolves_on_x86_64_and_aarch64():
    text = render_requirements(pins_for_machines(TARGETS["linux"].machines))
    for machine in ("x86_64", "aarch64"):
        assert "ai-edge-litert==2.1.0" in _chosen(text, "3.9", machine)
        assert "ai-edge-litert==2.3.0" in _chosen(text, "3.12", machine)
        assert check_target_covers("linux", machine, "3.11") == "ai-edge-litert==2.3.0"
    assert "armv7l" not in text and "tflite-runtime" not in text
    # The rpi/jetson requirement files carry no x86-64 lines (they never install on a PC).
    for target in ("rpi", "jetson"):
        assert "x86_64" not in render_requirements(pins_for_machines(TARGETS[target].machines))
    assert not any(p.name.startswith("tensorflow") for p in DEVICE_PINS)


@pytest.mark.parametrize("target, machine, python, message", [
    ("rpi", "x86_64", "3.11", "This bundle is for target 'rpi' (aarch64, armv7l), but the device is x86_64"),
    ("jetson", "x86_64", "3.10", "edgecam bundle MODEL --target linux"),
    ("linux", "armv7l", "3.10", "--target rpi"),
    ("rpi", "armv6l", "3.11", "edgecam has no target for armv6l"),
    ("rpi", "armv7l", "3.11", "no LiteRT interpreter wheel for Python 3.11 on armv7l"),
    ("linux", "x86_64", "3.8", "needs CPython 3.9 or newer"),
    ("linux", "x86_64", "three", "needs CPython 3.9 or newer"),
])
def test_check_target_covers_refuses_with_a_clear_message(target, machine, python, message):
    with pytest.raises(DeployError, match=re.escape(message)):
        check_target_covers(target, machine, python)


def test_bundle_cli_offers_every_target():
    from toolkit.cli.bundle import bundle

    option = next(p for p in bundle.params if p.name == "target")
    assert sorted(option.type.choices) == sorted(TARGETS)


def test_check_target_covers_accepts_spellings_and_names_the_interpreter():
    assert check_target_covers("rpi", "arm64", "3.11") == "ai-edge-litert==2.3.0"
    assert check_target_covers("rpi", "armv7l", "3.10") == "tflite-runtime==2.13.0"
    assert check_target_covers("jetson", "aarch64", "3.10") == "ai-edge-litert==2.3.0"
    assert check_target_covers("linux", "amd64", "3.9") == "ai-edge-litert==2.1.0"


def _bundle(target, wheel, tmp_path):  # noqa: F811
    return build_bundle(TINY_MODEL, target=target, out=tmp_path / f"fog-{target}.tar.gz", wheel=wheel)


def test_device_probe_reads_this_machine(wheel, tmp_path):  # noqa: F811
    """The probe's shell runs here for real (no ssh): this machine is what a device reports."""
    from toolkit.deploy.safetar import safe_extract

    here = platform.machine()
    for target in ("linux", "rpi"):
        (tmp_path / target).mkdir()
        local = safe_extract(_bundle(target, wheel, tmp_path).path, tmp_path / target)
        assert json.loads((local / "bundle.json").read_text())["target"] == target
        args = ["--python", sys.executable, "--no-systemd"]
        if here in TARGETS[target].machines:
            assert check_device_target(local, args, lambda *cmd: cmd, echo=lambda _: None).startswith("ai-edge-litert==")
        else:
            with pytest.raises(DeployError, match=f"target '{target}'.*the device is {here}"):
                check_device_target(local, args, lambda *cmd: cmd, echo=lambda _: None)
        # --no-deps: the device's own packages serve it; nothing to check.
        assert check_device_target(local, args + ["--no-deps"], lambda *cmd: cmd, echo=lambda _: None) is None
        with pytest.raises(DeployError, match="Reading the device's machine and Python"):
            check_device_target(local, ["--python=/nonexistent/python3"], lambda *cmd: cmd, echo=lambda _: None)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the refusal is shown on an x86-64 'device'")
def test_deploy_refuses_an_rpi_bundle_for_an_x86_64_device_before_installing(sshd, wheel, tmp_path):  # noqa: F811
    """The acceptance case: `edgecam deploy fog-rpi.tar.gz` to an x86-64 host installs nothing."""
    options, login, _ = sshd
    prefix = tmp_path / "vehicle"
    bundle = _bundle("rpi", wheel, tmp_path)
    args = ["deploy", str(bundle.path), f"{login}:{prefix}", "-i", options.identity, "-p", str(options.port),
            "--python", sys.executable, "--no-systemd", *sum((["--ssh-option", o] for o in options.options), [])]
    refused = _cli(*args)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "==> check the device's machine and Python" in refused.stdout
    assert "This bundle is for target 'rpi' (aarch64, armv7l), but the device is x86_64" in refused.stderr
    assert "edgecam bundle MODEL --target linux" in refused.stderr
    assert "upload the bundle" not in refused.stdout and snapshot(prefix) == {}  # nothing uploaded
    # The same bundle with the CI install (--no-deps: this machine's packages) is not probed.
    fast = [a for a in args if a not in ("--python", sys.executable, "--no-systemd")]
    fast += [f"--install-arg={a}" for a in FAST_INSTALL] + ["--wait", "0"]
    try:
        done = _cli(*fast)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "check the device's machine" not in done.stdout and (prefix / "current").is_symlink()
    finally:
        subprocess.run(["sh", str(prefix / "current" / "install.sh"), "--prefix", str(prefix), "--stop"],
                       capture_output=True, timeout=60)


# ----------------------------------------------------------------------------- docs/devices.md
DEVICES_MD = REPO / "docs" / "devices.md"
INTERPRETER_PACKAGES = ("ai-edge-litert", "tflite-runtime")
# pip --platform tags per machine (aarch64/x86_64 as --with-wheels uses them).
ARMV7L_TAGS = ("manylinux2014_armv7l", "linux_armv7l")


def _device_rows():
    """The rows of the table in docs/devices.md, as dicts keyed by its header."""
    lines = [line for line in DEVICES_MD.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    header = [cell.strip().strip("`") for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            continue
        row = dict(zip(header, cells))
        row["wheels"] = sorted(re.findall(r"`([^`]+\.whl)`", row["Wheels pip resolves"]))
        rows.append(row)
    return rows


def _row_pins(row):
    """The pins of the row's target that pip must find as wheels for that platform."""
    profile = TARGETS[row["Target"]]
    pins = [p for p in pins_for(row["Python"], row["uname -m"], pins_for_machines(profile.machines))
            if p.split("==")[0] in (*INTERPRETER_PACKAGES, "numpy", "opencv-python-headless")]
    if row["uname -m"] == "armv7l":  # numpy/OpenCV come from piwheels there (docs/devices.md)
        pins = [p for p in pins if p.split("==")[0] in INTERPRETER_PACKAGES]
    return pins


def test_devices_table_rows_match_the_targets():
    rows = _device_rows()
    assert len(rows) >= 8
    statuses = {row["Status"] for row in rows}
    assert statuses <= {"measured", "emulated", "resolved", "resolved (interpreter)", "unsupported"}
    for row in rows:
        machine, python = row["uname -m"], row["Python"]
        if row["Status"] == "unsupported":
            for target in TARGETS:
                with pytest.raises(DeployError):
                    check_target_covers(target, machine, python)
            continue
        name, version = row["Interpreter"].split()
        assert check_target_covers(row["Target"], machine, python) == f"{name}=={version}", row
        # Each listed wheel is the file of one of the row's pins, for this Python and machine.
        pins = _row_pins(row)
        assert len(row["wheels"]) == len(pins), row
        for pin, wheel in zip(sorted(pins), row["wheels"]):
            package, version = pin.split("==")
            assert wheel.startswith(f"{package.replace('-', '_')}-{version}-"), (pin, wheel)
            assert machine in wheel and (f"cp{python.replace('.', '')}" in wheel or "abi3" in wheel), wheel
    assert {"emulated", "measured"} <= statuses
    # The claims of the "emulated"/"measured" rows are backed by these tests.
    for test in ("test_pi.py", "test_rtsp.py", "test_tflite_runtime.py", "test_deploy.py"):
        assert (REPO / "tests" / test).is_file()


def _resolve(pins, python, machine, tmp_path):
    """The wheel file names pip picks for ``pins`` on that platform (resolution, no wheel download)."""
    from toolkit.deploy.requirements import MACHINE_PLATFORM_TAGS

    tmp_path.mkdir(parents=True, exist_ok=True)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           "--no-deps", "--disable-pip-version-check", "-q", "--python-version", python,
           "--target", str(tmp_path / "target"), "--report", str(report)]
    for tag in MACHINE_PLATFORM_TAGS.get(machine, ARMV7L_TAGS):
        cmd += ["--platform", tag]
    proc = subprocess.run(cmd + list(pins), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{pins} on {machine}/cp{python}: {proc.stderr[-800:]}"
    return sorted(item["download_info"]["url"].rsplit("/", 1)[-1] for item in json.loads(report.read_text())["install"])


_OFFLINE = ("NewConnectionError", "Max retries", "Temporary failure in name resolution", "Network is unreachable",
            "Connection refused", "ConnectTimeout", "ProxyError")


@pytest.fixture(scope="module")
def index_reachable(tmp_path_factory):
    """Skip (with pip's words) when pip cannot reach the package index."""
    tmp = tmp_path_factory.mktemp("probe")
    probe = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                            "--only-binary=:all:", "--no-deps", "--disable-pip-version-check", "--python-version",
                            "3.11", "--platform", "manylinux_2_27_aarch64", "--target", str(tmp),
                            "ai-edge-litert==2.3.0"], capture_output=True, text=True, timeout=300)
    text = probe.stdout + probe.stderr
    if probe.returncode != 0 and any(word in text for word in _OFFLINE):
        pytest.skip(f"pip cannot reach the package index: {text.strip()[-200:]}")


@pytest.mark.network
def test_devices_table_wheels_resolve(index_reachable, tmp_path):
    """Each row's wheels are exactly what pip resolves for that platform and Python."""
    from concurrent.futures import ThreadPoolExecutor

    rows = [row for row in _device_rows() if row["Status"] != "unsupported"]
    jobs = sorted({(tuple(_row_pins(row)), row["Python"], row["uname -m"]) for row in rows})
    with ThreadPoolExecutor(4) as pool:  # each is a pip process waiting on the index
        resolved = dict(zip(jobs, pool.map(lambda job: _resolve(*job, tmp_path / str(jobs.index(job))), jobs)))
    for row in rows:
        wheels = resolved[(tuple(_row_pins(row)), row["Python"], row["uname -m"])]
        assert wheels == row["wheels"], (row["OS"], row["Python"], wheels)
    # An unsupported row really has no interpreter wheel.
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                           "--only-binary=:all:", "--no-deps", "--python-version", "3.11", "--target",
                           str(tmp_path / "t"), *sum((["--platform", t] for t in ARMV7L_TAGS), []),
                           "tflite-runtime"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "No matching distribution found for tflite-runtime" in proc.stderr
