"""kill -9 while a report/bundle is being written: nothing half-written under the final name.

The conversion version is in test_atomic.py. Here the writer is ``edgecam bundle`` (its output
is a .tar.gz written through ``firmware_host._io.atomic_open``). Two ways of killing it:

* deterministic: a ``sitecustomize``-style hook SIGKILLs the process from inside
  ``tarfile.TarFile.addfile`` after a few members, i.e. while the archive's bytes are going out;
* timed: ``kill -9`` from outside after various delays, on a 24 MB model so writing takes a while.

Either the final name does not exist, or it holds a complete bundle that extracts and verifies.
"""

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from firmware_host.manifest import verify_manifest
from tests._run_helpers import ROOT, subprocess_env
from toolkit.deploy.safetar import safe_extract

KILL_INSIDE_TAR = """
import os, signal, sys, tarfile
added = [0]
real_addfile = tarfile.TarFile.addfile
def addfile(self, *args, **kwargs):
    added[0] += 1
    if added[0] == int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_addfile(self, *args, **kwargs)
tarfile.TarFile.addfile = addfile
from toolkit.cli import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory):
    """A minimal pure-Python edgecam wheel (the bundle only reads its METADATA)."""
    path = tmp_path_factory.mktemp("wheel") / "edgecam-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("edgecam-0.0.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: edgecam\nVersion: 0.0.0\n")
        zf.writestr("firmware_host/__init__.py", "")
    return path


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    """24 MB of incompressible bytes named .tflite: the bundle copies it as is, gzip takes a while."""
    path = tmp_path_factory.mktemp("model") / "big.tflite"
    path.write_bytes(b"TFL3" + os.urandom(24 << 20))
    return path


def _finals(directory: Path, keep) -> list:
    """Non-hidden files besides the inputs: what a user would take for an output."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".") and p.name not in keep)


def _assert_complete(bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "extract"
    dest.mkdir()
    top = safe_extract(bundle, dest)  # a truncated gzip/tar raises DeployError
    verify_manifest(top, strict=True)


@pytest.mark.parametrize("kill_after", [2, 6])
def test_kill_inside_the_archive_writer(tmp_path, fake_wheel, kill_after):
    model = tmp_path / "tiny.tflite"
    model.write_bytes((ROOT / "tests" / "data" / "tiny_fog.tflite").read_bytes())
    out = tmp_path / "b.tar.gz"
    env = {**subprocess_env(), "KILL_AFTER": str(kill_after)}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_INSIDE_TAR, "bundle", str(model), "-o", str(out), "--wheel", str(fake_wheel)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    assert _finals(tmp_path, {"tiny.tflite"}) == []
    # The kill did land mid-write: the hidden temp file of the atomic write is what remains.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.tar.gz.") and p.name.endswith(".part")]
    assert len(leftovers) == 1


@pytest.mark.parametrize("delay", [0.8, 1.6, 2.4, 3.2])
def test_kill_9_at_any_time(tmp_path, fake_wheel, big_model, delay):
    out = tmp_path / "b.tar.gz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "bundle", str(big_model), "-o", str(out), "--wheel", str(fake_wheel)],
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _finals(tmp_path, set()) in ([], ["b.tar.gz"])
    if out.exists():  # it finished before the kill: the file must be whole
        _assert_complete(out, tmp_path)


# -- live outputs: appended by design, recoverable after kill -9 ---------------------------------


def test_kill_9_during_run_leaves_readable_log_frames_and_video(tmp_path):
    """The JSONL log and the .avi are appended live (no rename could make a growing file
    atomic); after kill -9 the log reads back (a cut last line is skipped), every frame a record
    names is a whole image (frames are atomic), and the Motion-JPEG video plays."""
    import cv2

    from benchmarks.soak import make_video
    from firmware_host.sinks import read_jsonl

    video = make_video(tmp_path / "in.avi", frames=30)
    log, out_video = tmp_path / "run.jsonl", tmp_path / "out.avi"
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "run", str(ROOT / "tests/data/tiny_fog.tflite"), "--source", str(video),
         "--loop", "--log", str(log), "--save-frames", "3", "--out-video", str(out_video)],
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not log.exists() or log.read_bytes().count(b"\n") < 150):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    records = read_jsonl(log)
    assert len(records) >= 150
    assert [r["frame"] for r in records] == list(range(len(records)))
    saved = [r["frame_path"] for r in records if "frame_path" in r]
    assert len(saved) >= 50
    for rel in saved:
        image = cv2.imread(str(tmp_path / rel))
        assert image is not None and image.shape == (240, 320, 3), rel
    cap = cv2.VideoCapture(str(out_video))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (240, 320, 3)
        frames += 1
    cap.release()
    # OpenCV's writer buffers the tail in memory: what reached the disk plays, the tail is lost.
    assert 0 < frames <= len(records) + 1


