"""ONNX Runtime backend: TensorRT → CUDA → CPU, whichever this onnxruntime build offers.

``onnxruntime`` is the optional extra ``edgecam[onnx]``; this module imports it only when an
ONNX model is opened, so a LiteRT-only device never loads it. Inputs and outputs are read by
name (``image``, ``class_index``, ``probabilities``, ``logits``, ``feature_maps``,
``cam``/``cams``), exactly as in the LiteRT signature.

Execution providers are tried in :data:`PROVIDER_ORDER`, keeping only those in
``onnxruntime.get_available_providers()``; CPU is always last, so a node TensorRT or CUDA cannot
take still runs. The provider actually in use is ``backend.provider``. Override the order with
``providers=`` or the environment variable ``EDGECAM_ONNX_PROVIDERS`` (comma-separated, e.g.
``cuda,cpu``). TensorRT options (untested here, no GPU): ``EDGECAM_TRT_CACHE`` (engine cache
directory, default ``~/.cache/edgecam/tensorrt``) and ``EDGECAM_TRT_FP16=1`` (let TensorRT build
float16 engines from a float32 model).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError, MissingDependencyError, ModelFileError
from ..formats import ModelFile, read_model_file
from ._base import Backend, TensorInfo

__all__ = ["ONNXBackend", "PROVIDER_ORDER", "choose_providers", "load_onnxruntime", "read_custom_metadata"]

log = logging.getLogger("edgecam.onnx")

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU = "CPUExecutionProvider"
ALIASES = {"tensorrt": PROVIDER_ORDER[0], "trt": PROVIDER_ORDER[0], "cuda": PROVIDER_ORDER[1], "cpu": CPU}
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def load_onnxruntime():
    """Import onnxruntime, or say which extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            f"Running an ONNX model needs onnxruntime ({exc}). Install the ONNX extra: "
            "pip install 'edgecam[onnx]' (on a Jetson, the onnxruntime-gpu wheel for your "
            "JetPack; see docs/onnx.md)."
        ) from exc
    return onnxruntime


def choose_providers(requested: Optional[Sequence[str]] = None,
                     available: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str]]:
    """The providers to ask onnxruntime for, in order, and those requested but unavailable.

    Args:
        requested: provider names or aliases (``tensorrt``, ``cuda``, ``cpu``); ``None`` reads
            ``EDGECAM_ONNX_PROVIDERS``, else uses :data:`PROVIDER_ORDER`.
        available: ``onnxruntime.get_available_providers()`` (looked up when ``None``).

    Returns:
        ``(providers, skipped)``; ``providers`` always ends with the CPU provider.

    Raises:
        InputError: an unknown provider name.
    """
    if requested is None:
        env = os.environ.get("EDGECAM_ONNX_PROVIDERS", "").strip()
        requested = [p.strip() for p in env.split(",") if p.strip()] if env else PROVIDER_ORDER
    if isinstance(requested, str):
        requested = [requested]
    if available is None:
        available = load_onnxruntime().get_available_providers()
    names = []
    for item in requested:
        name = ALIASES.get(str(item).lower(), str(item))
        if not name.endswith("ExecutionProvider"):
            raise InputError(
                f"Unknown ONNX Runtime provider {item!r}. Use one of {', '.join(ALIASES)} or a full "
                f"name such as {PROVIDER_ORDER[1]!r}."
            )
        if name not in names:
            names.append(name)
    chosen = [n for n in names if n in available]
    skipped = [n for n in names if n not in available]
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen, skipped


def _provider_options(name: str) -> dict:
    if name == PROVIDER_ORDER[0]:
        # Building a TensorRT engine takes minutes on a Jetson: cache it across runs.
        cache = os.environ.get("EDGECAM_TRT_CACHE") or str(Path.home() / ".cache" / "edgecam" / "tensorrt")
        opts = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache}
        if os.environ.get("EDGECAM_TRT_FP16", "") not in ("", "0"):
            opts["trt_fp16_enable"] = "True"
        return opts
    return {}


