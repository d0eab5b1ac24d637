"""What ExplainableModel needs from an interpreter backend, and the tensor (de)quantization both share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = ["Backend", "TensorInfo", "quantize_input", "dequantize_output"]


@dataclass(frozen=True)
class TensorInfo:
    """A named model input or output.

    ``shape`` uses -1 for a dynamic dimension (the batch). ``quantization`` is
    ``(scale, zero_point)`` for a quantized tensor, else ``None``;
    ``real = (q - zero_point) * scale``. ONNX models (even int8 QDQ ones) have float inputs and
    outputs, so their tensors never carry a quantization.
    """

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    quantization: Optional[Tuple[float, int]] = None


class Backend:
    """Runs a model by named inputs/outputs.

    Attributes:
        name / version: the runtime package and its version (``ai-edge-litert 2.3.0``,
            ``onnxruntime 1.32.0``).
        provider: where the model runs: ``cpu`` for LiteRT, the ONNX Runtime execution
            provider in use (``TensorrtExecutionProvider``, ``CUDAExecutionProvider``,
            ``CPUExecutionProvider``) for ONNX.
        inputs / outputs: name → :class:`TensorInfo`.
    """

    name = "base"
    version = ""
    provider = "cpu"
    inputs: Dict[str, TensorInfo]
    outputs: Dict[str, TensorInfo]

    def run(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:  # pragma: no cover
        """Invoke once; ``feed`` maps input names to arrays of the input dtypes (any batch)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for ``inspect``/``bench``: runtime, version and where it runs."""
        return f"{self.name} {self.version} ({self.provider})".strip()


def quantize_input(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float input → ``info``'s dtype: ``q = round(x / scale) + zero_point``, clipped, if quantized."""
    if info.quantization is None:
        return np.asarray(x).astype(info.dtype, copy=False)
    scale, zero = info.quantization
    limits = np.iinfo(info.dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero
    return np.clip(q, limits.min, limits.max).astype(info.dtype)


def dequantize_output(value: np.ndarray, info: TensorInfo) -> np.ndarray:
    """An output in ``info``'s dtype → float32: ``(q - zero_point) * scale`` if quantized."""
    if info.quantization is None:
        return np.asarray(value, dtype=np.float32)
    scale, zero = info.quantization
    return (np.asarray(value, dtype=np.float32) - np.float32(zero)) * np.float32(scale)