def test_atomic_path_for_writers_that_take_a_name(tmp_path):
    """model.save / VideoWriter / savefig style: a hidden temp with the final suffix, renamed."""
    import cv2
    import numpy as np

    from firmware_host._io import atomic_path

    final = tmp_path / "clip.avi"
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".clip.avi.") and tmp.suffix == ".avi"
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
        for _ in range(3):
            writer.write(np.full((24, 32, 3), 128, np.uint8))
        writer.release()
        assert not final.exists()
    assert cv2.VideoCapture(str(final)).read()[0]
    assert [p.name for p in tmp_path.iterdir()] == ["clip.avi"]

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_path(tmp_path / "model.keras") as tmp:
            tmp.write_bytes(b"half a model")
            raise Boom()
    assert [p.name for p in tmp_path.iterdir()] == ["clip.avi"]


# -- edgecam validate: its report, CSV and summary (once toolkit.validate has landed) -----------

# Kills the process inside its N-th os.fsync: every atomic write fsyncs its temp file just
# before renaming it, so this lands after the bytes are written and before the rename.
KILL_AT_FSYNC = """
import os, signal, sys
calls = [0]
real_fsync = os.fsync
def fsync(fd):
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_fsync(fd)
os.fsync = fsync
from toolkit.cli import main
main(sys.argv[1:])
"""


def _assert_validate_outputs_whole(out: Path, n_images: int) -> None:
    import csv
    import json

    for path in out.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".html":
            assert data.rstrip().endswith(b"</html>"), path
        elif path.suffix == ".csv":
            rows = list(csv.DictReader(data.decode().splitlines()))
            assert len(rows) == n_images, path
        elif path.suffix == ".png":
            assert data.endswith(b"IEND\xaeB`\x82"), path


@pytest.mark.parametrize("kill_at", [1, 3, 5])
def test_kill_9_during_validate_report(tmp_path, kill_at):
    """Odd fsyncs are an atomic write's file fsync (even ones its directory's): killed there,
    the output being written must not exist under its final name."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("toolkit.validate")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes((ROOT / "tests/data/tiny_fog_input.png").read_bytes())
    out = tmp_path / "report"
    env = {**subprocess_env(), "KILL_AT": str(kill_at), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_FSYNC, "validate", str(ROOT / "tests/data/tiny_fog.keras"),
         str(ROOT / "tests/data/tiny_fog.tflite"), "--images", str(images), "--out", str(out),
         "--no-faithfulness", "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    if proc.returncode == 0:  # fewer fsyncs than kill_at: it finished; everything must be whole
        assert (out / "report.html").exists()
    else:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        parts = [p.name for p in out.rglob(".*.part")]
        assert len(parts) == 1, parts  # killed inside one atomic write ...
        final = parts[0][1:].rsplit(".", 2)[0]
        assert not any(p.name == final for p in out.rglob("*")), final  # ... not under its name
    _assert_validate_outputs_whole(out, 3)
