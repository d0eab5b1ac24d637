"""The ORIGINAL ONNX model as the host side of ``edgecam validate ORIGINAL.onnx EXPLAINED.onnx``.

Same interface as the Keras host model of :mod:`toolkit.validate` — ``predict`` and ``explain`` on
preprocessed ``(N, H, W, C)`` inputs — with the reference of the converter's self-check: the
untouched graph in onnxruntime, the head's gradient in numpy (finite differences for heads that
only ``--approximate`` can convert). No TensorFlow, no PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from firmware_host.errors import InputError, UnsupportedHeadError

from .check import ReferenceRun, reference
from .graph import Tables, dynamic_batch, find_head, fix_input_size, image_input, load_onnx

__all__ = ["OnnxHostModel", "METHODS"]

METHODS = ("gradcam", "hirescam")


class OnnxHostModel:
    """Probabilities and full Grad-CAM (or HiResCAM) maps of an ONNX classifier.

    Args:
        path: the original ``.onnx``.
        method: ``gradcam`` or ``hirescam``.
        target_layer: the explanation tensor (default: as the converter finds it).

    Raises:
        InputError: another method; ModelFileError, ConversionError, LayerError as the converter.
    """

    def __init__(self, path: Union[str, Path], method: str = "gradcam", target_layer: Optional[str] = None) -> None:
        if method not in METHODS:
            raise InputError(
                f"An ONNX original is explained with {' or '.join(METHODS)} (numpy gradient of its head). "
                f"Got: --method {method!r}."
            )
        self.name = str(path)
        self.method = method
        model = load_onnx(path)
        image = image_input(model)
        fix_input_size(model, image)
        image = dynamic_batch(model, image)
        self.tables = Tables(model)
        self.grads = None
        try:
            self.head = find_head(model, self.tables, target_layer)
        except UnsupportedHeadError:
            from .approximate import HeadGradients, approximate_head

            self.head = approximate_head(model, self.tables, target_layer)
            self.grads = HeadGradients(model, self.head)
        self.layer = self.head.target
        self.run = ReferenceRun(model, self.head, image)

    def _probabilities(self, logits) -> np.ndarray:
        logits = np.asarray(logits, np.float64)
        if self.head.activation == "sigmoid":
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` float32 → ``(N, K)`` probabilities."""
        return self._probabilities(self.run.run(np.asarray(x, np.float32))[self.head.logits])

    def explain(self, x: np.ndarray, classes: Optional[np.ndarray], batch_size: int = 16):
        """``(probabilities (N, K), explained classes (N,), ReLU'd maps (N, h, w))`` at the tensor's resolution."""
        x = np.asarray(x, np.float32)
        probs, chosen, maps = [], [], []
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            wanted = None if classes is None else np.asarray(classes)[start : start + batch_size]
            if self.grads is None:
                cams, picked, logits = reference(self.run, self.head, self.tables, chunk, self.method, wanted)
            else:
                values = self.run.run(chunk)
                logits = values[self.head.logits]
                picked = np.argmax(logits, axis=-1) if wanted is None else wanted
                cams = self.grads.reference(values[self.head.target], picked)
            probs.append(self._probabilities(logits))
            chosen.append(np.asarray(picked))
            maps.append(cams)
        return np.concatenate(probs), np.concatenate(chosen), np.concatenate(maps).astype(np.float32)
