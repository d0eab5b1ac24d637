"""LiteRT output for an ONNX input (the Pi): onnx2tf converts the original graph, TF adds the head.

The ORIGINAL graph, with the explanation tensor as an extra output, is converted by ``onnx2tf``
to a TensorFlow SavedModel — onnx2tf turns NCHW tensors into NHWC, so the explanation tensor
comes out as ``(N, h, w, C)``, the layout of edgecam's ``feature_maps``. A ``serving_default``
function calls it and adds the fixed-weight head of the Keras path
(:func:`converters.heads.linear_cams`); the Keras path's LiteRT container then converts it with
builtin ops only (never Flex) and quantizes it as for Keras models. Gradient heads are not
written to LiteRT here: the caller falls back to ONNX with a message.

Needs TensorFlow (``edgecam[host]``) and ``onnx2tf`` (``pip install onnx2tf onnx-graphsurgeon
sng4onnx psutil``).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from firmware_host.errors import ConversionError, MissingDependencyError

from .graph import HeadChain, ImageInput

__all__ = ["require_onnx2tf", "tflite_models", "tool_versions"]


def require_onnx2tf():
    """Import onnx2tf and TensorFlow, or say what to install."""
    try:
        import onnx2tf
        import tensorflow as tf
    except ImportError as exc:
        raise MissingDependencyError(
            f"LiteRT output from an ONNX model needs TensorFlow and onnx2tf ({exc}). Install them: "
            "pip install 'edgecam[host]' onnx2tf onnx-graphsurgeon sng4onnx psutil — or write .onnx."
        ) from exc
    return onnx2tf, tf


def tool_versions() -> Dict[str, str]:
    onnx2tf, tf = require_onnx2tf()
    return {"onnx2tf": onnx2tf.__version__, "tensorflow": tf.__version__}


def _saved_model(original, head: HeadChain, image: ImageInput, folder: Path):
    """onnx2tf's SavedModel of the original graph with outputs (logits, explanation tensor)."""
    import onnx
    from onnx import helper

    onnx2tf, tf = require_onnx2tf()
    probe = type(original)()
    probe.CopyFrom(original)
    del probe.graph.output[:]
    probe.graph.output.extend([helper.make_tensor_value_info(head.logits, 1, None),
                               helper.make_tensor_value_info(head.target, 1, None)])
    del probe.metadata_props[:]
    source = folder / "probe.onnx"
    onnx.save(probe, str(source))
    keep = {"keep_nwc_or_nhwc_or_ndhwc_input_names": [image.name]} if image.layout == "NHWC" else {}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(folder / "tf"),
                            non_verbose=True, output_signaturedefs=True, **keep)
        loaded = tf.saved_model.load(str(folder / "tf"))
    except Exception as exc:  # onnx2tf raises many kinds per operator
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"onnx2tf cannot convert the model: {first}") from exc
    return loaded


def _endpoint(loaded, head: HeadChain, image: ImageInput, weights: np.ndarray, cam_output: str):
    import tensorflow as tf

    from ..export import Endpoint
    from ..heads import linear_cams

    fn = loaded.signatures["serving_default"]
    name = next(iter(fn.structured_input_signature[1]))
    h, w, c = head.feature_shape

    def serve(x):
        out = fn(**{name: x})
        logits, fmaps = out["output_0"], out["output_1"]
        if tuple(fmaps.shape[1:]) != (h, w, c):
            raise ConversionError(
                f"onnx2tf gave the explanation tensor shape {tuple(fmaps.shape[1:])}, not (h, w, C) = "
                f"{(h, w, c)}; write .onnx instead."
            )
        probs = tf.sigmoid(logits) if head.activation == "sigmoid" else tf.nn.softmax(logits)
        return {"probabilities": probs, "logits": logits, "feature_maps": fmaps,
                **linear_cams(fmaps, logits, weights, cam_output)}

    spec = tf.TensorSpec([image.batch, image.height, image.width, image.channels], tf.float32, name="image")
    cam_key = "cams" if cam_output == "all" else "cam"
    explained = Endpoint(serve, [spec], [loaded], {"image": "image"},
                         ("probabilities", "logits", "feature_maps", cam_key))
    plain = Endpoint(lambda x: {"probabilities": serve(x)["probabilities"]}, [spec], [loaded], {"image": "image"},
                     ("probabilities",))
    return explained, plain


def tflite_models(original, head: HeadChain, image: ImageInput, mode: str, weights: Optional[np.ndarray],
                  cam_output: str, quantize: str, x: np.ndarray, baseline: bool) -> Tuple[bytes, Optional[bytes]]:
    """``(explained .tflite bytes, plain .tflite bytes or None)``.

    Raises:
        ConversionError: a gradient head, or onnx2tf / the LiteRT converter failed (Flex ops).
        MissingDependencyError: TensorFlow or onnx2tf missing.
    """
    if mode == "gradient":
        raise ConversionError(
            "the head is non-linear (gradient mode), which the LiteRT path from ONNX does not write yet"
        )
    from ..export import CONTAINERS

    container = CONTAINERS["tflite"]
    representative = [{"image": x[i : i + 1]} for i in range(len(x))] if quantize == "int8" else None
    with tempfile.TemporaryDirectory(prefix="edgecam-onnx2tf-") as tmp:
        loaded = _saved_model(original, head, image, Path(tmp))
        explained, plain = _endpoint(loaded, head, image, weights, cam_output)
        content = _litert(container, explained, quantize, representative)
        plain_content = _litert(container, plain, quantize, representative) if baseline else None
    return content, plain_content


def _litert(container, endpoint, quantize: str, representative) -> bytes:
    """One plan through the Keras path's LiteRT container (it yields bytes or the error per plan)."""
    for _, out in container.export(endpoint, (quantize,), representative):
        if isinstance(out, ConversionError):
            raise out
        return out
    raise ConversionError(f"The LiteRT converter wrote nothing for quantization {quantize!r}.")
