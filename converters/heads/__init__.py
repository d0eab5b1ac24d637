"""CAM head builders: each turns (A, logits, the head analysis) into named TF outputs.

* :mod:`.linear` — linear, flatten and approximate modes: a fixed per-class weight tensor.
* :mod:`.gradient` — non-linear heads: the exact gradient written as forward builtin ops.
"""

from .gradient import gradient_cam
from .linear import linear_cams

__all__ = ["linear_cams", "gradient_cam"]
