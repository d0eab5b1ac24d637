"""Analyse the classifier head between the explanation layer and the logit.

The head is turned into a list of :class:`Step` s (numpy parameters, framework-free), then:

* **linear** — GlobalAveragePooling then affine layers (Dense, BatchNormalization,
  Normalization, Rescaling, Dropout, linear Activation, 1×1 linear convs before or after the
  pooling — also after ``keepdims=True`` pooling, as in MobileNet v1/v3 heads): the logit is
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
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from firmware_host.errors import UnsupportedHeadError

__all__ = [
    "Step", "HeadAnalysis", "HeadLayer", "HEAD_LAYERS", "analyze_head", "supported_layers",
    "head_layers_markdown", "ELEMENTWISE",
]

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
    "hard_silu",
    "gelu",
    "selu",
    "mish",
    "softsign",
    "exponential",
    "hard_tanh",
)


@dataclass(frozen=True)
class Step:
    """One head operation with numpy parameters.

    kinds: ``identity``; ``affine`` (``x·scale + bias`` on the last axis); ``dense`` (``x @ kernel
    + bias`` on the last axis, then ``activation``); ``act`` (element-wise ``activation`` with
    ``params``); ``layernorm`` (over the last axis, then ``·scale + bias``; ``epsilon`` in params); ``gap``/``gmp`` (global average/max pooling, ``keepdims``); ``flatten``;
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
    return {"swish": "silu", "hard_swish": "hard_silu"}.get(str(name), str(name))


# -- one builder per layer type ----------------------------------------------------------------
# Each takes (layer, strip) — strip: this is the head's last layer and its softmax/sigmoid is
# split off — and returns the layer's Step, or None for a layer that vanishes.
def _unsupported(layer) -> UnsupportedHeadError:
    return UnsupportedHeadError(
        f"Layer {layer.name!r} ({type(layer).__name__}) in the head is not one edgecam can turn into "
        f"an exact CAM head (supported: {supported_layers()})."
    )


def _identity(layer, strip: bool) -> Step:
    return Step("identity", layer.name)


def _activation(layer, strip: bool) -> Optional[Step]:
    if strip:
        return None  # the final softmax/sigmoid, split off
    act = "softmax" if type(layer).__name__ == "Softmax" else _act_name(layer.activation)
    return Step("act", layer.name, activation=act)


def _relu(layer, strip: bool) -> Step:
    max_value = layer.max_value
    params = (
        ("max_value", float("inf") if max_value is None else float(max_value)),
        ("negative_slope", float(layer.negative_slope)),
        ("threshold", float(layer.threshold)),
    )
    return Step("act", layer.name, activation="relu_general", params=params)


def _leaky_relu(layer, strip: bool) -> Step:
    slope = getattr(layer, "negative_slope", getattr(layer, "alpha", 0.3))
    return Step("act", layer.name, activation="leaky_relu", params=(("negative_slope", float(slope)),))


def _elu(layer, strip: bool) -> Step:
    return Step("act", layer.name, activation="elu", params=(("alpha", float(layer.alpha)),))


def _batch_normalization(layer, strip: bool) -> Step:
    """Inference BatchNormalization is affine per channel: ``γ(x − μ)/√(σ² + ε) + β``."""
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    rank = len(layer.input.shape)
    if axis not in (-1, rank - 1):
        raise UnsupportedHeadError(
            f"Layer {layer.name!r} normalises axis {axis}; edgecam folds only channels-last "
            "BatchNormalization."
        )
    gamma = _np(layer.gamma) if layer.scale else 1.0
    beta = _np(layer.beta) if layer.center else 0.0
    mean, var = _np(layer.moving_mean), _np(layer.moving_variance)
    scale = gamma / np.sqrt(var + layer.epsilon)
    bias = beta - mean * scale
    return Step("affine", layer.name, scale=np.broadcast_to(scale, mean.shape).copy(),
                bias=np.broadcast_to(bias, mean.shape).copy())


