"""Soak test of ``edgecam run`` (issue 9 "Soak"): ``python -m benchmarks.soak``.

Runs :func:`firmware_host.runner.run` over ``--frames`` frames (default 10,000) of a short
generated Motion-JPEG video played in a loop, with the JSONL telemetry log, saved frames and a
small ``log_max_mb`` disk budget, and checks what a camera left running for months needs:

1. **memory**: the process RSS (``/proc/self/statm``) at the last frame is less than 5% above
   its value at frame ``--warm`` (default 1,000: the interpreter, OpenCV and the allocator
   have reached their working set by then);
2. **file descriptors**: the number of entries of ``/proc/self/fd`` at the last frame equals
   the number at frame ``--warm`` (segments rotate, frame files open and close), and after the
   run returns it is back to what it was before the run;
3. **disk**: the log segments plus their saved frames never exceed the budget plus one segment
   (a segment is rotated at a quarter of the budget, then the oldest are deleted).

It rewrites its section ``soak`` of ``docs/benchmarks.md``. No TensorFlow needed; the short
version of the same checks runs in the test suite (``tests/test_soak.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ._report import machine, publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "soak"
TINY_MODEL = ROOT / "tests" / "data" / "tiny_fog.tflite"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process (second field of /proc/self/statm, in pages)."""
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * _PAGE


def open_fds() -> int:
    """Number of open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def disk_bytes(directory: Path) -> int:
    """Bytes of every file under ``directory`` (the log segments and their frames)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:  # deleted by a rotation between listing and stat
                pass
    return total


