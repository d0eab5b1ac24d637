"""``--approximate`` for heads the analysis cannot make exact (unknown operators, branches).

The head — the sub-graph from the explanation tensor A to the logits — is cut out of the model
(``onnx.utils.Extractor``) and run in onnxruntime on the calibration images' feature maps. Its
gradient is taken by central differences along each channel's uniform direction ``e_k``:

    Σ_ij ∂z_c/∂A_ijk ≈ (z_c(A + ε·e_k) − z_c(A − ε·e_k)) / 2ε,

so the per-image Grad-CAM weights are ``α_kc = that / (h·w)`` (Eq. 1 of Selvaraju et al. 2017).
Averaged over the images they become fixed class weights (``cam_mode: approximate``), exactly
as the Keras path averages GradientTape gradients; per image they are the self-check's
reference.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from firmware_host.errors import ConversionError, LayerError

from .analysis import to_nhwc
from .graph import HeadChain, Tables, candidates, classifier_output, feature_layout

__all__ = ["approximate_head", "HeadGradients"]

CHUNK = 256


def approximate_head(model, tables: Tables, target: Optional[str]) -> HeadChain:
    """The explanation tensor (``target`` or the last spatial tensor) and the logits, no chain."""
    found = candidates(model, tables)
    if target is None:
        if not found:
            raise LayerError("No spatial tensor found: the model has no 4-D tensor with a spatial extent.")
        target = found[-1]
    elif target not in found:
        raise LayerError(
            f"Tensor {target!r} is not a 4-D spatial tensor of the model. Pass --target-tensor with one of: "
            f"{', '.join(found[-8:])}."
        )
    logits, probs, activation = classifier_output(model, tables)
    shape = tables.shape(target)
    layout = feature_layout(None, tables, target)
    h, w, c = (shape[2], shape[3], shape[1]) if layout == "NCHW" else (shape[1], shape[2], shape[3])
    return HeadChain(target, layout, (int(h), int(w), int(c)), (), (), -1, logits, probs, activation,
                     int(tables.shape(logits)[-1]))


class HeadGradients:
    """The head sub-graph in onnxruntime, differentiated by central differences per channel."""

    def __init__(self, model, head: HeadChain) -> None:
        import onnx.utils

        from firmware_host.backends.onnx import load_onnxruntime

        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            sub = onnx.utils.Extractor(inferred).extract_model([head.target], [head.logits])
            ort = load_onnxruntime()
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # the extractor or onnxruntime: the head reads other tensors
            raise ConversionError(
                f"Cannot cut the head from {head.target!r} to the logits {head.logits!r} out of the graph "
                f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}): it reads "
                "tensors other than the explanation tensor. Choose another --target-tensor."
            ) from exc
        self.head = head
        self.input = self.session.get_inputs()[0].name

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        return np.concatenate([self.session.run(None, {self.input: batch[i : i + CHUNK].astype(np.float32)})[0]
                               for i in range(0, len(batch), CHUNK)]).astype(np.float64)

    def alpha(self, fmap: np.ndarray) -> np.ndarray:
        """Grad-CAM weights ``(C, K)`` of one image's feature map (A's layout, no batch axis)."""
        h, w, c = self.head.feature_shape
        axis = 0 if self.head.layout == "NCHW" else 2
        eps = 1e-3 * (float(np.abs(fmap).max()) + 1e-6)
        out = np.zeros((c, self.head.num_logits))
        for start in range(0, c, CHUNK // 4):
            channels = np.arange(start, min(start + CHUNK // 4, c))
            steps = np.zeros((len(channels), *fmap.shape), np.float32)
            index = [np.arange(len(channels)), slice(None), slice(None), slice(None)]
            index[1 + axis] = channels  # steps[i] is e_k for k = channels[i]: ones on channel k
            steps[tuple(index)] = 1.0
            up = self._logits(fmap[None] + eps * steps)
            down = self._logits(fmap[None] - eps * steps)
            out[channels] = (up - down) / (2.0 * eps * h * w)
        return out

    def reference(self, fmaps: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Per-image Grad-CAM ``(N, h, w)`` (ReLU'd) with finite-difference weights."""
        nhwc = to_nhwc(np.asarray(fmaps, np.float64), self.head.layout)
        maps = [np.maximum(nhwc[i] @ self.alpha(fmaps[i])[:, c], 0.0) for i, c in enumerate(classes)]
        return np.stack(maps).astype(np.float32)

    def averaged(self, fmaps: np.ndarray) -> np.ndarray:
        """``(C, K)`` weights averaged over the images: the approximate head's class weights."""
        return np.mean([self.alpha(f) for f in fmaps], axis=0).astype(np.float32)
