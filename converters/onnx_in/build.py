"""Write the explanation head into the ONNX graph and give it edgecam's named inputs and outputs.

The explained graph takes ``image`` ``(N, H, W, C)`` float32 (transposed in-graph to the model's
NCHW when needed) and, for gradient heads, ``class_index`` ``(N,)`` int32 (−1: the prediction);
it returns ``probabilities``, ``logits``, ``feature_maps`` ``(N, h, w, C)`` and ``cams``
``(N, h, w, K)`` or ``cam`` ``(N, h, w)`` — the contract of the Keras path
(docs/architecture.md), so ``ExplainableModel`` reads it unchanged. Every added node is named
under :data:`PREFIX`, which int8 quantization keeps in float32.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .graph import HeadChain, ImageInput, Tables

__all__ = ["PREFIX", "RESERVED", "Emitter", "name_nodes", "rename_reserved", "build_explained", "build_plain"]

PREFIX = "edgecam_head/"
RESERVED = ("image", "class_index", "probabilities", "logits", "feature_maps", "cam", "cams")
FLOAT, INT32, INT64 = 1, 6, 7


class Emitter:
    """Appends uniquely named nodes and constant initializers to a graph under :data:`PREFIX`."""

    def __init__(self, tables: Tables) -> None:
        self.ctx = tables
        self.opset = tables.opset
        self.nodes: List[object] = []
        self.initializers: List[object] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{PREFIX}{hint}_{self._count}"

    def op(self, op_type: str, inputs: Sequence[str], out: Optional[str] = None, **attrs) -> str:
        from onnx import helper

        name = self._name(op_type)
        out = out or name
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def const(self, value) -> str:
        from onnx import numpy_helper

        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int = 1, out: Optional[str] = None) -> str:
        """A Reduce* node; its axes are an input from opset 13 (ReduceSum) or 18 (the others)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.const(np.array(axes, np.int64))], out=out, keepdims=keepdims)
        return self.op(op_type, [x], out=out, axes=list(axes), keepdims=keepdims)


def name_nodes(model) -> None:
    """Give unnamed nodes a unique name (int8 quantization excludes nodes by name)."""
    taken = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = next(f"{node.op_type}_{i}{s}" for s in ("", "_", "__", "___") if f"{node.op_type}_{i}{s}" not in taken)
            taken.add(node.name)


def rename_reserved(model) -> Dict[str, str]:
    """Rename the model's tensors that carry an edgecam I/O name (``logits``…) to ``NAME__source``."""
    graph = model.graph
    names = {n for node in graph.node for n in list(node.input) + list(node.output)}
    names |= {v.name for v in list(graph.input) + list(graph.output)} | {t.name for t in graph.initializer}
    renames = {n: f"{n}__source" for n in RESERVED if n in names}
    if not renames:
        return renames
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info) + list(graph.initializer):
        value.name = renames.get(value.name, value.name)
    return renames


def _feature_maps(em: Emitter, head: HeadChain, name: Optional[str] = None) -> str:
    if head.layout == "NCHW":
        return em.op("Transpose", [head.target], out=name, perm=[0, 2, 3, 1])
    return em.op("Identity", [head.target], out=name)


def _linear_cam(em: Emitter, fmaps: str, logits: str, weights: np.ndarray, cam_output: str) -> str:
    """``cams = Σ_k w[..., k, c]·A^k`` for every class, or ``cam`` for the predicted one."""
    w = np.asarray(weights, np.float32)
    if cam_output == "all":
        if w.ndim == 2:  # (N, h, w, C) @ (C, K): one MatMul
            return em.op("MatMul", [fmaps, em.const(w)], out="cams")
        expanded = em.op("Unsqueeze", [fmaps, em.const(np.array([-1], np.int64))])
        return em.reduce("ReduceSum", em.op("Mul", [expanded, em.const(w)]), [3], keepdims=0, out="cams")
    index = em.op("ArgMax", [logits], axis=-1, keepdims=0)
    chosen = em.op("Gather", [em.const(np.ascontiguousarray(np.moveaxis(w, -1, 0))), index], axis=0)
    if w.ndim == 2:
        chosen = em.op("Unsqueeze", [chosen, em.const(np.array([1, 2], np.int64))])
    return em.reduce("ReduceSum", em.op("Mul", [fmaps, chosen]), [-1], keepdims=0, out="cam")


