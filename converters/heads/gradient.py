"""Exact Grad-CAM for non-linear heads, with no autodiff on the device.

The gradient of the chosen logit with respect to the feature maps is written as forward
builtin ops: the head is replayed step by step (keeping what each derivative needs), then the
one-hot class selection is pulled back through each step by its vector-Jacobian product —
ReLU masks become multiplies, Dense layers become matmuls with the transposed kernel, global
average pooling becomes a broadcast. Grad-CAM's channel weights are the spatial mean of that
gradient (Eq. 1 of Selvaraju et al. 2017); HiResCAM (Draelos & Collins 2020) multiplies it
element-wise with A instead.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..head import Step


def _act_forward(tf, name: str, params: dict, z):
    if name == "linear":
        return z
    if name == "relu":
        return tf.nn.relu(z)
    if name == "relu6":
        return tf.nn.relu6(z)
    if name == "relu_general":
        # keras.layers.ReLU: max_value, negative_slope, threshold
        out = tf.where(z >= params["threshold"], z, params["negative_slope"] * (z - params["threshold"]))
        if np.isfinite(params["max_value"]):
            out = tf.minimum(out, params["max_value"])
        return out
    if name == "leaky_relu":
        return tf.where(z > 0, z, params.get("negative_slope", 0.2) * z)
    if name == "sigmoid":
        return tf.sigmoid(z)
    if name == "hard_sigmoid":
        return tf.clip_by_value(z / 6.0 + 0.5, 0.0, 1.0)
    if name == "tanh":
        return tf.tanh(z)
    if name == "elu":
        return tf.where(z > 0, z, params.get("alpha", 1.0) * (tf.exp(z) - 1.0))
    if name == "softplus":
        return tf.math.softplus(z)
    if name == "silu":
        return z * tf.sigmoid(z)
    raise ValueError(f"No derivative rule for activation {name!r}")


def _act_derivative(tf, name: str, params: dict, z):
    one = tf.ones_like(z)
    zero = tf.zeros_like(z)
    if name == "linear":
        return one
    if name == "relu":
        return tf.where(z > 0, one, zero)
    if name == "relu6":
        return tf.where(tf.logical_and(z > 0, z < 6.0), one, zero)
    if name == "relu_general":
        slope = tf.where(z >= params["threshold"], one, params["negative_slope"] * one)
        if np.isfinite(params["max_value"]):
            slope = tf.where(z >= params["max_value"], zero, slope)
        return slope
    if name == "leaky_relu":
        return tf.where(z > 0, one, params.get("negative_slope", 0.2) * one)
    if name == "sigmoid":
        s = tf.sigmoid(z)
        return s * (1.0 - s)
    if name == "hard_sigmoid":
        return tf.where(tf.logical_and(z > -3.0, z < 3.0), one / 6.0, zero)
    if name == "tanh":
        t = tf.tanh(z)
        return 1.0 - t * t
    if name == "elu":
        return tf.where(z > 0, one, params.get("alpha", 1.0) * tf.exp(z))
    if name == "softplus":
        return tf.sigmoid(z)
    if name == "silu":
        s = tf.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    raise ValueError(f"No derivative rule for activation {name!r}")


def _forward(tf, step: Step, x):
    """Returns ``(y, saved)``: the step's output and what its backward pass needs."""
    kind = step.kind
    if kind == "identity":
        return x, None
    if kind == "affine":
        return x * tf.constant(step.scale, tf.float32) + tf.constant(step.bias, tf.float32), None
    if kind == "dense":
        z = tf.tensordot(x, tf.constant(step.kernel, tf.float32), axes=1) + tf.constant(step.bias, tf.float32)
        return _act_forward(tf, step.activation, step.param, z), z
    if kind == "act":
        return _act_forward(tf, step.activation, step.param, x), x
    if kind == "gap":
        return tf.reduce_mean(x, axis=[1, 2], keepdims=step.keepdims), x
    if kind == "gmp":
        return tf.reduce_max(x, axis=[1, 2], keepdims=step.keepdims), x
    if kind in ("flatten", "reshape"):
        target = [-1, int(np.prod(x.shape[1:]))] if kind == "flatten" else [-1, *step.shape]
        return tf.reshape(x, target), x
    raise ValueError(f"No gradient rule for step kind {kind!r}")


