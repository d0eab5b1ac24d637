"""An emulated Raspberry Pi 4: install real `edgecam bundle --target rpi` bundles, run, compare.

Debian 12 arm64 (the base of 64-bit Raspberry Pi OS, same Python 3.11) under proot + qemu-user
(:mod:`tests.pi.emulator`). Two bundles are installed with their own ``install.sh --no-systemd``,
at the same time (one core each):

* **registry**: requirements.txt resolved by the guest's pip from the package index, so the
  aarch64 wheels the pins name really install on a Pi's userland;
* **offline**: a ``--with-wheels`` bundle, installed with the network cut (``unshare -n``) where
  this host allows it.

The installed ``edgecam run`` then explains a video and ``edgecam doctor --bundle`` checks the
install, both as arm64 code. Its log must carry 2-D maps and agree with the same model run on
this host: OpenCV's ARM build decodes/resizes to within one gray level of x86's, so we accept
per frame |Δp| ≤ 0.02, CAM max |Δ| ≤ 5 % of the host map's maximum, and top-1 agreement on
at least 90 % of frames (measured: |Δp| ≤ 0.0022, CAM ≤ 1.4 %, 12/12; docs/deploy.md).

Runs with ``pytest -m pi`` or ``EDGECAM_TEST_PI=1`` (``.ci/run`` sets it): about 3 minutes of CPU
on two cores, most of it pip under emulation (9 min 21 s from a clean cache on this 2-core machine
while 6 other jobs shared it). Skips with the reason when the tools or the network are missing.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.pi.emulator import Guest, missing_tools, rootfs_tarball

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "data" / "tiny_fog.tflite"
FRAMES = 12
# Agreement with the host (see the module docstring and docs/deploy.md).
PROB_ATOL = 0.02
CAM_RTOL = 0.05
TOP1_MIN = 0.9

pytestmark = [pytest.mark.pi, pytest.mark.slow, pytest.mark.timeout(1500)]


def _opted_in(config) -> bool:
    return "pi" in (config.getoption("markexpr") or "").replace("not pi", "") or os.environ.get("EDGECAM_TEST_PI") == "1"


def _write_video(path: Path) -> Path:
    """A 12-frame 64×48 Motion-JPEG .avi: the test image, brightening frame by frame."""
    import cv2

    img = cv2.resize(cv2.imread(str(REPO / "tests" / "data" / "tiny_fog_input.png")), (64, 48))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(FRAMES):
        writer.write(np.clip(img.astype(int) + 9 * i - 50, 0, 255).astype(np.uint8))
    writer.release()
    return path


def _can_cut_network() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def pi(request, tmp_path_factory):
    """Both bundles installed in one emulated Pi; yields (guest, share dir, {case: install output})."""
    if not _opted_in(request.config):
        pytest.skip("emulated Raspberry Pi (~3 min): run `pytest -m pi` or set EDGECAM_TEST_PI=1")
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the emulated Pi runs on an x86-64 Linux host")
    if missing_tools():
        pytest.skip(f"missing {', '.join(missing_tools())} (apt install mmdebstrap proot qemu-user-static)")
    if not MODEL.is_file():
        pytest.skip("tests/data/tiny_fog.tflite is missing")
    from toolkit.deploy.bundle import build_bundle, build_wheel

    tmp = tmp_path_factory.mktemp("pi")
    share = tmp / "share"
    share.mkdir()
    try:
        tarball = rootfs_tarball(log=lambda _: None)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot build the arm64 rootfs (network?): {str(exc)[-300:]}")
    guest = Guest(tmp / "rootfs", tarball, binds={str(share): "/mnt"})

    wheel = build_wheel(tmp / "wheel")
    registry = build_bundle(MODEL, target="rpi", out=share / "fog-rpi.tar.gz", wheel=wheel)
    try:
        offline = build_bundle(MODEL, target="rpi", out=share / "fog-rpi-wheels.tar.gz", wheel=wheel,
                               with_wheels=True, python_versions=["3.11"])
    except Exception as exc:  # DeployError: no network for pip download
        pytest.skip(f"cannot download the aarch64 wheels for the offline bundle: {str(exc)[-300:]}")
    for bundle in (registry, offline):
        subprocess.run(["tar", "-xzf", str(bundle.path), "-C", str(share)], check=True)
    _write_video(share / "road.avi")

    # Both installs at once: each is one emulated process (one core).
    cut = ["unshare", "-n"] if _can_cut_network() else []
    procs = {
        "registry": guest.popen(["/bin/sh", f"/mnt/{registry.top}/install.sh", "--prefix", "/root/registry",
                                 "--no-systemd", "--no-start"]),
        "offline": guest.popen(["/bin/sh", f"/mnt/{offline.top}/install.sh", "--prefix", "/root/offline",
                                "--no-systemd", "--no-start"], wrap=cut),
    }
    started = time.monotonic()
    outputs = {}
    for case, proc in procs.items():
        out, _ = proc.communicate(timeout=1200)
        outputs[case] = (proc.returncode, out, time.monotonic() - started)
    outputs["network_cut"] = bool(cut)
    yield guest, share, outputs


def _host_run(video: Path, log: Path) -> list:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "toolkit", "run", str(MODEL), "--source", str(video),
                           "--log", str(log)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in log.read_text().splitlines()[1:]]  # after the run header


def _guest_run(guest: Guest, prefix: str, log: str, *extra: str) -> subprocess.CompletedProcess:
    return guest.run([f"{prefix}/current/venv/bin/edgecam", "run", f"{prefix}/current/tiny_fog.tflite",
                      "--source", "/mnt/road.avi", "--log", log, *extra], cwd="/mnt", timeout=600)


def _check_install(outputs, case):
    code, out, seconds = outputs[case]
    assert code == 0, f"{case} install failed after {seconds:.0f} s:\n{out[-3000:]}"
    assert "current -> releases/" in out
    return out


def test_registry_install_runs_arm64_and_agrees_with_the_host(pi, tmp_path):
    guest, share, outputs = pi
    out = _check_install(outputs, "registry")
    assert "installing requirements.txt" in out and "offline" not in out

    # The installed venv is an arm64 one with the pinned aarch64 wheels (from the index).
    venv_python = "/root/registry/current/venv/bin/python"
    probe = guest.run([venv_python, "-c", "import platform, numpy, cv2, ai_edge_litert, sys; "
                       "print(platform.machine(), numpy.__version__, cv2.__version__, "
                       "'tensorflow' in sys.modules)"], check=True)
    assert probe.stdout.split()[-4:] == ["aarch64", "2.2.6", "4.11.0", "False"], probe.stdout

    ran = _guest_run(guest, "/root/registry", "/mnt/pi.jsonl")
    assert ran.returncode == 0, ran.stdout
    assert f"frames {FRAMES}  dropped 0" in ran.stdout
    pi_records = [json.loads(line) for line in (share / "pi.jsonl").read_text().splitlines()[1:]]
    host_records = _host_run(share / "road.avi", tmp_path / "host.jsonl")
    assert [r["frame"] for r in pi_records] == [r["frame"] for r in host_records] == list(range(FRAMES))

    agree = 0
    for on_pi, on_host in zip(pi_records, host_records):
        cam_pi, cam_host = np.asarray(on_pi["cam"], float), np.asarray(on_host["cam"], float)
        assert cam_pi.ndim == 2 and cam_pi.shape == cam_host.shape == (16, 16)  # 2-D maps, same grid
        assert np.abs(np.subtract(on_pi["probabilities"], on_host["probabilities"])).max() <= PROB_ATOL
        if on_pi["class_index"] == on_host["class_index"]:
            assert np.abs(cam_pi - cam_host).max() <= CAM_RTOL * cam_host.max()
        agree += on_pi["predicted_index"] == on_host["predicted_index"]
    assert agree >= TOP1_MIN * FRAMES, f"top-1 agreement {agree}/{FRAMES}"

    doctor = guest.run(["/root/registry/current/venv/bin/edgecam", "doctor", "--bundle", "/root/registry/current"])
    assert doctor.returncode == 0, doctor.stdout
    assert "aarch64" in doctor.stdout and "interpreter  ai-edge-litert 2.3.0" in doctor.stdout
    assert "tensorflow   not needed, not imported" in doctor.stdout
    assert "files match MANIFEST.sha256" in doctor.stdout and "explains a 32×32 test frame" in doctor.stdout


def test_offline_install_from_bundled_wheels(pi):
    guest, share, outputs = pi
    out = _check_install(outputs, "offline")
    assert "installing requirements.txt offline from wheels/" in out
    ran = _guest_run(guest, "/root/offline", "/mnt/offline.jsonl", "--max-frames", "3")
    assert ran.returncode == 0, ran.stdout
    records = [json.loads(line) for line in (share / "offline.jsonl").read_text().splitlines()[1:]]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert all(np.asarray(r["cam"]).shape == (16, 16) for r in records)
    doctor = guest.run(["/root/offline/current/venv/bin/edgecam", "doctor", "--bundle", "/root/offline/current"])
    assert doctor.returncode == 0 and "interpreter  ai-edge-litert 2.3.0" in doctor.stdout, doctor.stdout
