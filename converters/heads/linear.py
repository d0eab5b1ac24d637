"""CAM heads for linear, flatten and approximate modes: ``cam_c = Σ_k w[..., k, c] · A^k``."""

from __future__ import annotations

import numpy as np


def linear_cams(A, logits, weights: np.ndarray, cam_output: str) -> dict:
    """Named CAM outputs for a fixed weight tensor.

    Args:
        A: feature maps ``(N, h, w, C)``.
        logits: ``(N, K)``; its argmax picks the class for ``cam_output="predicted"``.
        weights: ``(C, K)`` channel weights (Grad-CAM α) or ``(h, w, C, K)`` element weights
            (HiResCAM on flatten heads).
        cam_output: ``all`` → ``{"cams": (N, h, w, K)}``; ``predicted`` → ``{"cam": (N, h, w)}``.

    The all-classes map with channel weights is a 1×1 convolution (one builtin CONV_2D); the
    predicted-class map is argmax → gather that class's weights → weighted channel sum, which
    costs next to nothing even with 1000 classes.
    """
    import tensorflow as tf

    w = np.asarray(weights, dtype=np.float32)
    if cam_output == "all":
        if w.ndim == 2:
            kernel = tf.constant(w[None, None])  # (1, 1, C, K)
            return {"cams": tf.nn.conv2d(A, kernel, strides=1, padding="VALID")}
        return {"cams": tf.reduce_sum(A[..., None] * tf.constant(w)[None], axis=3)}
    if cam_output != "predicted":
        raise ValueError(f"linear heads emit 'all' or 'predicted' maps. Got: {cam_output!r}")
    index = tf.argmax(logits, axis=-1, output_type=tf.int32)
    per_class = tf.constant(np.moveaxis(w, -1, 0))  # (K, C) or (K, h, w, C)
    chosen = tf.gather(per_class, index)
    if w.ndim == 2:
        chosen = chosen[:, None, None, :]
    return {"cam": tf.reduce_sum(A * chosen, axis=-1)}
