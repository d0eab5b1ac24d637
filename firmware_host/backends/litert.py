"""LiteRT backend: ``ai-edge-litert`` first, ``tflite-runtime`` as the fallback.

Inputs and outputs are read by name through the model's signature (LiteRT does not keep the
order of list outputs), never by position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from ..errors import InputError, MissingDependencyError, ModelFileError
from ..formats import ModelFile, read_model_file
from ._base import Backend, TensorInfo

SIGNATURE = "serving_default"


def _distribution_version(name: str) -> str:
    """The installed version of the distribution ``name``, or ``"?"``."""
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover
        return "?"


def load_interpreter_class():
    """Return ``(Interpreter, backend_name, version)``, preferring ai-edge-litert."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert", _distribution_version("ai-edge-litert")
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore

        return Interpreter, "tflite-runtime", _distribution_version("tflite-runtime")
    except ImportError as exc:
        raise MissingDependencyError(
            "No LiteRT interpreter is installed. Install one with: pip install ai-edge-litert "
            "(or, where it has no wheel: pip install tflite-runtime 'numpy<2')."
        ) from exc


def _info(detail: dict, name: str) -> TensorInfo:
    q = detail.get("quantization", (0.0, 0))
    quant = (float(q[0]), int(q[1])) if q and float(q[0]) != 0.0 else None
    shape = tuple(int(v) for v in detail.get("shape_signature", detail["shape"]))
    return TensorInfo(name=name, shape=shape, dtype=np.dtype(detail["dtype"]), quantization=quant)


class LiteRTBackend(Backend):
    """A LiteRT interpreter bound to one signature of the model.

    Args:
        path: the ``.tflite`` file, its bytes, or the :class:`~firmware_host.formats.ModelFile`
            already read (the interpreter runs on those bytes: the file is not read again).
        num_threads: interpreter threads (``None``: LiteRT's default).
        signature: the signature to run. ``serving_default`` (what ``edgecam convert`` writes)
            is required by default; ``None`` accepts any model: ``serving_default`` if present,
            else its only signature, else its raw input/output tensors (plain third-party
            models, see :class:`~firmware_host.backends.PlainModel`).

    Raises:
        ModelFileError: the file cannot be loaded, or lacks the signature.
    """

    provider = "cpu"

    def __init__(self, path: Union[str, Path, bytes, ModelFile], num_threads=None,
                 signature: Optional[str] = SIGNATURE) -> None:
        Interpreter, self.name, self.version = load_interpreter_class()
        file = read_model_file(path)
        self.path = file.path or Path("<in-memory model>")
        try:
            # The interpreter keeps a reference to the bytes it runs on (no copy).
            self._interpreter = Interpreter(model_content=file.data, num_threads=num_threads)
        except ValueError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelFileError(
                f"LiteRT cannot load {file.where} ({len(file.data):,} bytes): {first}. The file is "
                "truncated or corrupt, or uses ops this interpreter lacks; copy it again or convert "
                "the model again."
            ) from exc
        signatures = self._interpreter.get_signature_list()
        if signature is None and signatures:
            signature = SIGNATURE if SIGNATURE in signatures else sorted(signatures)[0]
        self._runner = None
        if signature is None:
            # No signature at all: raw tensors by their names (first-come order is LiteRT's).
            self._interpreter.allocate_tensors()
            self.inputs = {d["name"]: _info(d, d["name"]) for d in self._interpreter.get_input_details()}
            self.outputs = {d["name"]: _info(d, d["name"]) for d in self._interpreter.get_output_details()}
            self._index = {d["name"]: d["index"] for d in self._interpreter.get_input_details()}
            return
        if signature not in signatures:
            raise ModelFileError(
                f"'{self.path}' has no '{signature}' signature (found: {sorted(signatures) or 'none'}). "
                "Convert the model with `edgecam convert`, which names every input and output."
            )
        self._runner = self._interpreter.get_signature_runner(signature)
        self.inputs: Dict[str, TensorInfo] = {
            n: _info(d, n) for n, d in self._runner.get_input_details().items()
        }
        self.outputs: Dict[str, TensorInfo] = {
            n: _info(d, n) for n, d in self._runner.get_output_details().items()
        }

    def run(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        unknown = set(feed) - set(self.inputs)
        if unknown:
            raise InputError(
                f"'{self.path}' has no input(s) {sorted(unknown)}; its inputs are {sorted(self.inputs)}."
            )
        if self._runner is not None:
            # The runner resizes inputs to the fed shape (dynamic batch) and returns fresh arrays.
            return self._runner(**feed)
        it = self._interpreter
        shapes = {d["name"]: tuple(d["shape"]) for d in it.get_input_details()}
        if any(shapes[name] != value.shape for name, value in feed.items()):
            for name, value in feed.items():
                it.resize_tensor_input(self._index[name], value.shape)
            it.allocate_tensors()
        for name, value in feed.items():
            it.set_tensor(self._index[name], value)
        it.invoke()
        return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}
