"""Basic agreement numbers shared by the converter's self-check and the host's validation."""

from __future__ import annotations

import numpy as np

__all__ = ["pearson"]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (flattened).

    Two constant maps are identical up to scale, so they correlate 1.0 if equal in shape and
    both constant; one constant and one varying map correlate 0.0 (undefined otherwise).
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pearson needs maps of one size. Got {np.shape(a)} and {np.shape(b)}.")
    x = x - x.mean()
    y = y - y.mean()
    nx, ny = np.sqrt(x @ x), np.sqrt(y @ y)
    scale = max(np.abs(a).max() if np.size(a) else 0.0, np.abs(b).max() if np.size(b) else 0.0, 1e-30)
    tiny = 1e-9 * scale * np.sqrt(x.size)
    if nx <= tiny and ny <= tiny:
        return 1.0
    if nx <= tiny or ny <= tiny:
        return 0.0
    return float(np.clip((x @ y) / (nx * ny), -1.0, 1.0))
