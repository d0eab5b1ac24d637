"""Real network cameras on 127.0.0.1: an RTSP stream and an HTTP MJPEG stream, with faults.

* **RTSP**: GStreamer's RTSP server (gst-rtsp-server through Debian's python3-gi, run with the
  *system* Python: ``tests/streams/rtsp_server.py``) serves a Motion-JPEG video as RTP/JPEG at
  10 fps; ``edgecam run --source rtsp://127.0.0.1:PORT/cam`` reads it through OpenCV's FFmpeg.
* **MJPEG over HTTP**: edgecam's own ``--preview`` server, fed by an ``edgecam run --realtime
  --loop`` of the same video, is the camera; a second ``edgecam run`` reads
  ``http://127.0.0.1:PORT/stream.mjpg``.

Fault injection: the server is killed (SIGKILL) mid-stream. While it is down a probe socket on
its port records the runner's reopening attempts (it closes each connection, as a camera that
is booting would), so the backoff is observed from outside: attempts 1, 2, 4 s apart (docs/run.md:
0.5 s doubling to 10 s). Then the server comes back and the run must continue with one reconnect,
the outage visible as a gap in the log's timestamps, and the log and video sinks holding the same
frames. If it never comes back, the run gives up after ``--reconnect-attempts`` with exit code 1
and a message naming the source.

Timing checks are lower bounds that hold by construction (the runner cannot grab a frame while
the server is down; it must wait at least the documented backoff), plus generous upper bounds.
Skips with the reason where GStreamer's RTSP server or OpenCV's FFmpeg backend is missing
(``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "data" / "tiny_fog.tflite"
SERVER = REPO / "tests" / "streams" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
FPS = 10
BACKOFF = (0.5, 10.0)  # docs/run.md: first wait, maximum

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(300)]

_GST_PROBE = """
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("filesrc", "avidemux", "jpegdec", "videoconvert", "jpegenc", "identity", "rtpjpegpay")
           if Gst.ElementFactory.find(e) is None]
