"""Benchmark of the device path (issue 5 "Performance"): ``python -m benchmarks.run_bench``.

On a MobileNetV2-224 (``weights=None``, 4 fog classes) converted float32 and int8 with
``emit_baseline=True``, it measures, on this machine:

1. the explained/plain latency ratio, both models timed interleaved in one process
   (:func:`firmware_host.bench.bench`), median over ``--repeats`` benches;
2. the runtime's process import time and peak RSS (fresh subprocesses: ``import firmware_host``
   alone, and import + load the model + explain one frame);
3. the frame rate of ``run`` on a 320×240 video against a bare interpreter loop (decode,
   preprocess, invoke the plain model; and the same with the explained model), repeats
   interleaved.

It rewrites its section ``run_bench`` of ``docs/benchmarks.md``. Building
the models needs TensorFlow (host); everything timed runs without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ._report import machine, publish, smooth_scene

ROOT = Path(__file__).resolve().parents[1]
SECTION = "run_bench"
LABELS = ["clear", "light", "moderate", "dense"]
# `python -m benchmarks --quick`: fewer runs and frames, float32 only (same measurements).
QUICK_ARGS = ["--runs", "20", "--repeats", "2", "--frames", "60", "--quantize", "none"]


def build_models(cache: Path, quantizations) -> Dict[str, Dict[str, Path]]:
    """Convert MobileNetV2-224 (random weights) once per quantization, with its plain baseline."""
    out = {}
    todo = [q for q in quantizations if not (cache / f"mnv2_{q}.tflite").exists()
            or not (cache / f"mnv2_{q}.plain.tflite").exists()]
    if todo:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        from converters.export import convert

        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(weights=None, classes=len(LABELS), input_shape=(224, 224, 3))
        rng = np.random.default_rng(0)
        calibration = [smooth_scene(rng) for _ in range(32)]
        for q in todo:
            print(f"converting MobileNetV2-224 ({q}) …", file=sys.stderr, flush=True)
            convert(model, cache / f"mnv2_{q}.tflite", quantize=q, labels=LABELS,
                    input_scale=1 / 127.5, input_offset=-1.0, self_check=False, emit_baseline=True,
                    calibration=calibration if q == "int8" else None)
    for q in quantizations:
        out[q] = {"explained": cache / f"mnv2_{q}.tflite", "plain": cache / f"mnv2_{q}.plain.tflite"}
    return out


def latency_ratio(paths: Dict[str, Path], runs: int, repeats: int, threads: Optional[int]) -> dict:
    from firmware_host import ExplainableModel
    from firmware_host.bench import bench

    model = ExplainableModel(paths["explained"], num_threads=threads)
    results = [bench(model, paths["plain"], runs=runs, warmup=10, threads=threads) for _ in range(repeats)]
    return {
        "ratio": statistics.median(r.overhead_ratio for r in results),
        "ratios": [round(r.overhead_ratio, 4) for r in results],
        "explained_p50": statistics.median(r.invoke.p50_ms for r in results),
        "plain_p50": statistics.median(r.baseline_invoke.p50_ms for r in results),
        "explain_call_p50": statistics.median(r.explain.p50_ms for r in results),
        "explained_p95": statistics.median(r.invoke.p95_ms for r in results),
        "plain_p95": statistics.median(r.baseline_invoke.p95_ms for r in results),
    }


# Peak RSS from VmHWM: ru_maxrss of a child started by fork/vfork + exec can be the parent's.
_HWM = "int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024"

_IMPORT_ONLY = """
import time, json
t, c = time.perf_counter(), time.process_time()
import firmware_host
dt, dc = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"import_s": dt, "import_cpu_s": dc, "rss_mb": %s}))
""" % _HWM

_IMPORT_AND_EXPLAIN = """
import sys, time, json
sys.modules["tensorflow"] = None
t = time.perf_counter()
import firmware_host, numpy as np
m = firmware_host.ExplainableModel(sys.argv[1])
m.explain(np.zeros((240, 320, 3), np.uint8))
dt = time.perf_counter() - t
print(json.dumps({"ready_s": dt, "rss_mb": %s,
                  "tf": "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None}))
""" % _HWM


def process_cost(model: Path, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    imports, ready = [], []
    for _ in range(repeats):
        imports.append(json.loads(subprocess.run([sys.executable, "-c", _IMPORT_ONLY], env=env,
                                                 capture_output=True, text=True, check=True).stdout))
        ready.append(json.loads(subprocess.run([sys.executable, "-c", _IMPORT_AND_EXPLAIN, str(model)],
                                               env=env, capture_output=True, text=True, check=True).stdout))
    return {
        "import_s": statistics.median(r["import_s"] for r in imports),
        "import_cpu_s": statistics.median(r["import_cpu_s"] for r in imports),
        "import_rss_mb": statistics.median(r["rss_mb"] for r in imports),
        "ready_s": statistics.median(r["ready_s"] for r in ready),
        "ready_rss_mb": statistics.median(r["rss_mb"] for r in ready),
        "tf_imported": any(r["tf"] for r in ready),
    }


def make_video(path: Path, frames: int) -> Path:
    import cv2

    rng = np.random.default_rng(1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    base = cv2.resize(smooth_scene(rng), (320, 240))
    for i in range(frames):
        writer.write(np.roll(base, 4 * i, axis=1))
    writer.release()
    return path


def bare_loop_fps(plain, video: Path, explained_meta):
    """Decode → BGR→RGB → the recorded preprocessing → interpreter call, nothing else.

    Args:
        plain: a warmed-up :class:`firmware_host.bench.PlainModel`.

    Returns:
        ``(wall-clock fps, CPU fps)``.
    """
    import cv2

    from firmware_host.preprocess import preprocess

    cap = cv2.VideoCapture(str(video))
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)  # the fastest correct conversion, as run does
        plain.invoke(plain.prepare(preprocess(rgb, explained_meta.preprocessing)[None]))
        n += 1
    cap.release()
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def run_fps(model, video: Path, tmp: Path, sinks: str):
    from firmware_host.runner import run

    options = {}
    if "log" in sinks:
        options["log"] = tmp / "bench.jsonl"
        for old in tmp.glob("bench*.jsonl"):
            old.unlink()
    if "video" in sinks:
        options["out_video"] = tmp / "bench.avi"
    start, cpu = time.perf_counter(), time.process_time()
    summary = run(model, video, notify=lambda m: None, **options)
    wall, cpu = summary.frames / (time.perf_counter() - start), summary.frames / (time.process_time() - cpu)
    # Per-frame work of the loop besides the interpreter call: preprocessing, CAM pick,
    # smoothing, sinks (medians of the run's own timings).
    _OVERHEAD.setdefault(sinks, []).append(summary.loop_p50_ms - summary.latency_p50_ms)
    return wall, cpu


_OVERHEAD: Dict[str, List[float]] = {}


def frame_rate(paths: Dict[str, Path], frames: int, repeats: int, threads: Optional[int]) -> dict:
    from firmware_host import ExplainableModel
    from firmware_host.bench import PlainModel

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        video = make_video(tmp / "road.avi", frames)
        model = ExplainableModel(paths["explained"], num_threads=threads)
        bare = {name: PlainModel(paths[name], num_threads=threads) for name in ("plain", "explained")}
        for name, interp in bare.items():  # warm up: XNNPACK packs weights on the first call
            interp.invoke(interp.prepare(np.zeros((1,) + interp.input_shape[1:], np.float32)))
        model.explain(np.zeros((8, 8, 3), np.uint8))
        variants = {
            "bare_plain": lambda: bare_loop_fps(bare["plain"], video, model.metadata),
            "bare_explained": lambda: bare_loop_fps(bare["explained"], video, model.metadata),
            "run": lambda: run_fps(model, video, tmp, ""),
            "run_log": lambda: run_fps(model, video, tmp, "log"),
            "run_log_video": lambda: run_fps(model, video, tmp, "log+video"),
        }
        wall: Dict[str, List[float]] = {k: [] for k in variants}
        cpu: Dict[str, List[float]] = {k: [] for k in variants}
        for _ in range(repeats):  # interleaved: every variant sees the same machine state
            for name, fn in variants.items():
                w, c = fn()
                wall[name].append(w)
                cpu[name].append(c)
    overhead = {n: statistics.median(v) for n, v in _OVERHEAD.items()}
    _OVERHEAD.clear()
    return {"wall": {n: statistics.median(v) for n, v in wall.items()},
            "cpu": {n: statistics.median(v) for n, v in cpu.items()},
            "loop_minus_interpreter_ms": overhead}


def render(results: dict, args) -> str:
    lines = [
        "## Device path: `edgecam run` / `edgecam bench` (issue 5)",
        "",
        f"Machine: {machine()}; shared with other jobs while measured.  ",
        f"Command: `python -m benchmarks.run_bench --runs {args.runs} --repeats {args.repeats} "
        f"--frames {args.frames} --threads {args.threads}`  ",
        f"Measured: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Model: Keras MobileNetV2-224, "
        "`weights=None`, 4 classes, converted with `emit_baseline=True`. Medians of "
        f"{args.repeats} repeats.",
        "",
        "### Explanation overhead (interpreter time, explained vs plain, timed interleaved)",
        "",
        "| quantization | plain p50 ms | explained p50 ms | ratio (target ≤ 1.05) | per-repeat ratios | `explain()` p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for q, r in results["latency"].items():
        lines.append(
            f"| {q} | {r['plain_p50']:.2f} | {r['explained_p50']:.2f} | **{r['ratio']:.3f}** | "
            f"{', '.join(f'{x:.3f}' for x in r['ratios'])} | {r['explain_call_p50']:.2f} |"
        )
    p = results["process"]
    lines += [
        "",
        "### Runtime process cost (fresh subprocess, TensorFlow blocked)",
        "",
        "| measure | median | target |",
        "|---|---|---|",
        f"| `import firmware_host` (wall) | {p['import_s'] * 1000:.0f} ms | ≤ 300 ms |",
        f"| `import firmware_host` (CPU) | {p['import_cpu_s'] * 1000:.0f} ms | |",
        f"| peak RSS after the import | {p['import_rss_mb']:.0f} MB | ≤ 150 MB |",
        f"| import + load float32 model + first `explain` | {p['ready_s'] * 1000:.0f} ms | |",
        f"| peak RSS of that process | {p['ready_rss_mb']:.0f} MB | ≤ 150 MB |",
        f"| TensorFlow imported | {'yes (bug)' if p['tf_imported'] else 'no'} | no |",
        "",
        f"### Frame rate on a 320×240 MJPEG video ({args.frames} frames)",
        "",
        "`bare` = decode + the recorded preprocessing + interpreter call, nothing else. `run` = "
        "`firmware_host.runner.run` (reader thread, explain, smoothing state, sinks). Wall-clock "
        "fps depends on what else the machine runs; CPU fps (frames per CPU-second of the "
        "process, all threads) is the efficiency comparison that load does not skew.",
        "",
        "| quantization | clock | bare plain | bare explained | run | run + log | run + log + video | run / bare plain | run / bare explained |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for q, both in results["fps"].items():
        for clock in ("wall", "cpu"):
            f = both[clock]
            lines.append(
                f"| {q} | {clock} | {f['bare_plain']:.1f} | {f['bare_explained']:.1f} | {f['run']:.1f} | "
                f"{f['run_log']:.1f} | {f['run_log_video']:.1f} | **{f['run'] / f['bare_plain']:.3f}** | "
                f"{f['run'] / f['bare_explained']:.3f} |"
            )
    lines += [
        "",
        "Per-frame time of the `run` loop besides the interpreter call (loop p50 − interpreter p50, "
        "from `RunSummary`; includes the preprocessing every loop needs):",
        "",
        "| quantization | run | run + log | run + log + video |",
        "|---|---|---|---|",
    ]
    for q, both in results["fps"].items():
        o = both["loop_minus_interpreter_ms"]
        lines.append(f"| {q} | {o[''] :.2f} ms | {o['log']:.2f} ms | {o['log+video']:.2f} ms |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="timed runs per bench")
    parser.add_argument("--repeats", type=int, default=5, help="benches / fps passes per measure")
    parser.add_argument("--frames", type=int, default=120, help="frames of the benchmark video")
    # 1 thread by default: on a shared 2-core machine a second XNNPACK thread waits for a busy
    # core, and two interpreters' spinning thread pools disturb each other when interleaved.
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--quantize", nargs="+", default=["none", "int8"])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgecam_run_bench")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    models = build_models(args.cache, args.quantize)
    names = {"none": "float32", "int8": "int8", "float16": "float16", "dynamic": "dynamic"}
    results = {"latency": {}, "fps": {}}
    for q, paths in models.items():
        print(f"latency ratio ({q}) …", file=sys.stderr, flush=True)
        results["latency"][names[q]] = latency_ratio(paths, args.runs, args.repeats, args.threads)
        print(f"frame rate ({q}) …", file=sys.stderr, flush=True)
        results["fps"][names[q]] = frame_rate(paths, args.frames, args.repeats, args.threads)
    print("process cost …", file=sys.stderr, flush=True)
    results["process"] = process_cost(next(iter(models.values()))["explained"], args.repeats)
    section = render(results, args)
    print(json.dumps(results, indent=1, default=float), file=sys.stderr)
    publish(SECTION, section, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
