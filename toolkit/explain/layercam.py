"""LayerCAM (Jiang et al. 2021, Eq. 5–6).

``L^c = ReLU(Σ_k ReLU(∂y^c/∂A^k) ⊙ A^k)``: positive gradients weight each location separately,
which keeps fine detail when explaining shallow layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import CamMethod


@dataclass(frozen=True)
class LayerCAM(CamMethod):
    name = "layercam"

    def weights(self, A, grads):
        return np.maximum(grads, 0.0)
