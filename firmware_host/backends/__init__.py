"""Interpreter backends, chosen from the model file; heavy imports happen only when used.

``.tflite`` runs on LiteRT (:mod:`.litert`), ``.onnx`` on ONNX Runtime (:mod:`.onnx`, the
optional ``edgecam[onnx]`` extra). Both expose the same :class:`Backend` interface: named
inputs/outputs as :class:`TensorInfo` and ``run(feed) → {name: array}``. Both are built from the
model's bytes as read once by :func:`firmware_host.formats.read_model_file`; the metadata is
read from the same bytes (:func:`firmware_host.model.open_model`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError, ModelFileError
from ..formats import FORMATS, ModelFile, detect_format, read_model_file
from ._base import Backend, TensorInfo, dequantize_output, quantize_input

__all__ = [
    "Backend",
    "TensorInfo",
    "PlainModel",
    "detect_format",
    "open_backend",
    "quantize_input",
    "dequantize_output",
    "FORMATS",
]


def open_backend(path: Union[str, Path, bytes, ModelFile], num_threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, plain: bool = False) -> Backend:
    """Open the right backend for a model: ``.tflite`` → LiteRT, ``.onnx`` → ONNX Runtime.

    Args:
        path: the model file, its bytes, or a :class:`~firmware_host.formats.ModelFile` already
            read (the file is read once either way).
        num_threads: interpreter / intra-op threads (``None``: the runtime's default).
        providers: ONNX Runtime execution providers to try, in order (ignored for LiteRT,
            which runs on the CPU); default TensorRT → CUDA → CPU.
        plain: accept a model not written by ``edgecam convert`` (a LiteRT model without the
            ``serving_default`` signature).

    Raises:
        ModelFileError, MissingDependencyError (onnxruntime absent for an ONNX file).
    """
    file = read_model_file(path)
    if file.format == "onnx":
        from .onnx import ONNXBackend

        return ONNXBackend(file, num_threads=num_threads, providers=providers)
    from .litert import SIGNATURE, LiteRTBackend

    return LiteRTBackend(file, num_threads=num_threads, signature=None if plain else SIGNATURE)


class PlainModel:
    """A model without edgecam metadata (LiteRT or ONNX) run with one input: a benchmark baseline.

    Args:
        path: a ``.tflite`` or ``.onnx`` with exactly one input (e.g. the ``.plain.*`` file of
            ``edgecam convert --emit-baseline``, or any third-party classifier).
        num_threads, providers: as for :func:`open_backend`.

    Example:
        >>> plain = PlainModel("mnv2.plain.onnx", num_threads=2)
        >>> x = plain.prepare(preprocess(image, metadata.preprocessing)[None])  # float (1, H, W, C)
        >>> outputs = plain.run(x)                                             # {name: array}

    Raises:
        ModelFileError: the file cannot be loaded or has more than one input.
    """

    def __init__(self, path: Union[str, Path], num_threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None) -> None:
        self.path = Path(path)
        self.backend = open_backend(self.path, num_threads=num_threads, providers=providers, plain=True)
        if len(self.backend.inputs) != 1:
            raise ModelFileError(
                f"'{self.path}' has {len(self.backend.inputs)} inputs ({sorted(self.backend.inputs)}); "
                "a plain model takes one image tensor. Use the .plain file of `edgecam convert "
                "--emit-baseline`."
            )
        self.input: TensorInfo = next(iter(self.backend.inputs.values()))

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """The input's shape, -1 for a dynamic batch."""
        return self.input.shape

    @property
    def input_dtype(self) -> np.dtype:
        return self.input.dtype

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Float ``(N, H, W, C)`` input → this model's input dtype (quantized if it is int8).

        Raises:
            InputError: the spatial shape differs from the model's input.
        """
        expected = tuple(self.input.shape[1:])
        if len(x.shape) != len(self.input.shape) or any(
            e not in (-1, s) for e, s in zip(expected, x.shape[1:])
        ):
            raise InputError(
                f"'{self.path}' takes input {expected} but got {tuple(x.shape[1:])}. Use the "
                "baseline written for the same model."
            )
        return quantize_input(x, self.input)

    def run(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """Invoke once on a prepared input; raw outputs by name."""
        return self.backend.run({self.input.name: x})

    def invoke(self, x: np.ndarray) -> float:
        """Run once on a prepared input; the call's wall time in ms (benchmarks)."""
        start = time.perf_counter()
        self.backend.run({self.input.name: x})
        return (time.perf_counter() - start) * 1000.0
