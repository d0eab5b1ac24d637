"""Head operators: one :class:`Rule` per ONNX op type, with its vector-Jacobian product twice.

Each rule pulls ``g = ∂z/∂y`` (z: the explained logit, y: the node's output) back to ``∂z/∂x``
for the node's input x on the path from the feature maps:

* ``numpy(node, slot, g, ctx)`` in numpy — the converter's folded weights and the self-check's
  independent Grad-CAM of the original graph;
* ``onnx(node, slot, g, em)`` as ONNX nodes — the in-graph gradient head of non-linear heads
  (ReLU masks become ``Where``, a ``Gemm`` becomes a ``MatMul`` with the transposed weight,
  global average pooling becomes an ``Expand``), so the device needs no autodiff.

``linear`` rules have a gradient that does not depend on the input: a head made only of them
has constant Grad-CAM weights, computed once (Eq. 1 of Selvaraju et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np

from firmware_host.errors import UnsupportedHeadError

__all__ = ["Rule", "RULES", "SWISH", "COLLAPSE_OPS", "attribute", "reduce_axes", "is_spatial_collapse", "swish_slot"]

# The RULES key of ``Mul(x, Sigmoid(x))``: SiLU/Swish as torch.onnx.export writes nn.SiLU, a branch
# that rejoins at once, handled as one element-wise step of the chain.
SWISH = "Mul(x, Sigmoid(x))"
COLLAPSE_OPS = ("GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "ReduceMean", "ReduceMax", "Flatten",
                "Reshape")


@dataclass(frozen=True)
class Rule:
    """How one op type is differentiated.

    Attributes:
        slots: input indices that may carry the path (others are constants or shapes).
        linear: the gradient does not depend on the input values.
        numpy: ``numpy(node, slot, g, ctx) → ∂z/∂x`` with ``g`` batched ``(B, ...)``.
        onnx: ``onnx(node, slot, g_name, em) → name`` of ``∂z/∂x`` built by the emitter ``em``.
    """

    slots: Tuple[int, ...]
    linear: bool
    numpy: Callable
    onnx: Callable


def attribute(node, name: str, default=None):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def reduce_axes(node, ctx, rank: int) -> Tuple[int, ...]:
    """The (non-negative) axes a Reduce* node reduces: attribute, or input 1 from opset 18."""
    axes = attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node.input[1])
        if axes is None:
            raise UnsupportedHeadError(f"{node.op_type} {node.name!r} takes computed axes; edgecam needs constant axes.")
    if axes is None:
        return tuple(range(rank))
    return tuple(sorted(int(a) % rank for a in np.atleast_1d(axes)))


def is_spatial_collapse(node, ctx) -> bool:
    """True when ``node`` turns a 4-D feature map into per-channel values or a flat vector."""
    x = node.input[0]
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return True
    if node.op_type in ("AveragePool", "MaxPool"):
        return _whole_window(node, ctx)
    if node.op_type in ("ReduceMean", "ReduceMax"):
        return reduce_axes(node, ctx, 4) in ((2, 3), (1, 2))
    out = ctx.shapes.get(node.output[0], ())
    shape = ctx.shapes.get(x, ())
    # A flatten after a keepdims pooling, (N, C, 1, 1) → (N, C), is not the collapse.
    return len(out) == 2 and len(shape) == 4 and None not in shape[1:] and sorted(shape[1:])[1] > 1


# -- helpers ----------------------------------------------------------------------------------
def _x(node, slot: int) -> str:
    return node.input[slot]


def _batched(shape_wo_batch, g) -> Tuple[int, ...]:
    return (g.shape[0], *shape_wo_batch)


def _input_shape(ctx, node, slot):
    return tuple(ctx.shape(_x(node, slot))[1:])


def _same_shape(node, slot, ctx) -> None:
    if tuple(ctx.shape(_x(node, slot))[1:]) != tuple(ctx.shape(node.output[0])[1:]):
        raise UnsupportedHeadError(
            f"{node.op_type} {node.name!r} broadcasts its input {ctx.shape(_x(node, slot))} to "
            f"{ctx.shape(node.output[0])}; edgecam handles element-wise constants that keep the shape."
        )


def _other(node, slot: int, ctx) -> np.ndarray:
    return np.asarray(ctx.const(node.input[1 - slot]), np.float64)


# -- shape-only ops ---------------------------------------------------------------------------
def _np_pass(node, slot, g, ctx):
    return g


def _onnx_pass(node, slot, g, em):
    return g


def _np_reshape(node, slot, g, ctx):
    if node.op_type == "Flatten" and attribute(node, "axis", 1) != 1:
        raise UnsupportedHeadError(f"Flatten {node.name!r} has axis {attribute(node, 'axis')}; edgecam needs axis=1.")
    return g.reshape(_batched(_input_shape(ctx, node, slot), g))


def _onnx_reshape(node, slot, g, em):
    return em.op("Reshape", [g, em.op("Shape", [_x(node, slot)])])


def _inverse(perm) -> Tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _np_transpose(node, slot, g, ctx):
    perm = attribute(node, "perm")
    if perm is None or perm[0] != 0:
        raise UnsupportedHeadError(f"Transpose {node.name!r} moves the batch axis (perm {perm}).")
    return g.transpose(_inverse(perm))


def _onnx_transpose(node, slot, g, em):
    return em.op("Transpose", [g], perm=list(_inverse(attribute(node, "perm"))))


# -- pooling ----------------------------------------------------------------------------------
def _whole_window(node, ctx) -> bool:
    """An AveragePool/MaxPool whose one window is the whole map (torch's AdaptiveMax/AvgPool2d(1))."""
    shape = ctx.shapes.get(node.input[0], ())
    kernel = tuple(attribute(node, "kernel_shape", ()))
    pads = attribute(node, "pads", ()) or ()
    return len(shape) == 4 and kernel == tuple(shape[2:]) and not any(pads) and attribute(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID")


def _pool_axes(node, ctx, rank: int) -> Tuple[int, ...]:
    if node.op_type in ("AveragePool", "MaxPool"):
        if not _whole_window(node, ctx):
            raise UnsupportedHeadError(
                f"{node.op_type} {node.name!r} pools windows smaller than the feature map; edgecam handles "
                "global pooling in the head. Pass --target-tensor with its output."
            )
        return tuple(range(2, rank))
    if node.op_type.startswith("Global"):
        return tuple(range(2, rank))
    return reduce_axes(node, ctx, rank)


def _np_mean(node, slot, g, ctx):
    shape = _input_shape(ctx, node, slot)
    axes = _pool_axes(node, ctx, len(shape) + 1)
    if not attribute(node, "keepdims", 1) and node.op_type.startswith("Reduce"):
        g = np.expand_dims(g, axes)
    count = float(np.prod([shape[a - 1] for a in axes]))
    return np.broadcast_to(g / count, _batched(shape, g))


def _onnx_mean(node, slot, g, em):
    x = _x(node, slot)
    shape = em.ctx.shape(x)
    axes = _pool_axes(node, em.ctx, len(shape))
    if not attribute(node, "keepdims", 1) and node.op_type.startswith("Reduce"):
        g = em.op("Unsqueeze", [g, em.const(np.array(axes, np.int64))])
    count = float(np.prod([shape[a] for a in axes]))
    return em.op("Expand", [em.op("Div", [g, em.const(np.float32(count))]), em.op("Shape", [x])])


def _np_max(node, slot, g, ctx):
    # torch's amax gradient splits evenly between ties; do the same.
    x = np.asarray(ctx.value(_x(node, slot)), np.float64)
    axes = _pool_axes(node, ctx, x.ndim)
    if not attribute(node, "keepdims", 1) and node.op_type.startswith("Reduce"):
        g = np.expand_dims(g, axes)
    mask = (x == x.max(axis=axes, keepdims=True)).astype(np.float64)
    return g * mask / mask.sum(axis=axes, keepdims=True)


def _onnx_max(node, slot, g, em):
    x = _x(node, slot)
    axes = _pool_axes(node, em.ctx, len(em.ctx.shape(x)))
    if not attribute(node, "keepdims", 1) and node.op_type.startswith("Reduce"):
        g = em.op("Unsqueeze", [g, em.const(np.array(axes, np.int64))])
    mask = em.op("Cast", [em.op("Equal", [x, em.reduce("ReduceMax", x, axes)])], to=1)
    return em.op("Mul", [g, em.op("Div", [mask, em.reduce("ReduceSum", mask, axes)])])


# -- affine ops -------------------------------------------------------------------------------
def _gemm_matrix(node, ctx) -> np.ndarray:
    """``alpha · B'`` with B' = B or Bᵀ (transB): the Jacobian of Gemm is ``g @ (alpha·B')ᵀ``."""
    b = ctx.const(node.input[1])
    if b is None or attribute(node, "transA", 0):
        raise UnsupportedHeadError(
            f"Gemm {node.name!r} has a computed weight or transA=1; edgecam needs x @ W with a constant W."
        )
    b = np.asarray(b, np.float64)
    return float(attribute(node, "alpha", 1.0)) * (b.T if attribute(node, "transB", 0) else b)


def _np_gemm(node, slot, g, ctx):
    return g @ _gemm_matrix(node, ctx).T


def _onnx_gemm(node, slot, g, em):
    return em.op("MatMul", [g, em.const(_gemm_matrix(node, em.ctx).T.astype(np.float32))])


def _matmul_weight(node, slot, ctx) -> np.ndarray:
    w = ctx.const(node.input[1])
    if slot != 0 or w is None or w.ndim != 2:
        raise UnsupportedHeadError(f"MatMul {node.name!r} is not x @ W with a constant 2-D W.")
    return np.asarray(w, np.float64)


def _np_matmul(node, slot, g, ctx):
    return g @ _matmul_weight(node, slot, ctx).T


def _onnx_matmul(node, slot, g, em):
    return em.op("MatMul", [g, em.const(_matmul_weight(node, slot, em.ctx).T.astype(np.float32))])


def _np_add(node, slot, g, ctx):
    _same_shape(node, slot, ctx)
    return -g if node.op_type == "Sub" and slot == 1 else g


def _onnx_add(node, slot, g, em):
    _same_shape(node, slot, em.ctx)
    return em.op("Neg", [g]) if node.op_type == "Sub" and slot == 1 else g


def _np_mul(node, slot, g, ctx):
    _same_shape(node, slot, ctx)
    if node.op_type == "Div" and slot == 1:
        raise UnsupportedHeadError(f"Div {node.name!r} divides by the feature path.")
    c = _other(node, slot, ctx)
    return g / c if node.op_type == "Div" else g * c


def _onnx_mul(node, slot, g, em):
    _np_mul(node, slot, np.zeros((1, *em.ctx.shape(_x(node, slot))[1:])), em.ctx)  # the same checks
    return em.op(node.op_type, [g, em.const(_other(node, slot, em.ctx).astype(np.float32))])


def _bn_scale(node, ctx) -> np.ndarray:
    """BatchNormalization is ``x·s + b`` per channel (axis 1) with ``s = γ/√(σ² + ε)``."""
    if attribute(node, "training_mode", 0):
        raise UnsupportedHeadError(f"BatchNormalization {node.name!r} is in training mode; export with model.eval().")
    gamma, var = ctx.const(node.input[1]), ctx.const(node.input[4])
    if gamma is None or var is None:
        raise UnsupportedHeadError(f"BatchNormalization {node.name!r} has computed parameters.")
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + attribute(node, "epsilon", 1e-5))
    rank = len(ctx.shape(node.input[0]))
    return scale.reshape((1, -1) + (1,) * (rank - 2))


def _np_bn(node, slot, g, ctx):
    return g * _bn_scale(node, ctx)


def _onnx_bn(node, slot, g, em):
    return em.op("Mul", [g, em.const(_bn_scale(node, em.ctx).astype(np.float32))])


# -- element-wise activations: derivative from the input x or the output y ---------------------
def _np_act(derivative):
    def vjp(node, slot, g, ctx):
        x = np.asarray(ctx.value(node.input[0]), np.float64)
        y = np.asarray(ctx.value(node.output[0]), np.float64)
        return g * derivative(node, x, y, np.where, ctx)

    return vjp


def _onnx_act(build):
    def vjp(node, slot, g, em):
        return em.op("Mul", [g, build(node, node.input[0], node.output[0], em)])

    return vjp


def _clip_bounds(node, ctx):
    lo = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attribute(node, "min")
    hi = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else attribute(node, "max")
    return (-np.inf if lo is None else float(lo)), (np.inf if hi is None else float(hi))


def _d_relu(node, x, y, where, ctx):
    return (x > 0).astype(np.float64)


def _d_leaky(node, x, y, where, ctx):
    return where(x > 0, 1.0, float(attribute(node, "alpha", 0.01)))


def _d_clip(node, x, y, where, ctx):
    # torch's hardtanh (ReLU6) gradient: zero at and beyond the bounds.
    lo, hi = _clip_bounds(node, ctx)
    return ((x > lo) & (x < hi)).astype(np.float64)


def _d_sigmoid(node, x, y, where, ctx):
    return y * (1.0 - y)


def _d_tanh(node, x, y, where, ctx):
    return 1.0 - y * y


def _d_elu(node, x, y, where, ctx):
    return where(x > 0, 1.0, y + float(attribute(node, "alpha", 1.0)))


def _d_hardsigmoid(node, x, y, where, ctx):
    alpha, beta = float(attribute(node, "alpha", 0.2)), float(attribute(node, "beta", 0.5))
    inside = (alpha * x + beta > 0) & (alpha * x + beta < 1)
    return where(inside, alpha, 0.0)


def _d_hardswish(node, x, y, where, ctx):
    # d/dx [x·relu6(x+3)/6]: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above (torch's hardswish_backward).
    return where(x < -3.0, 0.0, where(x <= 3.0, x / 3.0 + 0.5, 1.0))


def _d_softplus(node, x, y, where, ctx):
    return 1.0 / (1.0 + np.exp(-x))


def _o_relu(node, x, y, em):
    return em.op("Cast", [em.op("Greater", [x, em.const(np.float32(0))])], to=1)


def _o_leaky(node, x, y, em):
    alpha = np.float32(attribute(node, "alpha", 0.01))
    return em.op("Where", [em.op("Greater", [x, em.const(np.float32(0))]), em.const(np.float32(1)), em.const(alpha)])


def _o_clip(node, x, y, em):
    lo, hi = _clip_bounds(node, em.ctx)
    inside = em.op("And", [em.op("Greater", [x, em.const(np.float32(lo))]), em.op("Less", [x, em.const(np.float32(hi))])])
    return em.op("Cast", [inside], to=1)


def _o_sigmoid(node, x, y, em):
    return em.op("Mul", [y, em.op("Sub", [em.const(np.float32(1)), y])])


def _o_tanh(node, x, y, em):
    return em.op("Sub", [em.const(np.float32(1)), em.op("Mul", [y, y])])


def _o_elu(node, x, y, em):
    alpha = np.float32(attribute(node, "alpha", 1.0))
    return em.op("Where", [em.op("Greater", [x, em.const(np.float32(0))]), em.const(np.float32(1)),
                           em.op("Add", [y, em.const(alpha)])])


def _o_hardsigmoid(node, x, y, em):
    alpha, beta = np.float32(attribute(node, "alpha", 0.2)), np.float32(attribute(node, "beta", 0.5))
    z = em.op("Add", [em.op("Mul", [x, em.const(alpha)]), em.const(beta)])
    inside = em.op("And", [em.op("Greater", [z, em.const(np.float32(0))]), em.op("Less", [z, em.const(np.float32(1))])])
    return em.op("Mul", [em.op("Cast", [inside], to=1), em.const(alpha)])


def _o_hardswish(node, x, y, em):
    middle = em.op("Add", [em.op("Div", [x, em.const(np.float32(3))]), em.const(np.float32(0.5))])
    upper = em.op("Where", [em.op("LessOrEqual", [x, em.const(np.float32(3))]), middle, em.const(np.float32(1))])
    return em.op("Where", [em.op("Less", [x, em.const(np.float32(-3))]), em.const(np.float32(0)), upper])


def _o_softplus(node, x, y, em):
    return em.op("Sigmoid", [x])


# -- layer normalization (ConvNeXt's head: GAP → LayerNorm over channels → Linear) -----------
def _ln_params(node, ctx, rank: int):
    if attribute(node, "axis", -1) % rank != rank - 1:
        raise UnsupportedHeadError(
            f"LayerNormalization {node.name!r} normalises from axis {attribute(node, 'axis')}; edgecam handles "
            "the last axis (channels)."
        )
    gamma = ctx.const(node.input[1])
    if gamma is None:
        raise UnsupportedHeadError(f"LayerNormalization {node.name!r} has a computed scale.")
    return np.asarray(gamma, np.float64), float(attribute(node, "epsilon", 1e-5))


def _np_layernorm(node, slot, g, ctx):
    # VJP of x̂ = (x - μ)/σ over the last axis (Ba et al. 2016), with g' = g·γ:
    # ∂z/∂x = (g' - mean(g') - x̂·mean(g'·x̂)) / σ.
    x = np.asarray(ctx.value(node.input[0]), np.float64)
    gamma, eps = _ln_params(node, ctx, x.ndim)
    centered = x - x.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    xhat = centered * inv
    g = g * gamma
    return (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True)) * inv


