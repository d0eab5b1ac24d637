"""Reference Grad-CAM by automatic differentiation (GradientTape) on a split model.

This is the independent check of every exported head: the converter's self-check, the tests
and ``toolkit.explain`` all compute gradients here, batched inside one ``tf.function``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["feature_gradients", "gradcam_reference"]

_FUNCTIONS: dict = {}


def _grad_fn(grad_model, target: str):
    """One traced function per (model, target), reused across calls (no re-tracing)."""
    import tensorflow as tf

    key = (id(grad_model), target)
    if key in _FUNCTIONS and _FUNCTIONS[key][0] is grad_model:
        return _FUNCTIONS[key][1]

    shape = [None, *[int(d) for d in grad_model.inputs[0].shape[1:]]]

    # One trace for every batch size: the signature leaves the batch dimension open.
    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32), tf.TensorSpec([None], tf.int32)])
    def run(x, class_index):
        with tf.GradientTape() as tape:
            A, logits = grad_model(x, training=False)
            tape.watch(A)
            scores = logits if target == "logit" else tf.nn.softmax(logits)
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
            chosen = tf.where(class_index < 0, predicted, class_index)
            score = tf.reduce_sum(scores * tf.one_hot(chosen, tf.shape(logits)[-1]), axis=-1)
        grads = tape.gradient(score, A)
        return A, logits, grads, chosen

    _FUNCTIONS[key] = (grad_model, run)
    return run


def feature_gradients(grad_model, x: np.ndarray, class_index=None, target: str = "logit") -> Tuple[np.ndarray, ...]:
    """Activations, logits and ``∂score/∂A`` for a batch.

    Args:
        grad_model: ``ModelSplit.grad_model`` (``x → [A, logits]``).
        x: ``(N, H, W, C)`` float32, already preprocessed for the model.
        class_index: ``None`` (predicted), an int, or ``(N,)`` ints.
        target: ``logit`` (pre-softmax score, the default of Grad-CAM) or ``probability``.

    Returns:
        ``(A, logits, grads, class_index)`` as numpy arrays.
    """
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if class_index is None:
        idx = np.full((n,), -1, np.int32)
    else:
        idx = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (n,)).copy()
    A, logits, grads, chosen = _grad_fn(grad_model, target)(x, idx)
    return A.numpy(), logits.numpy(), grads.numpy(), chosen.numpy()


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
