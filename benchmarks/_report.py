"""Shared by every benchmark: machine facts, timing helpers, and docs/benchmarks.md sections.

Each benchmark owns one section of ``docs/benchmarks.md`` between
``<!-- BEGIN name -->`` and ``<!-- END name -->``; :func:`write_section` replaces only that
section, so benchmarks can run one at a time or all together (``python -m benchmarks``).
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Run on demand, never in the test suite: `python -m benchmarks` runs every benchmark and rewrites
the sections below; `python -m benchmarks.NAME` runs one. Each section states the machine,
the command, the median of several runs and the ratio to its baseline, measured side by side
in the same run.
"""


def machine() -> str:
    """One line: CPU model, cores, memory, Python and key package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, AttributeError):
        pass
    versions = []
    for pkg in ("numpy", "tensorflow", "keras", "ai-edge-litert", "onnxruntime", "opencv-python-headless"):
        try:
            from importlib.metadata import version

            versions.append(f"{pkg} {version(pkg)}")
        except Exception:
            continue
    return f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}; " + ", ".join(versions)


def wall_times(fn: Callable[[], object], runs: int) -> List[float]:
    """Wall time of each of ``runs`` calls of ``fn``, in seconds."""
    times: List[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn: Callable[[], object], runs: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    return statistics.median(wall_times(fn, runs))


def smooth_scene(rng, size: int = 224):
    """A smooth random RGB uint8 image, ``size`` x ``size`` (calibration, timing and video content)."""
    import cv2
    import numpy as np

    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def write_section(name: str, markdown: str) -> Path:
    """Replace (or append) section ``name`` of docs/benchmarks.md."""
    from firmware_host._io import atomic_write_text

    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(DOC, text)
    return DOC


def publish(name: str, markdown: str, write: bool = True) -> None:
    """Print section ``name`` and, unless ``write`` is False (``--no-write``), write it to docs/benchmarks.md."""
    print(markdown)
    if write:
        write_section(name, markdown)


def table(rows: List[Dict[str, object]]) -> str:
    """A markdown table from dicts sharing keys."""
    if not rows:
        return ""
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        out.append("| " + " | ".join(str(row[k]) for k in keys) + " |")
    return "\n".join(out)


def fit_batchnorm(model, x) -> None:
    """Set every BatchNormalization's moving statistics to the batch statistics of ``x``.

    A ``weights=None`` keras.applications network has moving mean 0 / variance 1 everywhere, so
    its activations shrink layer after layer towards 0 (logits ~1e-12): uniform probabilities,
    empty maps, degenerate int8 calibration. One training-mode pass with momentum 0 gives it a
    trained network's activation scale; the weights stay random and latency is unaffected.
    Nested models are included.
    """

    def walk(layer):
        for inner in getattr(layer, "layers", None) or []:
            yield inner
            yield from walk(inner)

    bns = [layer for layer in walk(model) if type(layer).__name__ == "BatchNormalization"]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum
