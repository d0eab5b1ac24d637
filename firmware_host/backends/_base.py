"""What ExplainableModel needs from an interpreter backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """A named model input or output.

    ``quantization`` is ``(scale, zero_point)`` for a quantized tensor, else ``None``;
    ``real = (q - zero_point) * scale``.
    """

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    quantization: Optional[Tuple[float, int]] = None


class Backend:
    """Runs a model by named inputs/outputs."""

    name = "base"
    version = ""
    inputs: Dict[str, TensorInfo]
    outputs: Dict[str, TensorInfo]

    def run(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError
