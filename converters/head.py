"""Analyse the classifier head between the explanation layer and the logit.

The head is turned into a list of :class:`Step` s (numpy parameters, framework-free), then:

* **linear** — GlobalAveragePooling then affine layers (Dense, BatchNormalization, Rescaling,
  Dropout, linear Activation, 1×1 linear convs before the pooling): the logit is
  ``z_c = sum_k w_kc · GAP(A^k) + b_c`` and Grad-CAM's channel weights are constants,
  ``α_kc = w_kc / (h·w)`` (Eq. 1 of Selvaraju et al. 2017 applied to a GAP head; Zhou et al.
  2016's CAM up to the positive factor 1/(h·w)).
* **flatten** — Flatten then affine layers: ``∂z_c/∂A_ijk = W[(i, j, k), c]`` is a constant
  tensor; Grad-CAM averages it over (i, j); HiResCAM (Draelos & Collins 2020) uses it as is,
  which is exact for this head.
* **gradient** — any other chain of supported layers (ReLU-style activations, GlobalMaxPooling,
  several Dense layers…): the exporter writes the gradient of the chosen logit with respect to
  A as forward builtin ops (:mod:`converters.heads.gradient`).

Anything else raises :class:`UnsupportedHeadError` explaining which layer and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from firmware_host.errors import UnsupportedHeadError

__all__ = ["Step", "HeadAnalysis", "analyze_head", "ELEMENTWISE"]

IDENTITY_LAYERS = {
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
    "InputLayer",
}

# Element-wise activations whose derivative the gradient head can write with builtin ops.
ELEMENTWISE = (
    "linear",
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "elu",
    "softplus",
    "silu",
    "swish",
    "hard_sigmoid",
)


@dataclass(frozen=True)
class Step:
    """One head operation with numpy parameters.

    kinds: ``identity``; ``affine`` (``x·scale + bias`` on the last axis); ``dense`` (``x @ kernel
    + bias`` on the last axis, then ``activation``); ``act`` (element-wise ``activation`` with
    ``params``); ``gap``/``gmp`` (global average/max pooling, ``keepdims``); ``flatten``;
    ``reshape`` (to ``shape``).
    """

    kind: str
    name: str
    scale: Optional[np.ndarray] = field(default=None, repr=False)
    bias: Optional[np.ndarray] = field(default=None, repr=False)
    kernel: Optional[np.ndarray] = field(default=None, repr=False)
    activation: str = "linear"
    params: Tuple[Tuple[str, float], ...] = ()
    keepdims: bool = False
    shape: Tuple[int, ...] = ()

    @property
    def param(self) -> dict:
        return dict(self.params)


@dataclass(frozen=True)
class HeadAnalysis:
    """Result of :func:`analyze_head`.

    Attributes:
        mode: ``linear``, ``flatten`` or ``gradient``.
        reason: one sentence on why this mode was chosen.
        steps: the head as steps (the final softmax/sigmoid already split off).
        feature_shape: ``(h, w, C)`` of A.
        num_logits: number of logits K.
        alpha: Grad-CAM channel weights ``(C, K)`` (linear and flatten modes).
        jacobian: ``∂z/∂A`` as ``(h, w, C, K)`` (flatten mode; HiResCAM weights).
    """

    mode: str
    reason: str
    steps: Tuple[Step, ...]
    feature_shape: Tuple[int, int, int]
    num_logits: int
    alpha: Optional[np.ndarray] = field(default=None, repr=False)
    jacobian: Optional[np.ndarray] = field(default=None, repr=False)


def _np(value) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.float64)


def _act_name(fn) -> str:
    name = getattr(fn, "__name__", None) or (fn if isinstance(fn, str) else "linear")
    return {"swish": "silu"}.get(str(name), str(name))


def _to_steps(chain: Sequence[object], strip_last: bool) -> List[Step]:
    """Translate Keras layers into steps; raise for layers the analyser does not know."""
    steps: List[Step] = []
    for i, layer in enumerate(chain):
        cls = type(layer).__name__
        last = i == len(chain) - 1
        name = layer.name
        if cls in IDENTITY_LAYERS:
            steps.append(Step("identity", name))
        elif cls in ("Activation", "Softmax"):
            act = "softmax" if cls == "Softmax" else _act_name(layer.activation)
            if last and strip_last:
                continue  # the final softmax/sigmoid, split off
            steps.append(Step("act", name, activation=act))
        elif cls in ("ReLU", "LeakyReLU", "ELU"):
            if cls == "ReLU":
                max_value = layer.max_value
                params = (
                    ("max_value", float("inf") if max_value is None else float(max_value)),
                    ("negative_slope", float(layer.negative_slope)),
                    ("threshold", float(layer.threshold)),
                )
                steps.append(Step("act", name, activation="relu_general", params=params))
            elif cls == "LeakyReLU":
                slope = getattr(layer, "negative_slope", getattr(layer, "alpha", 0.3))
                steps.append(Step("act", name, activation="leaky_relu", params=(("negative_slope", float(slope)),)))
            else:
                steps.append(Step("act", name, activation="elu", params=(("alpha", float(layer.alpha)),)))
        elif cls == "BatchNormalization":
            axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
            rank = len(layer.input.shape)
            if axis not in (-1, rank - 1):
                raise UnsupportedHeadError(
                    f"Layer {name!r} normalises axis {axis}; edgecam folds only channels-last "
                    "BatchNormalization."
                )
            gamma = _np(layer.gamma) if layer.scale else 1.0
            beta = _np(layer.beta) if layer.center else 0.0
            mean, var = _np(layer.moving_mean), _np(layer.moving_variance)
            scale = gamma / np.sqrt(var + layer.epsilon)
            bias = beta - mean * scale
            steps.append(Step("affine", name, scale=np.broadcast_to(scale, mean.shape).copy(), bias=np.broadcast_to(bias, mean.shape).copy()))
        elif cls == "Rescaling":
            channels = int(layer.input.shape[-1])
            scale = np.broadcast_to(np.asarray(layer.scale, np.float64), (channels,)).copy()
            bias = np.broadcast_to(np.asarray(layer.offset, np.float64), (channels,)).copy()
            steps.append(Step("affine", name, scale=scale, bias=bias))
        elif cls == "Dense":
            act = _act_name(layer.activation)
            if last and strip_last:
                act = "linear"
            bias = _np(layer.bias) if layer.use_bias else np.zeros(int(layer.units))
            steps.append(Step("dense", name, kernel=_np(layer.kernel), bias=bias, activation=act))
        elif cls == "Conv2D" and tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1) and getattr(layer, "groups", 1) == 1:
            act = _act_name(layer.activation)
            if last and strip_last:
                act = "linear"
            kernel = _np(layer.kernel)[0, 0]
            bias = _np(layer.bias) if layer.use_bias else np.zeros(kernel.shape[1])
            steps.append(Step("dense", name, kernel=kernel, bias=bias, activation=act))
        elif cls == "GlobalAveragePooling2D":
            steps.append(Step("gap", name, keepdims=bool(getattr(layer, "keepdims", False))))
        elif cls == "GlobalMaxPooling2D":
            steps.append(Step("gmp", name, keepdims=bool(getattr(layer, "keepdims", False))))
        elif cls == "Flatten":
            steps.append(Step("flatten", name))
        elif cls == "Reshape":
            steps.append(Step("reshape", name, shape=tuple(int(v) for v in layer.target_shape)))
        else:
            raise UnsupportedHeadError(
                f"Layer {name!r} ({cls}) in the head is not one edgecam can turn into an exact "
                "CAM head (supported: Dense, 1×1 Conv2D, BatchNormalization, Rescaling, Dropout, "
                "activations, ReLU/LeakyReLU/ELU, GlobalAverage/MaxPooling2D, Flatten, Reshape)."
            )
    for step in steps:
        acts = [step.activation] if step.kind in ("dense", "act") else []
        for act in acts:
            if act not in ELEMENTWISE and act != "relu_general":
                raise UnsupportedHeadError(
                    f"Layer {step.name!r} uses activation {act!r}, whose derivative edgecam "
                    f"cannot write with builtin ops (supported: {', '.join(ELEMENTWISE)})."
                )
    return steps


def _linear_fold(steps: Sequence[Step], shape: Tuple[int, int, int]):
    """Fold a linear head. Returns ``(mode, alpha, jacobian)`` or ``None`` if not linear."""
    h, w, c = shape
    pmat = np.eye(c)  # spatial phase: per-position channel map A_ij → A_ij @ pmat + q
    collapse = None
    mmat: Optional[np.ndarray] = None  # vector phase (gap): v → v @ mmat
    jac: Optional[np.ndarray] = None  # vector phase (flatten): ∂z/∂A as (h, w, C, D)
    flat_pending = False
    for step in steps:
        linear_act = step.kind not in ("dense", "act") or step.activation == "linear"
        if not linear_act or step.kind == "gmp":
            return None
        if step.kind in ("identity", "act"):
            continue
        if collapse is None:
            if step.kind == "affine":
                pmat = pmat * step.scale[None, :]
            elif step.kind == "dense":
                pmat = pmat @ step.kernel
            elif step.kind == "gap":
                collapse, mmat = "gap", pmat
            elif step.kind == "flatten":
                collapse, flat_pending = "flatten", True
            else:
                return None
            continue
        if collapse == "gap":
            if step.kind == "affine":
                mmat = mmat * step.scale[None, :]
            elif step.kind == "dense":
                mmat = mmat @ step.kernel
            elif step.kind in ("flatten", "reshape"):
                continue  # (N, 1, 1, C) after keepdims pooling → (N, C)
            else:
                return None
        else:  # flatten
            if flat_pending:
                d = pmat.shape[1]
                if step.kind == "dense":
                    kernel = step.kernel.reshape(h, w, d, -1)
                    jac = np.einsum("cd,hwdk->hwck", pmat, kernel)
                else:
                    return None
                flat_pending = False
            elif step.kind == "affine":
                jac = jac * step.scale
            elif step.kind == "dense":
                jac = jac @ step.kernel
            else:
                return None
    if collapse == "gap":
        return "linear", mmat / float(h * w), None
    if collapse == "flatten" and jac is not None:
        return "flatten", jac.mean(axis=(0, 1)), jac
    return None


BINARY_STEP = Step("dense", "binary_logits", kernel=np.array([[-1.0, 1.0]]), bias=np.zeros(2))


def analyze_head(
    chain: Sequence[object], feature_shape, num_logits: int, activation: str, binary: bool = False
) -> HeadAnalysis:
    """Choose the most exact CAM mode the head allows.

    Args:
        chain: head layers from :func:`converters.layers.head_chain`.
        feature_shape: ``(h, w, C)`` of the explanation layer.
        num_logits: K.
        activation: the final activation split off (``softmax``/``sigmoid``/``linear``).
        binary: one sigmoid logit z explained as two classes ``[-z, z]`` (see ModelSplit).

    Raises:
        UnsupportedHeadError: a layer the analyser cannot handle exactly (the message names it).
    """
    shape = tuple(int(v) for v in feature_shape)
    steps = _to_steps(chain, strip_last=activation in ("softmax", "sigmoid"))
    if binary:
        steps.append(BINARY_STEP)
    folded = _linear_fold(steps, shape)
    if folded is not None:
        mode, alpha, jac = folded
        if alpha.shape[-1] != num_logits:
            raise UnsupportedHeadError(
                f"Folded head has {alpha.shape[-1]} outputs but the model has {num_logits} logits."
            )
        reason = (
            "GlobalAveragePooling → affine head: CAM = Σ_k w_kc·A^k equals Grad-CAM exactly"
            if mode == "linear"
            else "Flatten → affine head: constant gradient, precomputed (Grad-CAM and HiResCAM exact)"
        )
        return HeadAnalysis(mode, reason, tuple(steps), shape, num_logits, alpha.astype(np.float32),
                            None if jac is None else jac.astype(np.float32))
    kinds = {s.kind for s in steps}
    nonlinear = [s.name for s in steps if s.kind == "gmp" or (s.kind in ("dense", "act") and s.activation != "linear")]
    if not kinds & {"gap", "gmp", "flatten"}:
        raise UnsupportedHeadError(
            "The head never collapses the spatial feature map (no GlobalAveragePooling2D, "
            "GlobalMaxPooling2D or Flatten after the explanation layer)."
        )
    return HeadAnalysis(
        "gradient",
        f"non-linear head ({', '.join(nonlinear)}): exact Grad-CAM from an in-graph gradient",
        tuple(steps),
        shape,
        num_logits,
    )
