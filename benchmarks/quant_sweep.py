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
        return build_model(num_classes, SIZE, "small", width=16)
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
                                     N_TRAIN, BN_MOMENTUM]).encode()).hexdigest()[:10]
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quant_sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(NETWORKS), help="networks to run")
    parser.add_argument("--train-only", action="store_true", help="train and cache, do not convert")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    train, held, calib, names = fog_data(root)
    rows = []
    for name in args.only or list(NETWORKS):
        model, path, acc = trained_model(NETWORKS[name], train, held, len(names), root)
        print(f"{name}: held-out accuracy {acc:.3f} ({path})", file=sys.stderr)
        if args.train_only:
            continue
        rows.extend(sweep_model(name, path, acc, held, calib, names, root))
    if rows and not args.no_write:
        write_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
