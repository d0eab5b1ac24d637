"""Frame sources for ``edgecam run``: cameras, video files, image folders/globs, streams.

Every source is read by one background thread and handed to the inference loop through a
*bounded* buffer, so memory never grows with load:

* **live** sources (camera index, ``/dev/video*``, RTSP/HTTP URLs, GStreamer pipelines, and
  files read with ``realtime=True``) go through a one-frame slot: the newest frame replaces
  an unread one, which is counted in :attr:`SourceStats.dropped`. The loop always explains
  the most recent view of the road, never a backlog.
* **ordered** sources (video files, image folders and globs) go through a small blocking
  queue: every frame is explained, in order, and none is dropped; the reader just waits.

Frames that decode to nothing (``None``, empty, wrong dtype or shape) are skipped and counted
in :attr:`SourceStats.corrupt`. A live source that stops delivering (``read()`` returns
``False`` several times in a row) is released and reopened with exponential backoff; after
``reconnect_attempts`` failed reopenings :meth:`FrameSource.read` raises
:class:`~firmware_host.errors.SourceError`. Opening a source that is not there at start fails
at once (no backoff), so a wrong ``--source`` is reported immediately.

numpy + OpenCV only. Images are OpenCV BGR uint8 ``(H, W, 3)``.
"""

from __future__ import annotations

import glob as _glob
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np

from .errors import InputError, SourceError
from .options import RunOptions
from .imageio import IMAGE_SUFFIXES, filter_images, list_images, read_image

__all__ = [
    "Frame",
    "SourceSpec",
    "SourceStats",
    "FrameSource",
    "parse_source",
    "open_source",
    "IMAGE_EXTENSIONS",
    "read_image",
]

# Image files are listed and read by firmware_host.imageio; these names stay importable from here.
IMAGE_EXTENSIONS = IMAGE_SUFFIXES


_STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")


@dataclass(frozen=True)
class Frame:
    """One frame delivered by a source.

    Attributes:
        index: position in the source (0-based). Live sources number every frame grabbed, so
            dropped frames leave gaps; ordered sources number 0, 1, 2, … without gaps.
        image: BGR uint8 ``(H, W, 3)`` (gray inputs are expanded to three channels).
        timestamp: wall-clock time (unix seconds) when the frame was grabbed.
        name: file the frame came from (folders/globs), else ``None``.
    """

    index: int
    image: np.ndarray
    timestamp: float
    name: Optional[str] = None


@dataclass(frozen=True)
class SourceSpec:
    """What ``--source`` names.

    Attributes:
        kind: ``camera`` (integer index), ``device`` (V4L2 path), ``video`` (file),
            ``folder`` (directory of images), ``glob`` (image pattern), ``stream`` (URL) or
            ``gstreamer`` (pipeline string containing ``!``).
        target: the index (int) or the string to open.
    """

    kind: str
    target: Union[int, str]

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "device", "stream", "gstreamer")


@dataclass(frozen=True)
class SourceStats:
    """Counters of a source. ``grabbed`` counts every good frame read, delivered or dropped."""

    grabbed: int = 0
    delivered: int = 0
    dropped: int = 0
    corrupt: int = 0
    reconnects: int = 0


def parse_source(source: Union[int, str, os.PathLike]) -> SourceSpec:
    """Classify a ``--source`` value.

    Rules, in order: an int or an all-digit string is a camera index; a string with ``!`` is a
    GStreamer pipeline; ``scheme://…`` with a stream scheme is a URL; ``/dev/video*`` is a V4L2
    device; an existing directory is a folder; a string with ``* ? [`` is a glob; an existing
    file is a video file.

    Raises:
        SourceError: the value names nothing that exists.
    """
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return SourceSpec("camera", int(source))
    text = os.fspath(source).strip()
    if re.fullmatch(r"\d+", text):
        return SourceSpec("camera", int(text))
    if "!" in text:
        return SourceSpec("gstreamer", text)
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
    if scheme and scheme.group(1).lower() in _STREAM_SCHEMES:
        return SourceSpec("stream", text)
    if text.startswith("/dev/video"):
        return SourceSpec("device", text)
    path = Path(text)
    if path.is_dir():
        return SourceSpec("folder", text)
    if any(ch in text for ch in "*?["):
        return SourceSpec("glob", text)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return SourceSpec("glob", text)  # a single image is a one-element glob
        return SourceSpec("video", text)
    raise SourceError(
        f"--source {text!r} is not a camera index, /dev/video* device, URL "
        f"({'/'.join(_STREAM_SCHEMES)}), GStreamer pipeline (with '!'), existing video file, "
        "image folder or glob. Check the path, or list cameras with: ls /dev/video*"
    )


