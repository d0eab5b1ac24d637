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
DAY0 = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC: a fixed start, so days are reproducible
# `python -m benchmarks --quick`: one repeat, fewer frames and records.
QUICK_ARGS = ["--frames", "64", "--repeats", "1", "--records", "2000", "--records", "10000"]


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
    seed: int = 0,
) -> List[Path]:
    """Run logs of ``vehicles × days`` in ``edgecam run``'s format, one log per vehicle and day.

    ``root/<vehicle>/day<d>.jsonl``: a header naming the vehicle and ``model``'s sha256, then
    ``records_per_log`` records, one a minute from the day's start, each naming its saved frame
    (``images_per_log`` PNGs of ``image_size`` pixels in the vehicle's folder, used in turn).
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
                                   frames))
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


def _write_log(path: Path, vehicle: str, sha: str, start: float, n: int, frames: Sequence[tuple]) -> Path:
    header = {"header": "edgecam.run/1", "vehicle": vehicle, "model_sha256": sha, "source_model_sha256": sha,
              "model_name": "synthetic.tflite", "plan": "float32", "started": start}
    lines = [json.dumps({k: v for k, v in values.items()}, separators=(",", ":")) for _, values in frames]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(header) + "\n")
        for i in range(n):
            name, _ = frames[i % len(frames)]
            extra = (f'"timestamp":{start + 60.0 * i:.3f},"frame":{i},"frame_path":"{name}","plan":"float32",'
                     f'"vehicle":"{vehicle}","model":"{sha}",')
            handle.write("{" + extra + lines[i % len(frames)][1:] + "\n")
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
