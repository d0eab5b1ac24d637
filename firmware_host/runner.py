"""The ``edgecam run`` loop: read → explain → smooth → fan out to the sinks → account.

:func:`run` is the whole command as a Python function; ``toolkit/cli/run.py`` only parses
options (:class:`~firmware_host.options.RunOptions`). Per frame the loop converts the BGR frame
to RGB (the one colour conversion of the frame), calls ``model.explain``, updates the
:class:`~firmware_host.temporal.TemporalFilter` and hands one
:class:`~firmware_host.sinks.FrameResult` to every :class:`~firmware_host.sinks.Sink`
(telemetry log, snapshots, annotated video, live preview, window, and any passed in). The
source, the sinks and the signal handlers live in one :class:`contextlib.ExitStack`: on
SIGINT/SIGTERM (with ``handle_signals=True``), a set ``stop_event``, ``max_frames``, the end of
the source or an error, everything is closed in reverse order (log fsync'd, video finalised)
and a :class:`RunSummary` is returned.

No TensorFlow: numpy, OpenCV and the interpreter only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

from .errors import EdgecamError, SourceError
from .options import RunOptions
from .sinks import FrameResult, FrameTimings, RunContext, Sink, SnapshotSink, sinks_for
from .sources import Frame, FrameSource, SourceSpec, SourceStats, open_source
from .telemetry import RunHeader
from .temporal import TemporalFilter, TemporalState

__all__ = ["RunSummary", "FrameResult", "RunOptions", "run"]


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


class _Accounts:
    """What the summary counts: frames, class changes and histogram, latencies, displayed fps."""

    def __init__(self, classes: Tuple[str, ...]) -> None:
        self.classes = classes
        self.latencies, self.loops = _Reservoir(), _Reservoir()
        self.histogram: Counter = Counter()
        self.frames = self.changes = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.fps: Optional[float] = None

    def add(self, result: FrameResult, started: float) -> None:
        now = time.perf_counter()
        self.frames += 1
        self.changes += int(result.state.changed and self.frames > 1)
        self.histogram[result.label] += 1
        self.latencies.add(result.timings.latency_ms)
        self.loops.add((now - started) * 1000.0)
        self.first = started if self.first is None else self.first
        if self.last is not None:
            # Displayed fps: EMA over ~10 frames of the instantaneous rate.
            inst = 1.0 / max(now - self.last, 1e-6)
            self.fps = inst if self.fps is None else 0.9 * self.fps + 0.1 * inst
        self.last = now

    def summary(self, stats: SourceStats, stop_reason: str, snapshots: int, outputs: Mapping[str, str]) -> RunSummary:
        seconds = (self.last - self.first) if (self.first is not None and self.last is not None) else 0.0
        order = {label: i for i, label in enumerate(self.classes)}
        return RunSummary(
            frames=self.frames,
            dropped=stats.dropped,
            corrupt=stats.corrupt,
            reconnects=stats.reconnects,
            seconds=seconds,
            fps=self.frames / seconds if seconds > 0 else 0.0,
            latency_p50_ms=self.latencies.percentile(50),
            latency_p95_ms=self.latencies.percentile(95),
            loop_p50_ms=self.loops.percentile(50),
            class_histogram=dict(sorted(self.histogram.items(), key=lambda kv: order[kv[0]])),
            class_changes=self.changes,
            snapshots=snapshots,
            stop_reason=stop_reason,
            outputs=dict(outputs),
        )


def _can_select_class(model) -> bool:
    """Whether ``model.explain(..., class_index=k)`` works for any ``k``."""
    meta = getattr(model, "metadata", None)
    if meta is None:
        return bool(getattr(model, "supports_class_selection", False))
    return meta.cam_output in ("all", "selected") or getattr(meta, "class_weights", None) is not None


class _Explainer:
    """Explain and smooth one frame: the model is asked for the class on screen, so the logged
    CAM, the drawn heatmap and the label always belong to the same class."""

    def __init__(self, model, options: RunOptions) -> None:
        self.model = model
        self.classes = tuple(model.classes)
        self.filter = TemporalFilter(options.smooth, *options.hysteresis)
        self.select = _can_select_class(model)

    def __call__(self, frame: Frame, fps: Optional[float]) -> FrameResult:
        import cv2

        # The frame's one colour conversion. Contiguous, unlike a [..., ::-1] view, which makes
        # OpenCV's resize copy it again (0.5 ms vs 0.1 ms per 320×240 frame).
        rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
        filt = self.filter
        exp = self.model.explain(rgb, class_index=filt.shown if self.select else None)
        latency = float(exp.latency_ms)
        probs, shown, changed = filt.update_probabilities(exp.probabilities)
        if self.select and shown != exp.class_index:
            # The shown class switched on this very frame: explain that class instead.
            exp = self.model.explain(rgb, class_index=shown)
            latency += float(exp.latency_ms)
        state = TemporalState(probs, shown, filt.update_heat(exp.cam, restart=changed), changed)
        return FrameResult(frame.index, frame.timestamp, frame.image, exp, state, self.classes[shown],
                           FrameTimings(latency, fps), frame.name)


def _loop(src: FrameSource, explain: _Explainer, sinks: List[Sink], accounts: _Accounts,
          stop: threading.Event, max_frames: Optional[int],
          on_frame: Optional[Callable[[FrameResult], None]]) -> Tuple[str, Optional[EdgecamError]]:
    """Read, explain, smooth, fan out, account — until the end, a stop or an error.

    Returns:
        ``(stop_reason, error)``: the error that ended the run (with ``source_error`` when the
        source was lost), or None.
    """
    try:
        while not stop.is_set():
            frame = src.read(timeout=0.25)
            if frame is None:
                if src.ended:
                    return "end", None
                continue
            started = time.perf_counter()
            result = explain(frame, accounts.fps)
            for sink in sinks:
                sink.on_frame(result)
            accounts.add(result, started)
            if on_frame is not None:
                on_frame(result)
            if max_frames is not None and accounts.frames >= max_frames:
                return "max_frames", None
    except SourceError as exc:
        return "source_error", exc
    except EdgecamError as exc:
        return "stopped", exc
    return "stopped", None


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event):
    """SIGINT/SIGTERM set ``stop``; a second one aborts at once (``KeyboardInterrupt``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, _frame):
        if stop.is_set():  # a second signal: the user does not want to wait
            raise KeyboardInterrupt
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _load_model(model, threads: Optional[int]):
    if hasattr(model, "explain"):
        return model
    from .model import ExplainableModel

    return ExplainableModel(model, num_threads=threads)


