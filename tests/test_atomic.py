"""Outputs are atomic: a process killed at any point leaves no half-written file under the final name."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_host._io import atomic_write_bytes, ensure_writable_dir
from firmware_host.errors import EdgecamError, OutputError
from firmware_host.metadata import read_tflite_metadata

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")

    class Boom(Exception):
        pass

    from firmware_host._io import atomic_open

    with pytest.raises(Boom):
        with atomic_open(target) as handle:
            handle.write(b"new partial")
            raise Boom()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # temp file cleaned up
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_unwritable_output_dir_detected_up_front(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
        with pytest.raises(OutputError, match="is not writable"):
            ensure_writable_dir(locked)
    finally:
        locked.chmod(0o700)
    with pytest.raises(OutputError, match=r"MiB free; at least"):
        ensure_writable_dir(tmp_path, min_free_bytes=1 << 62)


@pytest.mark.parametrize("delay", [2.5, 4.5])
def test_kill_during_conversion_leaves_no_partial_model(tmp_path, delay):
    pytest.importorskip("tensorflow")
    out = tmp_path / "m.tflite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "convert", str(ROOT / "tests/data/tiny_fog.keras"), "-o", str(out)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if out.exists():  # finished (or was between its two atomic writes): must be complete
        try:
            read_tflite_metadata(out)
        except EdgecamError as exc:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"half-written model under the final name: {exc}")
