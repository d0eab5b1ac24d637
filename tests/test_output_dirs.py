"""Every command that writes checks its output location before the work starts: a read-only
location or a full disk is a one-line error (exit 1), never a traceback after minutes of work.

We run as root here, and root writes through permission bits, so "read-only" is simulated by a
path whose parent is a regular file (no one can create a directory there); "full" by making
``shutil.disk_usage`` report 1 MiB free.
"""

import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_host._io import ensure_writable_dir
from firmware_host.errors import OutputError
from tests._run_helpers import ROOT, subprocess_env, write_video
from toolkit.cli import cli

DATA = ROOT / "tests" / "data"
MODEL = DATA / "tiny_fog.tflite"
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def blocked(tmp_path):
    """A path that cannot be created: its parent is a regular file."""
    (tmp_path / "afile").write_text("not a directory")
    return tmp_path / "afile" / "out"


@pytest.fixture
def full_disk(monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "in.avi", 4)


def _cli(args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result, result.output  # click >= 8.2: stdout and stderr interleaved


def _assert_one_line_error(result, output, *patterns):
    assert result.exit_code == 1, output
    assert isinstance(result.exception, SystemExit), f"not a clean CLI error: {result.exception!r}"
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    for pattern in patterns:
        assert pattern in errors[0], errors[0]


def test_library_check_names_the_directory(blocked, tmp_path, full_disk):
    with pytest.raises(OutputError, match=r"Cannot create output directory '.*afile/out'.*a part of the path is a file"):
        ensure_writable_dir(blocked)
    with pytest.raises(OutputError, match=r"has 1\.0 MiB free; at least 64 MiB is needed"):
        ensure_writable_dir(tmp_path, min_free_bytes=64 << 20)


# -- edgecam run: --log, --out-video, --snapshots ---------------------------------------------


@pytest.mark.parametrize("flag,name", [("--log", "run.jsonl"), ("--out-video", "out.avi"), ("--snapshots", "snaps")])
def test_run_blocked_output(blocked, video, flag, name):
    result, output = _cli(["run", MODEL, "--source", video, flag, blocked / name])
    _assert_one_line_error(result, output, "Cannot create output directory", "afile")
    assert "running;" not in output  # refused before the loop started


@pytest.mark.parametrize("flag,name", [("--log", "run.jsonl"), ("--out-video", "out.avi"), ("--snapshots", "snaps")])
def test_run_full_disk(tmp_path, video, full_disk, flag, name):
    result, output = _cli(["run", MODEL, "--source", video, flag, tmp_path / "o" / name])
    _assert_one_line_error(result, output, "MiB free; at least")
    assert not (tmp_path / "o" / "run.jsonl").exists()


def test_run_blocked_log_in_a_real_process(blocked, video):
    """The installed entry point as a user runs it: stderr holds one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "run", str(MODEL), "--source", str(video), "--log", str(blocked / "r.jsonl")],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("Error: Cannot create output directory")
    assert len(proc.stderr.strip().splitlines()) == 1


# -- predict, bundle, demo, convert ---------------------------------------------------------


def test_predict_blocked_and_full(blocked, tmp_path, monkeypatch):
    image = DATA / "tiny_fog_input.png"
    result, output = _cli(["predict", MODEL, image, "--out", blocked])
    _assert_one_line_error(result, output, "Cannot create output directory")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, 0, 1 << 20))
    result, output = _cli(["predict", MODEL, image, "--out", tmp_path / "o"])
    _assert_one_line_error(result, output, "MiB free; at least")


def test_bundle_blocked_and_full(blocked, tmp_path, monkeypatch):
    result, output = _cli(["bundle", MODEL, "-o", blocked / "b.tar.gz"])
    _assert_one_line_error(result, output, "Cannot create output directory")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, 0, 1 << 20))
    result, output = _cli(["bundle", MODEL, "-o", tmp_path / "b.tar.gz"])
    _assert_one_line_error(result, output, "MiB free; at least")
    assert not (tmp_path / "b.tar.gz").exists()


def test_demo_blocked_and_full(blocked, tmp_path, monkeypatch):
    result, output = _cli(["demo", "--quick", "--out", blocked])
    _assert_one_line_error(result, output, "Cannot create output directory")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, 0, 1 << 20))
    result, output = _cli(["demo", "--quick", "--out", tmp_path / "demo"])
    _assert_one_line_error(result, output, "MiB free; at least")


def test_convert_blocked_and_full(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    (tmp_path / "afile").write_text("x")
    # The output's folder is a file: refused before loading the model.
    result, output = _cli(["convert", DATA / "tiny_fog.keras", "-o", tmp_path / "afile" / "m.tflite"])
    _assert_one_line_error(result, output)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, 0, 1 << 20))
    result, output = _cli(["convert", DATA / "tiny_fog.keras", "-o", tmp_path / "m.tflite"])
    _assert_one_line_error(result, output, "MiB free; at least")
    assert "Converting" in output and "wrote" not in output
    assert not (tmp_path / "m.tflite").exists()


# -- commands landing from other branches: checked as soon as they are registered ---------------


def _class_folders(root: Path) -> Path:
    """Two class folders of two real PNGs each (a dataset / an image folder)."""
    for label in ("clear", "dense"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            shutil.copy(DATA / "tiny_fog_input.png", root / label / f"{i}.png")
    return root


HOST_COMMANDS = {
    "validate": lambda data, out: ["validate", DATA / "tiny_fog.keras", MODEL, "--images", data, "--out", out],
    "explain": lambda data, out: ["explain", DATA / "tiny_fog.keras", DATA / "tiny_fog_input.png", "--out", out],
    "dataset": lambda data, out: ["dataset", "fog", "--out", out, "--n", "4"],
    "train": lambda data, out: ["train", data, "--out", out, "--epochs", "1"],
}


@pytest.mark.parametrize("name", sorted(HOST_COMMANDS))
def test_host_commands_blocked_and_full(name, blocked, tmp_path, monkeypatch):
    from toolkit.cli import COMMANDS

    if name not in COMMANDS:
        pytest.skip(f"`edgecam {name}` is not on this branch yet")
    data = _class_folders(tmp_path / "data")
    result, output = _cli(HOST_COMMANDS[name](data, blocked))
    _assert_one_line_error(result, output, "Cannot create output directory")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 30, 0, 1 << 20))
    result, output = _cli(HOST_COMMANDS[name](data, tmp_path / "out"))
    _assert_one_line_error(result, output, "MiB free; at least")
