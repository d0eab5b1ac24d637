"""int8 QDQ quantization of an explained ONNX graph, with the explanation head kept float32.

ONNX Runtime's static quantization (``quantize_static``, with the Keras path's settings:
per-channel symmetric int8 weights in 7 bits, asymmetric int8 activations, MinMax ranges; see
:func:`converters.onnx_export.quantize_int8_qdq`) calibrates activation ranges on the same images
as the self-check. Excluded, so they stay
float32: every node edgecam added (under ``edgecam_head/``) and the classifier head from the
explanation tensor to the logits — the gradient head multiplies ReLU masks and small gradients,
which int8 would flip and round away, and the head is a few thousand multiply-adds.
Inputs and outputs stay float32.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping

import numpy as np

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


def quantize_int8(content: bytes, x: np.ndarray, inputs: Mapping[str, str], head_nodes: Iterable[str] = ()) -> bytes:
    """Quantize the serialized float model ``content`` to int8 QDQ, calibrated on ``x``.

    The settings are those of the Keras path's ONNX export
    (:func:`converters.onnx_export.quantize_int8_qdq`).

    Args:
        content: the explained (or plain) model.
        x: preprocessed calibration images ``(N, H, W, C)`` float32.
        inputs: role → input name (``image``, maybe ``class_index``, fed −1).
        head_nodes: names of the original head's nodes, also kept float32.

    Raises:
        ConversionError: the quantizer failed.
    """
    import onnx

    from ..onnx_export import quantize_int8_qdq

    model = onnx.load_from_string(content)
    return quantize_int8_qdq(model, _feeds(x, inputs), float_nodes(model, head_nodes)).SerializeToString()
