"""HiResCAM (Draelos & Carin 2020, Eq. 4).

``L^c = ReLU(Σ_k ∂y^c/∂A^k ⊙ A^k)``: the gradient multiplies the activations element by element
instead of being averaged first, so the map shows exactly the locations that raised the score
(for a GAP + Dense head it equals Grad-CAM and CAM).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._base import CamMethod


@dataclass(frozen=True)
class HiResCAM(CamMethod):
    name = "hirescam"

    def weights(self, A, grads):
        return grads