def _info(arg) -> TensorInfo:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise ModelFileError(f"ONNX tensor {arg.name!r} has type {arg.type}, which edgecam does not feed or read.")
    shape = tuple(int(d) if isinstance(d, int) else -1 for d in arg.shape)
    return TensorInfo(name=arg.name, shape=shape, dtype=np.dtype(dtype))


def _session(ort, file: ModelFile, options, providers):
    try:
        return ort.InferenceSession(file.data, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, …)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"onnxruntime cannot load {file.where}: {first}. The file is truncated or corrupt, or "
            "uses an opset this onnxruntime lacks; copy or convert it again."
        ) from exc


def read_custom_metadata(path: Union[str, Path, bytes, ModelFile]) -> Dict[str, str]:
    """The ONNX ``metadata_props`` of a model as text (keys and values that are UTF-8).

    Reads the protobuf directly (:func:`firmware_host.formats.onnx.read_props`): no session,
    no ``onnx`` package. Kept for existing callers; edgecam reads metadata through
    :mod:`firmware_host.formats`.

    Raises:
        ModelFileError: the file cannot be read or is truncated.
    """
    from ..formats import onnx as onnx_format

    file = read_model_file(path)
    props = onnx_format.read_props(file.data, file.where)
    return {k: v.decode("utf-8", errors="replace") for k, v in props.items()}


class ONNXBackend(Backend):
    """An onnxruntime session on the best available execution provider.

    Args:
        path: the ``.onnx`` file, its bytes, or the :class:`~firmware_host.formats.ModelFile`
            already read (the session is built from those bytes: the file is not read again).
        num_threads: intra-op threads for the CPU provider (``None``: onnxruntime's default).
        providers: the order to try (names or ``tensorrt``/``cuda``/``cpu``); default
            TensorRT → CUDA → CPU, or ``EDGECAM_ONNX_PROVIDERS``.

    Attributes:
        provider: the execution provider in use (the first one the session registered).
        providers: every provider the session registered, in priority order.
        skipped: requested providers this onnxruntime build does not offer.

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        ModelFileError: the file cannot be loaded.
        InputError: an unknown provider name.
    """

    name = "onnxruntime"

    def __init__(self, path: Union[str, Path, bytes, ModelFile], num_threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None) -> None:
        ort = load_onnxruntime()
        self.version = ort.__version__
        file = read_model_file(path)
        self.path = file.path or Path("<in-memory model>")
        chosen, self.skipped = choose_providers(providers, ort.get_available_providers())
        if self.skipped:
            log.info("ONNX Runtime providers not available here, skipped: %s", ", ".join(self.skipped))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        self._session = _session(ort, file, options, [(p, _provider_options(p)) for p in chosen])
        self.providers = tuple(self._session.get_providers())
        self.provider = self.providers[0] if self.providers else CPU
        self.inputs: Dict[str, TensorInfo] = {a.name: _info(a) for a in self._session.get_inputs()}
        self.outputs: Dict[str, TensorInfo] = {a.name: _info(a) for a in self._session.get_outputs()}
        self._output_names = list(self.outputs)

    def describe(self) -> str:
        """``onnxruntime 1.32.0 (CPUExecutionProvider; not available: TensorrtExecutionProvider, …)``."""
        extra = f"; not available: {', '.join(self.skipped)}" if self.skipped else ""
        return f"{self.name} {self.version} ({self.provider}{extra})"

    def run(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        unknown = set(feed) - set(self.inputs)
        missing = set(self.inputs) - set(feed)
        if unknown or missing:
            raise InputError(
                f"'{self.path}' takes inputs {sorted(self.inputs)}; got {sorted(feed)}. Feed every "
                "input by name."
            )
        try:
            values = self._session.run(self._output_names, dict(feed))
        except Exception as exc:  # onnxruntime's InvalidArgument/Fail for wrong dtypes or shapes
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            expected = {n: (i.shape, str(i.dtype)) for n, i in self.inputs.items()}
            raise InputError(
                f"onnxruntime rejected the input of '{self.path}': {first}. Expected (shape, dtype) "
                f"{expected}."
            ) from exc
        return dict(zip(self._output_names, values))
