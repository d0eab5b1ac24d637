"""LiteRT export: the endpoint written once as a SavedModel, then converted once per precision plan.

Every plan keeps builtin ops only (a Flex op cannot run on the device interpreters), so
ai-edge-litert and tflite-runtime run every file this module writes. The plans themselves are
described in :mod:`converters.quant`.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from firmware_host.errors import ConversionError

__all__ = ["saved_model", "litert_bytes", "float_island_nodes"]

# Ops under this name scope stay float32 in int8 models (the in-graph CAM heads).
FLOAT_SCOPE = "edgecam_float_head"


@contextlib.contextmanager
def saved_model(endpoint) -> Iterator[str]:
    """Write ``endpoint`` as a SavedModel (Keras ExportArchive) in a temporary folder.

    The converter needs the trackable object: ``from_concrete_functions`` without it gave NaN
    outputs. Written once, converted once per plan.
    """
    import keras

    with tempfile.TemporaryDirectory(prefix="edgecam-export-") as tmp:
        archive = keras.export.ExportArchive()
        for obj in endpoint.track:
            archive.track(obj)
        archive.add_endpoint("serving_default", endpoint.fn, input_signature=list(endpoint.signature))
        archive.write_out(tmp, verbose=False)
        yield tmp


def _configure(converter, plan: str, representative) -> None:
    """Set the converter's options for ``plan`` (see converters.quant.LITERT_PLANS)."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if plan == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if plan == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif plan == "16x8":
        converter.representative_dataset = lambda: iter(representative)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,  # ops without an int16 kernel stay float
        ]
    elif plan in ("int8", "int8-mixed"):
        converter.representative_dataset = lambda: iter(representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


def _island_pattern(layer_names: Sequence[str]):
    # Keras suffixes a layer's scope when the graph is replayed (``last`` → ``last_1``).
    names = "|".join(re.escape(n) for n in layer_names)
    return re.compile(r"^(?:%s)(?:_\d+)?$" % names) if layer_names else None


def _in_island(name: str, pattern) -> bool:
    """Converter names join fused ops with ``;`` and scopes with ``/``: match one path segment."""
    if FLOAT_SCOPE in name:
        return True
    return pattern is not None and any(pattern.match(seg) for seg in re.split(r"[;/:]", name))


def _squeezed(shape) -> bool:
    """A 4-D tensor pooled to 1×1 (a squeeze-excite branch): ``(N, 1, 1, C)``."""
    return len(shape) == 4 and int(shape[1]) == 1 and int(shape[2]) == 1


def float_island_nodes(ops: Sequence[Dict], tensors: Sequence[Dict], layer_names: Sequence[str],
                       squeeze_excite: bool = False) -> List[str]:
    """Output tensors (op locations) of the calibrated model's ops that belong to the float island.

    An op belongs when one of its input or output tensors is named after an island layer or
    the float scope. Inputs count because an op whose output is a model output is renamed
    (``StatefulPartitionedCall:1``) while its kernel keeps the layer's name. With
    ``squeeze_excite``, every op whose output is pooled to 1×1 belongs too: the squeeze-excite
    branches of EfficientNet/MobileNetV3, whose per-tensor int8 ranges fit the images worst
    (``benchmarks/int8_debug.py``: 20–42 int8 steps of error on EfficientNetB0's ``se_reduce``)
    and which cost next to nothing in float.

    Args:
        ops: ``Interpreter._get_ops_details()`` of the calibrated model.
        tensors: ``Interpreter.get_tensor_details()`` (name and shape by index).
        layer_names: Keras layer names in the island.
        squeeze_excite: also keep the 1×1 (squeezed) branches float.
    """
    pattern = _island_pattern(layer_names)
    by_index = {t["index"]: t for t in tensors}
    out = set()
    for op in ops:
        touched = [by_index[i]["name"] for i in list(op["inputs"]) + list(op["outputs"]) if i in by_index]
        squeezed = squeeze_excite and any(_squeezed(by_index[i]["shape"]) for i in op["outputs"] if i in by_index)
        if squeezed or any(_in_island(name, pattern) for name in touched):
            out.update(by_index[i]["name"] for i in op["outputs"] if i in by_index)
    return sorted(out)


def _quantize_with_denylist(converter, island_layers: Sequence[str]) -> bytes:
    """Full-integer int8, calibrated, with the float island's ops denylisted (kept float32).

    The mechanism behind TF's QuantizationDebugger. The gradient head multiplies ReLU masks and
    small gradients; in int8 the masks of units near zero flip and the map decorrelates, so it is
    always in the island.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert  # private, used by the debugger

    from firmware_host.backends.litert import load_interpreter_class

    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # noqa: SLF001 - as QuantizationDebugger does
    calibrated = converter.convert()
    Interpreter, _, _ = load_interpreter_class()
    interpreter = Interpreter(model_content=calibrated)
    denylist = float_island_nodes(interpreter._get_ops_details(), interpreter.get_tensor_details(),  # noqa: SLF001
                                  island_layers, squeeze_excite=bool(island_layers))
    types = tfl_convert._types_pb2  # noqa: SLF001
    return tfl_convert.mlir_quantize(calibrated, fully_quantize=True, inference_type=types.QUANTIZED_INT8,
                                     input_data_type=tf.int8, output_data_type=tf.int8,
                                     denylisted_nodes=denylist)


def litert_bytes(saved_dir: str, plan: str, representative: Optional[List[Dict[str, np.ndarray]]],
                 float_head: bool = False, island_layers: Sequence[str] = ()) -> bytes:
    """Convert the SavedModel in ``saved_dir`` with precision ``plan``.

    Args:
        saved_dir: from :func:`saved_model`.
        plan: a name of ``converters.quant.LITERT_PLANS``.
        representative: calibration feeds (``int8``, ``int8-mixed``, ``16x8``).
        float_head: the graph has an in-graph gradient head (kept float in int8 plans).
        island_layers: ``int8-mixed``: Keras layer names whose ops stay float32.

    Raises:
        ConversionError: the converter failed (a Flex op is named as such).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
    _configure(converter, plan, representative)
    if plan == "16x8" and float_head:
        # Tried: the plain converter cannot range the int32 class_index input ("Empty min/max"),
        # and mlir_quantize's int16 mode gives CONV_2D zero points LiteRT refuses at run time.
        raise ConversionError(
            "16x8 is not available for an in-graph gradient head (its int32 class_index input cannot "
            "be calibrated); the dynamic and float16 plans are."
        )
    try:
        if plan == "int8-mixed" or (plan == "int8" and float_head):
            return _quantize_with_denylist(converter, island_layers if plan == "int8-mixed" else ())
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError/RuntimeError/ValueError
        text = str(exc)
        flex = "Flex" in text or "ops are not supported" in text or "Select TF" in text
        first = next((line.strip() for line in text.splitlines() if "error" in line.lower()),
                     (text.strip().splitlines() or [""])[0][:300])
        hint = (
            "The graph needs a TensorFlow (Flex) op, which the device interpreters cannot run; "
            "replace the layer that needs it."
            if flex
            else "See the converter message above."
        )
        raise ConversionError(f"LiteRT conversion ({plan}) failed: {first} {hint}") from exc