# -- readers: one blocking read() each; the thread in FrameSource does the rest --------------


class _EndOfSource(Exception):
    """The source has no more frames (end of file/folder)."""


class _ReadFailure(Exception):
    """The device/stream did not deliver a frame (unplugged, network down)."""


class _CaptureReader:
    """Wraps ``cv2.VideoCapture`` (or anything with ``read()/release()/isOpened()``)."""

    def __init__(self, spec: SourceSpec, factory: Callable, open_timeout_ms: int) -> None:
        self.spec = spec
        self._factory = factory
        self._timeout = open_timeout_ms
        self.cap = None
        self.fps = 0.0

    def open(self) -> None:
        cap = self._factory(self.spec, self._timeout)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(_open_hint(self.spec))
        self.cap = cap
        try:
            import cv2

            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        except Exception:  # fake captures in tests, or a backend without the property
            self.fps = 0.0

    def read(self) -> Tuple[Optional[np.ndarray], Optional[str]]:
        ok, image = self.cap.read()
        if not ok:
            if self.spec.kind == "video":
                raise _EndOfSource
            raise _ReadFailure
        return image, None

    def rewind(self) -> None:
        self.close()
        self.open()

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class _ImageListReader:
    """Images of a folder (sorted by name) or a glob (sorted), read with :func:`read_image`."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.files: List[str] = []
        self.pos = 0
        self.fps = 0.0

    def open(self) -> None:
        if self.spec.kind == "folder":
            folder = Path(self.spec.target)
            if not folder.is_dir():
                raise SourceError(
                    f"Image folder '{folder}' does not exist (any more). Check the --source path."
                )
            files = [str(p) for p in list_images(folder, recursive=False)]
        else:
            files = filter_images(sorted(_glob.glob(str(self.spec.target))))
        if not files:
            raise SourceError(
                f"--source {self.spec.target!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
                "Point it at a folder of images or a pattern such as 'frames/*.jpg'."
            )
        self.files, self.pos = files, 0

    def read(self) -> Tuple[Optional[np.ndarray], Optional[str]]:
        if self.pos >= len(self.files):
            raise _EndOfSource
        name = self.files[self.pos]
        self.pos += 1
        if self.spec.kind == "folder" and not Path(self.spec.target).is_dir():
            raise _ReadFailure  # the whole folder went away (unmounted card, deleted)
        if not os.path.exists(name):
            return None, name  # one file vanished: counted as corrupt, the run goes on
        return read_image(name), name

    def rewind(self) -> None:
        self.open()

    def close(self) -> None:
        pass


def _default_capture(spec: SourceSpec, open_timeout_ms: int):
    """Open ``spec`` with the right OpenCV backend."""
    import cv2

    if spec.kind == "gstreamer":
        return cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
    if spec.kind == "device":
        return cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
    if spec.kind == "stream":
        # Bounded waits: a dead RTSP server must not hang the grabber for ffmpeg's 30 s default.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, open_timeout_ms]
        return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
    cap = cv2.VideoCapture(spec.target)
    if spec.kind == "camera":
        # Keep the driver's own queue short as well, or "newest frame" would be seconds old.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


def _open_hint(spec: SourceSpec) -> str:
    hints = {
        "camera": f"Camera {spec.target} cannot be opened. Check it is plugged in and free "
        "(ls /dev/video*; another program may hold it) and that this user is in group 'video'.",
        "device": f"V4L2 device '{spec.target}' cannot be opened. Check it exists and that this "
        "user is in group 'video'.",
        "video": f"Video file '{spec.target}' cannot be opened by OpenCV (unknown container or "
        "codec, or not a video). Re-encode it, e.g. ffmpeg -i IN -c:v mjpeg OUT.avi",
        "stream": f"Stream '{spec.target}' cannot be opened. Check the URL, credentials and "
        "network, e.g. with: ffprobe URL",
        "gstreamer": f"GStreamer pipeline cannot be opened: {spec.target!r}. This OpenCV may be "
        "built without GStreamer (see cv2.getBuildInformation()); test the pipeline with gst-launch-1.0.",
    }
    return hints.get(spec.kind, f"Source {spec.target!r} cannot be opened.")


def _valid(image) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.size > 0
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3)))
    )


class FrameSource:
    """A source read by a background thread into a bounded buffer (see the module docstring).

    Use :func:`open_source`. Iterate with :meth:`read` until it returns ``None`` and
    :attr:`ended` is true; always :meth:`close` (or use it as a context manager).

    Args:
        spec: what to open.
        live: newest-frame policy (drop stale frames) instead of ordered, lossless reading.
        loop: restart files/folders at their end (demos, soak tests).
        realtime: pace a file at its own frame rate (implies ``live``).
        reconnect_attempts: reopenings tried after a live source stops delivering.
        backoff: ``(first, maximum)`` seconds between reopenings; doubled after each failure.
        failures_before_reconnect: consecutive failed reads that count as "gone".
        capture_factory: ``f(spec, open_timeout_ms) -> capture`` (tests inject fakes).
        queue_size: buffer length of ordered sources.
        clock: ``clock(index) -> unix seconds``, the timestamp of frame ``index`` (default: the
            wall-clock time when it was grabbed). Replays and simulations give recorded times.
    """

    def __init__(
        self,
        spec: SourceSpec,
        *,
        live: Optional[bool] = None,
        loop: bool = False,
        realtime: bool = False,
        reconnect_attempts: int = RunOptions.reconnect_attempts,
        backoff: Tuple[float, float] = (0.5, 10.0),
        failures_before_reconnect: int = 5,
        capture_factory: Optional[Callable] = None,
        open_timeout_ms: int = 10000,
        queue_size: int = 4,
        clock: Optional[Callable[[int], float]] = None,
    ) -> None:
        if reconnect_attempts < 0 or backoff[0] <= 0 or backoff[1] < backoff[0]:
            raise InputError(
                f"reconnect_attempts must be >= 0 and backoff (first, max) positive with "
                f"first <= max. Got {reconnect_attempts}, {backoff}."
            )
        self.spec = spec
        self.live = spec.live or realtime if live is None else bool(live)
        self.loop = loop
        self.realtime = realtime
        self.clock = clock
        self._attempts = reconnect_attempts
        self._backoff = backoff
        self._fail_limit = max(1, failures_before_reconnect)
        if spec.kind in ("folder", "glob"):
            self._reader = _ImageListReader(spec)
        else:
            self._reader = _CaptureReader(spec, capture_factory or _default_capture, open_timeout_ms)
        self._reader.open()  # fail now, loudly, if the source is not there at all
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._slot: Optional[Frame] = None  # live: the one newest frame
        self._queue: "queue.Queue[Frame]" = queue.Queue(maxsize=max(1, queue_size))
        self._done = False
        self._error: Optional[BaseException] = None
        self._counts = {"grabbed": 0, "delivered": 0, "dropped": 0, "corrupt": 0, "reconnects": 0}
        self._thread = threading.Thread(target=self._run, name=f"edgecam-source-{spec.kind}", daemon=True)
        self._thread.start()

    # -- public ----------------------------------------------------------------------------
    @property
    def fps(self) -> float:
        """Nominal frame rate reported by the source (0 when unknown)."""
        return self._reader.fps

    @property
    def stats(self) -> SourceStats:
        with self._cond:
            return SourceStats(**self._counts)

    @property
    def ended(self) -> bool:
        """True once every frame has been delivered (end of file/folder, or closed)."""
        with self._cond:
            return self._done and self._slot is None and self._queue.empty()

    def read(self, timeout: Optional[float] = 0.5) -> Optional[Frame]:
        """Next frame, or ``None`` on timeout or at the end (check :attr:`ended`).

        Raises:
            SourceError: the source is gone and could not be reopened.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                frame = self._take_locked()
                if frame is not None:
                    self._counts["delivered"] += 1
                    return frame
                if self._error is not None:
                    raise self._error
                if self._done:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        """Stop the reader thread and release the device. Idempotent."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._reader.close()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the reader thread -----------------------------------------------------------------
    def _take_locked(self) -> Optional[Frame]:
        if self.live:
            frame, self._slot = self._slot, None
            return frame
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def _deliver(self, frame: Frame) -> None:
        if self.live:
            with self._cond:
                if self._slot is not None:
                    self._counts["dropped"] += 1  # the loop was busy: the stale frame goes
                self._slot = frame
                self._cond.notify_all()
            return
        while not self._stop.is_set():  # ordered: wait for room, never drop, never grow
            try:
                self._queue.put(frame, timeout=0.1)
            except queue.Full:
                continue
            with self._cond:
                self._cond.notify_all()
            return

    def _run(self) -> None:
        index = 0
        failures = 0
        period = 1.0 / self._reader.fps if (self.realtime and self._reader.fps > 0) else 0.0
        next_due = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    image, name = self._reader.read()
                except _EndOfSource:
                    if not self.loop:
                        break
                    self._reader.rewind()
                    continue
                except _ReadFailure:
                    failures += 1
                    if failures >= self._fail_limit:
                        self._reconnect()
                        failures = 0
                    else:
                        self._stop.wait(0.01)
                    continue
                failures = 0
                if not _valid(image):
                    with self._cond:
                        self._counts["corrupt"] += 1
                    continue
                if image.ndim == 2 or image.shape[-1] == 1:
                    image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
                with self._cond:
                    self._counts["grabbed"] += 1
                stamp = time.time() if self.clock is None else float(self.clock(index))
                self._deliver(Frame(index, image, stamp, name))
                index += 1
                if period:
                    next_due += period
                    self._stop.wait(max(0.0, next_due - time.monotonic()))
        except SourceError as exc:
            with self._cond:
                self._error = exc
        except Exception as exc:  # a backend bug must surface in the loop, not die silently
            with self._cond:
                self._error = SourceError(f"Reading {self.spec.kind} {self.spec.target!r} failed: {exc!r}")
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _reconnect(self) -> None:
        """Release and reopen with exponential backoff; raise SourceError when it stays gone."""
        self._reader.close()
        delay, last = self._backoff[0], None
        for _ in range(self._attempts):
            if self._stop.wait(delay):
                return
            try:
                self._reader.open()
            except SourceError as exc:
                last = exc
                delay = min(delay * 2.0, self._backoff[1])
                continue
            with self._cond:
                self._counts["reconnects"] += 1
            return
        raise SourceError(
            f"{self.spec.kind.capitalize()} {self.spec.target!r} stopped delivering frames and "
            f"{self._attempts} reconnection attempts with backoff failed"
            f"{f' ({last})' if last else ''}. Check the cable/network; raise --reconnect-attempts "
            "to wait longer."
        )


def open_source(source: Union[int, str, os.PathLike, SourceSpec], **options) -> FrameSource:
    """Parse ``source`` (see :func:`parse_source`) and open it as a :class:`FrameSource`.

    Args:
        source: camera index, device path, file, folder, glob, URL or GStreamer pipeline.
        **options: passed to :class:`FrameSource`.

    Raises:
        SourceError: the source does not exist or cannot be opened.
    """
    spec = source if isinstance(source, SourceSpec) else parse_source(source)
    return FrameSource(spec, **options)
