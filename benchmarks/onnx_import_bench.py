"""Explained/plain latency of a PyTorch MobileNetV2 converted from ONNX: ``python -m benchmarks.onnx_import_bench``.

A 1000-class MobileNetV2 exported with ``torch.onnx.export`` (``benchmarks/_torch_mnv2.py``, run
with the first Python that has ``torch``: this one, ``--torch-python``, or pass ``--model`` with
an export of your own, e.g. torchvision's) is converted by ``edgecam convert`` with
``--emit-baseline``: float32, and int8 unless ``--quick``; to ONNX, and to LiteRT too when
TensorFlow and onnx2tf are installed (``--format both``). Each explained model and its
plain baseline are timed by :func:`firmware_host.bench.bench` — interleaved, same process, same
threads — for ``--rounds`` rounds; the reported ratio is the median of the rounds' ratios of
median interpreter calls. Target: explained/plain ≤ 1.05 in float32 (issue 17).

It rewrites its section of ``docs/benchmarks.md`` (between the ``onnx_import_bench`` markers).
Neither PyTorch nor TensorFlow is imported in this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

from ._report import machine, publish, table

NAME = "onnx_import_bench"
QUICK_ARGS = ["--rounds", "3", "--runs", "10", "--quantize", "none"]
HERE = Path(__file__).resolve().parent


def _export(path: Path, python: str) -> None:
    made = subprocess.run([python, str(HERE / "_torch_mnv2.py"), str(path)], capture_output=True, text=True)
    if made.returncode != 0 or not path.is_file():
        tail = made.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(
            f"Exporting MobileNetV2 with {python} failed ({tail[0]}). Install torch there, pass "
            "--torch-python PYTHON (a venv with torch), or --model your_export.onnx."
        )


def _images(n: int = 16) -> List[np.ndarray]:
    import cv2

    rng = np.random.default_rng(0)
    return [cv2.resize(rng.integers(0, 256, (7, 7, 3), np.uint8), (224, 224), interpolation=cv2.INTER_CUBIC)
            for _ in range(n)]


def _convert(model: Path, cache: Path, quantize: str, litert: bool):
    """The explained models (ONNX, and LiteRT through onnx2tf when ``litert``) with baselines."""
    from converters.onnx_in import convert_onnx

    out = cache / f"mnv2_{quantize}"
    result = convert_onnx(model, out, quantize=quantize, calibration=_images(), emit_baseline=True,
                          format="both" if litert else "onnx")
    return result.all


def _rounds(result, threads: int, runs: int, rounds: int) -> Dict[str, float]:
    from firmware_host.bench import bench

    ratios, invoke, plain, explain = [], [], [], []
    for r in range(rounds):
        one = bench(result.path, result.baseline_path, runs=runs, warmup=3, threads=threads, seed=r)
        ratios.append(one.overhead_ratio)
        invoke.append(one.invoke.p50_ms)
        plain.append(one.baseline_invoke.p50_ms)
        explain.append(one.explain.p50_ms)
        print(f"{result.path.name} round {r + 1}/{rounds}: ratio {one.overhead_ratio:.3f}", file=sys.stderr)
    return {
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "explained_ms": statistics.median(invoke),
        "plain_ms": statistics.median(plain),
        "explain_ms": statistics.median(explain),
    }


def render(rows: List[Dict[str, object]], args, source: str) -> str:
    lines = [
        "## Explained/plain latency of a PyTorch MobileNetV2 (ONNX import)",
        "",
        f"`python -m benchmarks.onnx_import_bench` — {source}, 224×224, 1000 classes, converted by "
        "`edgecam convert --emit-baseline` (head: `linear`, predicted class). ONNX Runtime and LiteRT "
        f"(through onnx2tf) on the CPU, {args.threads} threads; {args.rounds} rounds × {args.runs} interleaved calls "
        "(`firmware_host.bench`), median of the rounds' ratios of median interpreter calls.",
        "",
        f"Machine: {machine()}",
        "",
        table(rows),
        "",
        "Target (issue 17): explained/plain ≤ 1.05 in float32.",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an ONNX MobileNetV2 exported from PyTorch (default: make one)")
    parser.add_argument("--torch-python", default=sys.executable, help="Python with torch, to make the model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30, help="timed calls per model per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quantize", nargs="+", default=["none", "int8"], choices=["none", "int8"])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgecam_onnx_import_bench")
    parser.add_argument("--onnx-only", action="store_true", help="skip LiteRT (else used when onnx2tf is installed)")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    model = args.model or args.cache / "mnv2_torch.onnx"
    source = f"`{model.name}`" if args.model else "MobileNetV2 (random weights) from `torch.onnx.export`, opset 17"
    if args.model is None and not model.is_file():
        _export(model, args.torch_python)
    litert = not args.onnx_only and all(importlib.util.find_spec(m) for m in ("tensorflow", "onnx2tf"))
    rows = []
    for quantize in args.quantize:
        for result in _convert(model, args.cache, quantize, litert):
            stats = _rounds(result, args.threads, args.runs, args.rounds)
            check = result.self_check
            rows.append({
                "model": "float32" if quantize == "none" else "int8",
                "runtime": "ONNX Runtime (QDQ)" if result.format == "onnx" and quantize == "int8" else
                           {"onnx": "ONNX Runtime", "tflite": "LiteRT"}[result.format],
                "explained ms": f"{stats['explained_ms']:.1f}",
                "plain ms": f"{stats['plain_ms']:.1f}",
                "explained/plain": f"{stats['ratio']:.3f} ({stats['ratio_min']:.3f}–{stats['ratio_max']:.3f})",
                "explain() ms": f"{stats['explain_ms']:.1f}",
                "self-check Pearson median": f"{check.pearson_median:.4f}",
                "size MB": f"{os.path.getsize(result.path) / 1e6:.1f}",
            })
    section = render(rows, args, source)
    publish(NAME, section, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