def _onnx_layernorm(node, slot, g, em):
    x = node.input[0]
    gamma, eps = _ln_params(node, em.ctx, len(em.ctx.shape(x)))
    centered = em.op("Sub", [x, em.reduce("ReduceMean", x, [-1])])
    var = em.reduce("ReduceMean", em.op("Mul", [centered, centered]), [-1])
    inv = em.op("Reciprocal", [em.op("Sqrt", [em.op("Add", [var, em.const(np.float32(eps))])])])
    xhat = em.op("Mul", [centered, inv])
    g = em.op("Mul", [g, em.const(gamma.astype(np.float32))])
    mean_g = em.reduce("ReduceMean", g, [-1])
    mean_gx = em.reduce("ReduceMean", em.op("Mul", [g, xhat]), [-1])
    return em.op("Mul", [em.op("Sub", [em.op("Sub", [g, mean_g]), em.op("Mul", [xhat, mean_gx])]), inv])


# -- SiLU / Swish written as x·sigmoid(x): the one branch edgecam follows --------------------------
def swish_slot(node, producer) -> "int | None":
    """The slot of x when ``node`` is ``Mul(x, Sigmoid(x))`` (either order), else None.

    Args:
        producer: tensor name → the node that computes it.
    """
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    for slot in (0, 1):
        gate = producer.get(node.input[1 - slot])
        if gate is not None and gate.op_type == "Sigmoid" and gate.input[0] == node.input[slot] != node.input[1 - slot]:
            return slot
    return None