def _gradient_cam(em: Emitter, head: HeadChain, fmaps: str, method: str) -> str:
    """The selected class's map from the head's gradient, written as forward ONNX operators."""
    predicted = em.op("ArgMax", [head.logits], axis=-1, keepdims=0)
    wanted = em.op("Cast", ["class_index"], to=INT64)
    chosen = em.op("Where", [em.op("Less", [wanted, em.const(np.int64(0))]), predicted, wanted])
    g = em.op("OneHot", [chosen, em.const(np.array([head.num_logits], np.int64)),
                         em.const(np.array([0.0, 1.0], np.float32))], axis=-1)
    for node, slot, rule in zip(reversed(head.nodes), reversed(head.slots), reversed(head.rules)):
        g = rule.onnx(node, slot, g, em)
    if head.layout == "NCHW":
        g = em.op("Transpose", [g], perm=[0, 2, 3, 1])
    if method == "hirescam":  # Draelos & Collins 2020: element-wise gradient × activation
        return em.reduce("ReduceSum", em.op("Mul", [fmaps, g]), [-1], keepdims=0, out="cam")
    h, w, _ = head.feature_shape
    alpha = em.op("Div", [em.reduce("ReduceSum", g, [1, 2], keepdims=1), em.const(np.float32(h * w))])
    return em.reduce("ReduceSum", em.op("Mul", [fmaps, alpha]), [-1], keepdims=0, out="cam")


def _wrap_input(model, em: Emitter, image: ImageInput) -> None:
    """Replace the model's input by ``image`` (N, H, W, C), transposed to NCHW in the graph."""
    from onnx import helper

    graph = model.graph
    batch = image.batch if image.batch else "batch"
    kept = [v for v in graph.input if v.name != image.name]
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info("image", FLOAT, [batch, image.height, image.width, image.channels]),
                        *kept])
    if image.layout == "NCHW":
        em.op("Transpose", ["image"], out=image.name, perm=[0, 3, 1, 2])
    else:
        em.op("Identity", ["image"], out=image.name)


def _probabilities(em: Emitter, head: HeadChain) -> str:
    if head.probabilities is not None:
        return em.op("Identity", [head.probabilities], out="probabilities")
    if head.activation == "sigmoid":
        return em.op("Sigmoid", [head.logits], out="probabilities")
    return em.op("Softmax", [head.logits], out="probabilities", axis=-1)


def _finish(model, em: Emitter, outputs: Dict[str, List]) -> None:
    """Add the emitted nodes (the input wrapper first, the head last) and the named outputs."""
    from onnx import helper

    graph = model.graph
    nodes = [type(n)() for n in graph.node]
    for copy, node in zip(nodes, graph.node):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend([em.nodes[0], *nodes, *em.nodes[1:]])
    graph.initializer.extend(em.initializers)
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(n, FLOAT, s) for n, s in outputs.items()])


def build_explained(model, tables: Tables, image: ImageInput, head: HeadChain, mode: str, weights,
                    cam_output: str, method: str) -> Dict[str, str]:
    """Turn ``model`` (in place) into the explained graph; return its inputs (role → name).

    Args:
        mode: ``linear``, ``flatten``, ``approximate`` (fixed ``weights``) or ``gradient``.
        weights: ``(C, K)`` or ``(h, w, C, K)`` for the fixed-weight modes.
        cam_output: ``all``/``predicted`` (fixed weights) or ``selected`` (gradient).
        method: ``gradcam`` or ``hirescam``.
    """
    from onnx import helper

    em = Emitter(tables)
    _wrap_input(model, em, image)
    batch = image.batch if image.batch else "batch"
    h, w, c = head.feature_shape
    k = head.num_logits
    fmaps = _feature_maps(em, head, "feature_maps")
    _probabilities(em, head)
    em.op("Identity", [head.logits], out="logits")
    inputs = {"image": "image"}
    if cam_output == "selected":
        model.graph.input.append(helper.make_tensor_value_info("class_index", INT32, [batch]))
        inputs["class_index"] = "class_index"
        _gradient_cam(em, head, fmaps, method)
        cam = {"cam": [batch, h, w]}
    else:
        _linear_cam(em, fmaps, head.logits, weights, cam_output)
        cam = {"cams": [batch, h, w, k]} if cam_output == "all" else {"cam": [batch, h, w]}
    _finish(model, em, {"probabilities": [batch, k], "logits": [batch, k], "feature_maps": [batch, h, w, c], **cam})
    return inputs


def build_plain(model, tables: Tables, image: ImageInput, head: HeadChain) -> None:
    """The baseline for ``edgecam bench --baseline``: the same input wrapper, ``probabilities`` only."""
    em = Emitter(tables)
    _wrap_input(model, em, image)
    _probabilities(em, head)
    batch = image.batch if image.batch else "batch"
    _finish(model, em, {"probabilities": [batch, head.num_logits]})
