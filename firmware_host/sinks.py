"""Outputs of ``edgecam run``: the :class:`Sink` protocol and its five implementations.

``run()`` opens the sinks the options ask for (:func:`sinks_for`), hands every one the same
:class:`FrameResult` per frame, and closes them in reverse order, whatever happens:

* :class:`TelemetryLog` — one JSON object per line and per frame (a
  :class:`~firmware_host.telemetry.TelemetryRecord`; schema in ``docs/run.md``). A writer thread
  saves the frame (atomically) and then writes, flushes and ``os.fsync``'s the line (every
  ``fsync_every`` records); writing a record first waits for the previous one to be on disk, so
  with the default of 1 a power cut loses at most the last record, possibly as a truncated
  final line that :func:`read_jsonl` skips, while the disk flush overlaps the next inference
  instead of stalling the loop. The log is rotated into segments and old segments (with their
  frames) are deleted to stay under a disk budget.
* :class:`SnapshotSink` — frame + overlay JPEGs on class changes and every N seconds, oldest
  deleted first to stay under a disk budget.
* :class:`VideoSink` — the annotated stream through ``cv2.VideoWriter``; :meth:`VideoSink.close`
  releases the writer, which is what makes an MP4 playable (it writes the index).
* :class:`PreviewSink` — the annotated stream on the MJPEG preview server.
* :class:`WindowSink` — an OpenCV window where a display exists.

A sink is anything with ``open(context) -> where | None``, ``on_frame(result)`` and
``close()``; pass more to ``run(..., sinks=[...])``. The annotated frame
(:attr:`FrameResult.annotated`) is drawn once per frame, and only when a sink asks for it.

Images are BGR uint8 as OpenCV uses them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Tuple, Union, runtime_checkable

import numpy as np

from ._io import atomic_write_bytes, ensure_writable_dir
from .errors import InputError, OutputError
from .options import RunOptions  # the defaults of the sinks' options
from .telemetry import LogLine, RunHeader, TelemetryRecord, read_objects
from .temporal import TemporalState

__all__ = [
    "Sink",
    "RunContext",
    "FrameResult",
    "FrameTimings",
    "sinks_for",
    "PreviewSink",
    "WindowSink",
    "annotate",
    "encode_jpeg",
    "VideoSink",
    "TelemetryLog",
    "SnapshotSink",
    "read_jsonl",
    "LogRecords",
]

PathLike = Union[str, "os.PathLike[str]"]
_MB = 1 << 20


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """BGR uint8 image → JPEG bytes."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OutputError(f"OpenCV could not encode a {image.shape} {image.dtype} image as JPEG.")
    return buf.tobytes()


def _encode(image: np.ndarray, suffix: str) -> bytes:
    import cv2

    if suffix in (".jpg", ".jpeg"):
        return encode_jpeg(image, 92)
    ok, buf = cv2.imencode(suffix, image)
    if not ok:
        raise OutputError(f"OpenCV could not encode an image as {suffix}.")
    return buf.tobytes()