def make_video(path: Path, frames: int = 60, size: Tuple[int, int] = (240, 320), fps: float = 15.0) -> Path:
    """A Motion-JPEG .avi of a moving disc over a changing gradient (BGR), via cv2.VideoWriter."""
    import cv2

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():  # pragma: no cover - Motion-JPEG ships with every OpenCV
        raise RuntimeError(f"OpenCV cannot write {path}")
    ramp = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
    for i in range(frames):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = ramp
        img[..., 1] = (i * 7) % 256
        img[..., 2] = 255 - ramp
        cv2.circle(img, (int(10 + (i * 9) % (w - 20)), h // 2), h // 6, (255, 255, 255), -1)
        writer.write(img)
    writer.release()
    return path


def soak(
    model: Path = TINY_MODEL,
    frames: int = 10_000,
    warm: int = 1_000,
    workdir: Optional[Path] = None,
    log_max_mb: float = 2.0,
    save_frames: int = 5,
    sample_every: int = 100,
) -> Dict[str, Any]:
    """Run ``edgecam run`` for ``frames`` frames and measure RSS, fds and disk.

    Args:
        model: converted ``.tflite``.
        frames: frames to explain (``max_frames``).
        warm: frame whose RSS / fd count is the reference.
        workdir: where the video and log go (a temporary directory if ``None``).
        log_max_mb: the log's disk budget.
        save_frames: save every Nth frame beside the log.
        sample_every: RSS/disk sampled every N frames.

    Returns:
        A JSON-able dict: reference and final RSS/fds, growth, max disk use, budget, samples.
    """
    from firmware_host.runner import run

    if not 0 < warm < frames:
        raise ValueError(f"warm must be in (0, frames). Got warm={warm}, frames={frames}")
    with tempfile.TemporaryDirectory(prefix="edgecam_soak_") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        video = make_video(work / "loop.avi")
        logdir = work / "log"
        logdir.mkdir(exist_ok=True)
        seen = {"n": 0}
        marks: Dict[str, Any] = {"samples": []}
        max_disk = [0]

        def on_frame(result) -> None:
            seen["n"] += 1
            n = seen["n"]
            if n % sample_every == 0 or n in (warm, frames):
                rss, disk = rss_bytes(), disk_bytes(logdir)
                max_disk[0] = max(max_disk[0], disk)
                marks["samples"].append((n, rss, disk))
            if n == warm:
                marks["warm_rss"], marks["warm_fds"] = rss_bytes(), open_fds()
            if n == frames:
                marks["end_rss"], marks["end_fds"] = rss_bytes(), open_fds()

        fds_before = open_fds()
        start = time.perf_counter()
        summary = run(
            str(model), str(video), loop=True, max_frames=frames, log=logdir / "run.jsonl",
            save_frames=save_frames, log_max_mb=log_max_mb, on_frame=on_frame, threads=1,
            notify=lambda message: None,
        )
        seconds = time.perf_counter() - start
        fds_after = open_fds()
        final_disk = disk_bytes(logdir)
        max_disk[0] = max(max_disk[0], final_disk)
        segments = sorted(p.name for p in logdir.glob("run*.jsonl"))
    budget = int(log_max_mb * (1 << 20))
    return {
        "model": Path(model).name,
        "frames": summary.frames,
        "stop_reason": summary.stop_reason,
        "seconds": seconds,
        "fps": summary.frames / seconds if seconds > 0 else 0.0,
        "warm": warm,
        "warm_rss_mb": marks["warm_rss"] / 2**20,
        "end_rss_mb": marks["end_rss"] / 2**20,
        "rss_growth": marks["end_rss"] / marks["warm_rss"] - 1.0,
        "fds_before": fds_before,
        "warm_fds": marks["warm_fds"],
        "end_fds": marks["end_fds"],
        "fds_after": fds_after,
        "budget_bytes": budget,
        "segment_bytes": budget // 4,
        "max_disk_bytes": max_disk[0],
        "final_disk_bytes": final_disk,
        "segments_left": len(segments),
        "samples": marks["samples"],
    }


def check(result: Dict[str, Any], max_growth: float = 0.05) -> List[str]:
    """The soak's pass/fail rules; returns the failures (empty when all hold)."""
    failures = []
    if result["rss_growth"] >= max_growth:
        failures.append(
            f"RSS grew {result['rss_growth'] * 100:.2f}% from frame {result['warm']} to the end "
            f"(limit {max_growth * 100:.0f}%)"
        )
    if result["end_fds"] != result["warm_fds"] or result["fds_after"] > result["fds_before"]:
        failures.append(
            f"file descriptors: {result['fds_before']} before, {result['warm_fds']} at frame "
            f"{result['warm']}, {result['end_fds']} at the end, {result['fds_after']} after"
        )
    limit = result["budget_bytes"] + result["segment_bytes"]
    if result["max_disk_bytes"] > limit:
        failures.append(f"log + frames reached {result['max_disk_bytes']} bytes > budget + segment {limit}")
    return failures


def _table(result: Dict[str, Any], failures: List[str]) -> List[str]:
    mb = 2**20
    limit = result["budget_bytes"] + result["segment_bytes"]
    step = max(1, result["frames"] // 10)
    return [
        f"### `{result['model']}`: {result['frames']} frames, {result['fps']:.0f} frames/s over "
        f"{result['seconds']:.0f} s",
        "",
        f"| check | at frame {result['warm']} | at the end | rule | result |",
        "|---|---|---|---|---|",
        f"| RSS | {result['warm_rss_mb']:.1f} MiB | {result['end_rss_mb']:.1f} MiB | growth < 5% | "
        f"{result['rss_growth'] * 100:+.2f}% |",
        f"| open fds | {result['warm_fds']} | {result['end_fds']} (after run: {result['fds_after']}, "
        f"before: {result['fds_before']}) | equal | {'ok' if result['warm_fds'] == result['end_fds'] else 'LEAK'} |",
        f"| log + frames on disk | max {result['max_disk_bytes'] / mb:.2f} MiB | "
        f"{result['final_disk_bytes'] / mb:.2f} MiB, {result['segments_left']} segment files | "
        f"≤ budget + one segment ({limit / mb:.2f} MiB) | "
        f"{'ok' if result['max_disk_bytes'] <= limit else 'OVER'} |",
        "",
        "RSS (MiB) along the run: " + ", ".join(
            f"{n}: {rss / mb:.1f}" for n, rss, _ in result["samples"] if n % step == 0 or n == result["frames"]
        ) + ".",
        "",
        "All checks pass." if not failures else "FAILED: " + "; ".join(failures),
        "",
    ]


def render(results: List[Tuple[Dict[str, Any], List[str]]], command: str, save_frames: int) -> str:
    first = results[0][0]
    lines = [
        "## Soak: `edgecam run` over a long video",
        "",
        f"Machine: {machine()}; shared with other jobs while measured.",
        "",
        f"Command: `{command}` — `firmware_host.runner.run` over {first['frames']} frames of a "
        f"320×240 Motion-JPEG video played in a loop, with the JSONL log (fsync every record), "
        f"every {save_frames}th frame saved, and `log_max_mb` {first['budget_bytes'] / 2**20:g}. "
        "One run per model (a soak is one long measurement, not a median). RSS from "
        "/proc/self/statm and open fds from /proc/self/fd, sampled in `on_frame`; disk use sampled "
        "every 100 frames.",
        "",
    ]
    for result, failures in results:
        lines += _table(result, failures)
    return "\n".join(lines)


def mobilenet_model() -> Path:
    """MobileNetV2-224 int8 with the explanation head, converted (once, cached) by run_bench."""
    from .run_bench import build_models

    cache = Path(tempfile.gettempdir()) / "edgecam_run_bench"
    cache.mkdir(parents=True, exist_ok=True)
    return build_models(cache, ["int8"])["int8"]["explained"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=1_000, help="reference frame for RSS and fds")
    parser.add_argument("--model", type=Path, action="append", help="model(s) to soak (default: the tiny test model)")
    parser.add_argument("--mobilenet", action="store_true",
                        help="also soak MobileNetV2-224 int8 (converted once by run_bench; needs TF the first time)")
    parser.add_argument("--log-max-mb", type=float, default=2.0)
    parser.add_argument("--save-frames", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 frames (reference at 200); the section says so")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.warm = 1_000, 200
    models = list(args.model or [TINY_MODEL])
    if args.mobilenet:
        models.append(mobilenet_model())
    results = []
    for model in models:
        print(f"soak: {model} ({args.frames} frames) …", file=sys.stderr, flush=True)
        result = soak(model, args.frames, args.warm, log_max_mb=args.log_max_mb, save_frames=args.save_frames)
        results.append((result, check(result)))
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1), file=sys.stderr)
    command = " ".join(["python -m benchmarks.soak", *(sys.argv[1:] if argv is None else argv)])
    section = render(results, command, args.save_frames)
    publish(SECTION, section, write=not args.no_write)
    return 1 if any(failures for _, failures in results) else 0


if __name__ == "__main__":
    sys.exit(main())
