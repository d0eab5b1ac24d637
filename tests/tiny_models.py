"""Tiny Keras classifiers, one per head kind, each with an independent Grad-CAM reference.

Every factory returns a :class:`Case`: the model, plus ``features(x) → A`` and ``logits(A)``
written by hand from the same layer objects (not through edgecam's graph replay), so tests can
compute a GradientTape Grad-CAM that shares no code with the converter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

SIZE = 24


@dataclass
class Case:
    name: str
    model: object
    features: Callable  # x → A (N, h, w, C)
    logits: Callable  # A → logits (N, K), pre-activation
    target: str
    classes: int
    mode: str  # the CAM mode the converter must choose


def _keras():
    import keras

    return keras


def _dense_logits(dense, x):
    import tensorflow as tf

    out = tf.matmul(x, dense.kernel)
    return out + dense.bias if dense.use_bias else out


def _sharpen(layer, factor=6.0):
    """Scale a random classifier kernel so the untrained model's classes are not near-ties."""
    layer.kernel.assign(layer.kernel * factor)


def _randomize_bn(bn, rng):
    bn.moving_mean.assign(rng.normal(0, 0.5, size=bn.moving_mean.shape).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=bn.moving_variance.shape).astype("float32"))
    bn.gamma.assign(rng.normal(1, 0.5, size=bn.gamma.shape).astype("float32"))
    bn.beta.assign(rng.normal(0, 0.5, size=bn.beta.shape).astype("float32"))


def _trunk(inp, channels=12, name="last"):
    layers = _keras().layers
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    return layers.Conv2D(channels, 3, padding="same", activation="relu", name=name)(x)


def gap_dense(seed=0) -> Case:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    a = _trunk(inp)
    gap = keras.layers.GlobalAveragePooling2D(name="gap")
    dense = keras.layers.Dense(4, activation="softmax", name="pred")
    model = keras.Model(inp, dense(gap(a)))
    _sharpen(dense)
    feats = keras.Model(inp, a)
    return Case("gap_dense", model, feats, lambda A: _dense_logits(dense, gap(A)), "last", 4, "linear")


def gap_bn_dropout_dense(seed=1) -> Case:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    a = _trunk(inp)
    gap = keras.layers.GlobalAveragePooling2D(name="gap")
    bn = keras.layers.BatchNormalization(name="bn")
    drop = keras.layers.Dropout(0.3, name="drop")
    dense = keras.layers.Dense(4, activation="softmax", name="pred")
    model = keras.Model(inp, dense(drop(bn(gap(a)))))
    _randomize_bn(bn, rng)
    _sharpen(dense)
    feats = keras.Model(inp, a)
    return Case(
        "gap_bn_dropout_dense", model, feats,
        lambda A: _dense_logits(dense, bn(gap(A), training=False)), "last", 4, "linear",
    )