def _np_swish(node, slot, g, ctx):
    # d/dx [x·σ(x)] = σ(x) + x·σ(x)(1 − σ(x)) = σ + y(1 − σ), with y = x·σ(x) the node's output.
    x = np.asarray(ctx.value(_x(node, slot)), np.float64)
    sigma = 0.5 * (1.0 + np.tanh(0.5 * x))  # σ(x) without overflow for large |x|
    return g * (sigma + x * sigma * (1.0 - sigma))


def _onnx_swish(node, slot, g, em):
    sigma, y = node.input[1 - slot], node.output[0]  # the model's own Sigmoid output, and x·σ(x)
    derivative = em.op("Add", [sigma, em.op("Mul", [y, em.op("Sub", [em.const(np.float32(1)), sigma])])])
    return em.op("Mul", [g, derivative])


def _activation(derivative, build) -> Rule:
    return Rule((0,), False, _np_act(derivative), _onnx_act(build))


_SHAPE = Rule((0,), True, _np_reshape, _onnx_reshape)
_PASS = Rule((0,), True, _np_pass, _onnx_pass)

RULES: Dict[str, Rule] = {
    "Identity": _PASS,
    "Dropout": _PASS,
    "Flatten": _SHAPE,
    "Reshape": _SHAPE,
    "Squeeze": _SHAPE,
    "Unsqueeze": _SHAPE,
    "Transpose": Rule((0,), True, _np_transpose, _onnx_transpose),
    "GlobalAveragePool": Rule((0,), True, _np_mean, _onnx_mean),
    "ReduceMean": Rule((0,), True, _np_mean, _onnx_mean),
    "GlobalMaxPool": Rule((0,), False, _np_max, _onnx_max),
    "AveragePool": Rule((0,), True, _np_mean, _onnx_mean),
    "MaxPool": Rule((0,), False, _np_max, _onnx_max),
    "ReduceMax": Rule((0,), False, _np_max, _onnx_max),
    "Gemm": Rule((0,), True, _np_gemm, _onnx_gemm),
    "MatMul": Rule((0, 1), True, _np_matmul, _onnx_matmul),
    "Add": Rule((0, 1), True, _np_add, _onnx_add),
    "Sub": Rule((0, 1), True, _np_add, _onnx_add),
    "Mul": Rule((0, 1), True, _np_mul, _onnx_mul),
    "Div": Rule((0, 1), True, _np_mul, _onnx_mul),
    "BatchNormalization": Rule((0,), True, _np_bn, _onnx_bn),
    "Relu": _activation(_d_relu, _o_relu),
    "LeakyRelu": _activation(_d_leaky, _o_leaky),
    "Clip": _activation(_d_clip, _o_clip),
    "Sigmoid": _activation(_d_sigmoid, _o_sigmoid),
    "Tanh": _activation(_d_tanh, _o_tanh),
    "Elu": _activation(_d_elu, _o_elu),
    "HardSigmoid": _activation(_d_hardsigmoid, _o_hardsigmoid),
    "HardSwish": _activation(_d_hardswish, _o_hardswish),
    "Softplus": _activation(_d_softplus, _o_softplus),
    "LayerNormalization": Rule((0,), False, _np_layernorm, _onnx_layernorm),
    SWISH: Rule((0, 1), False, _np_swish, _onnx_swish),
}
