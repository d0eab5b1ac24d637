"""Grad-CAM (Selvaraju et al. 2017, Eq. 1–2).

``α^c_k = (1/Z) Σ_ij ∂y^c/∂A^k_ij`` (global-average-pooled gradients), ``L^c = ReLU(Σ_k α^c_k A^k)``.
For a GAP + Dense head this equals CAM (Zhou et al. 2016) up to the factor ``1/Z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import CamMethod


@dataclass(frozen=True)
class GradCAM(CamMethod):
    name = "gradcam"

    def weights(self, A, grads):
        # Eq. 1: the channel weight is the spatial mean of the gradient.
        return grads.mean(axis=(1, 2), keepdims=True)