def conv_classmap(seed=2) -> Case:
    """A 1×1 conv whose channels are the classes, GAP, then a separate softmax."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    x = _trunk(inp, name="features")
    cmap = keras.layers.Conv2D(4, 1, name="classmap")(x)
    cmap_layer = cmap._keras_history[0]
    gap = keras.layers.GlobalAveragePooling2D(name="gap")
    model = keras.Model(inp, keras.layers.Activation("softmax", name="softmax")(gap(cmap)))
    _sharpen(cmap_layer)
    feats = keras.Model(inp, cmap)
    return Case("conv_classmap", model, feats, lambda A: gap(A), "classmap", 4, "linear")


def flatten_dense(seed=3) -> Case:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    a = _trunk(inp, channels=6)
    flat = keras.layers.Flatten(name="flat")
    dense = keras.layers.Dense(3, activation="softmax", name="pred")
    model = keras.Model(inp, dense(flat(a)))
    _sharpen(dense, 3.0)
    feats = keras.Model(inp, a)
    return Case("flatten_dense", model, feats, lambda A: _dense_logits(dense, flat(A)), "last", 3, "flatten")


def mlp_relu(seed=4) -> Case:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    a = _trunk(inp)
    gap = keras.layers.GlobalAveragePooling2D(name="gap")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")
    dense = keras.layers.Dense(4, activation="softmax", name="pred")
    model = keras.Model(inp, dense(hidden(gap(a))))
    _sharpen(hidden, 3.0)
    _sharpen(dense)
    feats = keras.Model(inp, a)
    return Case("mlp_relu", model, feats, lambda A: _dense_logits(dense, hidden(gap(A))), "last", 4, "gradient")


def nested_backbone(seed=5) -> Case:
    """Transfer-learning shape: Rescaling → backbone model (used as a layer) → GAP → Dense."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    b_in = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="b_conv1")(b_in)
    x = layers.MaxPooling2D(name="b_pool")(x)
    x = layers.Conv2D(10, 3, padding="same", name="b_conv2")(x)
    x = layers.BatchNormalization(name="b_bn")(x)
    x = layers.ReLU(name="b_relu")(x)
    backbone = keras.Model(b_in, x, name="backbone")
    _randomize_bn(backbone.get_layer("b_bn"), np.random.default_rng(seed))
    inp = keras.Input((SIZE, SIZE, 3))
    rescale = layers.Rescaling(1.0 / 255.0, name="rescale")
    gap = layers.GlobalAveragePooling2D(name="gap")
    dense = layers.Dense(5, activation="softmax", name="pred")
    model = keras.Model(inp, dense(gap(backbone(rescale(inp)))))
    _sharpen(dense)
    return Case(
        "nested_backbone", model, lambda x: backbone(rescale(x), training=False),
        lambda A: _dense_logits(dense, gap(A)), "backbone/b_relu", 5, "linear",
    )


def sigmoid_binary(seed=6) -> Case:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    a = _trunk(inp)
    gap = keras.layers.GlobalAveragePooling2D(name="gap")
    dense = keras.layers.Dense(1, activation="sigmoid", name="pred")
    model = keras.Model(inp, dense(gap(a)))
    _sharpen(dense)
    feats = keras.Model(inp, a)

    def logits(A):
        import tensorflow as tf

        z = _dense_logits(dense, gap(A))
        return tf.concat([-z, z], axis=-1)  # class 0 = negative, class 1 = positive

    return Case("sigmoid_binary", model, feats, logits, "last", 2, "linear")


HEADS = {
    f.__name__: f
    for f in (gap_dense, gap_bn_dropout_dense, conv_classmap, flatten_dense, mlp_relu, nested_backbone, sigmoid_binary)
}


def images(n=12, seed=0, size=SIZE):
    """Smooth random RGB uint8 images with a bright blob, so CAMs have structure."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        cy, cx = rng.integers(4, size - 4, size=2)
        yy, xx = np.mgrid[:size, :size]
        img += 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)[..., None]
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def reference_gradcam(case: Case, imgs, class_index=None):
    """Independent GradientTape Grad-CAM on the pre-activation logit: (ReLU'd maps, classes)."""
    import tensorflow as tf

    x = tf.constant(np.stack(imgs).astype("float32"))
    with tf.GradientTape() as tape:
        A = case.features(x)
        tape.watch(A)
        z = case.logits(A)
        cls = tf.argmax(z, axis=-1) if class_index is None else tf.constant(np.broadcast_to(class_index, (len(imgs),)))
        score = tf.reduce_sum(z * tf.one_hot(cls, z.shape[-1]), axis=-1)
    g = tape.gradient(score, A).numpy()
    alpha = g.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((A.numpy() * alpha).sum(-1), 0)
    return cam, np.asarray(cls)


def agreement(case: Case, explanations, imgs):
    """Per-image Pearson of the edge maps with :func:`reference_gradcam`, and top-1 agreement."""
    from firmware_host.compare import pearson

    ref_cam, ref_cls = reference_gradcam(case, imgs)
    corr = [pearson(e.cam, ref_cam[i]) for i, e in enumerate(explanations)]
    top1 = float(np.mean([e.predicted_index == ref_cls[i] for i, e in enumerate(explanations)]))
    return corr, top1


# Module-scoped fixtures the conversion tests share: `from tests.tiny_models import calib, probe`.
@pytest.fixture(scope="module")
def calib():
    """16 calibration images (int8, approximate weights, self-check)."""
    return images(16, seed=1)


@pytest.fixture(scope="module")
def probe():
    """10 held-out images the exported models are compared on."""
    return images(10, seed=2)
