"""Self-check: the explained model against an independent Grad-CAM of the ORIGINAL graph.

The reference runs the untouched graph in onnxruntime with the explanation tensor and the
head's intermediate tensors exposed as extra outputs, then takes the head's gradient in numpy
(:func:`.analysis.backward`) — no PyTorch, no TensorFlow. The explained model runs through
``firmware_host.ExplainableModel``, exactly as on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from firmware_host import cam as _cam
from firmware_host.compare import pearson
from firmware_host.errors import ConversionError

from .analysis import Values, backward, to_nhwc
from .graph import HeadChain, ImageInput, Tables

__all__ = ["ReferenceRun", "reference", "self_check"]


class ReferenceRun:
    """The original graph in onnxruntime with the head's tensors as extra outputs."""

    def __init__(self, model, head: HeadChain, image: ImageInput) -> None:
        from onnx import helper

        from firmware_host.backends.onnx import load_onnxruntime

        ort = load_onnxruntime()
        probe = type(model)()
        probe.CopyFrom(model)
        known = {o.name for o in probe.graph.output}
        self.names = [n for n in dict.fromkeys([*head.tensors, head.logits]) if n not in known] + sorted(known)
        probe.graph.output.extend(
            [helper.make_tensor_value_info(n, 1, None) for n in self.names if n not in known]
        )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.image = image

    def run(self, x_nhwc: np.ndarray) -> Dict[str, np.ndarray]:
        """Values of the head's tensors for ``(N, H, W, C)`` inputs (one image at a time if the batch is fixed)."""
        x = np.transpose(x_nhwc, (0, 3, 1, 2)) if self.image.layout == "NCHW" else x_nhwc
        step = self.image.batch or 16
        parts: List[Dict[str, np.ndarray]] = []
        for start in range(0, len(x), step):
            outs = self.session.run(self.names, {self.image.name: np.ascontiguousarray(x[start : start + step], np.float32)})
            parts.append(dict(zip(self.names, outs)))
        return {n: np.concatenate([p[n] for p in parts]) for n in self.names}


def reference(run: ReferenceRun, head: HeadChain, tables: Tables, x: np.ndarray, method: str,
              classes=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(maps (N, h, w) ReLU'd, classes (N,), logits (N, K))``: Grad-CAM/HiResCAM of the original graph."""
    values = run.run(x)
    logits = np.asarray(values[head.logits], np.float64)
    chosen = np.argmax(logits, axis=-1) if classes is None else np.asarray(classes)
    onehot = np.eye(head.num_logits)[chosen]
    grads = to_nhwc(backward(head, onehot, Values(tables, values)), head.layout)
    fmaps = to_nhwc(np.asarray(values[head.target], np.float64), head.layout)
    if method == "hirescam":
        raw = np.sum(fmaps * grads, axis=-1)
    else:  # Grad-CAM, Eq. 1-2 of Selvaraju et al. 2017
        raw = np.einsum("nhwc,nc->nhw", fmaps, grads.mean(axis=(1, 2)))
    return _cam.relu(raw), chosen, logits


def _probabilities(logits: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def self_check(path: Path, expected, activation: str, images: List[np.ndarray], batch, quantize: str, source: str):
    """Compare ``path`` (through ExplainableModel) with ``expected``; a ``SelfCheck``.

    Args:
        expected: ``(maps, classes, logits)`` from :func:`reference` (or the approximate one).
        activation: ``softmax`` or ``sigmoid``, to turn the reference logits into probabilities.
        batch: the model's fixed batch size, or ``None`` when it is dynamic.
    """
    from firmware_host.model import ExplainableModel

    from ..export import THRESHOLDS, SelfCheck

    ref, classes, logits = expected
    if not (np.isfinite(logits).all() and np.isfinite(ref).all()):
        raise ConversionError(
            f"The ONNX model gives non-finite logits or Grad-CAM (NaN/inf) on {source}: its weights hold "
            "NaN/inf or it overflows. Check the model and the preprocessing (--mean/--std)."
        )
    probs = _probabilities(logits, activation)
    edge = ExplainableModel(path)
    step = batch or 16
    agree, corr, pdiff = [], [], []
    for start in range(0, len(images), step):
        exps = edge.explain_batch(images[start : start + step], class_index=classes[start : start + step])
        for i, exp in enumerate(exps, start):
            # A tie in the reference scores is agreement whichever class wins.
            agree.append(float(abs(probs[i][exp.predicted_index] - probs[i][classes[i]]) <= 1e-6))
            corr.append(pearson(exp.cam, ref[i]))
            pdiff.append(float(np.abs(exp.probabilities - probs[i]).max()))
    limits = THRESHOLDS[quantize]
    stats = {"top1_agreement": float(np.mean(agree)), "pearson_median": float(np.median(corr)),
             "pearson_min": float(np.min(corr)), "prob_max_abs_diff": float(np.max(pdiff))}
    return SelfCheck(len(images), source, **stats, threshold_pearson=limits["pearson"], threshold_top1=limits["top1"])
