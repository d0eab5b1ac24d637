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
