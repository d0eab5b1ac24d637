"""Head analysis over ONNX operators: the most exact CAM mode, and numpy backward passes.

* **linear** — every head operator is linear and the collapse is a global average pooling: the
  gradient of logit c with respect to A is constant, and Grad-CAM's channel weights
  ``α_kc = mean_ij ∂z_c/∂A_ijk`` (Eq. 1 of Selvaraju et al. 2017) are computed once here.
* **flatten** — linear operators after a ``Flatten``: ``∂z_c/∂A_ijk`` is a constant tensor,
  kept whole for HiResCAM (Draelos & Collins 2020) and averaged over (i, j) for Grad-CAM.
* **gradient** — any other chain of known operators (ReLU masks, max pooling, several Gemm…):
  the converter writes the gradient in the graph (:mod:`.build`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from firmware_host.errors import ConversionError

from .graph import HeadChain, Tables, label

__all__ = ["Analysis", "Values", "analyze", "backward", "to_nhwc"]


@dataclass(frozen=True)
class Analysis:
    """The CAM mode chosen for a head.

    Attributes:
        mode: ``linear``, ``flatten`` or ``gradient``.
        reason: one sentence on why.
        alpha: Grad-CAM channel weights ``(C, K)`` (linear and flatten modes).
        jacobian: ``∂z/∂A`` as ``(h, w, C, K)`` (flatten mode: HiResCAM weights).
    """

    mode: str
    reason: str
    alpha: Optional[np.ndarray] = field(default=None, repr=False)
    jacobian: Optional[np.ndarray] = field(default=None, repr=False)


class Values:
    """A rule context: the graph's constants and shapes plus the forward values of one batch."""

    def __init__(self, tables: Tables, values: Optional[Dict[str, np.ndarray]] = None) -> None:
        self.tables = tables
        self.shapes = tables.shapes
        self.values = values or {}

    def const(self, name: str):
        return self.tables.const(name)

    def shape(self, name: str):
        return self.tables.shape(name)

    def value(self, name: str) -> np.ndarray:
        if name in self.values:
            return self.values[name]
        found = self.tables.const(name)
        if found is None:
            raise ConversionError(f"The backward pass needs tensor {name!r}, which was not computed.")
        return found


def to_nhwc(tensor: np.ndarray, layout: str) -> np.ndarray:
    """``(B, C, h, w)`` → ``(B, h, w, C)`` for NCHW; NHWC unchanged."""
    return np.transpose(tensor, (0, 2, 3, 1)) if layout == "NCHW" else tensor


def backward(head: HeadChain, g: np.ndarray, ctx: Values) -> np.ndarray:
    """Pull ``g = ∂z/∂logits`` ``(B, K)`` back through the head: ``∂z/∂A`` in A's layout."""
    g = np.asarray(g, np.float64)
    for node, slot, rule in zip(reversed(head.nodes), reversed(head.slots), reversed(head.rules)):
        g = rule.numpy(node, slot, g, ctx)
    return g


def _constant_jacobian(head: HeadChain, tables: Tables, chunk: int = 64):
    """``(alpha (C, K), jacobian (h, w, C, K) or None)`` of a linear head, a few classes at a time."""
    h, w, c = head.feature_shape
    k = head.num_logits
    ctx = Values(tables)
    alpha = np.zeros((c, k))
    jac = np.zeros((h, w, c, k)) if head.collapse_kind == "flatten" else None
    eye = np.eye(k)
    for start in range(0, k, chunk):
        grads = to_nhwc(backward(head, eye[start : start + chunk], ctx), head.layout)  # (B, h, w, C)
        alpha[:, start : start + chunk] = grads.mean(axis=(1, 2)).T
        if jac is not None:
            jac[..., start : start + chunk] = np.transpose(grads, (1, 2, 3, 0))
    return alpha, jac


def analyze(head: HeadChain, tables: Tables) -> Analysis:
    """Choose the CAM mode of ``head``; fold the weights of linear heads.

    Raises:
        UnsupportedHeadError: an operator of the head cannot be handled (from its rule).
    """
    kinds = head.kinds or [n.op_type for n in head.nodes]
    nonlinear = [f"{label(n)} ({k})" for n, k, r in zip(head.nodes, kinds, head.rules) if not r.linear]
    if nonlinear:
        return Analysis(
            "gradient",
            f"non-linear head ({', '.join(nonlinear[:4])}{'…' if len(nonlinear) > 4 else ''}): exact "
            "Grad-CAM from an in-graph gradient",
        )
    alpha, jac = _constant_jacobian(head, tables)
    if head.collapse_kind == "flatten":
        reason = "Flatten → affine head: constant gradient, precomputed (Grad-CAM and HiResCAM exact)"
        return Analysis("flatten", reason, alpha.astype(np.float32), jac.astype(np.float32))
    reason = "GlobalAveragePool → affine head: CAM = Σ_k w_kc·A^k equals Grad-CAM exactly"
    return Analysis("linear", reason, alpha.astype(np.float32))