def _rescaling(layer, strip: bool) -> Step:
    channels = int(layer.input.shape[-1])
    scale = np.broadcast_to(np.asarray(layer.scale, np.float64), (channels,)).copy()
    bias = np.broadcast_to(np.asarray(layer.offset, np.float64), (channels,)).copy()
    return Step("affine", layer.name, scale=scale, bias=bias)


def _normalization(layer, strip: bool) -> Step:
    """keras.layers.Normalization is affine per channel: ``(x - mean) / max(√var, ε)``."""
    from keras import backend

    rank = len(layer.input.shape)
    axes = tuple(a % rank for a in (layer.axis or ()))
    channels = int(layer.input.shape[-1])
    if axes != (rank - 1,):
        raise UnsupportedHeadError(
            f"Layer {layer.name!r} (Normalization) normalises axes {layer.axis}; edgecam folds only "
            "a per-channel (axis=-1) Normalization."
        )
    mean = np.broadcast_to(_np(layer.mean).reshape(-1), (channels,))
    std = np.maximum(np.sqrt(np.broadcast_to(_np(layer.variance).reshape(-1), (channels,))), backend.epsilon())
    if getattr(layer, "invert", False):
        return Step("affine", layer.name, scale=std.copy(), bias=mean.copy())
    return Step("affine", layer.name, scale=1.0 / std, bias=-mean / std)


def _layer_normalization(layer, strip: bool) -> Step:
    """LayerNormalization over the channel axis (ConvNeXt's head: GAP → LayerNorm → Dense).

    Not affine (it divides by the vector's own spread), so it needs the gradient mode; its
    vector-Jacobian product is closed-form (see ``converters.heads.gradient``).
    """
    rank = len(layer.input.shape)
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if tuple(a % rank for a in axes) != (rank - 1,) or getattr(layer, "rms_scaling", False):
        raise UnsupportedHeadError(
            f"Layer {layer.name!r} (LayerNormalization) normalises axes {layer.axis}"
            f"{' with rms_scaling' if getattr(layer, 'rms_scaling', False) else ''}; edgecam "
            "handles the channel axis (axis=-1) without rms_scaling."
        )
    channels = int(layer.input.shape[-1])
    gamma = _np(layer.gamma) if layer.scale else np.ones(channels)
    beta = _np(layer.beta) if layer.center else np.zeros(channels)
    return Step("layernorm", layer.name, scale=gamma, bias=beta, params=(("epsilon", float(layer.epsilon)),))


def _dense(layer, strip: bool) -> Step:
    act = "linear" if strip else _act_name(layer.activation)
    bias = _np(layer.bias) if layer.use_bias else np.zeros(int(layer.units))
    return Step("dense", layer.name, kernel=_np(layer.kernel), bias=bias, activation=act)


def _conv_1x1(layer, strip: bool) -> Step:
    """A 1×1, stride-1, ungrouped Conv2D is a Dense applied at every position."""
    if tuple(layer.kernel_size) != (1, 1) or tuple(layer.strides) != (1, 1) or getattr(layer, "groups", 1) != 1:
        raise _unsupported(layer)
    act = "linear" if strip else _act_name(layer.activation)
    kernel = _np(layer.kernel)[0, 0]
    bias = _np(layer.bias) if layer.use_bias else np.zeros(kernel.shape[1])
    return Step("dense", layer.name, kernel=kernel, bias=bias, activation=act)


def _global_pooling(kind: str):
    def build(layer, strip: bool) -> Step:
        return Step(kind, layer.name, keepdims=bool(getattr(layer, "keepdims", False)))

    return build


def _flatten(layer, strip: bool) -> Step:
    return Step("flatten", layer.name)


def _reshape(layer, strip: bool) -> Step:
    return Step("reshape", layer.name, shape=tuple(int(v) for v in layer.target_shape))


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadLayer:
    """One row of :data:`HEAD_LAYERS`: Keras layer types and how they become a :class:`Step`.

    Attributes:
        types: Keras layer class names (``type(layer).__name__``).
        label: the name the "supported" error message and the docs use.
        step: the step kind it becomes.
        note: conditions and remarks (docs/convert.md).
        build: ``(layer, strip) -> Step | None``; may raise :class:`UnsupportedHeadError`.
    """

    types: Tuple[str, ...]
    label: str
    step: str
    note: str
    build: Callable[[Any, bool], Optional[Step]] = field(repr=False)


