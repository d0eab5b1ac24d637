"""Precision plans on *trained* networks: fidelity, accuracy, latency and size per plan.

``python -m benchmarks.quant_sweep`` trains each network of :data:`NETWORKS` on the fog task
(128 px, a fixed seed, a few epochs from scratch: no downloaded weights), caches the trained
model under the user cache directory, then converts it with every precision plan of
:mod:`converters.quant` and with ``quantize="auto"``. Per model and plan it reports CAM Pearson
median/p05/min against the float model's own maps and top-1 agreement (on held-out images, not
the calibration ones), held-out accuracy, interpreter latency as ratios to plain int8 and to
float32 (interleaved, same run), and file size. The rows go to ``benchmarks/quant_sweep_rows.json``
and the section to docs/benchmarks.md.

Run on demand (it trains networks: tens of minutes on 2 cores the first time, cached after)::

    python -m benchmarks.quant_sweep                    # every network
    python -m benchmarks.quant_sweep --only EfficientNetB0 --no-write
    python -m benchmarks.quant_sweep --train-only       # fill the cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

SIZE = 128
SEED = 0
N_TRAIN = 2000
N_HELD_OUT = 600
N_CALIBRATION = 200
BN_MOMENTUM = 0.9
QUICK_ARGS = ["--only", "demo-cnn", "--no-write"]


@dataclass(frozen=True)
class Network:
    """One trained network of the sweep.

    Attributes:
        name: row name.
        epochs: training epochs (budgeted per network: the sweep must fit a CI-free hour).
        builder: ``builder(keras) -> backbone`` taking 0-255 RGB input, or ``None`` for the
            demo CNN (``toolkit.train.build_model``).
        rescale: a leading ``Rescaling(1/127.5, -1)`` for backbones that expect [-1, 1] and do
            not rescale themselves.
    """

    name: str
    epochs: int
    builder: Optional[str] = None
    kwargs: tuple = ()
    rescale: bool = True


# In the order they are trained: the networks the issue measured first.
NETWORKS: Dict[str, Network] = {n.name: n for n in (
    Network("MobileNetV3-Small", 5, "MobileNetV3Small", (("include_preprocessing", True),), rescale=False),
    Network("EfficientNetB0", 3, "EfficientNetB0", (), rescale=False),
    Network("demo-cnn", 5),
    Network("MobileNetV2-0.35", 5, "MobileNetV2", (("alpha", 0.35),)),
    Network("MobileNetV2-1.0", 4, "MobileNetV2", (("alpha", 1.0),)),
    Network("MobileNetV3-Large", 4, "MobileNetV3Large", (("include_preprocessing", True),), rescale=False),
    Network("ResNet50", 3, "ResNet50", ()),
)}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgecam/quant_sweep`` (``~/.cache`` by default)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "edgecam" / "quant_sweep"


def fog_data(root: Path):
    """The fog dataset of the sweep (generated once into the cache): train, held-out, calibration.

    Returns:
        ``(train, held_out, calibration_dir, class_names)``: train/held-out are ``(x, y)`` with
        ``x`` uint8 ``(N, 128, 128, 3)``; the calibration folder holds ``N_CALIBRATION`` images
        drawn from the training set.
    """
    from toolkit.datasets.fog import generate_dataset, load_folder_dataset
    from firmware_host._io import atomic_write_bytes
    import cv2

    data = root / f"fog-{SIZE}px-{N_TRAIN + N_HELD_OUT}-seed{SEED}"
    if not (data / "dataset.json").exists():
        generate_dataset(data, N_TRAIN + N_HELD_OUT, size=SIZE, seed=SEED, progress=True)
    x, y, names = load_folder_dataset(data, size=SIZE)
    order = np.random.default_rng(SEED).permutation(len(x))
    train, held = order[:N_TRAIN], order[N_TRAIN:]
    calib = root / f"calibration-{N_CALIBRATION}"
    if not calib.is_dir() or len(list(calib.iterdir())) < N_CALIBRATION:
        calib.mkdir(parents=True, exist_ok=True)
        for i in train[:N_CALIBRATION]:
            ok, png = cv2.imencode(".png", cv2.cvtColor(x[i], cv2.COLOR_RGB2BGR))
            atomic_write_bytes(calib / f"calib_{int(i):05d}.png", png.tobytes())
    return (x[train], y[train]), (x[held], y[held]), calib, tuple(names)


def build(net: Network, num_classes: int):
    """The uncompiled Keras classifier: 0-255 RGB in, softmax out, GAP + Dense head."""
    import keras
    from toolkit.train import build_model

    if net.builder is None:
        model = build_model(num_classes, SIZE, "small", width=16)
        for layer in model.layers:
            if type(layer).__name__ == "BatchNormalization":
                layer.momentum = BN_MOMENTUM
        return model
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inp) if net.rescale else inp
    backbone = getattr(keras.applications, net.builder)(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, **dict(net.kwargs)
    )
    # keras.applications' BatchNorm momentum (0.99–0.999) needs thousands of steps before the
    # moving statistics match the weights; this budget has a few hundred (val accuracy at chance).
    for layer in backbone.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = BN_MOMENTUM
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name=net.name.replace(".", "_"))


def trained_model(net: Network, train, held, num_classes: int, root: Path):
    """Train ``net`` once (cached as ``<root>/<name>-<key>.keras``); return (model, held-out acc)."""
    import keras

    key = hashlib.sha256(json.dumps([net.name, net.epochs, net.builder, list(net.kwargs), SIZE, SEED,
                                     N_TRAIN, BN_MOMENTUM, 2]).encode()).hexdigest()[:10]
    path = root / f"{net.name}-{key}.keras"
    if path.exists():
        model = keras.models.load_model(path, safe_mode=True)
    else:
        keras.utils.set_random_seed(SEED)
        model = build(net, num_classes)
        steps = net.epochs * -(-len(train[0]) // 32)
        model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        t0 = time.perf_counter()
        model.fit(train[0].astype(np.float32), train[1], batch_size=32, epochs=net.epochs, verbose=2,
                  validation_data=(held[0].astype(np.float32), held[1]))
        print(f"{net.name}: trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        model.save(path)
    probs = model.predict(held[0].astype(np.float32), batch_size=64, verbose=0)
    return model, path, float(np.mean(np.argmax(probs, axis=1) == held[1]))


def _evaluation_plan(plan, images: np.ndarray):
    """The export plan with the held-out test images as the images to check on."""
    from dataclasses import replace

    from firmware_host.preprocess import preprocess

    x = np.stack([preprocess(img, plan.preprocessing) for img in images]).astype(np.float32)
    return replace(plan, images=list(images), x=x, held_out=np.arange(len(images)), image_source="held-out test images")


def _accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 32) -> float:
    hits = []
    for start in range(0, len(images), batch):
        exps = model.explain_batch(list(images[start : start + batch]))
        hits.extend(e.predicted_index == int(y) for e, y in zip(exps, labels[start : start + batch]))
    return float(np.mean(hits))


def measure_plans(keras_path: Path, held, calib: Path, workdir: Path) -> List[dict]:
    """Every LiteRT plan of one trained model, measured on the held-out test images.

    Fidelity is against the float model's own Grad-CAM (GradientTape) for the class the float
    model predicts; accuracy against the labels; latency interleaved across plans.
    """
    from converters.export import CONTAINERS, ConvertOptions, _Checker, base_metadata, build_endpoint, float_reference, plan_export
    from converters.quant import LITERT_PLANS, interleaved_latency, measure_fidelity
    from converters.export import _latency_runner, _load_candidate

    plan = plan_export(keras_path, workdir / "m.tflite", ConvertOptions(quantize="int8", calibration=calib))
    endpoint = build_endpoint(plan)
    evaluation = _evaluation_plan(plan, held[0])
    reference = float_reference(evaluation)
    checker = _Checker(plan, CONTAINERS["tflite"], workdir / "m.tflite", endpoint, base_metadata(plan, endpoint), None)
    rows, runners = [], {}
    for item in checker.candidates(LITERT_PLANS):
        if isinstance(item, tuple):
            rows.append({"plan": item[0], "error": str(item[1])})
            continue
        model = _load_candidate(item)
        fid = measure_fidelity(model.explain_batch, list(held[0]), reference)
        rows.append({"plan": item.plan, **fid.as_dict(), "accuracy": _accuracy(model, held[0], held[1]),
                     "size_kib": round(len(item.raw) / 1024, 1)})
        runners[item.plan] = _latency_runner(model)
        print(f"  {item.plan}: p05 {fid.pearson_p05:.4f} median {fid.pearson_median:.4f} top-1 {fid.top1:.3f}",
              file=sys.stderr)
    timed = interleaved_latency(runners, rounds=9, calls=20)
    for row in rows:
        if row["plan"] in timed:
            row["latency_ms"] = round(timed[row["plan"]], 4)
            row["x_int8"] = round(timed[row["plan"]] / timed["int8"], 3) if "int8" in timed else None
            row["x_float32"] = round(timed[row["plan"]] / timed["none"], 3) if "none" in timed else None
    return rows


def auto_choice(keras_path: Path, calib: Path, workdir: Path) -> dict:
    """What ``convert --quantize auto`` writes, measured and nominal cost, with its own table."""
    from converters import convert
    from firmware_host.errors import FidelityError

    out = {}
    for cost in ("measured", "nominal"):
        try:
            result = convert(keras_path, workdir / f"auto-{cost}.tflite", quantize="auto", calibration=calib, cost=cost)
            out[cost] = result.metadata.quantization
        except FidelityError as exc:
            out[cost] = f"refused: {exc}"
    try:
        convert(keras_path, workdir / "int8.tflite", quantize="int8", calibration=calib)
        out["int8_gate"] = "written"
    except FidelityError as exc:
        out["int8_gate"] = "refused"
        out["int8_gate_message"] = str(exc)
    return out


def sweep_model(name: str, keras_path: Path, accuracy: float, held, calib: Path, root: Path) -> List[dict]:
    """All plans of one network plus auto's choice, as rows for the report."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"quant-sweep-{name}-") as tmp:
        rows = measure_plans(keras_path, held, calib, Path(tmp))
        choice = auto_choice(keras_path, calib, Path(tmp))
    for row in rows:
        row.update(model=name, keras_accuracy=round(accuracy, 4), auto_measured=choice["measured"],
                   auto_nominal=choice["nominal"], int8_gate=choice["int8_gate"])
    return rows


