"""Deploy: bundles, install.sh, safe extraction, run.toml, doctor, and SSH deploy/rollback.

The SSH tests start a real OpenSSH server (Debian's openssh-server) on 127.0.0.1 with a
throwaway host key and user key, and deploy through the system ssh/scp with host-key checking
on (a known_hosts file holding the throwaway host key).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from firmware_host.errors import DeployError, InputError
from firmware_host.manifest import bundle_id, verify_manifest
from firmware_host.runconfig import (
    RUN_KEYS,
    dumps_run_config,
    load_run_config,
    parse_run_config,
)
from toolkit.deploy.bundle import build_bundle, build_wheel, check_wheel
from toolkit.deploy.deploy import SshOptions, deploy, parse_remote, plan_deploy, Remote
from toolkit.deploy.requirements import DEVICE_PINS, pins_for, render_requirements
from toolkit.deploy.safetar import safe_extract

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = REPO / "tests" / "data" / "tiny_fog.tflite"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
# install.sh reuses this interpreter's packages (no downloads): --no-deps + --extra-site.
FAST_INSTALL = ["--python", sys.executable, "--no-deps", "--extra-site", SITE_PACKAGES, "--no-systemd"]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def model(tmp_path):
    """The committed tiny model when present, else bytes standing in for one."""
    path = tmp_path / "fog.tflite"
    if TINY_MODEL.is_file():
        shutil.copy(TINY_MODEL, path)
    else:
        path.write_bytes(b"TFL3" + os.urandom(2000))
    return path


def _run_command():
    """``edgecam run``'s click command when it has landed, else None."""
    from toolkit.cli import COMMANDS, LazyGroup

    return LazyGroup(name="edgecam").get_command(None, "run") if "run" in COMMANDS else None


RUN = _run_command()
RUN_HAS_CONFIG = RUN is not None and any(p.name == "config" or "--config" in getattr(p, "opts", ()) for p in RUN.params)


@pytest.fixture
def test_video(tmp_path):
    """A 12-frame 48×32 Motion-JPEG .avi written by OpenCV."""
    import cv2
    import numpy as np

    path = tmp_path / "road.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(12):
        frame = np.zeros((32, 48, 3), np.uint8)
        frame[:, : 4 * i] = 200  # a bright band growing left to right
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def two_bundles(model, wheel, test_video, tmp_path):
    """Bundle A (runs the test video, 5 frames) and bundle B (the same with max_frames = 3)."""
    for name, frames in (("a", 5), ("b", 3)):
        (tmp_path / f"{name}.toml").write_text(f'[run]\nsource = "{test_video}"\nmax_frames = {frames}\n')
    return tuple(make_bundle(model, wheel, tmp_path / f"{n}.tar.gz", config=tmp_path / f"{n}.toml") for n in "ab")


def make_bundle(model, wheel, out, **kwargs):
    return build_bundle(model, out=out, wheel=wheel, **kwargs)


def extract(bundle, dest):
    dest.mkdir(parents=True, exist_ok=True)
    return safe_extract(bundle.path, dest)


def snapshot(root: Path) -> dict:
    """Every path under root → (kind, content hash or link target)."""
    out = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            out[rel] = ("dir", "")
    return out


