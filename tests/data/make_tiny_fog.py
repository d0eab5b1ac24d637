"""Regenerate the committed tiny fog model and its reference outputs.

    python tests/data/make_tiny_fog.py

Writes, next to this file:
* ``tiny_fog.keras`` — a 32×32 RGB, 4-class CNN (Rescaling → 2 convs → GAP → Dense softmax);
* ``tiny_fog.tflite`` — its edgecam conversion (float32);
* ``tiny_fog_input.png`` — a test image;
* ``tiny_fog_expected.npz`` — Keras probabilities and a GradientTape Grad-CAM of that image for
  every class, computed here with TensorFlow, so runtime tests can check the device path with
  TensorFlow absent.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = Path(__file__).parent
LABELS = ["dense-fog", "moderate-fog", "light-fog", "no-fog"]


def build():
    keras.utils.set_random_seed(42)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    dense = keras.layers.Dense(4, activation="softmax", name="fog_level")
    model = keras.Model(inp, dense(x), name="tiny_fog")
    dense.kernel.assign(dense.kernel * 6.0)  # decisive classes for a random model
    return model


def image():
    rng = np.random.default_rng(7)
    sky = np.linspace(200, 120, 32)[:, None, None] * np.ones((32, 32, 3))
    img = sky + rng.normal(0, 8, (32, 32, 3))
    cv2.rectangle(img, (8, 18), (22, 28), (40, 40, 160), -1)  # a "vehicle"
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    from converters import convert

    model = build()
    model.save(HERE / "tiny_fog.keras")
    (HERE / "tiny_fog_labels.txt").write_text("\n".join(LABELS) + "\n")
    img = image()
    cv2.imwrite(str(HERE / "tiny_fog_input.png"), img[..., ::-1])
    convert(HERE / "tiny_fog.keras", HERE / "tiny_fog.tflite", labels=HERE / "tiny_fog_labels.txt")

    x = tf.constant(img[None].astype("float32"))
    features = keras.Model(model.inputs, model.get_layer("last_conv").output)
    dense, gap = model.get_layer("fog_level"), model.get_layer("gap")
    cams = []
    for c in range(4):
        with tf.GradientTape() as tape:
            A = features(x)
            tape.watch(A)
            z = tf.matmul(gap(A), dense.kernel) + dense.bias
            score = z[:, c]
        g = tape.gradient(score, A).numpy()
        cams.append(np.maximum((A.numpy() * g.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)[0])
    np.savez(
        HERE / "tiny_fog_expected.npz",
        probabilities=np.asarray(model(x))[0],
        gradcam=np.stack(cams).astype(np.float32),
    )
    print("wrote tiny_fog.{keras,tflite}, tiny_fog_input.png, tiny_fog_expected.npz")


if __name__ == "__main__":
    main()
