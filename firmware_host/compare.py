"""Agreement numbers shared by the converter's self-check and the host's validation metrics."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["correlation", "pearson"]


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two flat vectors, with the constant-map convention.

    A constant vector has no defined correlation. Convention (docs/validate.md): both constant →
    1.0 (the maps agree: neither highlights anything, e.g. two all-zero ReLU'd maps); exactly one
    constant → 0.0. "Constant" is relative to the vector's own magnitude, so untrained networks'
    tiny (1e-13) maps are still compared.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"correlation needs vectors of one size. Got {x.shape} and {y.shape}.")
    dx = x - x.mean()
    dy = y - y.mean()
    # Elementwise sums, not BLAS dot products: a threaded BLAS next to TensorFlow's thread pools
    # on a busy 2-core machine took 20 ms per 224×224 dot product, np.sum 0.05 ms.
    sx = math.sqrt(float(np.sum(dx * dx)))
    sy = math.sqrt(float(np.sum(dy * dy)))
    # A spread at float round-off of the vector's own level is constant.
    tx = sx <= 1e-9 * float(np.abs(x).max(initial=0.0)) * math.sqrt(x.size)
    ty = sy <= 1e-9 * float(np.abs(y).max(initial=0.0)) * math.sqrt(y.size)
    if tx or ty:
        return 1.0 if (tx and ty) else 0.0
    return float(np.clip(np.sum(dx * dy) / (sx * sy), -1.0, 1.0))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps of the same shape (flattened); see :func:`correlation`."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"pearson needs maps of one size. Got {np.shape(a)} and {np.shape(b)}.")
    return correlation(a, b)
