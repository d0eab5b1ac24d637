"""int8 QDQ quantization of an explained ONNX graph, with the explanation head kept float32.

ONNX Runtime's static quantization (``quantize_static``) calibrates activation ranges on the
same images as the self-check, with per-channel symmetric int8 weights and symmetric int8
activations (TensorRT's explicit quantization wants zero points of 0). Excluded, so they stay
float32: every node edgecam added (under ``edgecam_head/``) and the classifier head from the
explanation tensor to the logits — the gradient head multiplies ReLU masks and small gradients,
which int8 would flip and round away, and the head is a few thousand multiply-adds.
Inputs and outputs stay float32.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

import numpy as np

from firmware_host.errors import ConversionError

from .build import PREFIX

__all__ = ["quantize_int8", "float_nodes"]


def float_nodes(model, head_nodes: Iterable[str] = ()) -> List[str]:
    """Names of the nodes to keep in float32: edgecam's head and ``head_nodes``."""
    keep = set(head_nodes)
    return [n.name for n in model.graph.node if n.name.startswith(PREFIX) or n.name in keep]


def _feeds(x: np.ndarray, inputs: Mapping[str, str]) -> List[Dict[str, np.ndarray]]:
    feeds = []
    for i in range(len(x)):
        feed = {inputs["image"]: x[i : i + 1].astype(np.float32)}
        if "class_index" in inputs:
            feed[inputs["class_index"]] = np.array([-1], np.int32)
        feeds.append(feed)
    return feeds


@contextlib.contextmanager
def _quiet():
    logger = logging.getLogger("root")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def quantize_int8(content: bytes, x: np.ndarray, inputs: Mapping[str, str], head_nodes: Iterable[str] = ()) -> bytes:
    """Quantize the serialized float model ``content`` to int8 QDQ, calibrated on ``x``.

    Args:
        content: the explained (or plain) model.
        x: preprocessed calibration images ``(N, H, W, C)`` float32.
        inputs: role → input name (``image``, maybe ``class_index``, fed −1).
        head_nodes: names of the original head's nodes, also kept float32.

    Raises:
        ConversionError: the quantizer failed.
    """
    import onnx
    from onnxruntime import quantization as q

    model = onnx.load_from_string(content)
    keep = float_nodes(model, head_nodes)
    feeds = iter(_feeds(x, inputs))

    class Reader(q.CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    with tempfile.TemporaryDirectory(prefix="edgecam-onnx-in-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(content)
        try:
            with _quiet():
                q.quantize_static(
                    str(src), str(dst), Reader(),
                    quant_format=q.QuantFormat.QDQ,
                    activation_type=q.QuantType.QInt8,
                    weight_type=q.QuantType.QInt8,
                    per_channel=True,
                    nodes_to_exclude=keep,
                    calibrate_method=q.CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
                )
        except Exception as exc:  # the quantizer raises ValueError/RuntimeError/onnxruntime errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"ONNX int8 (QDQ) quantization failed: {first}.") from exc
        return dst.read_bytes()
