"""Sinks of ``edgecam run``: durable JSONL with rotation under a budget, snapshots, video."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests._run_helpers import FakeExplanation, frame_pattern, read_video
from firmware_host import cam
from firmware_host.errors import InputError
from firmware_host.sinks import SnapshotSink, TelemetryLog, VideoSink, annotate, encode_jpeg, read_jsonl


def explanation(i: int) -> FakeExplanation:
    rng = np.random.default_rng(i)
    p = rng.dirichlet(np.ones(4)).astype(np.float32)
    c = int(np.argmax(p))
    return FakeExplanation(p, c, c, f"class{c}", rng.random((5, 7)).astype(np.float32) * 1e-3)


def test_record_schema_and_values(tmp_path):
    log = TelemetryLog(tmp_path / "run.jsonl", save_frames=1, frame_format="png")
    exp = explanation(0)
    image = frame_pattern(0, (24, 32))
    rec = log.write(frame=7, timestamp=1700000000.25, explanation=exp, image_bgr=image, extra={"shown_index": 1})
    log.close()
    (line,) = (tmp_path / "run.jsonl").read_text().splitlines()
    assert json.loads(line) == rec
    assert rec["frame"] == 7 and rec["timestamp"] == 1700000000.25
    assert rec["class_index"] == exp.class_index and rec["shown_index"] == 1
    np.testing.assert_allclose(rec["probabilities"], exp.probabilities, atol=1e-6)
    # The CAM keeps 4 significant digits even when its values are tiny.
    np.testing.assert_allclose(rec["cam"], exp.cam, rtol=1e-3)
    assert rec["peak"] == list(cam.peak(exp.cam))
    import cv2

    saved = cv2.imread(str(tmp_path / rec["frame_path"]))
    np.testing.assert_array_equal(saved, image)  # PNG: lossless


def test_reader_tolerates_a_cut_last_line_only(tmp_path):
    log = TelemetryLog(tmp_path / "run.jsonl")
    for i in range(3):
        log.write(frame=i, timestamp=float(i), explanation=explanation(i))
    log.close()
    path = tmp_path / "run.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[:-25])  # power cut in the middle of the last record
    records = read_jsonl(path)
    assert [r["frame"] for r in records] == [0, 1] and records.truncated
    lines = data.decode().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:30] + "\n" + lines[2] + "\n")
    with pytest.raises(InputError, match="line 2 is not valid JSON.*only the last line"):
        read_jsonl(path)


def test_at_most_the_last_record_is_in_flight(tmp_path):
    path = tmp_path / "run.jsonl"
    log = TelemetryLog(path, fsync_every=1, save_frames=1)
    for i in range(4):
        log.write(frame=i, timestamp=float(i), explanation=explanation(i), image_bgr=frame_pattern(i, (24, 32)))
        # When write(i) returns, every earlier record and its frame are already on disk.
        records = read_jsonl(path)
        assert len(records) >= i
        assert all((tmp_path / r["frame_path"]).is_file() for r in records)
    log.sync()
    assert len(read_jsonl(path)) == 4
    log._fh.close()  # the process dies without close(): nothing is lost
    assert [r["frame"] for r in read_jsonl(path)] == [0, 1, 2, 3]


def test_a_failing_disk_surfaces_as_output_error(tmp_path):
    from firmware_host.errors import OutputError

    log = TelemetryLog(tmp_path / "run.jsonl")
    log._fh.close()  # the card went read-only / away under the writer
    log._fh = open(os.devnull, "r")
    log.write(frame=0, timestamp=0.0, explanation=explanation(0))
    with pytest.raises(OutputError, match="Writing log .* failed.*Check free space"):
        log.write(frame=1, timestamp=1.0, explanation=explanation(1))
    log.close()


def test_rotation_keeps_the_log_and_frames_under_the_budget(tmp_path):
    path = tmp_path / "run.jsonl"
    log = TelemetryLog(path, save_frames=1, max_mb=1)
    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)  # ~30 KB JPEGs
    for i in range(80):
        log.write(frame=i, timestamp=float(i), explanation=explanation(i), image_bgr=noise)
    log.close()
    total = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert total <= (1 << 20) * 1.3  # the budget, plus at most the record being written
    segments = sorted(tmp_path.glob("run.*.jsonl"))
    assert 1 <= len(segments) <= 4
    frames = [r["frame"] for seg in segments + [path] for r in read_jsonl(seg)]
    assert frames == list(range(frames[0], 80)) and frames[0] > 0  # oldest deleted, rest in order
    records = [r for seg in segments + [path] for r in read_jsonl(seg)]
    assert all((tmp_path / r["frame_path"]).is_file() for r in records)
    # Deleted segments took their frames along: only folders of kept records remain.
    kept = {Path(r["frame_path"]).parts[1] for r in records}
    assert {p.name for p in (tmp_path / "run_frames").iterdir()} == kept


def test_an_earlier_log_is_kept_not_overwritten(tmp_path):
    path = tmp_path / "run.jsonl"
    first = TelemetryLog(path, save_frames=1)
    first.write(frame=0, timestamp=0.0, explanation=explanation(0), image_bgr=frame_pattern(0, (24, 32)))
    first.close()
    second = TelemetryLog(path)
    second.write(frame=0, timestamp=1.0, explanation=explanation(1))
    second.close()
    (old,) = tmp_path.glob("run.*.jsonl")
    (rec,) = read_jsonl(old)
    assert rec["timestamp"] == 0.0 and (tmp_path / rec["frame_path"]).is_file()
    assert old.name == f"run.{Path(rec['frame_path']).parts[1]}.jsonl"
    assert [r["timestamp"] for r in read_jsonl(path)] == [1.0]


def test_log_options_are_checked(tmp_path):
    with pytest.raises(InputError, match="--save-frames must be >= 0 and --fsync-every >= 1"):
        TelemetryLog(tmp_path / "a.jsonl", fsync_every=0)
    with pytest.raises(InputError, match="--log-max-mb must be at least 1"):
        TelemetryLog(tmp_path / "a.jsonl", max_mb=0.5)


def test_snapshots_on_change_and_interval_with_budget(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    one = len(encode_jpeg(noise, 90))
    snaps = SnapshotSink(tmp_path / "snaps", every_s=10.0, max_mb=5 * one / (1 << 20))  # 2 pairs fit
    reasons = [
        snaps.maybe_save(frame=i, image_bgr=noise, annotated_bgr=noise, label="dense fog",
                         changed=changed, now=now)
        for i, (changed, now) in enumerate([(True, 0.0), (False, 5.0), (False, 10.0), (True, 11.0), (False, 15.0)])
    ]
    assert reasons == ["change", None, "periodic", "change", None]
    files = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert all("dense-fog" in name for name in files)
    # Three pairs were saved; the oldest went to stay under the budget.
    assert [f.split("_", 1)[1] for f in files] == [
        "00000002_dense-fog_periodic_frame.jpg", "00000002_dense-fog_periodic_overlay.jpg",
        "00000003_dense-fog_change_frame.jpg", "00000003_dense-fog_change_overlay.jpg",
    ]
    assert snaps.saved == 3


def test_mp4_is_playable_after_close(tmp_path):
    sink = VideoSink(tmp_path / "o.mp4", fps=12)
    for i in range(9):
        sink.write(annotate(frame_pattern(i, (48, 64)), np.eye(3, dtype=np.float32), "clear", 0.91, 12.0))
    sink.close()
    sink.close()  # idempotent
    frames = read_video(tmp_path / "o.mp4")
    assert len(frames) == 9 and frames[0].shape == (48, 64, 3)


def test_an_earlier_video_is_kept(tmp_path):
    for run_no in range(2):
        sink = VideoSink(tmp_path / "o.avi", fps=5)
        for i in range(3 + run_no):
            sink.write(frame_pattern(i, (24, 32)))
        sink.close()
    (old,) = tmp_path.glob("o.*.avi")
    assert sink.kept == old
    assert len(read_video(old)) == 3 and len(read_video(tmp_path / "o.avi")) == 4


def test_annotate_draws_on_a_copy():
    frame = frame_pattern(3, (48, 64))
    before = frame.copy()
    out = annotate(frame, np.zeros((3, 3), np.float32), "light", 0.5, None)
    np.testing.assert_array_equal(frame, before)
    assert out.shape == frame.shape and out.dtype == np.uint8 and not np.array_equal(out, frame)


def test_non_finite_values_are_logged_as_null(tmp_path):
    log = TelemetryLog(tmp_path / "run.jsonl")
    bad = FakeExplanation(np.array([0.5, np.nan, 0.5, 0], np.float32), 1, 1, "class1",
                          np.array([[np.inf, 1.0], [0.0, 2.0]], np.float32))
    rec = log.write(frame=0, timestamp=0.0, explanation=bad)
    log.close()
    (back,) = read_jsonl(tmp_path / "run.jsonl")
    assert back == rec and rec["probabilities"][1] is None and rec["confidence"] is None
    assert rec["cam"][0][0] is None
