"""Reference Grad-CAM by automatic differentiation (GradientTape) on a split model.

This is the independent check of every exported head: the converter's self-check, the tests
and ``toolkit.explain`` all compute gradients here, batched inside one ``tf.function``.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

__all__ = ["feature_gradients", "input_gradients", "forward_logits", "forward_outputs", "class_scores", "gradcam_reference"]

TARGETS = ("logit", "probability")
_FUNCTIONS: dict = {}


def class_scores(logits, class_index, target: str = "logit", binary: bool = False):
    """The explained score per image and the class it belongs to (inside a TF graph).

    Args:
        logits: ``(N, K)`` pre-activation outputs.
        class_index: ``(N,)`` int32, ``-1`` meaning the predicted class.
        target: ``logit`` (Grad-CAM's pre-softmax score ``y^c``, Selvaraju et al. 2017 §3) or
            ``probability`` (after the softmax, or the sigmoid for a binary split).
        binary: the logits are a split single sigmoid ``[-z, z]``: its probabilities are
            ``sigmoid([-z, z]) = [1 - p, p]`` (a softmax over them would give ``sigmoid(2z)``).

    Returns:
        ``(score (N,), chosen (N,) int32)``.
    """
    import tensorflow as tf

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}. Got: {target!r}")
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    chosen = tf.where(class_index < 0, predicted, class_index)
    if target == "logit":
        scores = logits
    else:
        scores = tf.sigmoid(logits) if binary else tf.nn.softmax(logits)
    score = tf.reduce_sum(scores * tf.one_hot(chosen, tf.shape(logits)[-1], dtype=scores.dtype), axis=-1)
    return score, chosen


def _cached(fn, kind: str, target: str, binary: bool, x_shape, build):
    """One traced function per (model or forward callable, kind, target, image shape), reused.

    ``build(spec)`` gets the input ``TensorSpec`` with an open batch dimension, so every batch
    size runs on one trace.
    """
    import tensorflow as tf

    image = tuple(int(d) for d in x_shape[1:])
    key = (id(fn), kind, target, binary, image)
    if key in _FUNCTIONS and _FUNCTIONS[key][0] is fn:
        return _FUNCTIONS[key][1]
    run = build(tf.TensorSpec([None, *image], tf.float32))
    _FUNCTIONS[key] = (fn, run)
    return run


def _classes_spec():
    import tensorflow as tf

    return tf.TensorSpec([None], tf.int32)


def _grad_fn(grad_model, target: str, binary: bool = False, x_shape=None):
    import tensorflow as tf

    def build(spec):
        @tf.function(input_signature=[spec, _classes_spec()])
        def run(x, class_index):
            with tf.GradientTape() as tape:
                A, logits = grad_model(x, training=False)
                tape.watch(A)
                score, chosen = class_scores(logits, class_index, target, binary)
            grads = tape.gradient(score, A)
            return A, logits, grads, chosen

        return run

    shape = x_shape if x_shape is not None else grad_model.inputs[0].shape
    return _cached(grad_model, "features", target, binary, shape, build)


def _logits_of(forward, x):
    """Logits of ``forward(x)``: a Keras model is called in inference mode; a split model
    returns ``[A, logits]``, a plain classifier or forward callable returns the logits."""
    outputs = forward(x, training=False) if hasattr(forward, "layers") else forward(x)
    return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs


def _class_indices(class_index, n: int) -> np.ndarray:
    if class_index is None:
        return np.full((n,), -1, np.int32)
    return np.broadcast_to(np.asarray(class_index, dtype=np.int32), (n,)).copy()


def feature_gradients(grad_model, x: np.ndarray, class_index=None, target: str = "logit",
                      binary: bool = False) -> Tuple[np.ndarray, ...]:
    """Activations, logits and ``∂score/∂A`` for a batch.

    Args:
        grad_model: ``ModelSplit.grad_model`` (``x → [A, logits]``).
        x: ``(N, H, W, C)`` float32, already preprocessed for the model.
        class_index: ``None`` (predicted), an int, or ``(N,)`` ints.
        target: ``logit`` (pre-softmax score, the default of Grad-CAM) or ``probability``.
        binary: ``ModelSplit.binary`` (see :func:`class_scores`).

    Returns:
        ``(A, logits, grads, class_index)`` as numpy arrays.
    """
    x = np.asarray(x, dtype=np.float32)
    run = _grad_fn(grad_model, target, binary, x.shape)
    A, logits, grads, chosen = run(x, _class_indices(class_index, len(x)))
    return A.numpy(), logits.numpy(), grads.numpy(), chosen.numpy()


def input_gradients(forward, x: np.ndarray, class_index=None, target: str = "logit",
                    binary: bool = False) -> Tuple[np.ndarray, ...]:
    """``∂score/∂x`` for a batch, in one cached ``tf.function``.

    Args:
        forward: a Keras model or callable ``x → logits`` (or ``→ [A, logits]``). Keep the same
            object across calls: the traced function is cached per object.
        x: ``(N, H, W, C)`` float32 model inputs.
        class_index: ``None`` (predicted), an int, or ``(N,)`` ints.
        target: ``logit`` or ``probability``.
        binary: see :func:`class_scores`.

    Returns:
        ``(logits (N, K), grads (N, H, W, C), class_index (N,), score (N,))`` as numpy arrays.
    """
    import tensorflow as tf

    def build(spec):
        @tf.function(input_signature=[spec, _classes_spec()])
        def run(x, class_index):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = _logits_of(forward, x)
                score, chosen = class_scores(logits, class_index, target, binary)
            return logits, tape.gradient(score, x), chosen, score

        return run

    x = np.asarray(x, dtype=np.float32)
    run = _cached(forward, "input", target, binary, x.shape, build)
    logits, grads, chosen, score = run(x, _class_indices(class_index, len(x)))
    return logits.numpy(), grads.numpy(), chosen.numpy(), score.numpy()


def forward_logits(forward, x: np.ndarray) -> np.ndarray:
    """``(N, K)`` logits of a batch through ``forward`` (a Keras model or callable), traced once."""
    import tensorflow as tf

    def build(spec):
        @tf.function(input_signature=[spec])
        def run(x):
            return _logits_of(forward, x)

        return run

    x = np.asarray(x, dtype=np.float32)
    return _cached(forward, "forward", "logit", False, x.shape, build)(x).numpy()


def forward_outputs(forward: Callable, x: np.ndarray) -> Tuple[np.ndarray, ...]:
    """Every output of a callable ``x → [t1, t2, …]`` on a batch, traced once, as numpy arrays."""
    import tensorflow as tf

    def build(spec):
        @tf.function(input_signature=[spec])
        def run(x):
            return tuple(forward(x))

        return run

    x = np.asarray(x, dtype=np.float32)
    outputs = _cached(forward, "outputs", "", False, x.shape, build)(x)
    return tuple(t.numpy() for t in outputs)


def gradcam_reference(grad_model, x: np.ndarray, class_index=None, batch_size: Optional[int] = 32,
                      return_logits: bool = False):
    """Raw (pre-ReLU) Grad-CAM maps ``(N, h, w)`` and the explained classes ``(N,)`` (and logits).

    ``L^c = Σ_k α_k^c A^k`` with ``α_k^c = mean_ij ∂y^c/∂A^k_ij`` (Selvaraju et al. 2017, Eq. 1-2;
    the ReLU is applied by ``firmware_host.cam``).
    """
    x = np.asarray(x, dtype=np.float32)
    step = len(x) if not batch_size else batch_size
    maps, classes, all_logits = [], [], []
    for start in range(0, len(x), step):
        ci = None if class_index is None else np.broadcast_to(np.asarray(class_index), (len(x),))[start : start + step]
        A, logits, grads, chosen = feature_gradients(grad_model, x[start : start + step], ci)
        alpha = grads.mean(axis=(1, 2), keepdims=True)
        maps.append(np.sum(A * alpha, axis=-1))
        classes.append(chosen)
        all_logits.append(logits)
    out = (np.concatenate(maps).astype(np.float32), np.concatenate(classes))
    return out + (np.concatenate(all_logits),) if return_logits else out