def run_install(bundle_dir, prefix, *args, check=True):
    proc = subprocess.run(
        ["sh", str(bundle_dir / "install.sh"), "--prefix", str(prefix), *args],
        capture_output=True, text=True, timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"install.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def stop_runner(prefix):
    if (prefix / "current" / "install.sh").exists():
        subprocess.run(["sh", str(prefix / "current" / "install.sh"), "--prefix", str(prefix), "--stop"],
                       capture_output=True, timeout=60)


# ----------------------------------------------------------------------------- requirements
def test_requirement_markers_match_pins_for_every_device():
    """The rendered markers, evaluated by packaging (pip's own library), select exactly pins_for."""
    from packaging.requirements import Requirement

    reqs = [Requirement(line) for line in render_requirements().splitlines() if line and not line.startswith("#")]
    for machine in ("aarch64", "armv7l"):
        for py in ("3.9", "3.10", "3.11", "3.12", "3.13"):
            env = {"python_version": py, "platform_machine": machine}
            chosen = sorted(f"{r.name}=={next(iter(r.specifier)).version}" for r in reqs
                            if r.marker is None or r.marker.evaluate(env))
            assert chosen == sorted(pins_for(py, machine))
    # ai-edge-litert on 64-bit ARM (2.1.0 is the last with cp39), tflite-runtime + numpy<2 on armv7l.
    assert "ai-edge-litert==2.1.0" in pins_for("3.9") and "tomli==2.2.1" in pins_for("3.9")
    assert "ai-edge-litert==2.3.0" in pins_for("3.12") and not any("tomli" in p for p in pins_for("3.12"))
    arm32 = pins_for("3.10", "armv7l")
    assert "tflite-runtime==2.13.0" in arm32 and "numpy==1.26.4" in arm32
    assert not any(p.name.startswith("tensorflow") for p in DEVICE_PINS)


# ----------------------------------------------------------------------------- bundle
def test_bundle_layout_manifest_and_run_toml(model, wheel, tmp_path):
    bundle = make_bundle(model, wheel, tmp_path / "b.tar.gz", target="rpi")
    names = subprocess.run(["tar", "tzf", str(bundle.path)], capture_output=True, text=True, check=True).stdout.split()
    top = bundle.top
    assert {n.split("/")[0] for n in names} == {top}
    expected = {"MANIFEST.sha256", "README.md", "install.sh", "edgecam.service", "run.toml",
                "requirements.txt", "bundle.env", "bundle.json", "fog.tflite", f"dist/{wheel.name}"}
    assert expected <= {n[len(top) + 1:] for n in names}

    root = extract(bundle, tmp_path / "x")
    # The manifest is checked by the real coreutils tool, and covers every other file.
    subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "MANIFEST.sha256"], cwd=root, check=True)
    listed = {line.split("  ", 1)[1] for line in (root / "MANIFEST.sha256").read_text().splitlines()}
    assert listed == {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"MANIFEST.sha256"}
    assert bundle.bundle_id == hashlib.sha256((root / "MANIFEST.sha256").read_bytes()).hexdigest()[:12]
    assert bundle_id(root) == bundle.bundle_id and top == f"edgecam-{bundle.bundle_id}"

    run = tomllib.loads((root / "run.toml").read_text())["run"]
    assert run["model"] == "fog.tflite" and run["log"] == "telemetry.jsonl"
    assert load_run_config(root / "run.toml")["model"] == str((root / "fog.tflite").resolve())
    assert (root / "fog.tflite").read_bytes() == model.read_bytes()
    assert os.access(root / "install.sh", os.X_OK)
    info = json.loads((root / "bundle.json").read_text())
    assert info["target"] == "rpi" and info["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert "EDGECAM_SYSTEM_SITE_PACKAGES=0" in (root / "bundle.env").read_text()
    subprocess.run(["sh", "-n", str(root / "install.sh")], check=True)


def test_bundle_is_reproducible_and_target_changes_it(model, wheel, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_bundle(model, wheel, tmp_path / "a" / "fog.tar.gz")
    b = make_bundle(model, wheel, tmp_path / "b" / "fog.tar.gz")
    jetson = make_bundle(model, wheel, tmp_path / "fog.tar.gz", target="jetson")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert jetson.bundle_id != a.bundle_id
    with tarfile.open(jetson.path) as tar:
        env = tar.extractfile(f"{jetson.top}/bundle.env").read().decode()
    assert "EDGECAM_TARGET=jetson" in env and "EDGECAM_SYSTEM_SITE_PACKAGES=1" in env


def test_bundle_merges_user_run_config_and_rejects_unknown_keys(model, wheel, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text('[run]\nmodel = "/elsewhere/other.tflite"\nsource = "rtsp://cam/1"\nmax_frames = 50\nsmooth = 0.5\n')
    root = extract(make_bundle(model, wheel, tmp_path / "b.tar.gz", config=config), tmp_path / "x")
    run = parse_run_config((root / "run.toml").read_text())
    assert run == {"model": "fog.tflite", "source": "rtsp://cam/1", "log": "telemetry.jsonl", "max_frames": 50, "smooth": 0.5}

    config.write_text('[run]\nout-video = "a.mp4"\n')
    with pytest.raises(InputError, match=r"unknown \[run\] key 'out-video' \(did you mean 'out_video'\?\)"):
        make_bundle(model, wheel, tmp_path / "c.tar.gz", config=config)
    assert not (tmp_path / "c.tar.gz").exists()


def test_bundle_refuses_bad_model_names_and_files(wheel, tmp_path):
    spaced = tmp_path / "my model.tflite"
    spaced.write_bytes(b"x")
    with pytest.raises(Exception, match="may only contain letters, digits"):
        build_bundle(spaced, wheel=wheel, out=tmp_path / "b.tar.gz")
    with pytest.raises(Exception, match=r"needs a converted \.tflite model file.*not found"):
        build_bundle(tmp_path / "missing.tflite", wheel=wheel)
    with pytest.raises(InputError, match="Unknown target 'esp32'"):
        build_bundle(spaced, target="esp32", wheel=wheel)


def test_wheel_has_no_tensorflow_requirement_and_check_refuses_one(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))).decode()
        names = zf.namelist()
    tf_lines = [line for line in meta.splitlines() if line.startswith("Requires-Dist: tensorflow")]
    assert tf_lines and all("extra ==" in line for line in tf_lines)
    assert "toolkit/deploy/templates/install.sh" in names  # the bundler works from an installed wheel too
    from firmware_host import __version__

    assert check_wheel(wheel) == __version__ and f"\nVersion: {__version__}\n" in meta

    bad = tmp_path / "edgecam-9.9-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("edgecam-9.9.dist-info/METADATA", "Name: edgecam\nVersion: 9.9\nRequires-Dist: tensorflow>=2.16\n")
    with pytest.raises(DeployError, match="requires 'tensorflow>=2.16' unconditionally"):
        check_wheel(bad)


@pytest.mark.slow
def test_with_wheels_downloads_device_wheels(model, wheel, tmp_path):
    """Downloads ~80 MB from the package index: opt-in (EDGECAM_TEST_DOWNLOADS=1), and skipped
    when the index is unreachable."""
    if os.environ.get("EDGECAM_TEST_DOWNLOADS") != "1":
        pytest.skip("downloads ~80 MB of aarch64 wheels; set EDGECAM_TEST_DOWNLOADS=1 to run it")
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        pytest.skip("the package index is unreachable")
    bundle = make_bundle(model, wheel, tmp_path / "b.tar.gz", with_wheels=True, python_versions=["3.11"])
    root = extract(bundle, tmp_path / "x")
    wheels = sorted(p.name for p in (root / "wheels").glob("*.whl"))
    assert any(w.startswith("ai_edge_litert-2.3.0-cp311") and "aarch64" in w for w in wheels)
    assert any(w.startswith("numpy-2.2.6-cp311") and "aarch64" in w for w in wheels)
    assert all("x86_64" not in w for w in wheels)
    verify_manifest(root)


# ----------------------------------------------------------------------------- safe extraction
def _crafted(path: Path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"hi"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(
    "members, message",
    [
        ([_file("b/ok"), _file("b/../../evil")], r"contains '\.\.' \(path traversal\)"),
        ([_file("/tmp/evil-abs")], "is an absolute path"),
        ([_file("b/ok"), _link("b/passwd", "../../../etc/passwd")], "link pointing outside the bundle"),
        ([_file("b/ok"), _link("b/abs", "/etc/passwd")], "link to an absolute or empty path"),
        ([_file("b/ok"), _link("b/hard", "etc/passwd", tarfile.LNKTYPE)], "not an earlier member"),
        ([_file("b/ok"), _link("b/up", "..")], "link pointing outside the bundle"),
        ([_file("a/x"), _file("b/y")], "exactly one top-level directory"),
    ],
)
def test_safe_extract_refuses_crafted_archives(tmp_path, members, message):
    archive = _crafted(tmp_path / "evil.tar.gz", members)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DeployError, match=message):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil-abs").exists()


def test_safe_extract_refuses_device_files_and_keeps_inside_links(tmp_path):
    dev = tarfile.TarInfo("b/null")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(DeployError, match="device, FIFO or other special file"):
        safe_extract(_crafted(tmp_path / "dev.tar.gz", [_file("b/ok"), (dev, None)]), tmp_path)
    setuid = tarfile.TarInfo("b/tool")
    setuid.size, setuid.mode = 2, 0o4755
    archive = _crafted(tmp_path / "ok.tar.gz", [(setuid, b"hi"), _link("b/sub/alias", "../tool")])
    root = safe_extract(archive, tmp_path)
    assert (root / "sub" / "alias").read_bytes() == b"hi"
    assert (root / "tool").stat().st_mode & 0o7777 == 0o755


# ----------------------------------------------------------------------------- install.sh (local)
def test_install_sh_installs_is_idempotent_and_refuses_tampering(model, wheel, tmp_path):
    bundle = make_bundle(model, wheel, tmp_path / "b.tar.gz")
    root = extract(bundle, tmp_path / "x")
    prefix = tmp_path / "device"
    try:
        out = run_install(root, prefix, *FAST_INSTALL, "--no-start").stdout
        assert os.readlink(prefix / "current") == f"releases/{bundle.bundle_id}"
        edgecam = prefix / "current" / "venv" / "bin" / "edgecam"
        version = subprocess.run([str(edgecam), "--version"], capture_output=True, text=True, check=True).stdout
        assert check_wheel(wheel) in version
        verify_manifest(prefix / "current", strict=False)
        assert "SERVICE_MODE=process" in (prefix / "install.conf").read_text()

        before = snapshot(prefix)
        again = run_install(root, prefix, *FAST_INSTALL, "--no-start").stdout
        assert "already installed: reusing it" in again and snapshot(prefix) == before

        # One byte of the model changed after the manifest was written: refused, nothing touched.
        tampered = tmp_path / "tampered"
        shutil.copytree(root, tampered)
        data = bytearray((tampered / "fog.tflite").read_bytes())
        data[100] ^= 0xFF
        (tampered / "fog.tflite").write_bytes(bytes(data))
        proc = run_install(tampered, prefix, *FAST_INSTALL, check=False)
        assert proc.returncode != 0 and "checksum mismatch" in proc.stderr
        assert snapshot(prefix) == before

        # An added file (not in the manifest, even one named like it) is refused too.
        for extra in ("payload.sh", "dist/MANIFEST.sha256"):
            added = tmp_path / f"added-{extra.replace('/', '-')}"
            shutil.copytree(root, added)
            (added / extra).write_text("echo pwned\n")
            proc = run_install(added, prefix, *FAST_INSTALL, check=False)
            assert proc.returncode != 0 and "does not list" in proc.stderr, extra
            with pytest.raises(DeployError, match="holds files its manifest does not list"):
                verify_manifest(added)
        assert snapshot(prefix) == before

        # One release only: nothing to roll back to.
        proc = subprocess.run(["sh", str(prefix / "current" / "install.sh"), "--prefix", str(prefix), "--rollback"],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and "no previous release to roll back to" in proc.stderr
        assert snapshot(prefix) == before
        assert out
    finally:
        stop_runner(prefix)


def test_install_sh_process_mode_start_stop_and_rollback(two_bundles, tmp_path):
    prefix = tmp_path / "device"
    a, b = two_bundles
    try:
        run_install(extract(a, tmp_path / "xa"), prefix, *FAST_INSTALL)
        pidfile = prefix / "run" / "edgecam.pid"
        assert pidfile.is_file()
        run_install(extract(b, tmp_path / "xb"), prefix, *FAST_INSTALL)
        assert os.readlink(prefix / "current") == f"releases/{b.bundle_id}"
        assert os.readlink(prefix / "previous") == f"releases/{a.bundle_id}"
        script = prefix / "current" / "install.sh"
        out = subprocess.run(["sh", str(script), "--prefix", str(prefix), "--rollback"],
                             capture_output=True, text=True, check=True).stdout
        assert f"current -> releases/{a.bundle_id}" in out
        assert os.readlink(prefix / "current") == f"releases/{a.bundle_id}"
        assert os.readlink(prefix / "previous") == f"releases/{b.bundle_id}"
        subprocess.run(["sh", str(script), "--prefix", str(prefix), "--stop"], check=True, capture_output=True)
        assert not pidfile.exists()
    finally:
        stop_runner(prefix)


def test_unit_file_passes_systemd_analyze(model, wheel, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    prefix = tmp_path / "device"
    bundle = make_bundle(model, wheel, tmp_path / "b.tar.gz")
    run_install(extract(bundle, tmp_path / "x"), prefix, *FAST_INSTALL, "--no-start", "--user", "nobody")
    unit = (prefix / "edgecam.service").read_text()
    assert f"ExecStart={prefix}/current/venv/bin/edgecam run --config {prefix}/current/run.toml" in unit
    assert "Restart=on-failure" in unit and "User=nobody" in unit
    proc = subprocess.run(["systemd-analyze", "verify", str(prefix / "edgecam.service")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    # Without root or sudo, install.sh falls back to a systemd --user unit: no User=/groups.
    user_prefix = tmp_path / "user-device"
    subprocess.run(["sh", str(tmp_path / "x" / bundle.top / "install.sh"), "--prefix", str(user_prefix), *FAST_INSTALL,
                    "--no-start"], env={**os.environ, "EDGECAM_SERVICE_MODE": "user"}, check=True, capture_output=True)
    unit = (user_prefix / "edgecam.service").read_text()
    assert "User=" not in unit.replace("# A systemd --user unit", "") and "SupplementaryGroups" not in unit
    assert "WantedBy=default.target" in unit and "SERVICE_MODE=user" in (user_prefix / "install.conf").read_text()
    proc = subprocess.run(["systemd-analyze", "verify", str(user_prefix / "edgecam.service")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------- run.toml
def test_run_config_round_trip_and_errors(tmp_path):
    options = {"model": "m.tflite", "source": 0, "out_video": "o.mp4", "video_fps": 12.5,
               "log": 'a "quoted" päth.jsonl', "save_frames": 3, "frame_format": "png", "fsync_every": 2,
               "log_max_mb": 50, "snapshots": "snaps", "snapshot_every": 30.0, "snapshot_max_mb": 20,
               "preview": "0.0.0.0:8080", "smooth": 0.25, "hysteresis": "0.1:3", "realtime": True,
               "loop": False, "reconnect_attempts": 4, "threads": 2, "max_frames": 10, "vehicle_id": "van-07",
               "tiles": "128:64"}
    assert set(options) == set(RUN_KEYS)
    text = dumps_run_config(options, "header")
    assert tomllib.loads(text)["run"] == options
    (tmp_path / "run.toml").write_text(text)
    loaded = load_run_config(tmp_path / "run.toml")
    assert loaded["model"] == str(tmp_path / "m.tflite")
    assert loaded["threads"] == 2 and loaded["log"] == options["log"]  # keys are RunOptions' field names
    with pytest.raises(InputError, match=r"must hold exactly one table, \[run\]"):
        parse_run_config('source = "0"\n')
    with pytest.raises(InputError, match=r"\[run\] max_frames must be of type int. Got True"):
        parse_run_config("[run]\nmax_frames = true\n")
    with pytest.raises(InputError, match=r"\[run\] loop must be of type bool. Got 1"):
        parse_run_config("[run]\nloop = 1\n")
    with pytest.raises(InputError, match="is not valid TOML"):
        parse_run_config("[run\n")


def _config_probe():
    """A stand-in with edgecam run's parameter names, decorated like edgecam run."""
    import click

    from toolkit.cli._runconfig import config_option

    @click.command()
    @config_option
    @click.argument("model", type=click.Path(exists=True, dir_okay=False))
    @click.option("--source", required=True)
    @click.option("--log")
    @click.option("--threads", type=int)
    @click.option("--loop", is_flag=True)
    def probe(model, source, log, threads, loop):
        click.echo(json.dumps([model, source, log, threads, loop]))

    return probe


def test_config_option_makes_run_toml_the_defaults(tmp_path):
    from click.testing import CliRunner

    (tmp_path / "m.tflite").write_bytes(b"x")
    (tmp_path / "run.toml").write_text('[run]\nmodel = "m.tflite"\nsource = 0\nlog = "t.jsonl"\nloop = true\n')
    runner = CliRunner()
    result = runner.invoke(_config_probe(), ["--config", str(tmp_path / "run.toml")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [str(tmp_path / "m.tflite"), "0", "t.jsonl", None, True]
    result = runner.invoke(_config_probe(), ["--config", str(tmp_path / "run.toml"), "--source", "v.mp4", "--threads", "2"])
    assert json.loads(result.output)[1:4] == ["v.mp4", "t.jsonl", 2]
    (tmp_path / "bad.toml").write_text("[run]\nthreads = 'two'\n")
    result = runner.invoke(_config_probe(), ["--config", str(tmp_path / "bad.toml")])
    assert result.exit_code == 2 and "threads must be of type int" in result.output


def test_run_config_keys_match_edgecam_run():
    """Every run.toml key reaches a real parameter of edgecam run and of runner.run()."""
    import inspect

    runner = pytest.importorskip("firmware_host.runner", reason="edgecam run has not landed")
    from toolkit.cli.run import run_cmd

    from firmware_host.options import RunOptions

    params = set(inspect.signature(runner.run).parameters) | set(RunOptions.__dataclass_fields__)
    assert set(RUN_KEYS) <= params
    assert set(RUN_KEYS) <= {p.name for p in run_cmd.params}


# ----------------------------------------------------------------------------- doctor
def test_doctor_reports_without_tensorflow(tmp_path):
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a model")
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from toolkit.cli import main\n"
        f"main(['doctor', '--model', {str(bogus)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = {line[7:].split()[0]: line for line in proc.stdout.splitlines()}
    assert lines["python"].startswith("[ ok ]") and sys.version.split()[0] in lines["python"]
    import numpy
    assert numpy.__version__ in lines["numpy"]
    assert lines["interpreter"].startswith("[ ok ]") and "ai-edge-litert" in lines["interpreter"]
    assert lines["tensorflow"].startswith("[ ok ]")
    assert lines["model"].startswith("[FAIL]") and "bogus.tflite" in lines["model"]


@pytest.mark.skipif(not TINY_MODEL.is_file(), reason="tests/data/tiny_fog.tflite is not committed yet")
def test_doctor_explains_a_test_frame_with_the_tiny_model():
    from firmware_host.doctor import run_doctor

    report = run_doctor(model=TINY_MODEL, repeats=2)
    # (Other tests in this process may have imported TensorFlow: the subprocess test covers that.)
    model = report.get("model")
    assert model.ok, report.format()
    assert "explains a 32×32 test frame" in model.detail and "CAM 16×16" in model.detail


# ----------------------------------------------------------------------------- deploy (no network)
def test_parse_remote_and_refused_targets():
    assert parse_remote("pi@rpi.local") == Remote("pi@rpi.local", "edgecam")
    assert parse_remote("pi@rpi.local:~/apps/ec/") == Remote("pi@rpi.local", "apps/ec")
    assert parse_remote("cam1:/opt/edgecam") == Remote("cam1", "/opt/edgecam")
    assert parse_remote("pi@[fe80::1]:ec") == Remote("pi@[fe80::1]", "ec")
    for bad in ("-oProxyCommand=touch /tmp/x", "-oProxy@host", "pi@-oProxy", "pi@host;reboot", ""):
        with pytest.raises(InputError, match="not a plain user@host"):
            parse_remote(bad)
    with pytest.raises(InputError, match="may only contain letters"):
        parse_remote("pi@host:my dir")
    with pytest.raises(InputError, match=r"no '\.\.'"):
        parse_remote("pi@host:../etc")
    with pytest.raises(InputError, match="would turn host-key checking off"):
        SshOptions(options=("StrictHostKeyChecking=no",)).common()


def test_dry_run_prints_commands_and_runs_nothing(model, wheel, tmp_path, monkeypatch, capsys):
    bundle = make_bundle(model, wheel, tmp_path / "b.tar.gz")

    def refuse(*args, **kwargs):
        raise AssertionError(f"dry run executed {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    lines = []
    steps = deploy(bundle.path, "pi@cam:apps/ec", SshOptions(identity="k", port=2222), ["--no-systemd"],
                   dry_run=True, echo=lines.append)
    text = "\n".join(lines)
    assert [s.display() in text for s in steps] == [True] * len(steps)
    install = next(s for s in steps if s.what == "verify and install").argv
    assert install[:6] == ("ssh", "-i", "k", "-p", "2222", "--") and install[6] == "pi@cam"
    assert install[7] == f"sh apps/ec/incoming/{bundle.top}/install.sh --prefix apps/ec --no-systemd"
    assert any(s.argv[0] == "scp" and "-P" in s.argv for s in steps)
    v6 = plan_deploy("/tmp/b", "edgecam-x", parse_remote("pi@[fe80::1]:ec"))
    assert v6[0].argv[2] == "pi@fe80::1" and v6[1].argv[-1] == "pi@[fe80::1]:ec/incoming/"

    lines.clear()
    steps = deploy(None, "pi@cam:apps/ec", SshOptions(), dry_run=True, rollback=True, echo=lines.append)
    assert steps[0].argv == ("ssh", "--", "pi@cam", "sh apps/ec/current/install.sh --prefix apps/ec --rollback")
    assert "--rollback" in lines[0]


def test_remote_commands_are_quoted():
    steps = plan_deploy("/tmp/b", "edgecam-x", Remote("h", "d"), install_args=["--user", "a b;rm -rf /"])
    install = steps[2].argv[-1]
    assert install.endswith("--user 'a b;rm -rf /'")


# ----------------------------------------------------------------------------- deploy over SSH
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A throwaway OpenSSH server on 127.0.0.1 for the current user; yields SshOptions + login."""
    for tool in ("/usr/sbin/sshd", "ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt install openssh-server openssh-client)")
    if os.geteuid() != 0 and not Path("/run/sshd").is_dir():
        pytest.skip("sshd needs /run/sshd (privilege separation); run as root or create it")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    tmp = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True)
    shutil.copy(tmp / "user_key.pub", tmp / "authorized_keys")
    port = _free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    host_key = (tmp / "host_key.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    log = open(tmp / "sshd.log", "wb")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip(f"sshd exited: {(tmp / 'sshd.log').read_text()[-500:]}")
                time.sleep(0.1)
        options = SshOptions(identity=str(tmp / "user_key"), port=port, options=(
            f"UserKnownHostsFile={tmp / 'known_hosts'}", "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes", "BatchMode=yes", "IdentitiesOnly=yes"))
        import getpass

        yield options, f"{getpass.getuser()}@127.0.0.1", tmp
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _ssh(options: SshOptions, login: str, *command: str) -> subprocess.CompletedProcess:
    import shlex

    argv = ["ssh", *options.common(), "-p", str(options.port), "--", login, shlex.join(command)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def _deploy_args(bundle, login, prefix, options, *extra):
    args = ["deploy", str(bundle), f"{login}:{prefix}", "-i", options.identity, "-p", str(options.port)]
    for option in options.options:
        args += ["--ssh-option", option]
    for arg in FAST_INSTALL:
        args.append(f"--install-arg={arg}")
    return args + list(extra)


def test_deploy_over_ssh_runs_second_deploy_and_rollback(sshd, two_bundles, wheel, test_video, tmp_path):
    options, login, _ = sshd
    prefix = tmp_path / "vehicle"
    a, b = two_bundles
    wait = "20" if RUN_HAS_CONFIG else "0"
    try:
        first = _cli(*_deploy_args(a.path, login, prefix, options, "--wait", wait))
        assert first.returncode == 0, first.stdout + first.stderr
        assert "==> upload the bundle" in first.stdout and f"current  -> releases/{a.bundle_id}" in first.stdout
        assert os.readlink(prefix / "current") == f"releases/{a.bundle_id}"
        assert not any((prefix / "incoming").iterdir())  # the upload was cleaned up
        installed = prefix / "current" / "venv" / "bin" / "edgecam"
        telemetry = prefix / "data" / "telemetry.jsonl"

        # The installed copy runs on the "device" (through ssh), without TensorFlow.
        if RUN_HAS_CONFIG:
            # install.sh started `edgecam run --config current/run.toml`: 5 frames of the video.
            assert "first telemetry lines" in first.stdout
            for _ in range(100):
                if (prefix / "data" / "edgecam.log").exists() and "frames 5" in (prefix / "data" / "edgecam.log").read_text():
                    break
                time.sleep(0.2)
            records = [json.loads(line) for line in telemetry.read_text().splitlines()[1:]]  # after the header
            assert [r["frame"] for r in records] == list(range(5))
        elif RUN is not None:
            ran = _ssh(options, login, "sh", "-c", 'cd "$1" && "$2" run "$3" --source "$4" --log t.jsonl --max-frames 5',
                       "sh", str(prefix / "data"), str(installed), str(prefix / "current" / model_name(a)), str(test_video))
            assert ran.returncode == 0, ran.stdout + ran.stderr
            records = [json.loads(line) for line in (prefix / "data" / "t.jsonl").read_text().splitlines()[1:]]
            assert [r["frame"] for r in records] == list(range(5))
        if TINY_MODEL.is_file():
            doctor = _ssh(options, login, str(installed), "doctor", "--bundle", str(prefix / "current"))
            assert doctor.returncode == 0, doctor.stdout + doctor.stderr
            assert "explains a 32×32 test frame" in doctor.stdout
        else:
            version = _ssh(options, login, str(installed), "--version")
            assert version.returncode == 0 and check_wheel(wheel) in version.stdout

        second = _cli(*_deploy_args(b.path, login, prefix, options, "--wait", "0"))
        assert second.returncode == 0, second.stdout + second.stderr
        assert os.readlink(prefix / "current") == f"releases/{b.bundle_id}"
        assert os.readlink(prefix / "previous") == f"releases/{a.bundle_id}"
        assert load_run_config(prefix / "current" / "run.toml")["max_frames"] == 3

        rollback = _cli("deploy", "--rollback", f"{login}:{prefix}", "-i", options.identity, "-p",
                        str(options.port), "--wait", "0", *sum((["--ssh-option", o] for o in options.options), []))
        assert rollback.returncode == 0, rollback.stdout + rollback.stderr
        assert f"rolled back: current -> releases/{a.bundle_id}" in rollback.stdout
        assert os.readlink(prefix / "current") == f"releases/{a.bundle_id}"
        assert os.readlink(prefix / "previous") == f"releases/{b.bundle_id}"
        assert load_run_config(prefix / "current" / "run.toml")["max_frames"] == 5
    finally:
        stop_runner(prefix)


def model_name(bundle) -> str:
    return next(name for name in bundle.files if name.endswith(".tflite"))


def test_deploy_refuses_tampered_bundle_and_unknown_host_key(sshd, model, wheel, tmp_path):
    options, login, tmp = sshd
    prefix = tmp_path / "vehicle"
    good = make_bundle(model, wheel, tmp_path / "good.tar.gz")
    try:
        assert _cli(*_deploy_args(good.path, login, prefix, options, "--wait", "0")).returncode == 0
        before = snapshot(prefix)

        # Rewrite the archive with one model byte flipped (manifest unchanged).
        tampered = tmp_path / "tampered.tar.gz"
        with tarfile.open(good.path) as src, tarfile.open(tampered, "w:gz") as dst:
            for member in src.getmembers():
                data = src.extractfile(member).read() if member.isfile() else None
                if member.name.endswith("fog.tflite"):
                    data = data[:50] + bytes([data[50] ^ 1]) + data[51:]
                dst.addfile(member, io.BytesIO(data) if data is not None else None)
        refused = _cli(*_deploy_args(tampered, login, prefix, options, "--wait", "0"))
        assert refused.returncode == 1 and "Checksum mismatch" in refused.stderr and "fog.tflite" in refused.stderr
        assert snapshot(prefix) == before

        # The device's install.sh refuses it on its own too (e.g. damaged after upload).
        upload = extract(good, tmp_path / "upload")
        (upload / "run.toml").write_text('[run]\nsource = "evil"\n')
        proc = _ssh(options, login, "sh", str(upload / "install.sh"), "--prefix", str(prefix), *FAST_INSTALL)
        assert proc.returncode != 0 and "checksum mismatch" in proc.stderr
        assert snapshot(prefix) == before

        # Host-key checking stays on: a known_hosts without this server's key refuses to connect.
        (tmp / "empty_known_hosts").write_text("")
        strict = SshOptions(options.identity, options.port, tuple(
            o if not o.startswith("UserKnownHostsFile") else f"UserKnownHostsFile={tmp / 'empty_known_hosts'}"
            for o in options.options))
        with pytest.raises(DeployError, match="exit code 255"):
            deploy(good.path, f"{login}:{prefix}", strict, FAST_INSTALL, echo=lambda _: None)
        assert snapshot(prefix) == before
    finally:
        stop_runner(prefix)


# ----------------------------------------------------------------------------- health-checked releases (issue 13, item 9)
def _bundle_with(model_path, wheel, tmp_path, name, run_toml):
    (tmp_path / f"{name}.toml").write_text(run_toml)
    return make_bundle(model_path, wheel, tmp_path / f"{name}.tar.gz", config=tmp_path / f"{name}.toml")


def _runner_pid(prefix):
    pidfile = prefix / "run" / "edgecam.pid"
    if not pidfile.is_file():
        return None
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def _fresh_records(telemetry: Path, after: float, timeout: float = 60.0):
    """Telemetry lines written after ``after`` (a time.time()), waiting up to ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if telemetry.is_file() and telemetry.stat().st_mtime > after and telemetry.stat().st_size > 0:
            return telemetry.read_text().splitlines()
        time.sleep(0.2)
    return []


@pytest.mark.skipif(not TINY_MODEL.is_file() or not RUN_HAS_CONFIG, reason="needs the tiny model and edgecam run --config")
def test_deploy_health_check_rollback_and_healthy_release(sshd, wheel, test_video, tmp_path):
    """Over the loopback sshd: a healthy release is kept; a release whose model cannot load is never
    made current (the running one keeps running); a release that sends no telemetry (its camera is
    missing) is rolled back automatically; deploy exits non-zero naming the reason each time."""
    options, login, _ = sshd
    prefix = tmp_path / "vehicle"
    model = tmp_path / "fog.tflite"
    shutil.copy(TINY_MODEL, model)
    looping = f'[run]\nsource = "{test_video}"\nloop = true\nrealtime = true\n'
    good_a = _bundle_with(model, wheel, tmp_path, "a", looping)
    good_b = _bundle_with(model, wheel, tmp_path, "b", looping + "smooth = 0.5\n")
    broken = tmp_path / "broken" / "fog.tflite"
    broken.parent.mkdir()
    broken.write_bytes(b"\x1c\x00\x00\x00TFL3" + os.urandom(3000))  # a .tflite header, then noise
    bad_model = _bundle_with(broken, wheel, tmp_path, "c", looping)
    # No /dev/video7 here: the runner starts, cannot open the camera, writes no telemetry.
    no_camera = _bundle_with(model, wheel, tmp_path, "d", "[run]\nsource = 7\n")
    assert not Path("/dev/video7").exists()
    telemetry = prefix / "data" / "telemetry.jsonl"
    try:
        first = _cli(*_deploy_args(good_a.path, login, prefix, options, "--wait", "60"))
        assert first.returncode == 0, first.stdout + first.stderr
        assert "health check" in first.stdout and "first telemetry lines" in first.stdout
        assert os.readlink(prefix / "current") == f"releases/{good_a.bundle_id}"
        pid_a = _runner_pid(prefix)
        assert pid_a is not None

        # 1. The model does not load: refused before the switch; A's runner is untouched.
        refused = _cli(*_deploy_args(bad_model.path, login, prefix, options, "--wait", "60"))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "model failed to load" in refused.stderr and "Nothing was switched" in refused.stderr
        assert refused.stderr.count("Error:") == 1 and "Traceback" not in refused.stderr
        assert os.readlink(prefix / "current") == f"releases/{good_a.bundle_id}"
        assert not (prefix / "previous").exists()
        assert _runner_pid(prefix) == pid_a
        mark = time.time()
        assert _fresh_records(telemetry, mark), "release A stopped sending telemetry"

        # 2. The runner starts but its camera is missing: no telemetry, rolled back to A.
        rolled = _cli(*_deploy_args(no_camera.path, login, prefix, options, "--wait", "60"))
        assert rolled.returncode == 1, rolled.stdout + rolled.stderr
        assert "camera not found" in rolled.stderr and "Rolled back automatically" in rolled.stderr
        assert "rolling back automatically" in rolled.stdout
        assert os.readlink(prefix / "current") == f"releases/{good_a.bundle_id}"
        assert os.readlink(prefix / "previous") == f"releases/{no_camera.bundle_id}"
        pid = _runner_pid(prefix)
        assert pid is not None and pid != pid_a  # A was restarted, and runs
        mark = time.time()
        assert _fresh_records(telemetry, mark), "release A sends no telemetry after the rollback"

        # 3. A healthy release is kept.
        kept = _cli(*_deploy_args(good_b.path, login, prefix, options, "--wait", "60"))
        assert kept.returncode == 0, kept.stdout + kept.stderr
        assert os.readlink(prefix / "current") == f"releases/{good_b.bundle_id}"
        assert os.readlink(prefix / "previous") == f"releases/{good_a.bundle_id}"
        assert load_run_config(prefix / "current" / "run.toml")["smooth"] == 0.5
        assert _runner_pid(prefix) is not None
    finally:
        stop_runner(prefix)


def test_diagnose_names_the_reason_from_real_doctor_output(tmp_path):
    """doctor run with no interpreter importable, and with a model that does not load: the deploy
    message names "interpreter missing" / "model failed to load"."""
    from toolkit.deploy.deploy import diagnose

    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a model")
    block = "import sys\nfor m in ('tensorflow', 'ai_edge_litert', 'tflite_runtime'): sys.modules[m] = None\n"
    code = block + f"from toolkit.cli import main\nmain(['doctor', '--model', {str(bogus)!r}, '--repeats', '1'])\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert diagnose(proc.stdout).startswith("interpreter missing (interpreter")
    code = f"from toolkit.cli import main\nmain(['doctor', '--model', {str(bogus)!r}, '--repeats', '1'])\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    assert diagnose(proc.stdout).startswith("model failed to load (model")
    assert diagnose("all fine\n") is None
    crash = "install.sh:     File \"runner.py\", line 3, in run\ninstall.sh:   TypeError: f() got an unexpected keyword\n"
    assert diagnose(crash) == "the runner crashed (TypeError: f() got an unexpected keyword)"


def test_dry_run_shows_the_rollback_it_would_run(model, wheel, tmp_path):
    bundle = make_bundle(model, wheel, tmp_path / "b.tar.gz")
    lines = []
    steps = deploy(bundle.path, "pi@cam:ec", SshOptions(), ["--no-systemd"], dry_run=True, wait=15, echo=lines.append)
    text = "\n".join(lines)
    assert steps[-1].argv[-1].endswith("--status --wait 15 --expect-telemetry") and steps[-1].check
    assert "only if no telemetry arrives: roll back" in text and "--rollback" in text
    lines.clear()
    steps = deploy(bundle.path, "pi@cam:ec", SshOptions(), ["--no-start"], dry_run=True, wait=15, echo=lines.append)
    assert "--expect-telemetry" not in steps[-1].argv[-1] and "roll back" not in "\n".join(lines)
    with pytest.raises(InputError, match="not a POSIX user name"):
        deploy(bundle.path, "pi@cam:ec", SshOptions(), ["--user", "pi\nExecStartPre=/bin/sh"], dry_run=True,
               echo=lines.append)


# ----------------------------------------------------------------------------- interrupted bundle (issue 13, item 10)
def _bundle_process(model, out, tmpdir):
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.Popen([sys.executable, "-m", "toolkit", "bundle", str(model), "-o", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_scratch(tmpdir, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = [p for p in tmpdir.glob("edgecam-wheel-*") if (p / "src").is_dir()]
        if found:
            return found
        time.sleep(0.05)
    return []


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_interrupted_bundle_leaves_no_wheel_scratch_behind(model, wheel, tmp_path, how):
    """kill -9 during `edgecam bundle`'s wheel build leaks edgecam-wheel-*: the next bundle removes
    it (its owner is gone). SIGTERM unwinds like Ctrl-C and removes it at once."""
    import signal

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = _bundle_process(model, tmp_path / "b.tar.gz", scratch)
    try:
        leaked = _wait_for_scratch(scratch, proc)
        assert leaked, "the bundle never started its wheel build"
        proc.send_signal(getattr(signal, how))
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "b.tar.gz").exists()
    if how == "SIGTERM":
        assert proc.returncode == 128 + signal.SIGTERM
        assert list(scratch.glob("edgecam-wheel-*")) == [] and "Traceback" not in proc.stderr.read().decode()
        return
    assert [p.name for p in scratch.glob("edgecam-wheel-*")] == [p.name for p in leaked]
    # Another process's live scratch dir is left alone (its owner is this test process).
    live = scratch / "edgecam-wheel-live"
    live.mkdir()
    (live / ".edgecam-owner").write_text(f"{os.getpid()}\n")
    again = subprocess.run([sys.executable, "-m", "toolkit", "bundle", str(model), "-o", str(tmp_path / "c.tar.gz"),
                            "--wheel", str(wheel)], cwd=REPO, env={**os.environ, "TMPDIR": str(scratch)},
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in scratch.glob("edgecam-wheel-*")) == ["edgecam-wheel-live"]
    assert [p.name for p in tmp_path.glob(".edgecam-bundle-*")] == []  # the staging beside it too


def test_doctor_bundle_names_a_missing_camera_without_failing(model, wheel, tmp_path):
    """A camera that is not there is reported (the deploy's reason reads it), not a failed check:
    it may be plugged in later, and the previous release would need it just the same."""
    from firmware_host.doctor import run_doctor

    assert not Path("/dev/video7").exists()
    (tmp_path / "cam.toml").write_text("[run]\nsource = 7\n")
    root = extract(make_bundle(model, wheel, tmp_path / "b.tar.gz", config=tmp_path / "cam.toml"), tmp_path / "x")
    report = run_doctor(bundle=root, repeats=1)
    source = report.get("source")
    assert source.ok is None and "/dev/video7" in source.detail and "camera not found" in source.detail
    assert report.get("bundle").ok


def test_release_without_an_interpreter_is_never_made_current(model, wheel, tmp_path):
    """install.sh on a machine whose Python has no LiteRT interpreter for the new release (here
    hidden by import blockers first on its path): the health check fails, `current` stays, and
    the output names the reason deploy reports ("interpreter missing")."""
    from toolkit.deploy.deploy import diagnose

    if not TINY_MODEL.is_file():
        pytest.skip("needs tests/data/tiny_fog.tflite")
    blockers = tmp_path / "blockers"
    for package in ("ai_edge_litert", "tflite_runtime"):
        (blockers / package).mkdir(parents=True)
        (blockers / package / "__init__.py").write_text("raise ImportError('not installed on this device')\n")
    prefix = tmp_path / "device"
    good = make_bundle(model, wheel, tmp_path / "a.tar.gz")
    (tmp_path / "b.toml").write_text("[run]\nsmooth = 0.5\n")
    newer = make_bundle(model, wheel, tmp_path / "b.tar.gz", config=tmp_path / "b.toml")
    run_install(extract(good, tmp_path / "xa"), prefix, *FAST_INSTALL, "--no-start")
    before = os.readlink(prefix / "current")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blockers), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["sh", str(extract(newer, tmp_path / "xb") / "install.sh"), "--prefix", str(prefix),
                           *FAST_INSTALL, "--no-start"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "health check failed" in proc.stderr and f"current stays at {before}" in proc.stderr
    assert os.readlink(prefix / "current") == before == f"releases/{good.bundle_id}"
    assert not (prefix / "previous").exists()
    assert diagnose(proc.stdout + proc.stderr).startswith("interpreter missing")
