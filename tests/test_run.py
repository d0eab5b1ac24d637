"""``edgecam run`` end to end: real videos through the real model, real files opened by OpenCV."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests._run_helpers import TF_BLOCKED_CLI, python, read_video, subprocess_env, write_video
from firmware_host import ExplainableModel, cam
from firmware_host.errors import InputError, SourceError
from firmware_host.preprocess import bgr_to_rgb
from firmware_host.runner import RunSummary, run
from firmware_host.sinks import read_jsonl
from firmware_host.temporal import TemporalFilter, parse_hysteresis


@pytest.fixture(scope="module")
def model_path(tiny_fog_model):
    return tiny_fog_model


@pytest.fixture(scope="module")
def model(model_path):
    return ExplainableModel(model_path)


def test_video_end_to_end_matches_independent_explanations(tmp_path, model):
    video = write_video(tmp_path / "in.avi", 24)
    summary = run(model, video, out_video=tmp_path / "out" / "annotated.avi",
                  log=tmp_path / "out" / "run.jsonl", save_frames=2)

    assert isinstance(summary, RunSummary)
    assert (summary.frames, summary.dropped, summary.corrupt, summary.stop_reason) == (24, 0, 0, "end")
    assert sum(summary.class_histogram.values()) == 24
    assert summary.latency_p50_ms <= summary.latency_p95_ms

    inputs = read_video(video)
    annotated = read_video(tmp_path / "out" / "annotated.avi")
    assert len(inputs) == 24 and len(annotated) == 24
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "out" / "annotated.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)  # the source's frame rate
    cap.release()
    assert annotated[0].shape == inputs[0].shape
    # The overlay changed the pixels (heatmap + text), it is not a copy of the input.
    assert np.abs(annotated[5].astype(int) - inputs[5].astype(int)).mean() > 5

    records = read_jsonl(tmp_path / "out" / "run.jsonl")
    assert not records.truncated
    assert [r["frame"] for r in records] == list(range(24))
    for rec, frame in zip(records, inputs):
        expected = model.explain(bgr_to_rgb(frame), class_index=rec["class_index"])
        np.testing.assert_allclose(rec["probabilities"], expected.probabilities, atol=2e-6)
        assert rec["predicted_index"] == int(np.argmax(expected.probabilities))
        assert rec["label"] == model.classes[rec["class_index"]]
        got_cam = np.asarray(rec["cam"])
        assert got_cam.shape == expected.cam.shape == model.feature_map_size
        np.testing.assert_allclose(got_cam, expected.cam, rtol=1e-3, atol=1e-7)
        assert tuple(rec["peak"]) == cam.peak(expected.cam)
        assert rec["latency_ms"] > 0 and isinstance(rec["timestamp"], float)
        if rec["frame"] % 2 == 0:
            import cv2

            saved = cv2.imread(str(tmp_path / "out" / rec["frame_path"]))
            assert saved.shape == frame.shape
            assert np.abs(saved.astype(int) - frame.astype(int)).mean() < 4  # JPEG round trip
        else:
            assert "frame_path" not in rec


def test_cli_with_tensorflow_blocked_runs_end_to_end(tmp_path, model_path):
    video = write_video(tmp_path / "in.avi", 12)
    out = tmp_path / "o.mp4"
    log = tmp_path / "log.jsonl"
    proc = subprocess.run(
        [python(), "-c", TF_BLOCKED_CLI, "run", str(model_path), "--source", str(video),
         "--out-video", str(out), "--log", str(log), "--save-frames", "1", "--smooth", "0.5",
         "--hysteresis", "0.1:2", "--json"],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "LEAKED: []" in proc.stderr
    (line,) = proc.stdout.splitlines()  # one line of JSON, for scripts
    summary = json.loads(line)
    assert summary["frames"] == 12 and summary["stop_reason"] == "end"
    assert len(read_video(out)) == 12
    records = read_jsonl(log)
    assert len(records) == 12
    assert all((tmp_path / r["frame_path"]).is_file() for r in records)
    assert all(len(r["smoothed_probabilities"]) == 4 for r in records)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_leaves_playable_video_and_valid_log(tmp_path, model_path, sig):
    video = write_video(tmp_path / "in.avi", 30)
    out, log = tmp_path / "o.mp4", tmp_path / "log.jsonl"
    port = free_port()
    proc = subprocess.Popen(
        [python(), "-m", "toolkit", "run", str(model_path), "--source", str(video), "--loop",
         "--out-video", str(out), "--log", str(log), "--preview", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_text().count("\n") >= 40:  # looping: well past one pass
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        # The live preview of the CLI, fetched by a real HTTP client while the run goes on.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/latest.jpg", timeout=10) as resp:
            jpeg = resp.read()
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        import cv2

        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (64, 80, 3)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "(stopped)" in stdout and f"preview: http://127.0.0.1:{port}/" in stderr
    records = read_jsonl(log)
    assert not records.truncated and len(records) >= 40
    # Frame indices go on across loops; the run wrote one video frame per record.
    assert [r["frame"] for r in records] == list(range(len(records)))
    frames = read_video(out)
    assert len(frames) == len(records)
    assert frames[0].shape == (64, 80, 3)


def test_source_lost_for_good_reports_cleanly_and_closes_outputs(tmp_path, model):
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2

    for i in range(40):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((24, 24, 3), i * 5, np.uint8))
    seen = []

    def on_frame(result):
        seen.append(result.frame)
        if result.frame == 4:  # the card is pulled: the whole folder goes away
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()

    log = tmp_path / "log.jsonl"
    with pytest.raises(SourceError, match="stopped delivering frames and 2 reconnection attempts") as info:
        run(model, folder, log=log, out_video=tmp_path / "o.avi", on_frame=on_frame,
            reconnect_attempts=2, source_options={"backoff": (0.01, 0.02)})
    summary = info.value.summary
    assert summary.stop_reason == "source_error" and summary.frames == len(seen) >= 5
    assert len(read_jsonl(log)) == summary.frames
    assert len(read_video(tmp_path / "o.avi")) == summary.frames


def test_files_deleted_mid_run_are_skipped_and_counted(tmp_path, model):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((24, 24, 3), i * 9, np.uint8))
    (folder / "005.png").write_bytes(b"not a png")  # corrupt from the start

    def on_frame(result):
        if result.frame == 0:
            for name in ("008.png", "009.png"):
                (folder / name).unlink()

    summary = run(model, folder, on_frame=on_frame, source_options={"queue_size": 1})
    # 12 files: 005 corrupt; 008/009 deleted after the reader had queued at most 3 frames.
    assert summary.corrupt == 3 and summary.frames == 9 and summary.stop_reason == "end"


def test_max_frames_and_stop_event(tmp_path, model):
    video = write_video(tmp_path / "in.avi", 10)
    assert run(model, video, loop=True, max_frames=15).frames == 15
    stop = threading.Event()

    def on_frame(result):
        if result.frame == 3:
            stop.set()

    summary = run(model, video, stop_event=stop, on_frame=on_frame)
    assert summary.stop_reason == "stopped" and summary.frames == 4


def test_hysteresis_run_explains_the_shown_class(tmp_path, model):
    video = write_video(tmp_path / "in.avi", 16)
    results = []
    summary = run(model, video, smooth=0.7, hysteresis=(0.2, 3), on_frame=results.append,
                  snapshots=tmp_path / "snaps", snapshot_every=0)
    # One snapshot pair at the start and one per change of the shown class, nothing else.
    changes = [r.frame for r in results if r.state.changed]
    assert changes[0] == 0 and summary.class_changes == len(changes) - 1
    files = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert len(files) == 2 * len(changes) and summary.snapshots == len(changes)
    assert all(any(f"_{c:08d}_" in f for f in files) for c in changes)
    for r in results:
        # Logged/explained class is the class on screen; its CAM is that class's map.
        assert r.explanation.class_index == r.state.class_index
        np.testing.assert_allclose(r.state.probabilities.sum(), 1.0, atol=1e-5)


def test_bad_options_fail_before_any_work(tmp_path, model):
    video = write_video(tmp_path / "in.avi", 3)
    with pytest.raises(InputError, match=r"--log must name a \.jsonl file"):
        run(model, video, log=tmp_path / "log.txt")
    with pytest.raises(InputError, match="--out-video must end with one of"):
        run(model, video, out_video=tmp_path / "o.gif")
    with pytest.raises(InputError, match=r"--smooth ALPHA must be in \[0, 1\)"):
        run(model, video, smooth=1.0)
    with pytest.raises(SourceError, match="is not a camera index"):
        run(model, tmp_path / "missing.avi")


# -- smoothing and hysteresis: hand-computed sequences -------------------------------------------


def test_ema_of_probabilities_is_the_documented_recursion():
    f = TemporalFilter(alpha=0.5)
    s0, c0, ch0 = f.update_probabilities([0.8, 0.2])
    s1, c1, _ = f.update_probabilities([0.2, 0.8])
    s2, c2, ch2 = f.update_probabilities([0.2, 0.8])
    np.testing.assert_allclose(s0, [0.8, 0.2])
    np.testing.assert_allclose(s1, [0.5, 0.5])          # 0.5*0.8 + 0.5*0.2
    np.testing.assert_allclose(s2, [0.35, 0.65])        # 0.5*0.5 + 0.5*0.2
    assert (c0, ch0, c1, c2, ch2) == (0, True, 0, 1, True)


def test_hysteresis_needs_margin_for_consecutive_frames():
    f = TemporalFilter(alpha=0.0, margin=0.1, frames=2)
    shown = [f.update_probabilities(p)[1] for p in [
        [0.6, 0.4, 0.0],   # start: class 0
        [0.3, 0.7, 0.0],   # 1 leads by 0.4: challenger count 1
        [0.6, 0.4, 0.0],   # 0 back: count reset
        [0.3, 0.7, 0.0],   # count 1
        [0.3, 0.7, 0.0],   # count 2: switch to 1
        [0.48, 0.52, 0.0], # 1 leads 0 by 0.04 only, and is shown: stays
        [0.52, 0.48, 0.0], # 0 leads by 0.04 < margin: stays 1
        [0.1, 0.3, 0.6],   # 2 challenges
        [0.5, 0.1, 0.4],   # 0 leads now: a different challenger restarts the count
        [0.5, 0.1, 0.4],   # 0 twice: switch
    ]]
    assert shown == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0]


def test_heat_ema_restarts_on_class_change():
    f = TemporalFilter(alpha=0.5)
    a = np.array([[0.0, 2.0], [0.0, 0.0]], np.float32)
    b = np.array([[0.0, 0.0], [0.0, 4.0]], np.float32)
    np.testing.assert_allclose(f.update_heat(a, restart=True), [[0, 1], [0, 0]])
    np.testing.assert_allclose(f.update_heat(b, restart=False), [[0, 0.5], [0, 0.5]])
    np.testing.assert_allclose(f.update_heat(b, restart=True), [[0, 0], [0, 1]])


@pytest.mark.parametrize("text, expected", [("0.1:3", (0.1, 3)), ("0", (0.0, 1)), ("0.25:1", (0.25, 1))])
def test_parse_hysteresis(text, expected):
    assert parse_hysteresis(text) == expected


@pytest.mark.parametrize("text", ["x", "0.1:2:3", "-0.1", "0.1:0"])
def test_parse_hysteresis_rejects(text):
    with pytest.raises(InputError, match="--hysteresis"):
        parse_hysteresis(text)


def test_show_without_a_display_runs_headless(tmp_path, model, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    messages = []
    summary = run(model, write_video(tmp_path / "in.avi", 3), show=True, notify=messages.append)
    assert summary.frames == 3
    assert messages == ["--show: no display (DISPLAY/WAYLAND_DISPLAY unset); running headless."]


def test_cli_reports_a_missing_source_in_one_line(tmp_path, model_path):
    from click.testing import CliRunner

    from toolkit.cli import cli

    result = CliRunner().invoke(cli, ["run", str(model_path), "--source", str(tmp_path / "none.avi"),
                                      "--log", str(tmp_path / "log.jsonl")])
    assert result.exit_code == 1
    assert "Error: --source" in result.output and "is not a camera index" in result.output
    assert not (tmp_path / "log.jsonl").exists()  # nothing written for a run that never started


def test_a_nan_frame_does_not_poison_the_averages():
    f = TemporalFilter(alpha=0.5)
    f.update(np.array([0.9, 0.1]), np.ones((2, 2)))
    state = f.update(np.array([np.nan, np.nan]), np.full((2, 2), np.nan))
    assert np.all(np.isfinite(state.probabilities)) and np.all(np.isfinite(state.heat))
    np.testing.assert_allclose(state.probabilities, [0.45, 0.05])


class FakeCamera:
    """A network camera on loopback: the MJPEG preview server fed with moving frames."""

    def __init__(self, port: int = 0):
        from firmware_host.preview import PreviewServer

        from tests._run_helpers import frame_pattern

        self.server = PreviewServer("127.0.0.1", port)
        self.port = self.server.port
        self._stop = threading.Event()

        def feed():
            i = 0
            while not self._stop.is_set():
                self.server.publish(frame_pattern(i, (48, 64)))
                i += 1
                self._stop.wait(0.02)

        self._thread = threading.Thread(target=feed, daemon=True)
        self._thread.start()

    def unplug(self):
        self._stop.set()
        self._thread.join()
        self.server.close()


def test_network_stream_that_drops_is_reconnected(tmp_path, model):
    camera = FakeCamera()
    url = f"http://127.0.0.1:{camera.port}/stream.mjpg"
    state = {"camera": camera, "dropped_at": None}
    stop = threading.Event()

    def on_frame(result):
        if state["dropped_at"] is None and result.frame >= 5:
            state["dropped_at"] = result.frame
            state["camera"].unplug()  # the stream ends mid-run …

            def back():  # … and the camera is back a moment later, on the same address
                time.sleep(0.3)
                state["camera"] = FakeCamera(camera.port)

            threading.Thread(target=back, daemon=True).start()
        elif state["dropped_at"] is not None and result.frame >= state["dropped_at"] + 5:
            stop.set()

    summary = run(model, url, log=tmp_path / "log.jsonl", on_frame=on_frame, stop_event=stop,
                  source_options={"backoff": (0.1, 0.4)}, reconnect_attempts=10)
    state["camera"].unplug()
    assert summary.stop_reason == "stopped" and summary.reconnects == 1
    records = read_jsonl(tmp_path / "log.jsonl")
    frames = [r["frame"] for r in records]
    assert len(records) == summary.frames and frames == sorted(set(frames))  # live: gaps = drops
    assert frames[-1] >= state["dropped_at"] + 5  # frames kept coming after the reconnection


def test_network_stream_gone_for_good_is_reported(tmp_path, model):
    camera = FakeCamera()
    url = f"http://127.0.0.1:{camera.port}/stream.mjpg"

    def on_frame(result):
        if result.frame == 3:
            camera.unplug()

    with pytest.raises(SourceError, match=r"Stream 'http://127\.0\.0\.1:\d+/stream\.mjpg' stopped delivering frames and 3 reconnection"):
        run(model, url, on_frame=on_frame, reconnect_attempts=3, source_options={"backoff": (0.05, 0.1)})
