"""The ONNX container: the serving function of :mod:`converters.export` → ONNX, quantized.

Only the container step differs from LiteRT: the same ``serving_default`` tf.function (same
head, same named inputs/outputs) is converted by ``tf2onnx`` at opset :data:`OPSET`, then

* ``float16``: weights and activations cast by onnxruntime's float16 tool, inputs and outputs
  kept float32 and the in-graph gradient head kept float32 (as in the LiteRT int8 path);
* ``int8``: static QDQ quantization (``onnxruntime.quantization.quantize_static``) calibrated on
  the same images as LiteRT, per-channel symmetric int8 weights in 7 bits (``reduce_range``: no
  saturation in x86 integer kernels) and asymmetric int8 activations
  (docs/onnx.md says why and what it means for TensorRT); the CAM heads stay float32.
  Inputs and outputs stay float32, so the runtime feeds and reads floats.

The batch dimension is dynamic (``batch``). Metadata goes into ``metadata_props``
(:func:`firmware_host.metadata.embed_onnx_metadata`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from firmware_host.errors import ConversionError, MissingDependencyError

__all__ = ["OPSET", "QUANTIZATIONS", "require_onnx_tools", "export_onnx", "tool_versions", "quantize_int8_qdq"]

log = logging.getLogger("edgecam.convert")

# Opset 17: TensorRT 8.5+ (JetPack 5.1) parses it, and it is the newest opset every
# onnxruntime ≥ 1.13 runs; LayerNormalization (17) is the newest op a CNN head might use.
OPSET = 17
QUANTIZATIONS = ("none", "float16", "int8")
BATCH = "batch"


def require_onnx_tools():
    """Import tf2onnx, onnx and onnxruntime, or say which extras to install."""
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX export needs tf2onnx and onnx ({exc}). Install the host extra: "
            "pip install 'edgecam[host,onnx]'"
        ) from exc
    from firmware_host.backends.onnx import load_onnxruntime

    ort = load_onnxruntime()
    return tf2onnx, onnx, ort


def tool_versions() -> Dict[str, str]:
    """Versions recorded in the metadata's ``converter`` field."""
    tf2onnx, onnx, ort = require_onnx_tools()
    return {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
            "opset": str(OPSET)}


@contextlib.contextmanager
def _quiet(*names: str):
    """tf2onnx and the quantizer log every rewrite at INFO/WARNING: keep edgecam's output readable."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _to_onnx(endpoint):
    import tensorflow as tf

    tf2onnx, _, _ = require_onnx_tools()
    fn = tf.function(endpoint.fn, input_signature=endpoint.signature)
    try:
        with _quiet("tf2onnx", "root"):
            model, _ = tf2onnx.convert.from_function(fn, input_signature=endpoint.signature, opset=OPSET)
    except Exception as exc:  # tf2onnx raises ValueError/RuntimeError/its own errors per op
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"ONNX conversion (tf2onnx, opset {OPSET}) failed: {first}. Report the layer named in "
            "the message, or export to LiteRT only (--format tflite)."
        ) from exc
    return model


def _name_batch(model, outputs) -> None:
    """Call the dynamic first dimension of every input and output ``batch`` (tf2onnx: ``unk__N``)."""
    found = {o.name for o in model.graph.output}
    missing = sorted(set(outputs) - found)
    if missing:
        raise ConversionError(
            f"The ONNX model lacks output(s) {missing} (found {sorted(found)}): tf2onnx did not keep "
            "the signature's names. Report this with your tf2onnx version."
        )
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_param = BATCH


def _float_head_nodes(model, scope: str) -> List[str]:
    return [n.name for n in model.graph.node if scope in n.name]


def _topological_sort(model) -> None:
    """Reorder the nodes so each one follows the producers of its inputs (ONNX requires it).

    The float16 tool appends the float32→float16 input casts at the end of the node list.
    """
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            names = ", ".join(n.name for n in rest[:3])
            raise ConversionError(f"The ONNX graph has a cycle or a dangling input near nodes {names}.")
        for node in done:
            ordered.append(node)
            ready.update(node.output)
        pending = rest
    nodes = [type(n)() for n in ordered]
    for copy, node in zip(nodes, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _float16(model, keep: List[str]):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet("onnxruntime.transformers.float16", "root"):
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep or None)
    _topological_sort(model)
    return model


def calibration_reader(feeds: List[Dict[str, np.ndarray]]):
    """A ``CalibrationDataReader`` over the same feeds LiteRT's representative dataset uses."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self):
            return next(self._feeds, None)

    return Reader()


def _int8(model, feeds: List[Dict[str, np.ndarray]], keep: List[str]):
    import onnx
    from onnxruntime import quantization as q

    with tempfile.TemporaryDirectory(prefix="edgecam-onnx-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        reader = calibration_reader(feeds)
        try:
            with _quiet("root", "onnxruntime"):
                q.quantize_static(
                    str(src), str(dst), reader,
                    quant_format=q.QuantFormat.QDQ,
                    activation_type=q.QuantType.QInt8,
                    weight_type=q.QuantType.QInt8,
                    per_channel=True,
                    # 7-bit weights: x86 CPUs without VNNI run int8 convolutions with VPMADDUBSW,
                    # whose int16 sums of two u8×s8 products saturate; with 7 bits they cannot. The
                    # same 8-bit QDQ file scored Pearson 1.000 with ONNX Runtime's integer kernels
                    # off and 0.63 with them on (docs/onnx.md). Without saturation (ARM, VNNI) the
                    # lost bit costs ≤ 0.0006 of map Pearson on the ONNX-import fixtures.
                    reduce_range=True,
                    nodes_to_exclude=keep,
                    calibrate_method=q.CalibrationMethod.MinMax,
                    # Asymmetric activations: with symmetric ones, onnxruntime ≥ 1.32 keeps each ReLU
                    # and quantizes the conv output before it over [-max, max], leaving the map a
                    # fraction of the levels (tiny GAP model: median Pearson 0.82 vs 0.97).
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"ONNX int8 (QDQ) quantization failed: {first}.") from exc
        return onnx.load(str(dst))


def export_onnx(endpoint, quantize: str, representative: Optional[List[Dict[str, np.ndarray]]],
                float_head: bool = False, float_scope: str = "") -> bytes:
    """Convert ``endpoint`` (see ``converters.export.Endpoint``) to a serialized ONNX model.

    Args:
        endpoint: the serving function, its input signature and named outputs.
        quantize: ``none``, ``float16`` or ``int8``.
        representative: calibration feeds (``{"image": (1, H, W, C) float32[, "class_index"]}``)
            for ``int8``.
        float_head: keep the nodes under ``float_scope`` (the gradient head) in float32.
        float_scope: the TF name scope of that head.

    Returns:
        The ONNX model bytes, without edgecam metadata.

    Raises:
        ConversionError: tf2onnx or the quantizer failed, or names were lost.
    """
    import onnx

    model = _to_onnx(endpoint)
    _name_batch(model, endpoint.outputs)
    keep = _float_head_nodes(model, float_scope) if float_head and float_scope else []
    if quantize == "float16":
        model = _float16(model, keep)
    elif quantize == "int8":
        model = _int8(model, representative or [], keep)
    elif quantize != "none":
        raise ConversionError(f"ONNX export supports quantization {QUANTIZATIONS}. Got: {quantize!r}")
    model.producer_name = "edgecam"
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"The exported ONNX model is invalid: {str(exc).splitlines()[0]}") from exc
    return model.SerializeToString()


# The same QDQ settings for ONNX input (converters.onnx_in.quantize).
quantize_int8_qdq = _int8