def _open_sinks(stack: contextlib.ExitStack, sinks: Iterable[Sink], context: RunContext) -> Tuple[List[Sink], Dict[str, str]]:
    """Create and open each sink, its ``close`` on ``stack`` first; returns them and the outputs."""
    opened: List[Sink] = []
    outputs: Dict[str, str] = {}
    for sink in sinks:
        stack.callback(sink.close)
        where = sink.open(context)
        opened.append(sink)
        if where is not None:
            outputs[getattr(sink, "name", type(sink).__name__)] = where
    return opened, outputs


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    model: Union[str, os.PathLike, Any],
    source: Union[int, str, os.PathLike, SourceSpec, FrameSource],
    options: Union[RunOptions, Mapping[str, Any], None] = None,
    *,
    sinks: Iterable[Sink] = (),
    stop_event: Optional[threading.Event] = None,
    handle_signals: bool = False,
    on_frame: Optional[Callable[[FrameResult], None]] = None,
    on_start: Optional[Callable[[Dict[str, str]], None]] = None,
    notify: Optional[Callable[[str], None]] = None,
    source_options: Optional[Mapping[str, Any]] = None,
    **overrides: Any,
) -> RunSummary:
    """Explain a camera, video, folder or stream frame by frame.

    Args:
        model: an :class:`~firmware_host.ExplainableModel` (or any object with the same
            ``explain``/``classes``) or the path of a converted ``.tflite``/``.onnx``.
        source: see :func:`firmware_host.sources.parse_source`, or an open
            :class:`~firmware_host.sources.FrameSource`.
        options: the :class:`~firmware_host.options.RunOptions`, or a mapping of its field names
            (default: all defaults).
        sinks: more :class:`~firmware_host.sinks.Sink` objects, opened after the built-in ones.
        stop_event: set it (from any thread) to stop cleanly.
        handle_signals: turn SIGINT/SIGTERM into a clean stop (main thread only); a second
            signal aborts at once (``KeyboardInterrupt``; sinks are still closed).
        on_frame: called with the :class:`~firmware_host.sinks.FrameResult` of each frame,
            after the sinks.
        on_start: called once with the outputs (e.g. the preview URL) when the loop starts.
        notify: receives warnings (default: printed to stderr).
        source_options: more :class:`~firmware_host.sources.FrameSource` options.
        **overrides: :class:`RunOptions` fields by name (``log=...``, ``smooth=0.5``), applied
            over ``options``.

    Returns:
        A :class:`RunSummary`.

    Raises:
        SourceError: the source cannot be opened, or was lost for good (its ``summary``
            attribute then holds the :class:`RunSummary` of the frames done; every sink is
            closed first).
        OutputError / InputError: bad outputs or options, checked before the first frame.
        TypeError: an override names no option.
    """
    options = RunOptions.build(options, overrides)
    notify = notify or _print
    stop = stop_event or threading.Event()
    model = _load_model(model, options.threads)
    if options.tiles is not None:
        from .tiles import TiledModel

        model = TiledModel(model, options.tiles)
    with contextlib.ExitStack() as stack:
        if handle_signals:
            stack.enter_context(_stop_on_signals(stop))
        # The source first: a wrong --source must not leave empty logs behind.
        src = stack.enter_context(_open_source(source, options, source_options))
        title = Path(str(getattr(model, "path", "model"))).name
        plan = getattr(getattr(model, "metadata", None), "quantization", None)
        context = RunContext(
            classes=tuple(model.classes), source_fps=src.fps, title=title,
            smoothed=options.smooth > 0, notify=notify, stop=stop.set, plan=plan,
            header=_run_header(model, title, plan, options.vehicle_id, _start_time(src)),
        )
        opened, outputs = _open_sinks(stack, itertools.chain(sinks_for(options), sinks), context)
        if on_start is not None:
            on_start(dict(outputs))
        accounts = _Accounts(context.classes)
        reason, error = _loop(src, _Explainer(model, options), opened, accounts, stop, options.max_frames, on_frame)
        snapshots = sum(sink.saved for sink in opened if isinstance(sink, SnapshotSink))
        summary = accounts.summary(src.stats, reason, snapshots, outputs)
    if error is not None:
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    return summary


