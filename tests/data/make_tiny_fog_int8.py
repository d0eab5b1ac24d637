"""Regenerate ``tiny_fog_int8.tflite``: the committed tiny fog model, full-integer quantised.

    python tests/data/make_tiny_fog_int8.py

int8 input and output (edgecam's ``--quantize int8``), calibrated on 16 brightness and noise
variants of ``tiny_fog_input.png``. Used where TensorFlow is absent (the tflite-runtime fallback
test) to check an int8 model through the device path.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).parent


def calibration():
    rng = np.random.default_rng(3)
    base = cv2.imread(str(HERE / "tiny_fog_input.png"))[..., ::-1].astype(np.float32)
    return [np.clip(base * rng.uniform(0.5, 1.3) + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
            for _ in range(16)]


def main():
    from converters import convert

    convert(HERE / "tiny_fog.keras", HERE / "tiny_fog_int8.tflite", quantize="int8",
            calibration=calibration(), labels=HERE / "tiny_fog_labels.txt")
    print("wrote tiny_fog_int8.tflite")


if __name__ == "__main__":
    main()
