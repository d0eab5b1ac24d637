"""Architecture sweep: real Keras application CNNs through ``converters.convert``.

``python -m benchmarks.arch_sweep [--only NAME ...] [--no-int8]`` builds each
``keras.applications`` network with random weights (no downloads) at a small input size, in two
shapes:

* ``top`` — ``include_top=True, classes=10`` (the application's own head);
* ``nested`` — ``include_top=False`` used as a layer in
  ``Input → Rescaling → backbone → GAP → Dropout → Dense(softmax)`` (transfer learning).

Random-weight nets are degenerate (activations vanish through dozens of BatchNormalizations
with moving statistics 0/1, logits tie), so before converting each net gets a data-dependent
re-initialisation, stated in the table: every BatchNormalization's moving statistics are set
to the batch statistics of the calibration images (momentum 0, one training-mode pass). Then
either the classifier's kernel is scaled so the logits have standard deviation 3 (default), or,
with ``--fit STEPS``, the net is trained that many Adam steps on a synthetic 10-class task
(a red or blue blob at one of five places) and its BN statistics are set again. Random nets
are chaotic under int8 (their feature maps decorrelate: MobileNetV2-64 0.65), so only the
``--fit`` numbers say something about int8 on real, trained models.

Each model is converted in float32 and int8 and run through ``firmware_host`` (the device
path); the maps are compared with an independent GradientTape Grad-CAM computed on a twin
built with ``classifier_activation=None`` (Keras' own functional graph, no edgecam code), at
the layer feeding the model's global pooling / Flatten. Writes the table into
docs/benchmarks.md (section ``arch_sweep``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# (application, input size): the smallest sizes each application accepts, or 64 px.
ARCHS = [
    ("MobileNetV2", 64),
    ("MobileNetV3Small", 64),
    ("MobileNetV3Large", 64),
    ("ResNet50", 64),
    ("EfficientNetB0", 64),
    ("DenseNet121", 64),
    ("VGG16", 64),
    ("Xception", 71),
    ("InceptionV3", 75),
]
CLASSES = 10
COLLAPSE = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten")



# `python -m benchmarks --quick`: two small architectures, float32 only.
QUICK_ARGS = ["--only", "MobileNetV2", "ResNet50", "--shape", "top", "--no-int8", "--no-write"]

def _images(n: int, size: int, seed: int):
    """Smooth random RGB uint8 images with a bright blob (so maps have structure)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        cy, cx = rng.integers(size // 6, size - size // 6, size=2)
        img += 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (size * 0.8))[..., None]
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


_SPOTS = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75), (0.5, 0.5))


def _task(n: int, size: int, seed: int):
    """A synthetic 10-class task: a red or blue blob at one of 5 places, on smooth noise.

    Returns RGB uint8 images and labels ``spot + 5·colour``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for _ in range(n):
        label = int(rng.integers(0, CLASSES))
        cy, cx = (np.array(_SPOTS[label % 5]) + rng.normal(0, 0.04, 2)) * size
        small = rng.integers(0, 140, size=(6, 6, 3), dtype=np.uint8)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        blob = 160 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (size * 1.2))
        img[..., 0 if label < 5 else 2] += blob
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        labels.append(label)
    return images, np.array(labels)


def _fit(model, x, y, steps: int):
    """A few Adam steps on the synthetic task: weights with structure, not a trained model."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, len(x), 32)
        model.train_on_batch(x[idx], y[idx])


def _leading_rescaling(model) -> bool:
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        return type(layer).__name__ in ("Rescaling", "Normalization")
    return False


def _build(name: str, size: int, shape: str, activation):
    """The model (``activation`` = final activation), plus the names needed for the reference."""
    import keras

    keras.utils.set_random_seed(0)
    app = getattr(keras.applications, name)
    if shape == "top":
        return app(weights=None, input_shape=(size, size, 3), classes=CLASSES, classifier_activation=activation)
    backbone = app(weights=None, include_top=False, input_shape=(size, size, 3))
    inp = keras.Input((size, size, 3))
    # MobileNetV3 and EfficientNet scale raw pixels themselves: scaling them twice would squeeze
    # the input into a sliver of its range (float32 does not mind, int8 does).
    scale, offset = (1.0, 0.0) if _leading_rescaling(backbone) else (1.0 / 127.5, -1.0)
    x = keras.layers.Rescaling(scale, offset=offset, name="prep")(inp)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    return keras.Model(inp, keras.layers.Dense(CLASSES, activation=activation, name="pred")(x))


def _recalibrate(model, x):
    """Moving BN statistics := batch statistics of ``x``; then logits std 3 (see module doc)."""
    from benchmarks._report import fit_batchnorm

    fit_batchnorm(model, x)
    last = [l for l in _all_layers(model) if hasattr(l, "kernel")][-1]
    return last


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        else:
            yield layer


def _expected_target(model) -> str:
    """The layer feeding the global pooling (else the Flatten), via Keras' own graph API."""
    layers = list(model.layers)
    pools = [l for l in layers if type(l).__name__ in COLLAPSE[:2]]
    flats = [l for l in layers if type(l).__name__ == "Flatten"]
    collapse = (pools or flats)[-1]
    op = collapse.input._keras_history[0]
    if hasattr(op, "layers") and op.layers:
        return op.name + "/" + op.layers[-1].name
    return op.name


def _reference(logit_model, expected: str, x, classes=None):
    """GradientTape Grad-CAM on the logit at ``expected`` (Selvaraju et al. 2017, Eq. 1-2)."""
    import keras
    import tensorflow as tf

    parts = expected.split("/")
    if len(parts) == 1:
        probe = keras.Model(logit_model.inputs, [logit_model.get_layer(parts[0]).output, logit_model.output])
        run = lambda t: probe(t, training=False)  # noqa: E731
    else:  # nested: A = backbone(prep(x)); logits = pred(gap(A)) written out by hand
        prep, backbone = logit_model.get_layer("prep"), logit_model.get_layer(parts[0])
        gap, pred = logit_model.get_layer("gap"), logit_model.get_layer("pred")

        def run(t):
            A = backbone(prep(t), training=False)
            return A, tf.matmul(gap(A), pred.kernel) + pred.bias

    maps, chosen, all_logits = [], [], []
    for start in range(0, len(x), 8):
        xb = tf.constant(x[start : start + 8])
        with tf.GradientTape() as tape:
            A, z = run(xb)
            tape.watch(A)
            cls = tf.argmax(z, -1) if classes is None else tf.constant(classes[start : start + 8])
            score = tf.reduce_sum(z * tf.one_hot(cls, CLASSES), -1)
        g = tape.gradient(score, A).numpy()
        maps.append(np.maximum((A.numpy() * g.mean(axis=(1, 2), keepdims=True)).sum(-1), 0))
        chosen.append(np.asarray(cls))
        all_logits.append(z.numpy())
    return np.concatenate(maps), np.concatenate(chosen), np.concatenate(all_logits)


def sweep_one(name: str, size: int, shape: str, int8: bool = True, workdir: Path = Path("."), fit: int = 0):
    """Convert one architecture; returns a table row. ``fit`` > 0: that many training steps."""
    from converters import convert
    from firmware_host import ExplainableModel
    from firmware_host.compare import pearson
    from firmware_host.preprocess import preprocess

    model = _build(name, size, shape, "softmax")
    twin = _build(name, size, shape, None)
    if fit:
        train, labels = _task(512, size, 0)
        calib, probe = _task(32, size, 1)[0], _task(12, size, 2)[0]
    else:
        calib, probe = _images(16, size, 1), _images(12, size, 2)
    raw = not _leading_rescaling(model) and shape == "top"
    kwargs = {"input_scale": [1 / 127.5], "input_offset": [-1.0]} if raw else {}

    # Data-dependent re-initialisation, on the calibration images as the model sees them.
    from firmware_host.metadata import Preprocessing

    pre = Preprocessing(size, size, "rgb", (1 / 127.5,) if raw else (1.0,), (-1.0,) if raw else (0.0,))
    xc = np.stack([preprocess(i, pre) for i in calib])
    last = _recalibrate(model, xc)
    if fit:
        _fit(model, np.stack([preprocess(i, pre) for i in train]), labels, fit)
        _recalibrate(model, xc)
    twin.set_weights(model.get_weights())
    if not fit:
        _, _, logits = _reference(twin, _expected_target(twin), xc)
        factor = 3.0 / max(float(logits.std(axis=-1).mean()), 1e-12)
        last.kernel.assign(last.kernel * factor)
        if getattr(last, "bias", None) is not None:
            last.bias.assign(last.bias * factor)
        twin.set_weights(model.get_weights())

    expected = _expected_target(model)
    xp = np.stack([preprocess(i, pre) for i in probe])
    ref_cam, ref_cls, ref_logits = _reference(twin, _expected_target(twin), xp)
    row = {"architecture": name, "shape": shape, "input": f"{size}px"}
    start = time.perf_counter()
    result = convert(model, workdir / f"{name}_{shape}.tflite", calibration=calib, **kwargs)
    seconds = time.perf_counter() - start
    meta = result.metadata
    # The twin's auto-generated layer names differ (activation_17 vs activation_60): compare
    # by position in the graph via the names in ``model`` itself.
    row.update(
        mode=meta.cam_mode,
        target=meta.target_layer,
        target_ok="yes" if meta.target_layer == expected else f"NO (expected {expected})",
        logit_std=f"{float(ref_logits.std(axis=-1).mean()):.2f}",
    )
    for quant in ("none", "int8") if int8 else ("none",):
        path = result.path if quant == "none" else workdir / f"{name}_{shape}_int8.tflite"
        if quant == "int8":
            convert(model, path, calibration=calib, quantize="int8", self_check=False, **kwargs)
        # Maps for the class Keras predicts (as the converter's self-check); top-1 separately.
        exps = ExplainableModel(path).explain_batch(probe, class_index=ref_cls.astype(int))
        corr = [pearson(e.cam, ref_cam[i]) for i, e in enumerate(exps)]
        top1 = np.mean([e.predicted_index == int(ref_cls[i]) for i, e in enumerate(exps)])
        label = "float32" if quant == "none" else "int8"
        row[f"{label} Pearson median/min"] = f"{np.median(corr):.4f} / {np.min(corr):.4f}"
        row[f"{label} top-1"] = f"{top1:.2f}"
    row["convert s (float32)"] = f"{seconds:.1f}"
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="architecture names (default: all)")
    parser.add_argument("--shape", choices=["top", "nested", "both"], default="both")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--fit", type=int, default=0, metavar="STEPS",
                        help="train STEPS Adam steps on a synthetic 10-class task first (default: 0)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch docs/")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    from benchmarks._report import write_section

    rows = []
    shapes = ["top", "nested"] if args.shape == "both" else [args.shape]
    with tempfile.TemporaryDirectory(prefix="edgecam-sweep-") as tmp:
        for name, size in ARCHS:
            if args.only and name not in args.only:
                continue
            for shape in shapes:
                try:
                    row = sweep_one(name, size, shape, int8=not args.no_int8, workdir=Path(tmp), fit=args.fit)
                except Exception as exc:  # a failing architecture is a result, not a crash
                    row = {"architecture": name, "shape": shape, "input": f"{size}px",
                           "mode": "FAILED", "target": f"{type(exc).__name__}: {str(exc)[:160]}"}
                print(row, flush=True)
                rows.append(row)
                if not args.no_write:  # a partial table survives an interrupted sweep
                    write_section("arch_sweep", _section(_merge_rows(row, args.fit), args.fit))
    text = _section(rows, args.fit)
    print(text)
    failed = [r for r in rows if r.get("mode") == "FAILED"]
    return 1 if failed else 0