def _run_header(model, title: str, plan: Optional[str], vehicle: Optional[str], started: float) -> RunHeader:
    """Which vehicle and which model this run is: the log's first line (fleet validation keys on it).

    The source hash is the metadata's ``source["sha256"]`` (the Keras file the model was
    converted from); the model hash is the converted file's, computed when it was read.
    """
    source = getattr(getattr(model, "metadata", None), "source", None) or {}
    source_sha = source.get("sha256") if isinstance(source, Mapping) else None
    model_sha = getattr(model, "sha256", None)
    return RunHeader(
        vehicle=vehicle,
        model_sha256=model_sha if isinstance(model_sha, str) else None,
        source_model_sha256=source_sha if isinstance(source_sha, str) and source_sha else None,
        model_name=title,
        plan=plan if isinstance(plan, str) else None,
        started=round(started, 6),
    )


def _start_time(src: FrameSource) -> float:
    """When the run started: the source's clock at frame 0 (a replay's recorded time), else now."""
    clock = getattr(src, "clock", None)
    return time.time() if clock is None else float(clock(0))


def _open_source(source, options: RunOptions, source_options: Optional[Mapping[str, Any]]) -> FrameSource:
    if isinstance(source, FrameSource):
        return source
    extra = {"reconnect_attempts": options.reconnect_attempts, **(source_options or {})}
    return open_source(source, loop=options.loop, realtime=options.realtime, **extra)
