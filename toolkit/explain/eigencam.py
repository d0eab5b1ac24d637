"""Eigen-CAM (Muhammad & Yeasin 2020, Eq. 3–4).

The activations ``A`` ``(h·w, K)`` are centred over locations and projected on their first
principal component (first right singular vector ``v_1``): ``L = (A − mean) v_1``. The sign of
a singular vector is arbitrary, so it is chosen to make the map correlate positively with the
channel sum ``Σ_k A^k`` (where the layer fires). Not class-specific: no gradient is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import CamMethod, Output


def principal_projection(A: np.ndarray) -> np.ndarray:
    """``(n, h, w, K) → (n, h, w)`` projection on the first principal component, sign-corrected."""
    n, h, w, k = A.shape
    out = np.zeros((n, h, w), np.float32)
    for i in range(n):
        flat = A[i].reshape(h * w, k).astype(np.float64)
        centred = flat - flat.mean(axis=0, keepdims=True)
        if not np.any(centred):
            continue
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[0]
        energy = flat.sum(axis=1)
        if np.dot(proj, energy - energy.mean()) < 0:
            proj = -proj
        out[i] = proj.reshape(h, w)
    return out


@dataclass(frozen=True)
class EigenCAM(CamMethod):
    name = "eigencam"
    class_specific = False

    def run(self, session, x, class_index):
        A, logits, _, chosen, split = self.features(session, x, class_index)
        return Output(principal_projection(A), logits, session.probabilities(logits, split.binary), chosen)