ROWS = Path(__file__).with_name("quant_sweep_rows.json")


def write_rows(rows: List[dict]) -> None:
    """Merge ``rows`` into quant_sweep_rows.json (by model) and rewrite the docs section."""
    from ._report import write_section

    old = json.loads(ROWS.read_text()) if ROWS.exists() else []
    models = {r["model"] for r in rows}
    merged = [r for r in old if r["model"] not in models] + rows
    ROWS.write_text(json.dumps(merged, indent=1))
    write_section("quant_sweep", section(merged))


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def section(rows: List[dict]) -> str:
    """The docs/benchmarks.md section: one table row per model and plan."""
    import platform

    lines = [
        "## Precision plans on trained networks (`python -m benchmarks.quant_sweep`)",
        "",
        f"Trained here on the fog task ({SIZE} px, {N_TRAIN} images, seed {SEED}, a few epochs from scratch, "
        f"cached under ~/.cache/edgecam/quant_sweep), converted with every plan ({N_CALIBRATION} calibration "
        f"images), measured on {N_HELD_OUT} held-out images. Pearson and top-1 are against the float model's own "
        "Grad-CAM and class; accuracy against the labels. Latency: ai-edge-litert interpreter, one image, "
        f"medians of interleaved rounds on this machine ({platform.machine()}, 2 shared cores: ratios, not ms, "
        "are the result). `auto`: the plan `--quantize auto` writes (measured cost / nominal ARM cost); "
        "`int8 gate`: whether `--quantize int8` is written or refused.",
        "",
        "| model (acc) | plan | median | p05 | min | top-1 | accuracy | ×int8 | ×float32 | KiB | auto | int8 gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        auto = []
        if r.get("auto_measured") == r["plan"]:
            auto.append("measured")
        if r.get("auto_nominal") == r["plan"]:
            auto.append("nominal")
        if "error" in r:
            lines.append(f"| {r['model']} | {r['plan']} | failed: {r['error'][:80]} |||||||||| ")
            continue
        lines.append(
            f"| {r['model']} ({r['keras_accuracy']:.3f}) | {r['plan']} | {_fmt(r.get('pearson_median'), '.4f')} | "
            f"{_fmt(r.get('pearson_p05'), '.4f')} | {_fmt(r.get('pearson_min'), '.3f')} | {_fmt(r.get('top1'), '.3f')} | "
            f"{_fmt(r.get('accuracy'), '.3f')} | {_fmt(r.get('x_int8'), '.2f')} | {_fmt(r.get('x_float32'), '.2f')} | "
            f"{_fmt(r.get('size_kib'), '.0f')} | {', '.join(auto)} | {r.get('int8_gate', '') if r['plan'] == 'int8' else ''} |"
        )
    missing = [name for name in NETWORKS if name not in {r["model"] for r in rows}]
    if missing:
        lines += ["", f"Not measured yet (not trained within the session's CPU budget): {', '.join(missing)}."]
    lines.append("")
    lines.append("Per-class int8 p05 (class_0…3 = dense, moderate, light, no fog; the foggy classes are the tail): " + "; ".join(
        f"{r['model']}: " + ", ".join(f"{k} {v:.3f}" for k, v in (r.get("p05_by_class") or {}).items())
        for r in rows if r["plan"] == "int8" and "error" not in r))
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quant_sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(NETWORKS), help="networks to run")
    parser.add_argument("--train-only", action="store_true", help="train and cache, do not convert")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md and the rows file")
    parser.add_argument("--from-rows", nargs="+", type=Path, help="only rewrite the docs from saved rows files")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if args.from_rows:
        write_rows([row for path in args.from_rows for row in json.loads(path.read_text())])
        return 0
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    train, held, calib, names = fog_data(root)
    rows = []
    for name in args.only or list(NETWORKS):
        model, path, acc = trained_model(NETWORKS[name], train, held, len(names), root)
        print(f"{name}: held-out accuracy {acc:.3f} ({path})", file=sys.stderr)
        if args.train_only:
            continue
        rows.extend(sweep_model(name, path, acc, held, calib, root))
    if rows:
        dump = root / f"rows-{'-'.join(sorted({r['model'] for r in rows}))}.json"
        dump.write_text(json.dumps(rows, indent=1))
        print(f"rows: {dump}", file=sys.stderr)
        if not args.no_write:
            write_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
