"""Frame sources: classification, newest-frame policy, corrupt frames, reconnection with backoff."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests._run_helpers import write_video
from firmware_host.errors import SourceError
from firmware_host.sources import FrameSource, SourceSpec, open_source, parse_source


class FakeCapture:
    """A camera: ``script`` says what each read returns (``"ok"``, ``"fail"``, ``"none"``,
    ``"shape"``); after the script it keeps returning ``tail``."""

    def __init__(self, script, tail="ok", delay=0.0, opened=True):
        self.script = list(script)
        self.tail = tail
        self.delay = delay
        self.opened = opened
        self.n = 0
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        what = self.script.pop(0) if self.script else self.tail
        self.n += 1
        if what == "fail":
            return False, None
        if what == "none":
            return True, None
        if what == "shape":
            return True, np.zeros((4, 4, 5), np.uint8)
        return True, np.full((8, 8, 3), self.n % 256, np.uint8)

    def release(self):
        self.released = True

    def get(self, prop):
        return 0.0


def drain(source, limit=1000, timeout=0.5):
    frames = []
    while len(frames) < limit:
        frame = source.read(timeout=timeout)
        if frame is None:
            if source.ended:
                break
            continue
        frames.append(frame)
    return frames


@pytest.mark.parametrize("value, kind", [
    (0, "camera"), ("2", "camera"), ("/dev/video0", "device"),
    ("rtsp://cam.local:554/stream", "stream"), ("http://10.0.0.2/mjpg", "stream"),
    ("v4l2src ! videoconvert ! appsink", "gstreamer"), ("frames/*.jpg", "glob"),
])
def test_parse_source_kinds(value, kind):
    assert parse_source(value).kind == kind


def test_parse_source_files_and_folders(tmp_path):
    video = write_video(tmp_path / "v.avi", 2)
    assert parse_source(video) == SourceSpec("video", str(video))
    assert parse_source(tmp_path).kind == "folder"
    (tmp_path / "a.png").write_bytes(b"")
    assert parse_source(tmp_path / "a.png").kind == "glob"
    with pytest.raises(SourceError, match="is not a camera index.*Check the path"):
        parse_source(tmp_path / "nope.mp4")


def test_ordered_video_is_lossless_and_in_order(tmp_path):
    video = write_video(tmp_path / "v.avi", 15)
    with open_source(video, queue_size=2) as src:
        assert not src.live
        frames = []
        for _ in range(15):
            frames.append(src.read(timeout=5))
            time.sleep(0.005)  # a slow consumer: the reader waits, nothing is dropped
        assert src.read(timeout=5) is None and src.ended
    assert [f.index for f in frames] == list(range(15))
    assert src.stats.dropped == 0 and src.stats.delivered == 15


def test_live_source_keeps_only_the_newest_frame():
    cap = FakeCapture([], delay=0.001)
    src = FrameSource(SourceSpec("camera", 0), capture_factory=lambda spec, t: cap)
    try:
        time.sleep(0.2)  # the loop is "busy": the grabber keeps replacing the one slot
        first = src.read(timeout=2)
        time.sleep(0.1)
        second = src.read(timeout=2)
    finally:
        src.close()
    stats = src.stats
    assert stats.dropped > 10
    assert second.index > first.index + 1        # stale frames were skipped, not queued
    assert 0 <= stats.grabbed - stats.delivered - stats.dropped <= 1  # at most one still in the slot
    assert cap.released


def test_corrupt_frames_are_skipped_and_counted():
    cap = FakeCapture(["ok", "none", "shape", "ok", "none", "ok"], tail="fail")
    src = FrameSource(SourceSpec("camera", 0), live=False, reconnect_attempts=0,
                      capture_factory=lambda spec, t: cap, failures_before_reconnect=1)
    frames = []
    with pytest.raises(SourceError, match="stopped delivering frames and 0 reconnection attempts"):
        while True:
            frame = src.read(timeout=2)
            if frame is not None:
                frames.append(frame)
    src.close()
    assert len(frames) == 3 and src.stats.corrupt == 3
    assert [f.index for f in frames] == [0, 1, 2]


def test_dropped_camera_is_reconnected_with_backoff():
    opened = []

    def factory(spec, timeout):
        # First device: 3 frames then unplugged. Second open: refused (still booting).
        # Third open: works again for 4 frames, then the camera is gone for good.
        n = len(opened)
        caps = [FakeCapture(["ok"] * 3, tail="fail"), FakeCapture([], opened=False),
                FakeCapture(["ok"] * 4, tail="fail")]
        cap = caps[n] if n < len(caps) else FakeCapture([], opened=False)
        opened.append(time.monotonic())
        return cap

    src = FrameSource(SourceSpec("camera", 0), live=False, reconnect_attempts=3, backoff=(0.05, 1.0),
                      failures_before_reconnect=2, capture_factory=factory)
    frames = []
    with pytest.raises(SourceError):
        while True:
            frame = src.read(timeout=3)
            if frame is not None:
                frames.append(frame)
    src.close()
    assert len(frames) == 7
    assert src.stats.reconnects == 1
    # Backoff doubled between the two reopenings after the first loss: 0.05 s then 0.1 s.
    assert opened[2] - opened[1] >= 0.1


def test_missing_device_fails_at_once_with_a_hint():
    with pytest.raises(SourceError, match="Camera 7 cannot be opened.*group 'video'"):
        FrameSource(SourceSpec("camera", 7), capture_factory=lambda s, t: FakeCapture([], opened=False))


def test_close_stops_a_blocked_ordered_reader(tmp_path):
    video = write_video(tmp_path / "v.avi", 30)
    src = open_source(video, queue_size=1)
    assert src.read(timeout=5) is not None
    src.close()  # the reader is blocked on a full queue: close must still return
    assert not src._thread.is_alive()


def test_realtime_file_behaves_like_a_camera(tmp_path):
    video = write_video(tmp_path / "v.avi", 20, fps=200.0)
    with open_source(video, realtime=True) as src:
        assert src.live
        time.sleep(0.3)  # 20 frames at 200 fps arrive while nobody reads
        frames = drain(src)
    assert len(frames) < 20 and src.stats.dropped == 20 - len(frames)
    assert frames[-1].index == 19


def test_glob_source_reads_sorted_images(tmp_path):
    import cv2

    for i in (3, 1, 2):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((5, 6, 3), i, np.uint8))
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((5, 6), 9, np.uint8))
    with open_source(str(tmp_path / "img*.png")) as src:
        frames = drain(src)
    assert [f.image[0, 0, 0] for f in frames] == [1, 2, 3]
    assert frames[0].name.endswith("img1.png")
    with open_source(str(tmp_path / "gray.png")) as src:
        (frame,) = drain(src)
    assert frame.image.shape == (5, 6, 3)


def test_looping_folder_restarts(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((4, 4, 3), i, np.uint8))
    with open_source(tmp_path, loop=True) as src:
        frames = [src.read(timeout=5) for _ in range(7)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert [f.index for f in frames] == list(range(7))


def test_stop_interrupts_backoff_quickly():
    src = FrameSource(SourceSpec("camera", 0), reconnect_attempts=5, backoff=(5.0, 10.0),
                      failures_before_reconnect=1,
                      capture_factory=lambda s, t: FakeCapture([], tail="fail"))
    time.sleep(0.1)  # now sleeping 5 s before the first reopening
    closer = threading.Thread(target=src.close)
    closer.start()
    closer.join(timeout=3)
    assert not closer.is_alive()
