"""Fleet validation, local vs Ray (issue 16 item 4): ``python -m benchmarks.fleet_bench``.

It measures, on this machine:

1. **Throughput.** Frames/s of ``run_local`` and ``run_ray`` on the same synthetic fleet with the
   same number of CPUs (``--cpus``, default 2), each run in a fresh process (model loading and,
   for Ray, starting the local instance and its workers are part of what a user waits for),
   runs interleaved ``local, ray, local, ray, …`` so both see the same machine state; the median
   of ``--repeats``. The Ray overhead ratio is ``median ray time / median local time`` (goal
   ≤ 1.3 at 2 CPUs). A third variant, ``ray (joined)``, runs ``run_ray`` in a process that is
   already connected to a running Ray instance, as on a cluster, so the instance's start-up is
   not counted.
2. **Driver memory.** Peak RSS (``VmHWM``) of the driver process while it validates fleets of
   ``--records`` synthetic records (default 10,000 and 100,000) with the tiny committed fog
   model, every record scored: the driver must stream, so its peak must not grow with the
   number of records.
3. **A projection** (written, not measured) of frames/day per added Ray worker from the measured
   per-CPU throughput, and the workers a 200-vehicle fleet needs.

The fleets are synthetic: :func:`write_synthetic_fleet` writes run logs in ``edgecam run``'s
format (a header, then one record per frame with its saved PNG) whose edge maps are random
arrays of the model's feature-map shape; the host pass that is timed costs the same whatever
the edge maps hold. It rewrites its section ``fleet_bench`` of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ._report import fit_batchnorm, machine, publish, smooth_scene

ROOT = Path(__file__).resolve().parents[1]
SECTION = "fleet_bench"
LABELS = ["dense-fog", "moderate-fog", "light-fog", "no-fog"]
TINY_MODEL = ROOT / "tests" / "data" / "tiny_fog.keras"
DAY0 = 1_779_948_000.0  # 2026-05-28 06:00 UTC: a fixed start, so days are reproducible
# `python -m benchmarks --quick`: one repeat, fewer frames and records.
QUICK_ARGS = ["--frames", "64", "--repeats", "1", "--records", "2000", "--records", "20000"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (how fleet validation matches ``--keras`` models)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_synthetic_fleet(
    root: Path,
    *,
    model: Path,
    vehicles: int,
    days: int,
    records_per_log: int,
    cam_shape: Sequence[int] = (7, 7),
    image_size: int = 224,
    images_per_log: int = 8,
    edge: Optional[Path] = None,
    save_every: int = 1,
    seed: int = 0,
) -> List[Path]:
    """Run logs of ``vehicles × days`` in ``edgecam run``'s format, one log per vehicle and day.

    ``root/<vehicle>/day<d>.jsonl``: a header naming the vehicle and ``model``'s sha256, then
    ``records_per_log`` records, ``60 / save_every`` seconds apart from 06:00 UTC, every
    ``save_every``-th naming its saved frame (one a minute, as ``edgecam run --save-frames``; the
    frames are ``images_per_log`` PNGs of ``image_size`` pixels in the vehicle's folder, used in turn).
    With ``edge`` (the converted model), each frame's probabilities and CAM are the edge model's,
    as a device logs them; without it they are random (probabilities over :data:`LABELS`, a
    ReLU'd map of ``cam_shape``), which costs the host pass the same.

    Returns:
        The log paths, by vehicle then day.
    """
    import cv2

    rng = np.random.default_rng(seed)
    sha = sha256_file(model)
    explain = None
    if edge is not None:
        from firmware_host import ExplainableModel

        explain = ExplainableModel(edge).explain
    logs = []
    for v in range(vehicles):
        vehicle = f"van-{v:02d}"
        folder = root / vehicle
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        frames = []
        for i in range(images_per_log):
            image = cv2.resize(smooth_scene(rng), (image_size, image_size))
            name = f"frames/f{i:03d}.png"
            cv2.imwrite(str(folder / name), image)
            frames.append((name, _edge_values(explain, image, cam_shape, rng)))
        for d in range(days):
            logs.append(_write_log(folder / f"day{d}.jsonl", vehicle, sha, DAY0 + d * 86400.0, records_per_log,
                                   frames, save_every))
    return logs


def _edge_values(explain, image: np.ndarray, cam_shape: Sequence[int], rng) -> dict:
    """The record fields the edge model gives a frame (random ones without a model)."""
    if explain is not None:
        e = explain(image[..., ::-1].copy())  # cv2 wrote BGR; the model reads RGB
        probs, cls, cam = np.asarray(e.probabilities), int(e.class_index), np.asarray(e.cam)
    else:
        probs = rng.dirichlet(np.ones(len(LABELS)))
        cls = int(probs.argmax())
        cam = np.maximum(rng.normal(0.5, 0.5, cam_shape), 0.0)
    return {"class_index": cls, "label": LABELS[cls], "predicted_index": int(probs.argmax()),
            "confidence": round(float(probs[cls]), 6), "probabilities": [round(float(p), 6) for p in probs],
            "cam": [[float(f"{c:.4g}") for c in row] for row in cam]}


def _write_log(path: Path, vehicle: str, sha: str, start: float, n: int, frames: Sequence[tuple],
               save_every: int = 1) -> Path:
    header = {"header": "edgecam.run/1", "vehicle": vehicle, "model_sha256": sha, "source_model_sha256": sha,
              "model_name": "synthetic.tflite", "plan": "float32", "started": start}
    lines = [json.dumps(values, separators=(",", ":")) for _, values in frames]
    step = 60.0 / save_every
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(header) + "\n")
        for i in range(n):
            name = f'"frame_path":"{frames[i % len(frames)][0]}",' if i % save_every == 0 else ""
            head = (f'"timestamp":{start + step * i:.3f},"frame":{i},{name}"plan":"float32",'
                    f'"vehicle":"{vehicle}","model":"{sha}",')
            handle.write("{" + head + lines[i % len(frames)][1:] + "\n")
    return path


def mobilenet(cache: Path) -> Path:
    """MobileNetV2-224 on raw pixels, saved once as .keras.

    ``weights=None``, 4 classes, with its ``[-1, 1]`` scaling as a ``Rescaling`` layer inside the
    model (so it takes the frame's pixels, as the fog models do) and BatchNorm statistics set
    from smooth images so activations have a trained network's scale.
    """
    path = cache / "fleet_mnv2.keras"
    if not path.exists():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        keras.utils.set_random_seed(0)
        inp = keras.Input((224, 224, 3), name="image")
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inp)
        model = keras.applications.MobileNetV2(weights=None, classes=len(LABELS), input_tensor=scaled)
        model = keras.Model(inp, model.output, name="fleet_mnv2")
        rng = np.random.default_rng(0)
        fit_batchnorm(model, np.stack([smooth_scene(rng) for _ in range(16)]).astype(np.float32))
        model.save(path)
    return path


# -- one measured run, in a fresh process ------------------------------------------------------
_HWM_MB = "VmHWM"


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(_HWM_MB):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: dict) -> dict:
    """Validate ``spec["fleet"]`` with one engine here; the figures of that run.

    ``spec``: ``engine`` (``local``, ``ray`` or ``ray-joined``: Ray already running before the
    clock starts), ``fleet``, ``keras``, ``cpus``, ``batch_size``. The clock starts once the plan
    is built (logs found and hashed, models matched: the same for both engines) and stops when
    the engine returns its aggregator. ``first_s`` is when the first scored batch reached the
    aggregator; ``steady_fps`` the frames/s after it (start-up excluded).
    """
    for name, value in {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}.items():
        os.environ.setdefault(name, value)
    cpus = int(spec["cpus"])
    if cpus < (os.cpu_count() or cpus):  # the local engine and a local Ray instance get the same CPUs
        os.sched_setaffinity(0, range(cpus))
    from toolkit.fleet.aggregate import FleetAggregator
    from toolkit.fleet.plan import build_plan

    stamps: List[tuple] = []
    original = FleetAggregator.add_rows

    def add_rows(self, rows):  # timestamps of scored batches reaching the driver
        original(self, rows)
        stamps.append((time.perf_counter(), len(rows["status"])))

    FleetAggregator.add_rows = add_rows
    with _engine(spec["engine"], cpus) as run:
        plan = build_plan([spec["fleet"]], [spec["keras"]], batch_size=int(spec["batch_size"]))
        start = time.perf_counter()
        aggregator = run(plan)
        seconds = time.perf_counter() - start
    aggregator.close()
    frames = sum(n for _, n in stamps)
    # Frames/s once scored batches flow (too few batches: no steady state to speak of).
    steady = (frames - stamps[0][1]) / (stamps[-1][0] - stamps[0][0]) if len(stamps) >= 4 else float("nan")
    return {"engine": spec["engine"], "seconds": seconds, "frames": frames, "fps": frames / seconds,
            "first_s": stamps[0][0] - start if stamps else float("nan"), "steady_fps": steady,
            "records": sum(p.records for p in aggregator.parts.values()), "peak_rss_mb": peak_rss_mb()}


def _engine(name: str, cpus: int):
    """A context giving ``plan → aggregator`` for ``name`` (``ray-joined`` connects first)."""
    import contextlib

    if name == "local":
        import tensorflow as tf

        from toolkit.fleet.engine_local import run_local

        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        return contextlib.nullcontext(lambda plan: run_local(plan, progress=False))
    from toolkit.fleet.engine_ray import ray_session, run_ray

    if name == "ray":
        return contextlib.nullcontext(lambda plan: run_ray(plan, num_cpus=cpus))

    @contextlib.contextmanager
    def joined():
        with ray_session(None, cpus):
            yield lambda plan: run_ray(plan)

    return joined()


def measure(spec: dict) -> dict:
    """:func:`child` in a fresh interpreter (imports, memory and threads of one run only)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fleet_bench", "--child", json.dumps(spec)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['engine']} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the three parts ---------------------------------------------------------------------------
def throughput(cache: Path, tmp: Path, frames: int, repeats: int, cpus: int, batch_size: int) -> dict:
    """Local vs Ray on MobileNetV2-224, interleaved ``local, ray, ray-joined`` × ``repeats``."""
    keras = mobilenet(cache)
    fleet = tmp / "mnv2_fleet"
    vehicles = 4
    write_synthetic_fleet(fleet, model=keras, vehicles=vehicles, days=1, records_per_log=-(-frames // vehicles),
                          cam_shape=(7, 7), image_size=224)
    runs: Dict[str, List[dict]] = {"local": [], "ray": [], "ray-joined": []}
    for r in range(repeats):
        for engine in runs:
            result = measure({"engine": engine, "fleet": str(fleet), "keras": str(keras), "cpus": cpus,
                              "batch_size": batch_size})
            print(f"  repeat {r + 1}/{repeats} {engine:10s} {result['seconds']:7.1f} s  "
                  f"{result['fps']:6.2f} frames/s  steady {result['steady_fps']:6.2f}", file=sys.stderr, flush=True)
            runs[engine].append(result)
    return runs


def driver_memory(tmp: Path, records: Sequence[int], cpus: int, batch_size: int, save_every: int) -> dict:
    """Peak RSS of the driver per engine and fleet size (tiny fog model: the stream, not the network)."""
    out: Dict[str, Dict[int, dict]] = {"local": {}, "ray": {}}
    for n in records:
        fleet = tmp / f"tiny_fleet_{n}"
        write_synthetic_fleet(fleet, model=TINY_MODEL, vehicles=10, days=1, records_per_log=n // 10,
                              cam_shape=(16, 16), image_size=32, save_every=save_every)
        for engine in out:
            out[engine][n] = measure({"engine": engine, "fleet": str(fleet), "keras": str(TINY_MODEL), "cpus": cpus,
                                      "batch_size": batch_size})
            r = out[engine][n]
            print(f"  {engine:5s} {n:7d} records ({r['frames']} scored): peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"{r['seconds']:.1f} s", file=sys.stderr, flush=True)
    return out


def projection(per_worker_fps: float, fleet_frames: int = 96_000) -> dict:
    """PROJECTED figures from a measured per-worker (one CPU) frame rate."""
    per_day = per_worker_fps * 86_400
    return {"per_worker_fps": per_worker_fps, "frames_per_worker_day": per_day,
            "workers_24h": math.ceil(fleet_frames / per_day),
            "workers_8h": math.ceil(fleet_frames / (per_worker_fps * 8 * 3600)),
            "workers_2h": math.ceil(fleet_frames / (per_worker_fps * 2 * 3600)), "fleet_frames": fleet_frames}


# -- the section -------------------------------------------------------------------------------
def _median(runs: List[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _per_worker_fps(runs: List[dict], cpus: int) -> float:
    """Frames/s per worker (CPU) of a Ray engine: steady when measured, else end to end."""
    steady = _median(runs, "steady_fps")
    return (steady if math.isfinite(steady) else _median(runs, "fps")) / cpus


def render(results: dict, args) -> str:
    runs, memory = results["throughput"], results["memory"]
    local_s = _median(runs["local"], "seconds")
    lines = [
        "## Fleet validation: `--engine local` vs `--engine ray` (issue 16)",
        "",
        f"Machine: {machine()}, ray {results['ray_version']}; shared with other jobs while measured (load "
        f"average {results['load'][0]:.1f} at the start, {results['load'][1]:.1f} at the end).  ",
        f"Command: `python -m benchmarks.fleet_bench --frames {args.frames} --repeats {args.repeats} --cpus {args.cpus} "
        f"--batch-size {args.batch_size} {' '.join(f'--records {n}' for n in args.records)} "
        f"--save-every {args.save_every}`  ",
        f"Measured: {results['when']}. Each run is a fresh process; runs interleaved `local, ray, ray (joined)` × "
        f"{args.repeats}, medians. Time = from the built plan to the filled aggregator (the engines' whole work: "
        "for `ray`, starting a local Ray instance with "
        f"{args.cpus} CPUs, its workers and one scoring actor per CPU, each loading TensorFlow and the model; `ray "
        "(joined)`: Ray already running, as on a cluster). Steady = frames/s after the first scored batch reached "
        "the driver.",
        "",
        f"### Throughput: Keras MobileNetV2-224 (`weights=None`), {runs['local'][0]['frames']} frames, "
        f"{args.cpus} CPUs",
        "",
        "| engine | time (median) | frames/s | steady frames/s | first batch after | time / local | per-repeat time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("local", "`local`"), ("ray", "`ray` (local instance)"), ("ray-joined", "`ray` (joined)")):
        r = runs[name]
        lines.append(
            f"| {label} | {_median(r, 'seconds'):.1f} s | {_median(r, 'fps'):.2f} | {_median(r, 'steady_fps'):.2f} | "
            f"{_median(r, 'first_s'):.1f} s | **{_median(r, 'seconds') / local_s:.2f}×** | "
            f"{', '.join('%.1f' % x['seconds'] for x in r)} |")
    ratio = _median(runs["ray"], "seconds") / local_s
    lines += [
        "",
        f"**Ray overhead ratio at {args.cpus} CPUs: {ratio:.2f}×** the local time (goal ≤ 1.3×: "
        f"{'met' if ratio <= 1.3 else 'not met'}); steady-state frames/s ray/local: "
        f"{_median(runs['ray'], 'steady_fps') / _median(runs['local'], 'steady_fps'):.2f}. Ray's extra time is "
        "start-up, paid once per run whatever the fleet's size (the *first batch after* column): the instance, its "
        "worker processes, and in every scoring actor a TensorFlow import, the model's load and its first traced "
        "Grad-CAM, where the local engine reuses the TensorFlow its plan already loaded. Its share shrinks as the "
        "fleet grows; on a machine shared with other jobs it grows with the load.",
        "",
        f"### Driver memory: peak RSS while validating N records (tiny fog model, every {args.save_every}th "
        "record with a saved frame, all of those scored)",
        "",
        "| engine | records | frames scored | driver peak RSS | time |",
        "|---|---|---|---|---|",
    ]
    for engine, by_n in memory.items():
        for n, r in sorted(by_n.items()):
            lines.append(f"| `{engine}` | {n:,} | {r['frames']:,} | {r['peak_rss_mb']:.0f} MB | {r['seconds']:.1f} s |")
    ns = sorted(next(iter(memory.values())))
    growth = {e: by_n[ns[-1]]["peak_rss_mb"] - by_n[ns[0]]["peak_rss_mb"] for e, by_n in memory.items()}
    lines += [
        "",
        f"From {ns[0]:,} to {ns[-1]:,} records the driver's peak grows by "
        + ", ".join(f"{g:+.0f} MB (`{e}`)" for e, g in growth.items())
        + ": the driver streams (rows go to the on-disk spool, logs are read record by record, Ray "
        "blocks are consumed one at a time).",
    ]
    lines += _projection_lines(results["projection"], args.cpus)
    return "\n".join(lines)


def _projection_lines(p: dict, cpus: int) -> List[str]:
    return [
        "",
        "### PROJECTED (not measured): frames per day per added Ray worker",
        "",
        f"From the measured steady rate of `ray (joined)` at {cpus} CPUs, **{p['per_worker_fps']:.2f} frames/s per "
        "worker** "
        f"(one CPU, one scoring actor), assuming throughput adds up linearly with workers that read the logs "
        f"from shared storage: each added worker gives about **{p['frames_per_worker_day']:,.0f} frames/day** "
        f"(24 h). A 200-vehicle fleet saving one frame a minute for 8 hours writes {p['fleet_frames']:,} frames a "
        f"day: about **{p['workers_24h']} worker(s)** keep up over 24 h, **{p['workers_8h']}** finish a day's "
        f"frames in 8 h and **{p['workers_2h']}** in 2 h, plus one driver (or use `--sample`: 60 frames per "
        "vehicle and day is 12,000 frames). Workers with more cores, or a GPU, change these figures; "
        "this is arithmetic on one measurement, not a measurement of a cluster.",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240, help="frames of the throughput fleet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of both engines")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--records", type=int, action="append", help="fleet sizes of the memory part (repeatable)")
    parser.add_argument("--save-every", type=int, default=10, help="every Nth record of the memory fleets has a frame")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgecam_fleet_bench")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    args.records = args.records or [10_000, 100_000]
    args.cache.mkdir(parents=True, exist_ok=True)
    import ray

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runs = throughput(args.cache, tmp, args.frames, args.repeats, args.cpus, args.batch_size)
        memory = driver_memory(tmp, args.records, args.cpus, args.batch_size, args.save_every)
    results = {
        "throughput": runs, "memory": memory, "ray_version": ray.__version__,
        "projection": projection(_per_worker_fps(runs["ray-joined"], args.cpus)),
        "load": (load_start, os.getloadavg()[0]), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    publish(SECTION, render(results, args), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
