"""``edgecam bench``: latency, frame rate and memory of an explained model on this device.

With a plain baseline (the same network without the explanation head, written by
``edgecam convert --emit-baseline``), both models are loaded in one process and timed
*interleaved* — explained, plain, plain, explained, … — so that thermal throttling, CPU
frequency changes and other load hit both equally; the overhead ratio is the ratio of their
median interpreter times. The baseline carries no edgecam metadata, so it runs on the bare
interpreter (LiteRT or ONNX Runtime, :class:`~firmware_host.backends.PlainModel`), fed the
same preprocessed input.

No TensorFlow: the interpreter and numpy only.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .backends import PlainModel
from .errors import InputError

__all__ = ["LatencyStats", "BenchResult", "PlainModel", "bench", "peak_rss_mb"]


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds over the timed runs; ``fps = 1000 / median``."""

    p50_ms: float
    p95_ms: float
    mean_ms: float
    fps: float

    @classmethod
    def of(cls, samples_ms: List[float]) -> "LatencyStats":
        arr = np.asarray(samples_ms, dtype=np.float64)
        p50 = float(np.percentile(arr, 50))
        return cls(p50, float(np.percentile(arr, 95)), float(arr.mean()), 1000.0 / p50 if p50 > 0 else 0.0)


@dataclass(frozen=True)
class BenchResult:
    """What :func:`bench` measured.

    Attributes:
        model / baseline: the files timed.
        runs: timed runs per model (after ``warmup`` untimed ones).
        threads: interpreter threads (``None``: the interpreter's default).
        explain: the whole ``ExplainableModel.explain`` call (preprocess, invoke, CAM pick).
        invoke: the explained model's interpreter call alone.
        baseline_invoke: the plain model's interpreter call, timed interleaved with ``invoke``.
        overhead_ratio: ``invoke.p50_ms / baseline_invoke.p50_ms`` (cost of the explanation
            head in the graph).
        peak_rss_mb: peak resident memory of this process (``getrusage``), both models loaded.
        backend: interpreter package, version and where it runs (the ONNX Runtime provider).
    """

    model: str
    runs: int
    threads: Optional[int]
    explain: LatencyStats
    invoke: LatencyStats
    baseline: Optional[str] = None
    baseline_invoke: Optional[LatencyStats] = None
    overhead_ratio: Optional[float] = None
    peak_rss_mb: float = 0.0
    backend: str = ""

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for name, value in self.__dict__.items():
            out[name] = value.__dict__.copy() if isinstance(value, LatencyStats) else value
        return out

    def format(self) -> str:
        """Human-readable table (what the CLI prints)."""

        def row(name: str, s: LatencyStats) -> str:
            return f"{name:<16} p50 {s.p50_ms:8.2f} ms  p95 {s.p95_ms:8.2f} ms  fps {s.fps:8.1f}"

        lines = [
            f"{Path(self.model).name}  ({self.runs} runs, threads {self.threads or 'default'}, {self.backend})",
            row("explain()", self.explain),
            row("invoke", self.invoke),
        ]
        if self.baseline_invoke is not None:
            lines.append(row("baseline invoke", self.baseline_invoke))
            lines.append(f"overhead ratio explained/plain: {self.overhead_ratio:.3f}")
        lines.append(f"peak RSS: {self.peak_rss_mb:.1f} MB")
        return "\n".join(lines)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux: ``VmHWM`` from ``/proc/self/status`` — ``getrusage``'s ``ru_maxrss`` can report the
    *parent's* peak in a child started by fork/vfork + exec. Elsewhere ``ru_maxrss`` (KiB on
    Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", "r", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024.0


def bench(
    model: Union[str, os.PathLike, Any],
    baseline: Optional[Union[str, os.PathLike]] = None,
    *,
    runs: int = 50,
    warmup: int = 5,
    threads: Optional[int] = None,
    image: Optional[np.ndarray] = None,
    seed: int = 0,
) -> BenchResult:
    """Time an explained model, and optionally its plain baseline side by side.

    Args:
        model: a converted ``.tflite``/``.onnx`` (or an :class:`~firmware_host.ExplainableModel`).
        baseline: the plain ``.tflite``/``.onnx`` of the same network (``--emit-baseline``).
        runs: timed runs per model.
        warmup: untimed runs first (allocations, caches, XNNPACK packing).
        threads: interpreter threads for both models.
        image: RGB uint8 input (default: seeded random pixels at the model's input size).
        seed: for the default image.

    Returns:
        A :class:`BenchResult`.

    Raises:
        InputError: ``runs``/``warmup`` out of range, or the baseline's input differs.
        ModelFileError / MetadataError: a model cannot be loaded.
    """
    from .model import ExplainableModel
    from .preprocess import check_image, preprocess

    if runs < 1 or warmup < 0:
        raise InputError(f"--runs must be >= 1 and warmup >= 0. Got runs={runs}, warmup={warmup}.")
    explained = model if hasattr(model, "explain") else ExplainableModel(model, num_threads=threads)
    height, width = explained.input_size
    if image is None:
        image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = check_image(image)
    plain = PlainModel(baseline, num_threads=threads) if baseline is not None else None
    plain_x = None
    if plain is not None:
        plain_x = plain.prepare(preprocess(image, explained.metadata.preprocessing)[None])

    explain_ms, invoke_ms, plain_ms = _time_interleaved(explained, image, plain, plain_x, runs, warmup)

    invoke = LatencyStats.of(invoke_ms)
    base = LatencyStats.of(plain_ms) if plain_ms else None
    runtime = getattr(explained, "backend", None)
    return BenchResult(
        model=str(getattr(explained, "path", model)),
        runs=runs,
        threads=threads,
        explain=LatencyStats.of(explain_ms),
        invoke=invoke,
        baseline=None if baseline is None else str(baseline),
        baseline_invoke=base,
        overhead_ratio=(invoke.p50_ms / base.p50_ms) if base is not None and base.p50_ms > 0 else None,
        peak_rss_mb=peak_rss_mb(),
        backend=runtime.describe() if hasattr(runtime, "describe") else "",
    )


def _time_interleaved(explained, image: np.ndarray, plain: Optional[PlainModel], plain_x: Any, runs: int,
                      warmup: int) -> Tuple[List[float], List[float], List[float]]:
    """Run both models ``warmup + runs`` times, interleaved, and keep the timed runs' milliseconds.

    Returns:
        ``(explain_ms, invoke_ms, plain_ms)``: the whole ``explain`` call, the explained model's
        interpreter call, and the plain model's interpreter call (empty without ``plain``).
    """
    explain_ms: List[float] = []
    invoke_ms: List[float] = []
    plain_ms: List[float] = []

    def explained_once(keep: bool) -> None:
        start = time.perf_counter()
        exp = explained.explain(image)
        total = (time.perf_counter() - start) * 1000.0
        if keep:
            explain_ms.append(total)
            invoke_ms.append(float(exp.latency_ms))

    def plain_once(keep: bool) -> None:
        elapsed = plain.invoke(plain_x)
        if keep:
            plain_ms.append(elapsed)

    for i in range(warmup + runs):
        keep = i >= warmup
        # Alternate the order so neither model always runs on a "warm" or "cold" CPU.
        order = [explained_once] if plain is None else [explained_once, plain_once]
        for step in order if i % 2 == 0 else order[::-1]:
            step(keep)
    return explain_ms, invoke_ms, plain_ms