def _backward(tf, step: Step, saved, g):
    """Vector-Jacobian product: pull ``g = ∂z/∂y`` back to ``∂z/∂x``."""
    kind = step.kind
    if kind == "identity":
        return g
    if kind == "affine":
        return g * tf.constant(step.scale, tf.float32)
    if kind == "dense":
        g = g * _act_derivative(tf, step.activation, step.param, saved)
        return tf.tensordot(g, tf.constant(step.kernel.T, tf.float32), axes=1)
    if kind == "act":
        return g * _act_derivative(tf, step.activation, step.param, saved)
    if kind == "gap":
        h, w = int(saved.shape[1]), int(saved.shape[2])
        g = tf.reshape(g, [-1, 1, 1, int(saved.shape[3])])
        return tf.broadcast_to(g / float(h * w), tf.shape(saved))
    if kind == "gmp":
        # TF's own max-gradient splits evenly between ties; do the same.
        peak = tf.reduce_max(saved, axis=[1, 2], keepdims=True)
        mask = tf.cast(tf.equal(saved, peak), tf.float32)
        count = tf.reduce_sum(mask, axis=[1, 2], keepdims=True)
        g = tf.reshape(g, [-1, 1, 1, int(saved.shape[3])])
        return mask * g / count
    if kind in ("flatten", "reshape"):
        return tf.reshape(g, tf.shape(saved))
    raise ValueError(f"No gradient rule for step kind {kind!r}")


def gradient_cam(A, steps: Sequence[Step], class_index, num_logits: int, method: str = "gradcam") -> dict:
    """The map of the selected class from an in-graph gradient.

    Args:
        A: ``(N, h, w, C)`` feature maps.
        steps: the analysed head (final activation split off).
        class_index: ``(N,)`` int32, the class to explain; ``-1`` selects the prediction.
        num_logits: K.
        method: ``gradcam`` (spatially averaged weights) or ``hirescam`` (element-wise).

    Returns:
        ``{"cam": (N, h, w), "logits_head": (N, K)}`` — the raw (pre-ReLU) map and the logits
        recomputed by the replayed head.
    """
    import tensorflow as tf

    x = A
    saved = []
    for step in steps:
        x, keep = _forward(tf, step, x)
        saved.append(keep)
    logits = x
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    chosen = tf.where(class_index < 0, predicted, class_index)
    g = tf.one_hot(chosen, num_logits, dtype=tf.float32)
    collapse = next(i for i, s in enumerate(steps) if s.kind in ("gap", "gmp", "flatten"))
    spatial_linear = all(s.kind in ("identity", "affine") for s in steps[:collapse])
    for index in range(len(steps) - 1, -1, -1):
        step, keep = steps[index], saved[index]
        if method == "gradcam" and index == collapse and step.kind in ("gap", "gmp") and spatial_linear:
            # Shortcut: the spatial mean of the gradient through a global pooling is g / (h·w)
            # (for max pooling too: the mask sums to its tie count). Staying in (N, C) avoids a
            # broadcast (N, h, w, C) tensor, which int8 quantization handles poorly.
            h, w = int(keep.shape[1]), int(keep.shape[2])
            alpha = tf.reshape(g, [-1, int(keep.shape[3])]) / float(h * w)
            for earlier in reversed(steps[:collapse]):
                if earlier.kind == "affine":
                    alpha = alpha * tf.constant(earlier.scale, tf.float32)
            cam = tf.reduce_sum(A * alpha[:, None, None, :], axis=-1)
            return {"cam": cam, "logits_head": logits, "alpha": alpha}
        g = _backward(tf, step, keep, g)
    if method == "hirescam":
        cam = tf.reduce_sum(A * g, axis=-1)
        return {"cam": cam, "logits_head": logits}
    alpha = tf.reduce_mean(g, axis=[1, 2])
    cam = tf.reduce_sum(A * alpha[:, None, None, :], axis=-1)
    return {"cam": cam, "logits_head": logits, "alpha": alpha}