print(" ".join(missing) or "ok")
"""


def _ffmpeg_missing():
    import cv2

    return None if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG) else "this OpenCV has no FFmpeg backend"


@pytest.fixture(scope="module")
def gst_rtsp():
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} (the system Python with python3-gi) is missing")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", _GST_PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0 or probe.stdout.strip() != "ok":
        pytest.skip("GStreamer's RTSP server is not usable (apt install python3-gi gir1.2-gst-rtsp-server-1.0 "
                    f"gstreamer1.0-plugins-base gstreamer1.0-plugins-good): {(probe.stdout + probe.stderr).strip()[-200:]}")
    if _ffmpeg_missing():
        pytest.skip(_ffmpeg_missing())


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 60 s, 10 fps, 160×120 Motion-JPEG .avi of the test image (brightness cycling, numbered)."""
    import cv2

    path = tmp_path_factory.mktemp("camera") / "camera.avi"
    base = cv2.resize(cv2.imread(str(REPO / "tests" / "data" / "tiny_fog_input.png")), (160, 120))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    for i in range(60 * FPS):
        frame = np.clip(base.astype(int) + (i % 40) * 3 - 60, 0, 255).astype(np.uint8)
        cv2.putText(frame, str(i), (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        writer.write(frame)
    writer.release()
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Server:
    """A camera process that can be killed and started again on the same port."""

    def __init__(self, argv, port: int) -> None:
        self.argv, self.port, self.proc = list(argv), port, None

    def start(self) -> "Server":
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=REPO, stdin=subprocess.DEVNULL)
        _wait_port(self.port, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


class BackoffProbe:
    """Listens on a dead camera's port and records when the runner tries to reconnect.

    Each connection is closed at once (the camera is not serving yet), so every reopening
    attempt fails fast and the next one follows after the runner's backoff.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.times = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.times.append(time.monotonic())
            conn.close()

    def close(self) -> list:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        return self.times


def _rtsp_server(video: Path) -> Server:
    port = _free_port()
    return Server([SYSTEM_PYTHON, str(SERVER), str(port), str(video)], port)


def _preview_camera(video: Path) -> Server:
    port = _free_port()
    return Server([sys.executable, "-m", "toolkit", "run", str(MODEL), "--source", str(video), "--realtime",
                   "--loop", "--preview", f"127.0.0.1:{port}"], port)


def _reader(url: str, tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "toolkit", "run", str(MODEL), "--source", url, "--log",
                             str(tmp_path / "run.jsonl"), "--out-video", str(tmp_path / "run.avi"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            stdin=subprocess.DEVNULL)


def _records(log: Path) -> list:
    if not log.exists():
        return []
    # The run is still writing: only lines that end in a newline are complete records.
    complete = log.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line and not line.startswith('{"header"')]


def _wait_records(log: Path, n: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(_records(log)) < n:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): {proc.communicate()}")
        assert time.monotonic() < deadline, f"fewer than {n} records in {timeout} s"
        time.sleep(0.2)


def _video_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def _check_sinks(tmp_path: Path, started: float, ended: float) -> list:
    """Every log line parses, frames and timestamps increase, the video has one frame per record."""
    records = _records(tmp_path / "run.jsonl")
    frames = [r["frame"] for r in records]
    stamps = [r["timestamp"] for r in records]
    assert frames == sorted(set(frames)), "frame indices must strictly increase"
    assert stamps == sorted(stamps) and started <= stamps[0] and stamps[-1] <= ended
    assert all(np.asarray(r["cam"]).shape == (16, 16) for r in records)
    assert _video_frames(tmp_path / "run.avi") == len(records)
    return records


def _outage(server: Server, seconds: float):
    """Kill the server, probe its port for ``seconds``, start it again; returns (attempt times, down, up)."""
    down = time.time()
    server.kill()
    probe = BackoffProbe(server.port)
    time.sleep(seconds)
    attempts = probe.close()
    server.start()
    return attempts, down, time.time()


def _check_backoff(attempts: list) -> None:
    """Reopenings 1, 2, 4 … s apart (the wait doubles after each failed attempt), never sooner."""
    assert len(attempts) >= 3, f"only {len(attempts)} reconnection attempts seen"
    gaps = np.diff(attempts)
    for i, gap in enumerate(gaps):
        expected = min(BACKOFF[0] * 2 ** (i + 1), BACKOFF[1])
        assert expected - 0.05 <= gap <= expected + 2.0, f"attempt gaps {np.round(gaps, 2)} s"


def _check_gap(records: list, down: float, up: float) -> None:
    """One gap in the log covers the outage; frames on both sides of it."""
    stamps = np.array([r["timestamp"] for r in records])
    before, after = stamps[stamps < down], stamps[stamps > up]
    assert len(before) >= 10 and len(after) >= 5
    assert not np.any((stamps > down + 0.5) & (stamps < up)), "frames logged while the camera was down"
    gap = after[0] - before[-1]
    assert gap >= up - down - 0.5


def _finish(proc: subprocess.Popen, timeout: float = 120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# ----------------------------------------------------------------------------- RTSP
def test_rtsp_frames_timestamps_and_sinks(gst_rtsp, video, tmp_path):
    server = _rtsp_server(video).start()
    try:
        started = time.time()
        code, out, err = _finish(_reader(f"rtsp://127.0.0.1:{server.port}/cam", tmp_path, "--max-frames", "25"))
        ended = time.time()
    finally:
        server.kill()
    assert code == 0, out + err
    assert "frames 25" in out and "reconnects 0" in out and "(max_frames)" in out
    records = _check_sinks(tmp_path, started, ended)
    assert len(records) == 25
    # Live policy: the frame index counts grabbed frames; the count of skipped indices is what the
    # summary reports as dropped.
    dropped = int(out.split("dropped ")[1].split()[0])
    assert records[-1]["frame"] + 1 - len(records) == dropped


def test_rtsp_live_source_drops_stale_frames_when_the_loop_is_slow(gst_rtsp, video, tmp_path):
    """docs/run.md: a one-frame slot; a slow loop explains the newest frame, the rest are dropped."""
    from firmware_host.runner import run

    server = _rtsp_server(video).start()
    seen = []
    try:
        summary = run(str(MODEL), f"rtsp://127.0.0.1:{server.port}/cam", max_frames=6, log=str(tmp_path / "run.jsonl"),
                      handle_signals=False, on_frame=lambda result: (seen.append(result.frame), time.sleep(0.35)))
    finally:
        server.kill()
    frames = [r["frame"] for r in _records(tmp_path / "run.jsonl")]
    assert frames == seen and len(frames) == 6
    skipped = sum(b - a - 1 for a, b in zip(frames, frames[1:]))
    # 0.35 s per frame against a 10 fps camera: at least two frames replaced per loop after the first.
    assert skipped >= 2 * 4 and summary.dropped >= skipped
    assert summary.reconnects == 0


def _restart_mid_stream(server: Server, url: str, tmp_path: Path, frames: int, before: int) -> None:
    """Read ``frames`` frames; after ``before`` of them the camera is down for 8 s, then back."""
    server.start()
    try:
        started = time.time()
        reader = _reader(url, tmp_path, "--max-frames", str(frames))
        _wait_records(tmp_path / "run.jsonl", before, reader)
        attempts, down, up = _outage(server, 8.0)
        code, out, err = _finish(reader)
        ended = time.time()
    finally:
        server.kill()
    assert code == 0, out + err
    assert f"frames {frames}" in out and "reconnects 1" in out
    _check_backoff(attempts)
    _check_gap(_check_sinks(tmp_path, started, ended), down, up)


def test_rtsp_server_restart_reconnects_with_backoff_and_logs_the_gap(gst_rtsp, video, tmp_path):
    server = _rtsp_server(video)
    _restart_mid_stream(server, f"rtsp://127.0.0.1:{server.port}/cam", tmp_path, 45, 15)


def test_rtsp_gives_up_after_reconnect_attempts(gst_rtsp, video, tmp_path):
    server = _rtsp_server(video).start()
    url = f"rtsp://127.0.0.1:{server.port}/cam"
    try:
        started = time.time()
        reader = _reader(url, tmp_path, "--reconnect-attempts", "2")
        _wait_records(tmp_path / "run.jsonl", 10, reader)
    finally:
        server.kill()
    code, out, err = _finish(reader)
    ended = time.time()
    assert code == 1, out + err
    assert f"Stream '{url}' stopped delivering frames and 2 reconnection attempts with backoff failed" in err
    assert "(source_error)" in out and "reconnects 0" in out  # the summary of what was done
    records = _check_sinks(tmp_path, started, ended)
    assert len(records) >= 10


# ----------------------------------------------------------------------------- HTTP MJPEG
def test_mjpeg_preview_as_camera_restart_reconnects_and_gives_up(video, tmp_path):
    if _ffmpeg_missing():
        pytest.skip(_ffmpeg_missing())
    camera = _preview_camera(video)
    url = f"http://127.0.0.1:{camera.port}/stream.mjpg"
    _restart_mid_stream(camera, url, tmp_path, 40, 12)

    # The camera goes away for good: one reopening, then a clear error and exit code 1.
    again = tmp_path / "again"
    again.mkdir()
    camera.start()
    try:
        reader = _reader(url, again, "--reconnect-attempts", "1")
        _wait_records(again / "run.jsonl", 5, reader)
    finally:
        camera.kill()
    code, out, err = _finish(reader)
    assert code == 1, out + err
    assert f"Stream '{url}' stopped delivering frames and 1 reconnection attempts with backoff failed" in err
    assert _video_frames(again / "run.avi") == len(_records(again / "run.jsonl")) >= 5