def annotate(
    frame_bgr: np.ndarray,
    heat: np.ndarray,
    label: str,
    confidence: float,
    fps: Optional[float] = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """The annotated frame: heatmap overlay plus label, confidence and fps text.

    Args:
        frame_bgr: ``(H, W, 3)`` BGR uint8.
        heat: heatmap in [0, 1] at any resolution (resized by :func:`firmware_host.cam.overlay`).
        label / confidence / fps: drawn in the top-left corner.

    Returns:
        A new ``(H, W, 3)`` BGR uint8 image.
    """
    import cv2

    from . import cam as _cam

    out = _cam.overlay(frame_bgr, heat, alpha=alpha, bgr=True)  # a new array: the input is never drawn on
    height = out.shape[0]
    scale = max(0.35, min(1.0, height / 480.0))
    thick = 1 if scale < 0.6 else 2
    lines = [f"{label} {confidence * 100:.0f}%"]
    if fps is not None:
        lines.append(f"{fps:.1f} fps")
    font = cv2.FONT_HERSHEY_SIMPLEX
    pad = max(3, int(6 * scale))
    sizes = [cv2.getTextSize(text, font, scale, thick)[0] for text in lines]
    line_h = max(h for _, h in sizes) + 2 * pad
    box_w = max(w for w, _ in sizes) + 2 * pad
    # Darken a box behind the text (50%): readable on any heatmap colour, frame still visible.
    box = out[: line_h * len(lines), :box_w]
    box[...] = box // 2
    for i, text in enumerate(lines):
        y = (i + 1) * line_h - pad
        cv2.putText(out, text, (pad, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


# -- what every sink sees ------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameTimings:
    """Timings of one frame.

    Attributes:
        latency_ms: interpreter time (both calls when the frame was explained again for a
            class that became the shown one on it).
        fps: the displayed frame rate before this frame (an EMA over ~10 frames), or None on
            the first frame.
    """

    latency_ms: float
    fps: Optional[float] = None


@dataclass(frozen=True)
class FrameResult:
    """One explained frame, as every sink (and ``run(on_frame=...)``) receives it.

    Attributes:
        frame: index in the source.
        timestamp: unix seconds when grabbed.
        image: the frame as read, ``(H, W, 3)`` BGR uint8 (never drawn on).
        explanation: the raw :class:`~firmware_host.Explanation` (what is logged).
        state: the smoothed / hysteresis view (what is drawn, counted and snapshotted).
        label: the name of the shown class ``state.class_index``.
        timings: :class:`FrameTimings`.
        name: the file the frame came from (folders and globs), else None.
    """

    frame: int
    timestamp: float
    image: np.ndarray
    explanation: Any
    state: TemporalState
    label: str
    timings: FrameTimings
    name: Optional[str] = None

    @cached_property
    def annotated(self) -> np.ndarray:
        """The frame with heatmap, label, confidence and fps drawn (BGR; drawn once, on first use)."""
        return annotate(self.image, self.state.heat, self.label, self.state.confidence, self.timings.fps)


@dataclass(frozen=True)
class RunContext:
    """What a sink learns when the run starts (:meth:`Sink.open`).

    Attributes:
        classes: the model's class names.
        source_fps: the source's nominal frame rate (0 when unknown).
        title: the model's file name.
        smoothed: True when ``--smooth`` > 0 (the log then records the smoothed probabilities).
        plan: the model's precision plan (metadata ``quantization``), logged with every record.
        header: the run's :class:`~firmware_host.telemetry.RunHeader` (vehicle, model hashes):
            the telemetry log writes it first and tags every record with its vehicle and model.
        notify: prints a warning (stderr by default).
        stop: asks the loop to stop cleanly after this frame (a window's q/Esc).
    """

    classes: Tuple[str, ...]
    source_fps: float = 0.0
    title: str = "model"
    smoothed: bool = False
    plan: Optional[str] = None
    header: Optional[RunHeader] = None
    notify: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    stop: Callable[[], None] = lambda: None


@runtime_checkable
class Sink(Protocol):
    """An output of ``edgecam run``.

    ``open`` is called once before the first frame and returns where the output goes (shown in
    the summary under the sink's ``name``) or None; ``on_frame`` once per explained frame;
    ``close`` once at the end, also after an error or a signal, also when ``open`` failed.
    """

    name: str

    def open(self, context: RunContext) -> Optional[str]: ...

    def on_frame(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


def sinks_for(options) -> Iterator[Sink]:
    """The built-in sinks a :class:`~firmware_host.options.RunOptions` asks for, in opening order.

    A generator: each sink is created (its files too) only when the runner asks for the next
    one, after the source is open, so a wrong ``--source`` leaves no empty outputs behind.
    """
    if options.log is not None:
        yield TelemetryLog(options.log, options.save_frames, options.frame_format, options.fsync_every,
                           options.log_max_mb)
    if options.snapshots is not None:
        yield SnapshotSink(options.snapshots, options.snapshot_every, options.snapshot_max_mb)
    if options.out_video is not None:
        yield VideoSink(options.out_video, options.video_fps)
    if options.preview is not None:
        yield PreviewSink(*options.preview)
    if options.show:
        yield WindowSink()


def _keep_existing(path: Path) -> Optional[Path]:
    """Rename an earlier output to ``<stem>.<its UTC mtime><suffix>`` so a restart never overwrites it."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(path.stat().st_mtime))
    kept, n = path.with_name(f"{path.stem}.{stamp}{path.suffix}"), 1
    while kept.exists():
        kept, n = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}"), n + 1
    os.replace(path, kept)
    return kept


class VideoSink:
    """Annotated video through ``cv2.VideoWriter``, opened at the first frame.

    ``.avi`` uses Motion-JPEG (every frame stands alone: the most robust choice when power can
    be cut); ``.mp4``/``.m4v``/``.mov`` use ``mp4v`` (smaller; playable only after
    :meth:`close`, which the runner guarantees on exit and on SIGINT/SIGTERM). An existing file
    at ``path`` (an earlier run) is renamed ``<stem>.<UTC time><suffix>``, never overwritten.

    Args:
        path: output file; its directory is checked up front.
        fps: frame rate written into the container (``None``: the source's, else 15, set by
            :meth:`open`).
    """

    CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "MJPG"}
    name = "video"

    def __init__(self, path: PathLike, fps: Optional[float] = 15.0) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in self.CODECS:
            raise InputError(
                f"--out-video must end with one of {', '.join(self.CODECS)}. Got: '{self.path}'."
            )
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise InputError(f"Video fps must be positive. Got: {fps}")
        ensure_writable_dir(self.path.parent if str(self.path.parent) else ".")
        self.kept = _keep_existing(self.path)
        self.fps = None if fps is None else float(fps)
        self.frames = 0
        self._writer = None
        self._size: Optional[Tuple[int, int]] = None

    def open(self, context: RunContext) -> str:
        if self.fps is None:
            self.fps = context.source_fps if 0 < context.source_fps <= 240 else 15.0
        return str(self.path)

    def on_frame(self, result: FrameResult) -> None:
        self.write(result.annotated)

    def write(self, image: np.ndarray) -> None:
        """Append one BGR frame; frames of another size are resized to the first one's."""
        import cv2

        if self._writer is None:
            height, width = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*self.CODECS[self.path.suffix.lower()])
            writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not writer.isOpened():
                raise OutputError(
                    f"OpenCV cannot write video '{self.path}' ({self.CODECS[self.path.suffix.lower()]}, "
                    f"{width}x{height}). Try an .avi output (Motion-JPEG is always available)."
                )
            self._writer, self._size = writer, (width, height)
        if image.shape[1::-1] != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finalise the container. Idempotent."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


# -- telemetry ---------------------------------------------------------------------------------


def _dir_size(path: Path) -> int:
    total = 0
    if path.is_dir():
        for root, _, files in os.walk(path):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    pass
    return total


class TelemetryLog:
    """JSONL telemetry, one record per frame, durable line by line, rotated under a budget.

    Layout beside ``path`` (say ``run.jsonl``):

    * ``run.jsonl`` — the current segment (what ``edgecam validate --from-log`` reads); when the
      run has a :class:`~firmware_host.telemetry.RunHeader` (``edgecam run`` always does), every
      segment starts with it (written with the segment's first record);
    * ``run.<SEGMENT>.jsonl`` — older segments after rotation (or an earlier run's log found
      at start, which is never overwritten);
    * ``run_frames/<SEGMENT>/<frame>.jpg`` — frames saved for validation; ``frame_path`` in
      each record is relative to the log's directory.

    Args:
        path: the ``.jsonl`` file.
        save_frames: save every Nth frame (1 = all, 0 = none).
        frame_format: ``jpg`` or ``png`` (lossless; bigger and slower).
        fsync_every: ``os.fsync`` after every N records (1 = each record; power cut loses at
            most one record; each fsync costs a disk flush, measured in ``docs/run.md``).
        max_mb: disk budget for all segments plus their frames (``None``: unlimited). A segment
            is rotated at a quarter of the budget; the oldest segments are deleted beyond it.
        cam_digits: significant digits kept in the logged CAM.
    """

    name = "log"

    def __init__(
        self,
        path: PathLike,
        save_frames: int = RunOptions.save_frames,
        frame_format: str = RunOptions.frame_format,
        fsync_every: int = RunOptions.fsync_every,
        max_mb: Optional[float] = RunOptions.log_max_mb,
        cam_digits: int = 4,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".jsonl":
            raise InputError(f"--log must name a .jsonl file. Got: '{self.path}'.")
        if save_frames < 0 or fsync_every < 1:
            raise InputError(
                f"--save-frames must be >= 0 and --fsync-every >= 1. Got {save_frames}, {fsync_every}."
            )
        if frame_format.lower().lstrip(".") not in ("jpg", "jpeg", "png"):
            raise InputError(f"Frame format must be jpg or png. Got: {frame_format!r}")
        if max_mb is not None and max_mb < 1:
            raise InputError(f"--log-max-mb must be at least 1. Got: {max_mb}")
        self.dir = self.path.parent if str(self.path.parent) else Path(".")
        ensure_writable_dir(self.dir)
        self.save_frames = int(save_frames)
        self.plan: Optional[str] = None  # the model's precision plan, from RunContext
        self.header: Optional[RunHeader] = None  # the run's header, from RunContext
        self.suffix = "." + frame_format.lower().lstrip(".").replace("jpeg", "jpg")
        self.fsync_every = int(fsync_every)
        self.budget = None if max_mb is None else int(max_mb * _MB)
        self.cam_digits = int(cam_digits)
        self.smoothed = False  # log smoothed_probabilities (set by open() when --smooth > 0)
        self.frames_root = self.dir / f"{self.path.stem}_frames"
        self.records = 0
        self._pending = 0
        # One worker writes frames and lines in order, off the inference loop; write() waits
        # for the previous record before handing over the next, so at most one is in flight.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecam-log")
        self._inflight: Optional[Future] = None
        self._fh = None
        self._segments: List[Tuple[str, int]] = []  # rotated (segment id, bytes), oldest first
        self._seq = 0
        self._scan_old_segments()
        self._start_segment()

    # -- segments ------------------------------------------------------------------------------
    def _segment_file(self, sid: str) -> Path:
        return self.dir / f"{self.path.stem}.{sid}.jsonl"

    def _new_sid(self) -> str:
        # UTC start time + a counter: names sort in creation order and are never reused.
        while True:
            self._seq += 1
            sid = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{self._seq:04d}"
            if not (self._segment_file(sid).exists() or (self.frames_root / sid).exists()):
                return sid

    def _scan_old_segments(self) -> None:
        if self.path.exists():
            # An earlier run's log (maybe cut by a power loss): keep it as a rotated segment.
            sid = _segment_of(self.path, self.path.stem) or self._new_sid()
            os.replace(self.path, self._segment_file(sid))
        prefix = f"{self.path.stem}."
        found = []
        for p in self.dir.glob(f"{self.path.stem}.*.jsonl"):
            sid = p.name[len(prefix) : -len(".jsonl")]
            size = p.stat().st_size + _dir_size(self.frames_root / sid)
            found.append((p.stat().st_mtime, sid, size))
        self._segments = [(sid, size) for _, sid, size in sorted(found)]

    def _start_segment(self) -> None:
        self.sid = self._new_sid()
        self.segment_bytes = 0
        try:
            self._fh = open(self.path, "x", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise OutputError(f"Cannot create log '{self.path}': {exc}. Check the --log path.") from exc
        self._frames_dir = self.frames_root / self.sid
        self._header_due = True  # the segment's first line, written with its first record

    def _rotate(self) -> None:
        self._sync()
        self._fh.close()
        os.replace(self.path, self._segment_file(self.sid))
        self._segments.append((self.sid, self.segment_bytes))
        self._start_segment()

    def _enforce_budget(self) -> None:
        if self.budget is None:
            return
        if self.segment_bytes > self.budget // 4:
            self._rotate()
        total = self.segment_bytes + sum(size for _, size in self._segments)
        while total > self.budget and self._segments:
            sid, size = self._segments.pop(0)
            self._segment_file(sid).unlink(missing_ok=True)
            shutil.rmtree(self.frames_root / sid, ignore_errors=True)
            total -= size

    # -- the sink ----------------------------------------------------------------------------
    def open(self, context: RunContext) -> str:
        self.smoothed = context.smoothed
        self.plan = context.plan
        if context.header is not None and self.header is None:
            self.header = context.header
        return str(self.path)

    def on_frame(self, result: FrameResult) -> None:
        """Log the raw explanation, the shown class and (with smoothing) ``s_t``; save the frame."""
        state = result.state
        record = TelemetryRecord.from_explanation(
            result.explanation, frame=result.frame, timestamp=result.timestamp, cam_digits=self.cam_digits,
            shown_index=state.class_index, shown_label=result.label,
            smoothed_probabilities=state.probabilities if self.smoothed else None,
            plan=self.plan,
            vehicle=None if self.header is None else self.header.vehicle,
            model=None if self.header is None else self.header.model,
        )
        self.write_record(record, result.image)

    # -- writing -------------------------------------------------------------------------------
    def wants_frame(self, index: int) -> bool:
        """True when frame ``index`` is one to save (every ``save_frames``-th)."""
        return self.save_frames > 0 and index % self.save_frames == 0

    def write(
        self,
        *,
        frame: int,
        timestamp: float,
        explanation,
        image_bgr: Optional[np.ndarray] = None,
        extra: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """Append the record of one explanation (see :meth:`write_record`).

        Args:
            frame: frame index in the source.
            timestamp: unix seconds when the frame was grabbed.
            explanation: the raw :class:`~firmware_host.Explanation` of this frame.
            image_bgr: the frame as read (saved when :meth:`wants_frame`).
            extra: ``shown_index``, ``shown_label``, ``smoothed_probabilities`` or other fields
                merged into the record.

        Returns:
            The record written, as its JSON object.
        """
        extra = dict(extra or {})
        record = TelemetryRecord.from_explanation(
            explanation, frame=frame, timestamp=timestamp, cam_digits=self.cam_digits,
            shown_index=extra.pop("shown_index", None), shown_label=extra.pop("shown_label", None),
            smoothed_probabilities=extra.pop("smoothed_probabilities", None),
            vehicle=None if self.header is None else self.header.vehicle,
            model=None if self.header is None else self.header.model,
        )
        if extra:
            record = replace(record, extra=extra)
        return self.write_record(record, image_bgr).to_dict()

    def write_record(self, record: TelemetryRecord, image_bgr: Optional[np.ndarray] = None) -> TelemetryRecord:
        """Append one record, and save the frame first when it is one to save.

        Returns:
            The record written (with ``frame_path`` when the frame was saved).
        """
        save = image_bgr is not None and self.wants_frame(record.frame)
        self._wait()  # the previous record (and its frame) is on disk: at most one in flight
        if save:
            rel = Path(self.frames_root.name) / self.sid / f"{int(record.frame):08d}{self.suffix}"
            record = record.with_frame_path(rel.as_posix())
        self._inflight = self._worker.submit(self._persist, record, image_bgr if save else None)
        self.records += 1
        return record

    def _persist(self, record: TelemetryRecord, image_bgr: Optional[np.ndarray]) -> None:
        """Worker thread: frame file (atomic, fsync'd), then the line, flush, fsync."""
        written = 0
        try:
            if image_bgr is not None:
                self._frames_dir.mkdir(parents=True, exist_ok=True)
                data = _encode(image_bgr, self.suffix)
                atomic_write_bytes(self.dir / record.frame_path, data)
                written = len(data)
            line = record.to_json() + "\n"
            if self._header_due and self.header is not None:
                # With the first record, not at open: a run that explains no frame leaves an empty
                # log, which is what "no telemetry" means to the deploy health check.
                line = self.header.to_json() + "\n" + line
            self._header_due = False
            self._fh.write(line)
            self._fh.flush()
            self._pending += 1
            if self._pending >= self.fsync_every:
                self._sync()
        except OSError as exc:
            raise OutputError(f"Writing log '{self.path}' failed: {exc}. Check free space.") from exc
        self.segment_bytes += len(line.encode("utf-8")) + written
        self._enforce_budget()

    def _wait(self) -> None:
        """Block until the record in flight is durable; re-raise its error if it failed."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()

    def sync(self) -> None:
        """Wait until every record written so far is on disk."""
        self._wait()
        self._sync()

    def _sync(self) -> None:
        if self._fh is not None and self._pending:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._pending = 0

    def close(self) -> None:
        """Finish the record in flight, fsync and close. Idempotent."""
        if self._fh is not None:
            try:
                self._wait()
            finally:
                self._worker.shutdown(wait=True)
                self._sync()
                self._fh.close()
                self._fh = None


def _segment_of(path: Path, stem: str) -> Optional[str]:
    """Segment id of an existing log, read from its first ``frame_path`` (None if none)."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rel = json.loads(line).get("frame_path")
                except (ValueError, AttributeError):
                    continue
                if rel:
                    parts = Path(rel).parts
                    if len(parts) >= 3 and parts[0] == f"{stem}_frames":
                        return parts[1]
                    return None
    except OSError:
        return None
    return None


class LogRecords(List[Dict[str, Any]]):
    """Records read by :func:`read_jsonl`; ``truncated`` is True when a cut last line was skipped;
    ``header`` is the log's :class:`~firmware_host.telemetry.RunHeader` (None in older logs)."""

    truncated: bool = False
    header: Optional[RunHeader] = None


def read_jsonl(path: PathLike) -> LogRecords:
    """Read a telemetry log, tolerating a truncated last line (a power cut mid-write).

    The strict reading of :func:`firmware_host.telemetry.read_objects` (the one reader of run
    logs): any broken line but an unterminated last one is an error.

    Args:
        path: the ``.jsonl`` file.

    Returns:
        The records (JSON objects), in file order (``.truncated`` tells whether the last line
        was cut, ``.header`` holds the run header, which is not a record).

    Raises:
        InputError: the file cannot be read, or a line other than the last is not a JSON
            object (the file is corrupt or not a telemetry log).
    """
    records = LogRecords()
    for item in read_objects(path):
        if isinstance(item, LogLine) and RunHeader.is_header(item.value):
            try:
                header = RunHeader.from_dict(item.value, item.line)
            except InputError as exc:
                raise InputError(f"'{path}' line {item.line} is a broken run header: {exc}") from None
            records.header = records.header or header
        elif isinstance(item, LogLine):
            records.append(item.value)
        elif item.reason == "malformed" and item.last:
            records.truncated = True
        elif item.reason == "not_object":
            raise InputError(
                f"'{path}' line {item.line} is {item.detail}; every line of an edgecam log is one "
                "record object. Is this a telemetry log from edgecam run --log?"
            )
        else:
            raise InputError(
                f"'{path}' line {item.line} is not valid JSON ({item.detail}); only the last line "
                "may be cut by a power loss. The file is corrupt."
            )
    return records


# -- snapshots ---------------------------------------------------------------------------------


class SnapshotSink:
    """Frame + overlay JPEG pairs on class changes and every ``every_s`` seconds.

    Files: ``DIR/<UTC time>_<frame>_<label>_<reason>_frame.jpg`` and ``…_overlay.jpg``. The
    oldest pairs (by name, which sorts by time) are deleted to keep ``DIR`` under ``max_mb``.

    Args:
        directory: where snapshots go (created).
        every_s: periodic interval in seconds (0 = only on class changes).
        max_mb: disk budget of the directory's snapshot files.
    """

    name = "snapshots"

    def __init__(self, directory: PathLike, every_s: float = RunOptions.snapshot_every,
                 max_mb: float = RunOptions.snapshot_max_mb) -> None:
        if every_s < 0 or max_mb <= 0:
            raise InputError(
                f"--snapshot-every must be >= 0 and --snapshot-max-mb > 0. Got {every_s}, {max_mb}."
            )
        self.dir = ensure_writable_dir(directory)
        self.every_s = float(every_s)
        self.budget = int(max_mb * _MB)
        self.saved = 0
        self._last = -math.inf
        # Snapshot pairs (base name, bytes of both files), oldest first; earlier runs' count too.
        pairs: Dict[str, int] = {}
        for p in self.dir.glob("*.jpg"):
            for kind in ("_frame.jpg", "_overlay.jpg"):
                if p.name.endswith(kind):
                    base = p.name[: -len(kind)]
                    pairs[base] = pairs.get(base, 0) + p.stat().st_size
        self._pairs: List[Tuple[str, int]] = sorted(pairs.items())
        self._total = sum(pairs.values())

    def open(self, context: RunContext) -> str:
        return str(self.dir)

    def on_frame(self, result: FrameResult) -> None:
        self.maybe_save(frame=result.frame, image_bgr=result.image, annotated_bgr=result.annotated,
                        label=result.label, changed=result.state.changed)

    def maybe_save(
        self, *, frame: int, image_bgr: np.ndarray, annotated_bgr: np.ndarray, label: str, changed: bool, now: Optional[float] = None
    ) -> Optional[str]:
        """Save a pair if the class changed or the interval elapsed; returns the reason or None."""
        now = time.monotonic() if now is None else now
        periodic = self.every_s > 0 and now - self._last >= self.every_s
        if not (changed or periodic):
            return None
        reason = "change" if changed else "periodic"
        self._last = now
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
        safe = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in label)[:40]
        base = f"{stamp}_{int(frame):08d}_{safe}_{reason}"
        size = 0
        for kind, img in (("frame", image_bgr), ("overlay", annotated_bgr)):
            data = encode_jpeg(img, 90)
            atomic_write_bytes(self.dir / f"{base}_{kind}.jpg", data)
            size += len(data)
        self._pairs.append((base, size))
        self._total += size
        self.saved += 1
        while self._total > self.budget and len(self._pairs) > 1:
            old, old_size = self._pairs.pop(0)
            for kind in ("frame", "overlay"):
                (self.dir / f"{old}_{kind}.jpg").unlink(missing_ok=True)
            self._total -= old_size
        return reason

    def close(self) -> None:
        pass


# -- live outputs ------------------------------------------------------------------------------


class PreviewSink:
    """``--preview``: the annotated stream on :class:`~firmware_host.preview.PreviewServer`.

    Args:
        host / port: where to bind (see :func:`firmware_host.preview.parse_bind`).
    """

    name = "preview"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, int(port)
        self.server = None

    def open(self, context: RunContext) -> str:
        from .preview import PreviewServer

        self.server = PreviewServer(self.host, self.port, title=context.title)
        if not self.server.loopback:
            context.notify(
                f"Preview on {self.server.url} is reachable from the network, without "
                "authentication or encryption. Bind 127.0.0.1 and use an SSH tunnel instead."
            )
        return self.server.url

    def on_frame(self, result: FrameResult) -> None:
        self.server.publish(result.annotated)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def _display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink:
    """``--show``: a cv2 window when a display and a GUI-enabled OpenCV exist; q/Esc stops the run."""

    name = "window"
    TITLE = "edgecam"

    def __init__(self) -> None:
        self.ok = False
        self._stop: Callable[[], None] = lambda: None

    def open(self, context: RunContext) -> None:
        self._stop = context.stop
        if not _display_available():
            context.notify("--show: no display (DISPLAY/WAYLAND_DISPLAY unset); running headless.")
            return None
        import cv2

        try:
            cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)
            self.ok = True
        except cv2.error:
            context.notify(
                "--show: this OpenCV has no GUI support (opencv-python-headless); install "
                "opencv-python to get a window. Running headless."
            )
        return None

    def on_frame(self, result: FrameResult) -> None:
        if self.ok and not self.show(result.annotated):
            self._stop()

    def show(self, image: np.ndarray) -> bool:
        """Draw; returns False when the user pressed q/Esc."""
        import cv2

        cv2.imshow(self.TITLE, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        if self.ok:
            import cv2

            cv2.destroyWindow(self.TITLE)
            self.ok = False
