"""Where int8 loses a trained network: per-layer error from TF's QuantizationDebugger.

``python -m benchmarks.int8_debug EfficientNetB0`` loads a network trained by
:mod:`benchmarks.quant_sweep` (from its cache), quantizes it to full int8 with the sweep's
calibration images, and runs ``tf.lite.experimental.QuantizationDebugger`` on held-out images,
split into clear (no-fog, light) and foggy (dense, moderate) ones. Per quantized tensor it reports
``rmse / scale`` — the quantization error in int8 steps (≈ 0.29 for a uniform rounding error;
much more means the range does not fit the values) — and the share of values under one int8 step.
The layers with the largest error, and the op types they belong to, go to stdout and to
``~/.cache/edgecam/quant_sweep/int8_debug-<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np


def _rows(debugger) -> List[Dict]:
    """The debugger's per-tensor dump (it carries each tensor's int8 scale) as dicts."""
    import csv
    import io

    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        out: Dict = {"tensor": row.get("tensor_name", "")}
        for key, value in row.items():
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                pass
        rows.append(out)
    return rows


def debug(model_name: str, images: Dict[str, np.ndarray], calib: List[np.ndarray]) -> Dict[str, List[Dict]]:
    """Per-layer statistics of full-int8 quantization, per image group."""
    import keras
    import tensorflow as tf

    from benchmarks.quant_sweep import cache_dir

    path = next(cache_dir().glob(f"{model_name}-*.keras"))
    model = keras.models.load_model(path, safe_mode=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([img[None].astype(np.float32)] for img in calib)
    out = {}
    for group, x in images.items():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([img[None].astype(np.float32)] for img in x))
        debugger.run()
        rows = _rows(debugger)
        for row in rows:
            if row.get("scale"):
                row["rmse_steps"] = float(np.sqrt(row.get("mean_squared_error", 0.0)) / row["scale"])
        out[group] = sorted(rows, key=lambda r: -r.get("rmse_steps", 0.0))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_debug", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a network name of benchmarks.quant_sweep.NETWORKS (trained and cached)")
    parser.add_argument("--images", type=int, default=24, help="debug images per group")
    args = parser.parse_args(argv)
    from benchmarks.quant_sweep import cache_dir, fog_data
    from firmware_host.imageio import list_images, read_image

    train, held, calib_dir, names = fog_data(cache_dir())
    calib = [read_image(p, rgb=True) for p in list_images(calib_dir)][:100]
    groups = {"foggy": [0, 1], "clear": [2, 3]}  # dense, moderate | light, no fog (labels.txt order)
    images = {}
    for group, classes in groups.items():
        idx = np.nonzero(np.isin(held[1], classes))[0][: args.images]
        images[group] = held[0][idx]
    result = debug(args.model, images, calib)
    for group, rows in result.items():
        print(f"\n{args.model}, {group} images: tensors with the largest int8 error (rmse in int8 steps)")
        for row in rows[:12]:
            print(f"  {row.get('rmse_steps', 0):8.2f}  {row['tensor'][:110]}")
    dump = cache_dir() / f"int8_debug-{args.model}.json"
    dump.write_text(json.dumps(result, indent=1))
    print(f"\nall rows: {dump}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
