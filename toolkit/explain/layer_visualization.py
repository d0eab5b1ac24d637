"""Layer visualisation: the sum of a layer's feature maps, ``L = Σ_k A^k``.

The first technique of the talk: where does this layer respond at all? Not class-specific.
Pick the layer with ``target_layer`` (any spatial layer, ``outer/inner`` for nested models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._base import CamMethod


@dataclass(frozen=True)
class LayerVisualization(CamMethod):
    name = "layer_visualization"
    family = "layer"
    class_specific = False

    def weights(self, A, grads):
        return np.ones((A.shape[0], 1, 1, A.shape[-1]), np.float32)