ROWS = Path(__file__).with_name("arch_sweep_rows.json")


def _merge_rows(row, fit: int):
    """Keep every architecture's latest row (same ``--fit``) across runs: the sweep is long, and
    runs of a few architectures at a time (``--only``) add up to one table."""
    import json

    from firmware_host._io import atomic_write_text

    try:
        stored = json.loads(ROWS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    if stored.get("fit") != fit:
        stored = {"fit": fit, "rows": {}}
    stored["rows"][f"{row['architecture']}|{row['shape']}"] = row
    atomic_write_text(ROWS, json.dumps(stored, indent=1, ensure_ascii=False))
    order = {name: i for i, (name, _) in enumerate(ARCHS)}
    return sorted(stored["rows"].values(), key=lambda r: (order.get(r["architecture"], 99), r["shape"] != "top"))


def _section(rows, fit: int) -> str:
    from benchmarks._report import machine, table

    keys = list(max(rows, key=len))
    rows = [{k: r.get(k, "") for k in keys} for r in rows]
    weights = (
        f"random weights trained {fit} Adam steps (batch 32) on a synthetic 10-class task (a red or "
        "blue blob at one of 5 places; calibration and probe images from the same task)"
        if fit
        else "random weights, classifier scaled to logit std 3"
    )
    return (
        "## Architecture sweep (`python -m benchmarks.arch_sweep"
        + (f" --fit {fit}" if fit else "")
        + "`)\n\n"
        f"Machine: {machine()}.\n\n"
        f"keras.applications networks, no downloads: {weights}; BatchNormalization statistics "
        "then set from the calibration images (see benchmarks/arch_sweep.py). `top` = the "
        "application's own head (`include_top=True, classes=10`); `nested` = `include_top=False` "
        "backbone used as a layer in Input → Rescaling → backbone → GAP → Dropout → Dense(softmax). "
        "Pearson per image between `ExplainableModel.explain` maps and an independent GradientTape "
        "Grad-CAM on the logit (Keras' own graph, twin model with `classifier_activation=None`) for "
        "the class Keras predicts, 12 probe images, at feature-map resolution; top-1 of the "
        "exported model against the Keras logits. `target_ok`: the converter chose the layer "
        "feeding the model's global pooling/Flatten.\n\n" + table(rows)
    )


if __name__ == "__main__":
    sys.exit(main())
