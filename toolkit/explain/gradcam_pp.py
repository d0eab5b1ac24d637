"""Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19 and §3.3).

With the score ``Y^c = exp(S^c)`` the higher derivatives are powers of the first one
(``∂²Y/∂A² = exp(S)(∂S/∂A)²``, ``∂³Y/∂A³ = exp(S)(∂S/∂A)³``), so the pixel weights are

``a^kc_ij = g²_ij / (2 g²_ij + Σ_ab A^k_ab · g³_ij)`` with ``g = ∂S^c/∂A^k``,

and the channel weights ``w^c_k = Σ_ij a^kc_ij · ReLU(g_ij)`` (the common factor ``exp(S)`` is
dropped: maps are normalised). Where ``g = 0`` (or the denominator is 0) the weight is 0.

``normalize_alphas=True`` also divides ``a^kc`` by its sum over locations, as the authors'
reference code does (and tf-keras-vis after it); Eq. 19 and pytorch-grad-cam do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import CamMethod


@dataclass(frozen=True)
class GradCAMPlusPlus(CamMethod):
    """Options: ``normalize_alphas`` (default ``False``: Eq. 19 as printed)."""

    name = "gradcam++"
    normalize_alphas: bool = False

    def weights(self, A, grads):
        g2 = np.square(grads, dtype=np.float64)
        g3 = g2 * grads
        total = A.sum(axis=(1, 2), keepdims=True, dtype=np.float64)
        denom = 2.0 * g2 + total * g3
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=(grads != 0) & (denom != 0))
        if self.normalize_alphas:
            norm = alpha.sum(axis=(1, 2), keepdims=True)
            alpha = np.divide(alpha, norm, out=np.zeros_like(alpha), where=norm != 0)
        return (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2), keepdims=True).astype(np.float32)
