"""The ``edgecam run`` loop: source → explain → smoothing/hysteresis → sinks, with clean stops.

:func:`run` is the whole command as a Python function; ``toolkit/cli/run.py`` only parses
options. Per frame it converts the BGR frame to RGB, calls ``model.explain``, updates the
:class:`~firmware_host.temporal.TemporalFilter`, then feeds the sinks that were asked for
(telemetry log, annotated video, snapshots, live preview, window). On SIGINT/SIGTERM (with
``handle_signals=True``), a set ``stop_event``, ``max_frames`` or the end of the source it
stops, closes every sink (log fsync'd, video finalised) and returns a :class:`RunSummary`.

No TensorFlow: numpy, OpenCV and the interpreter only.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from .errors import EdgecamError, InputError, SourceError
from .sources import FrameSource, SourceSpec, open_source
from .temporal import TemporalFilter, TemporalState

__all__ = ["RunSummary", "FrameResult", "run"]


@dataclass(frozen=True)
class FrameResult:
    """What :func:`run` passes to ``on_frame`` for every processed frame.

    Attributes:
        frame: index in the source.
        timestamp: unix seconds when grabbed.
        explanation: the raw :class:`~firmware_host.Explanation` (logged as is).
        state: the smoothed / hysteresis view (drawn, counted, snapshotted).
        record: the JSONL record written, or ``None`` without ``--log``.
    """

    frame: int
    timestamp: float
    explanation: Any
    state: TemporalState
    record: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class RunSummary:
    """The end-of-run report.

    Attributes:
        frames: frames explained.
        dropped: stale frames a live source dropped because the loop was busy.
        corrupt: frames skipped because they did not decode.
        reconnects: successful reopenings of a lost camera/stream.
        seconds: wall time from the first to the last explained frame.
        fps: ``frames / seconds``.
        latency_p50_ms / latency_p95_ms: model latency (interpreter call) percentiles.
        loop_p50_ms: median wall time of one whole loop iteration (explain + sinks).
        class_histogram: frames per shown (hysteresis) class label.
        class_changes: how often the shown class changed.
        snapshots: snapshot pairs saved.
        stop_reason: ``end``, ``stopped`` (signal / stop_event / window), ``max_frames`` or
            ``source_error``.
        outputs: what was written (``video``, ``log``, ``snapshots``, ``preview``).
    """

    frames: int
    dropped: int
    corrupt: int
    reconnects: int
    seconds: float
    fps: float
    latency_p50_ms: float
    latency_p95_ms: float
    loop_p50_ms: float
    class_histogram: Mapping[str, int]
    class_changes: int
    snapshots: int
    stop_reason: str
    outputs: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {
            name: (dict(value) if isinstance(value, Mapping) else value)
            for name, value in self.__dict__.items()
        }

    def format(self) -> str:
        """Human-readable multi-line summary (what the CLI prints)."""
        hist = ", ".join(f"{label}: {n}" for label, n in self.class_histogram.items()) or "-"
        lines = [
            f"frames {self.frames}  dropped {self.dropped}  corrupt {self.corrupt}  "
            f"reconnects {self.reconnects}  ({self.stop_reason})",
            f"fps {self.fps:.1f}  latency p50 {self.latency_p50_ms:.1f} ms  p95 "
            f"{self.latency_p95_ms:.1f} ms  loop p50 {self.loop_p50_ms:.1f} ms",
            f"classes {hist}  (changes {self.class_changes})",
        ]
        for name, where in self.outputs.items():
            lines.append(f"{name}: {where}")
        return "\n".join(lines)


class _Reservoir:
    """Uniform sample of at most ``size`` values (Vitter's algorithm R), for percentiles of
    runs that last for days without growing memory."""

    def __init__(self, size: int = 20000, seed: int = 0) -> None:
        self.size, self.seen, self.values = size, 0, []  # type: ignore[var-annotated]
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.values[j] = value

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.values, q)) if self.values else 0.0


def _can_select_class(model) -> bool:
    """Whether ``model.explain(..., class_index=k)`` works for any ``k``."""
    meta = getattr(model, "metadata", None)
    if meta is None:
        return bool(getattr(model, "supports_class_selection", False))
    return meta.cam_output in ("all", "selected") or getattr(meta, "class_weights", None) is not None


def _display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class _Window:
    """``--show``: a cv2 window when a display and a GUI-enabled OpenCV exist."""

    NAME = "edgecam"

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.ok = False
        if not _display_available():
            notify("--show: no display (DISPLAY/WAYLAND_DISPLAY unset); running headless.")
            return
        import cv2

        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)
            self.ok = True
        except cv2.error:
            notify(
                "--show: this OpenCV has no GUI support (opencv-python-headless); install "
                "opencv-python to get a window. Running headless."
            )

    def show(self, image: np.ndarray) -> bool:
        """Draw; returns False when the user pressed q/Esc."""
        import cv2

        cv2.imshow(self.NAME, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        if self.ok:
            import cv2

            cv2.destroyWindow(self.NAME)


def _load_model(model, num_threads):
    if hasattr(model, "explain"):
        return model
    from .model import ExplainableModel

    return ExplainableModel(model, num_threads=num_threads)


def run(
    model: Union[str, os.PathLike, Any],
    source: Union[int, str, os.PathLike, SourceSpec, FrameSource],
    *,
    out_video: Optional[Union[str, os.PathLike]] = None,
    video_fps: Optional[float] = None,
    log: Optional[Union[str, os.PathLike]] = None,
    save_frames: int = 0,
    frame_format: str = "jpg",
    fsync_every: int = 1,
    log_max_mb: Optional[float] = None,
    snapshots: Optional[Union[str, os.PathLike]] = None,
    snapshot_every: float = 60.0,
    snapshot_max_mb: float = 100.0,
    preview: Optional[Union[str, Tuple[str, int]]] = None,
    show: bool = False,
    smooth: float = 0.0,
    hysteresis: Union[str, Tuple[float, int]] = (0.0, 1),
    realtime: bool = False,
    loop: bool = False,
    reconnect_attempts: int = 8,
    num_threads: Optional[int] = None,
    max_frames: Optional[int] = None,
    stop_event: Optional[threading.Event] = None,
    handle_signals: bool = False,
    on_frame: Optional[Callable[[FrameResult], None]] = None,
    on_start: Optional[Callable[[Dict[str, str]], None]] = None,
    notify: Optional[Callable[[str], None]] = None,
    source_options: Optional[Mapping[str, Any]] = None,
) -> RunSummary:
    """Explain a camera, video, folder or stream frame by frame.

    Args:
        model: an :class:`~firmware_host.ExplainableModel` (or any object with the same
            ``explain``/``classes``) or the path of a converted ``.tflite``.
        source: see :func:`firmware_host.sources.parse_source`, or an open
            :class:`~firmware_host.sources.FrameSource`.
        out_video: annotated video (``.avi`` Motion-JPEG or ``.mp4``).
        video_fps: frame rate of ``out_video`` (default: the source's, else 15).
        log: JSONL telemetry file (schema in ``docs/run.md``).
        save_frames: save every Nth frame beside the log for ``edgecam validate --from-log``.
        frame_format: ``jpg`` or ``png`` for saved frames.
        fsync_every: fsync the log every N records.
        log_max_mb: disk budget of the log and its frames (rotation).
        snapshots: directory for snapshot pairs (class changes + every ``snapshot_every`` s).
        snapshot_every / snapshot_max_mb: snapshot interval and disk budget.
        preview: ``"HOST:PORT"``/``"PORT"`` or ``(host, port)`` of the MJPEG preview.
        show: open a window when a display exists.
        smooth: EMA weight of the past, ``[0, 1)`` (see :mod:`firmware_host.temporal`).
        hysteresis: ``(margin, frames)`` or ``"MARGIN[:FRAMES]"``.
        realtime: read files at their own frame rate, dropping frames like a live camera.
        loop: restart files and folders at their end.
        reconnect_attempts: reopenings of a lost camera/stream before giving up.
        num_threads: interpreter threads when ``model`` is a path.
        max_frames: stop after this many explained frames.
        stop_event: set it (from any thread) to stop cleanly.
        handle_signals: turn SIGINT/SIGTERM into a clean stop (main thread only); a second
            signal aborts at once (``KeyboardInterrupt``; sinks are still closed).
        on_frame: called with a :class:`FrameResult` after each frame.
        on_start: called once with the outputs (e.g. the preview URL) when the loop starts.
        notify: receives warnings (default: printed to stderr).
        source_options: more :class:`~firmware_host.sources.FrameSource` options.

    Returns:
        A :class:`RunSummary`.

    Raises:
        SourceError: the source cannot be opened, or was lost for good (its ``summary``
            attribute then holds the :class:`RunSummary` of the frames done; every sink is
            closed first).
        OutputError / InputError: bad outputs or options, checked before the first frame.
    """
    import cv2

    from . import sinks as _sinks
    from .preview import PreviewServer, parse_bind
    from .temporal import parse_hysteresis

    notify = notify or (lambda message: print(message, file=sys.stderr, flush=True))
    margin, frames_needed = parse_hysteresis(hysteresis) if isinstance(hysteresis, str) else hysteresis
    filt = TemporalFilter(smooth, margin, frames_needed)
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1. Got: {max_frames}")
    stop = stop_event or threading.Event()
    model = _load_model(model, num_threads)
    classes = tuple(model.classes)
    select = _can_select_class(model)

    closers: List[Callable[[], None]] = []
    outputs: Dict[str, str] = {}
    old_handlers = {}
    try:
        telemetry = video = snaps = server = window = None
        # The source first: a wrong --source must not leave empty logs behind.
        if isinstance(source, FrameSource):
            src = source
        else:
            options = dict(source_options or {})
            options.setdefault("reconnect_attempts", reconnect_attempts)
            src = open_source(source, loop=loop, realtime=realtime, **options)
        closers.append(src.close)
        if log is not None:
            telemetry = _sinks.TelemetryLog(log, save_frames, frame_format, fsync_every, log_max_mb)
            closers.append(telemetry.close)
            outputs["log"] = str(telemetry.path)
        if snapshots is not None:
            snaps = _sinks.SnapshotSink(snapshots, snapshot_every, snapshot_max_mb)
            outputs["snapshots"] = str(snaps.dir)
        if out_video is not None:
            fps = video_fps or (src.fps if 0 < src.fps <= 240 else 15.0)
            video = _sinks.VideoSink(out_video, fps)
            closers.append(video.close)
            outputs["video"] = str(video.path)
        if preview is not None:
            host, port = parse_bind(preview) if isinstance(preview, str) else preview
            server = PreviewServer(host, port, title=Path(str(getattr(model, "path", "model"))).name)
            closers.append(server.close)
            outputs["preview"] = server.url
            if not server.loopback:
                notify(
                    f"Preview on {server.url} is reachable from the network, without "
                    "authentication or encryption. Bind 127.0.0.1 and use an SSH tunnel instead."
                )
        if show:
            window = _Window(notify)
            if window.ok:
                closers.append(window.close)
            else:
                window = None
        if handle_signals and threading.current_thread() is threading.main_thread():

            def on_signal(signum, _frame):
                if stop.is_set():  # a second signal: the user does not want to wait
                    raise KeyboardInterrupt
                stop.set()

            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, on_signal)
        if on_start is not None:
            on_start(dict(outputs))

        latencies, loops = _Reservoir(), _Reservoir()
        shown_hist: Counter = Counter()
        processed = changes = 0
        first = last = None
        fps_now = None
        stop_reason = "stopped"
        draw = video is not None or server is not None or window is not None or snaps is not None
        error: Optional[EdgecamError] = None
        try:
            while not stop.is_set():
                frame = src.read(timeout=0.25)
                if frame is None:
                    if src.ended:
                        stop_reason = "end"
                        break
                    continue
                t0 = time.perf_counter()
                # Same as preprocess.bgr_to_rgb, but contiguous: resizing the reversed-stride
                # view costs OpenCV an extra copy (0.5 ms vs 0.1 ms per 320×240 frame).
                rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
                exp = model.explain(rgb, class_index=filt.shown if select else None)
                latency = float(exp.latency_ms)
                probs, shown, changed = filt.update_probabilities(exp.probabilities)
                if select and shown != exp.class_index:
                    # The shown class switched on this very frame: explain that class instead.
                    exp = model.explain(rgb, class_index=shown)
                    latency += float(exp.latency_ms)
                heat = filt.update_heat(exp.cam, restart=changed)
                state = TemporalState(probs, shown, heat, changed)
                label = classes[shown]
                record = None
                if telemetry is not None:
                    extra = {"shown_index": int(shown), "shown_label": label}
                    if filt.alpha > 0:
                        extra["smoothed_probabilities"] = np.round(probs.astype(np.float64), 6).tolist()
                    record = telemetry.write(
                        frame=frame.index, timestamp=frame.timestamp, explanation=exp,
                        image_bgr=frame.image, extra=extra,
                    )
                if draw:
                    annotated = _sinks.annotate(frame.image, heat, label, state.confidence, fps_now)
                    if video is not None:
                        video.write(annotated)
                    if server is not None:
                        server.publish(annotated)
                    if snaps is not None:
                        snaps.maybe_save(
                            frame=frame.index, image_bgr=frame.image, annotated_bgr=annotated,
                            label=label, changed=changed,
                        )
                    if window is not None and not window.show(annotated):
                        stop.set()
                processed += 1
                changes += int(changed and processed > 1)
                shown_hist[label] += 1
                latencies.add(latency)
                now = time.perf_counter()
                loops.add((now - t0) * 1000.0)
                first = t0 if first is None else first
                if last is not None:
                    # Displayed fps: EMA over ~10 frames of the instantaneous rate.
                    inst = 1.0 / max(now - last, 1e-6)
                    fps_now = inst if fps_now is None else 0.9 * fps_now + 0.1 * inst
                last = now
                if on_frame is not None:
                    on_frame(FrameResult(frame.index, frame.timestamp, exp, state, record))
                if max_frames is not None and processed >= max_frames:
                    stop_reason = "max_frames"
                    break
        except EdgecamError as exc:
            if isinstance(exc, SourceError):
                stop_reason = "source_error"
            error = exc
        stats = src.stats
        seconds = (last - first) if (first is not None and last is not None) else 0.0
        summary = RunSummary(
            frames=processed,
            dropped=stats.dropped,
            corrupt=stats.corrupt,
            reconnects=stats.reconnects,
            seconds=seconds,
            fps=processed / seconds if seconds > 0 else 0.0,
            latency_p50_ms=latencies.percentile(50),
            latency_p95_ms=latencies.percentile(95),
            loop_p50_ms=loops.percentile(50),
            class_histogram=dict(sorted(shown_hist.items(), key=lambda kv: classes.index(kv[0]))),
            class_changes=changes,
            snapshots=snaps.saved if snaps is not None else 0,
            stop_reason=stop_reason,
            outputs=outputs,
        )
    finally:
        # Close in reverse order of opening; every sink is closed even if one fails.
        close_error = None
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:  # pragma: no cover - reported after the others close
                close_error = close_error or exc
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    if error is not None:
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    if close_error is not None:
        raise close_error
    return summary