#: Every layer type the head analyser knows. A new layer type is one row and one builder; the
#: error message and docs/convert.md's "head layers" table are generated from it.
HEAD_LAYERS: Tuple[HeadLayer, ...] = (
    HeadLayer(("Dense",), "Dense", "dense",
              "activation from the list below; a fused final softmax/sigmoid is split off",
              _dense),
    HeadLayer(("Conv2D",), "1×1 Conv2D", "dense",
              "kernel 1×1, strides 1, groups 1: a Dense at every position",
              _conv_1x1),
    HeadLayer(("BatchNormalization",), "BatchNormalization", "affine",
              "channels-last (axis −1); folded with the moving statistics",
              _batch_normalization),
    HeadLayer(("Normalization",), "Normalization", "affine",
              "per channel (axis −1); `invert=True` too",
              _normalization),
    HeadLayer(("LayerNormalization",), "LayerNormalization", "layernorm",
              "channel axis, no `rms_scaling` (ConvNeXt's GAP → LayerNorm → Dense); gradient mode",
              _layer_normalization),
    HeadLayer(("Rescaling",), "Rescaling", "affine",
              "scale and offset, one or per channel",
              _rescaling),
    HeadLayer(tuple(sorted(IDENTITY_LAYERS)), "Dropout (and other identity layers)", "identity",
              "inactive at inference",
              _identity),
    HeadLayer(("Activation", "Softmax"), "activations", "act",
              "element-wise, from the list below; a final softmax/sigmoid is split off",
              _activation),
    HeadLayer(("ReLU",), "ReLU", "act",
              "`max_value`, `negative_slope`, `threshold`",
              _relu),
    HeadLayer(("LeakyReLU",), "LeakyReLU", "act",
              "`negative_slope`",
              _leaky_relu),
    HeadLayer(("ELU",), "ELU", "act",
              "`alpha`",
              _elu),
    HeadLayer(("GlobalAveragePooling2D",), "GlobalAveragePooling2D", "gap",
              "`keepdims` too",
              _global_pooling("gap")),
    HeadLayer(("GlobalMaxPooling2D",), "GlobalMaxPooling2D", "gmp",
              "`keepdims` too; gradient mode",
              _global_pooling("gmp")),
    HeadLayer(("Flatten",), "Flatten", "flatten",
              "the flatten mode when only affine layers follow",
              _flatten),
    HeadLayer(("Reshape",), "Reshape", "reshape",
              "of the pooled vector",
              _reshape),
)
_BUILDERS = {name: row for row in HEAD_LAYERS for name in row.types}


def supported_layers() -> str:
    """The supported head layers, as the error message lists them."""
    return ", ".join(row.label for row in HEAD_LAYERS)


def head_layers_markdown() -> str:
    """docs/convert.md's head-layer table, generated from :data:`HEAD_LAYERS`."""
    lines = ["| Keras layer | step | conditions |", "|---|---|---|"]
    for row in HEAD_LAYERS:
        lines.append(f"| {', '.join(f'`{t}`' for t in row.types)} | `{row.step}` | {row.note} |")
    return "\n".join(lines) + "\n"


def _to_steps(chain: Sequence[object], strip_last: bool) -> List[Step]:
    """Translate Keras layers into steps through :data:`HEAD_LAYERS`; raise for unknown layers."""
    steps: List[Step] = []
    for i, layer in enumerate(chain):
        row = _BUILDERS.get(type(layer).__name__)
        if row is None:
            raise _unsupported(layer)
        step = row.build(layer, strip_last and i == len(chain) - 1)
        if step is not None:
            steps.append(step)
    for step in steps:
        if step.kind in ("dense", "act") and step.activation not in ELEMENTWISE + ("relu_general",):
            raise UnsupportedHeadError(
                f"Layer {step.name!r} uses activation {step.activation!r}, whose derivative edgecam "
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
    nonlinear = [s.name for s in steps if s.kind in ("gmp", "layernorm") or (s.kind in ("dense", "act") and s.activation != "linear")]
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
