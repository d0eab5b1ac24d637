"""``edgecam frames``: sampling, near-duplicates, frames.json, re-runs, run logs and bad videos.

The videos are written here with OpenCV at a known frame rate: a blurred noise texture panned
5 px per frame, held still for two seconds (a car at a light), then panned again. Which frames
are identical is known by construction, and the time of frame ``i`` is ``i / FPS``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host.errors import InputError, SourceError
from toolkit.cli import cli
from toolkit.frames import (
    FRAMES_JSON,
    FramesOptions,
    collect_inputs,
    dhash,
    extract_frames,
    hamming,
    read_frames_index,
)

FPS = 10.0
FRAMES = 60
STILL = range(20, 41)  # frames 20..40 show the same view (offset 100 px)
W, H = 160, 120


def offset(i: int) -> int:
    """Pan position of frame ``i``: moving 0–2 s, still 2–4 s, moving again 4–6 s."""
    return 5 * min(i, 20) if i < 40 else 5 * (20 + i - 40)


def write_video(path: Path, frames: int = FRAMES, fps: float = FPS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (H, 5 * frames + W, 3), dtype=np.uint8), (9, 9), 3)
    codec = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (W, H))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.ascontiguousarray(texture[:, offset(i):offset(i) + W]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {
        "mp4": write_video(root / "drive.mp4"),
        "avi": write_video(root / "second.avi", seed=1),
        "root": root,
    }


def run_cli(*args):
    return CliRunner().invoke(cli, ["frames", *[str(a) for a in args]])


def listed(out: Path) -> list:
    return json.loads((out / FRAMES_JSON).read_text())["frames"]


def assert_one_error_line(result, pattern):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a click error, not a crash
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert re.search(pattern, lines[0]), lines[0]


# -- the hash -------------------------------------------------------------------------------------


def test_dhash_bits_against_hand_computed_thumbnails():
    ramp_right = np.tile(np.arange(9, dtype=np.uint8) * 20, (8, 1))  # already 9×8: no resizing effect
    assert dhash(ramp_right) == 2**64 - 1  # every right neighbour brighter
    assert dhash(ramp_right[:, ::-1].copy()) == 0
    rows = ramp_right.copy()
    rows[1::2] = rows[1::2, ::-1]  # odd rows fall: bytes alternate 0xFF, 0x00 (row 0 is the top byte)
    assert dhash(rows) == int("ff00" * 4, 16)
    assert hamming(0, 2**64 - 1) == 64 and hamming(0b1011, 0b0001) == 2
    # Brightness offsets do not change the structure the hash sees.
    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 200, (90, 120, 3), dtype=np.uint8), (7, 7), 2)
    assert dhash(image) == dhash(image + 40)


# -- sampling and frames.json --------------------------------------------------------------------


def test_every_second_keeps_one_frame_per_second_with_times_from_the_frame_rate(videos, tmp_path):
    result = run_cli(videos["mp4"], "--out", tmp_path, "--every", "1", "--quiet")
    assert result.exit_code == 0, result.output
    frames = listed(tmp_path)
    per_second = int(FPS)
    assert [f["index"] for f in frames] == list(range(0, FRAMES, per_second))
    for f in frames:
        assert f["time"] == pytest.approx(f["index"] / FPS, abs=1e-6)
        assert f["video"] == str(videos["mp4"]) and re.fullmatch(r"[0-9a-f]{6}", f["video_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", f["hash"])
        assert (tmp_path / f["file"]).is_file()
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == sorted(f["file"] for f in frames)
    assert f"{FRAMES} frames read, {FRAMES // per_second} sampled" in result.output


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_fps_option_and_hash_of_the_decoded_frame(videos, tmp_path, kind):
    out = extract_frames([videos[kind]], tmp_path, FramesOptions(fps=2.5), progress=False)
    frames = listed(tmp_path)
    assert [f["index"] for f in frames] == list(range(0, FRAMES, 4))  # 10 fps / 2.5 = every 4th
    assert out.inputs[0].fps == FPS and out.inputs[0].read == FRAMES and out.written == len(frames)
    # The stored hash is the hash of the decoded video frame (decoded again here, independently).
    cap = cv2.VideoCapture(str(videos[kind]))
    decoded = [cap.read()[1] for _ in range(FRAMES)]
    cap.release()
    for f in frames:
        assert int(f["hash"], 16) == dhash(decoded[f["index"]])


def test_dedupe_skips_the_still_stretch_and_nothing_else(videos, tmp_path):
    result = run_cli(videos["mp4"], "--out", tmp_path, "--fps", "5", "--dedupe", "6", "--quiet")
    assert result.exit_code == 0, result.output
    sampled = list(range(0, FRAMES, 2))
    # The first frame of the still stretch is new; the rest of it repeats that view.
    expected = [i for i in sampled if not (i in STILL and i > STILL[0])]
    assert [f["index"] for f in listed(tmp_path)] == expected
    skipped = len(sampled) - len(expected)
    assert f"{skipped} near-duplicates skipped, {len(expected)} written" in result.output


def test_without_dedupe_the_still_frames_are_kept(videos, tmp_path):
    extract_frames([videos["mp4"]], tmp_path, FramesOptions(fps=5), progress=False)
    assert len(listed(tmp_path)) == FRAMES // 2


def test_size_resizes_the_written_frames(videos, tmp_path):
    result = run_cli(videos["mp4"], "--out", tmp_path, "--size", "64x48", "--format", "png", "--quiet")
    assert result.exit_code == 0, result.output
    files = [tmp_path / f["file"] for f in listed(tmp_path)]
    assert files and all(p.suffix == ".png" for p in files)
    assert {cv2.imread(str(p)).shape for p in files} == {(48, 64, 3)}


def test_rerun_into_the_same_folder_adds_nothing_twice(videos, tmp_path):
    for _ in range(2):
        assert run_cli(videos["mp4"], "--out", tmp_path, "--quiet").exit_code == 0
    first = listed(tmp_path)
    assert len(first) == FRAMES // int(FPS) and len(list(tmp_path.glob("*.jpg"))) == len(first)
    # A second video merges in; the first one's frames stay listed once.
    assert run_cli(videos["mp4"], videos["avi"], "--out", tmp_path, "--quiet").exit_code == 0
    both = listed(tmp_path)
    assert len(both) == 2 * len(first) and len({f["file"] for f in both}) == len(both)
    assert {f["video"] for f in both} == {str(videos["mp4"]), str(videos["avi"])}
    index = read_frames_index(tmp_path / FRAMES_JSON)
    assert {v["video"] for v in index["videos"]} == {str(videos["mp4"]), str(videos["avi"])}
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files


def test_a_folder_of_videos_reads_each_video_once(videos, tmp_path):
    folder = tmp_path / "in"
    (folder / "day2").mkdir(parents=True)
    write_video(folder / "a.mp4", frames=20)
    write_video(folder / "day2" / "b.AVI", frames=20)
    (folder / "notes.txt").write_text("not a video")
    write_video(folder / ".hidden.mp4", frames=20)
    inputs, skipped = collect_inputs([folder, folder / "a.mp4"])
    assert [p.name for p, _ in inputs] == ["a.mp4", "b.AVI"] and not skipped
    result = extract_frames([folder], tmp_path / "out", progress=False)
    assert {Path(f["video"]).name for f in listed(tmp_path / "out")} == {"a.mp4", "b.AVI"}
    assert result.written == 4  # 20 frames at 10 fps, one a second, from each


# -- run logs -------------------------------------------------------------------------------------


def test_run_log_saved_frames_are_read_through_the_telemetry_reader(tmp_path):
    log_dir = tmp_path / "log"
    (log_dir / "run_frames" / "s1").mkdir(parents=True)
    lines = []
    rng = np.random.default_rng(3)
    for frame in range(0, 12, 2):
        rel = f"run_frames/s1/{frame:06d}.jpg"
        image = cv2.GaussianBlur(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), (5, 5), 2)
        cv2.imwrite(str(log_dir / rel), image)
        lines.append(json.dumps({"timestamp": 1000.0 + frame / 4, "frame": frame, "class_index": 0,
                                 "probabilities": [0.9, 0.1], "cam": [[0.0, 1.0]], "frame_path": rel}))
    lines.insert(2, "{not json")  # a broken line is skipped, as every log reader does
    lines.append(json.dumps({"frame": 99, "class_index": 0, "probabilities": [1, 0], "cam": [[0]],
                             "frame_path": "../../etc/passwd"}))  # outside the log folder: refused
    (log_dir / "run.jsonl").write_text("\n".join(lines) + "\n")
    result = run_cli(log_dir / "run.jsonl", "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    frames = listed(tmp_path / "out")
    assert [f["index"] for f in frames] == [0, 2, 4, 6, 8, 10]  # every saved frame by default
    assert [f["time"] for f in frames] == pytest.approx([i / 4 for i in (0, 2, 4, 6, 8, 10)])
    assert {f["video"] for f in frames} == {str(log_dir / "run.jsonl")}


# -- bad inputs -----------------------------------------------------------------------------------


def test_a_corrupt_video_is_reported_on_one_line_and_skipped(videos, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(videos["mp4"].read_bytes()[:1500])  # cut before the moov atom
    result = CliRunner().invoke(cli, ["frames", str(bad), str(videos["mp4"]), "--out", str(tmp_path / "out"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if "broken.mp4" in line]
    assert len(skipped) == 1 and skipped[0].startswith(f"Skipped '{bad}': not a video OpenCV can open")
    assert {f["video"] for f in listed(tmp_path / "out")} == {str(videos["mp4"])}


def test_only_corrupt_inputs_is_one_error_line(tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_one_error_line(run_cli(bad, "--out", tmp_path / "out"), r"noise\.mp4.*not a video OpenCV can open")
    with pytest.raises(SourceError, match="not a video OpenCV can open"):
        extract_frames([bad], tmp_path / "out", progress=False)


def test_ffmpeg_says_nothing_of_its_own_about_a_damaged_file(videos, tmp_path):
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(videos["mp4"].read_bytes()[:1500])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    proc = subprocess.run([sys.executable, "-m", "toolkit", "frames", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"Error: '{bad}': not a video OpenCV can open (unknown "
                                                "container or codec, or a damaged file); re-encode it, e.g. "
                                                "ffmpeg -i IN -c:v mjpeg OUT.avi."]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_is_skipped_without_waiting_for_a_writer(videos, tmp_path):
    fifo = tmp_path / "camera.mp4"
    os.mkfifo(fifo)
    result = extract_frames([fifo, videos["mp4"]], tmp_path / "out", progress=False)
    assert [s.path for s in result.skipped] == [str(fifo)] and "a FIFO" in result.skipped[0].reason


def test_frames_larger_than_the_pixel_limit_are_refused(videos, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECAM_MAX_IMAGE_PIXELS", str(W * H - 1))
    with pytest.raises(SourceError, match=r"160×120 pixels exceed the limit of 19199"):
        extract_frames([videos["mp4"]], tmp_path, progress=False)


def test_bad_options_and_a_foreign_frames_json(videos, tmp_path):
    assert_one_error_line(run_cli(videos["mp4"], "--out", tmp_path, "--every", "1", "--fps", "2"),
                          "Give --every or --fps, not both")
    result = run_cli(videos["mp4"], "--out", tmp_path, "--size", "12by3")
    assert result.exit_code == 2 and "expected WxH" in result.output
    (tmp_path / FRAMES_JSON).write_text(json.dumps({"frames": "all of them"}))
    assert_one_error_line(run_cli(videos["mp4"], "--out", tmp_path), "is not an edgecam frames index")
    with pytest.raises(InputError, match="--dedupe is a Hamming distance"):
        FramesOptions(dedupe=65)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=4096),
    st.tuples(st.integers(0, 40000), st.binary(max_size=64)),  # a real video cut short, plus junk
), suffix=st.sampled_from([".mp4", ".avi", ".mkv", ".bin"]))
def test_hostile_video_bytes_never_crash(videos, tmp_path_factory, data, suffix):
    root = tmp_path_factory.mktemp("hostile")
    if isinstance(data, tuple):
        cut, junk = data
        source = videos["mp4" if suffix != ".avi" else "avi"].read_bytes()
        data = source[:cut] + junk
    path = root / f"input{suffix}"
    path.write_bytes(data)
    result = run_cli(path, "--out", root / "out", "--quiet")
    assert "Traceback" not in result.output
    if result.exit_code == 0:  # a readable prefix: its frames are listed and exist
        frames = listed(root / "out")
        assert frames and all((root / "out" / f["file"]).is_file() for f in frames)
    else:
        assert_one_error_line(result, re.escape(str(path)))
