"""Read an ONNX classifier: load and check it, find its image input, logits and explanation tensor.

The explanation tensor is found as the Keras path finds its layer: walking back from the logits
through the head, the last 4-D spatial tensor before the spatial collapse
(``GlobalAveragePool``/``GlobalMaxPool``, ``ReduceMean``/``ReduceMax`` over H and W, or a
``Flatten``/``Reshape`` of a 4-D tensor into a ``Gemm``/``MatMul``). The head between the two is
a chain of nodes, each with one input on the path from the explanation tensor (the others are
constants or shape computations): :class:`HeadChain`. One branch is followed: ``Mul(x,
Sigmoid(x))``, SiLU as PyTorch exports it, is one step of the chain whose gate is a side node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from firmware_host.errors import ConversionError, LayerError, ModelFileError, UnsupportedHeadError

from .ops import COLLAPSE_OPS, RULES, SWISH, attribute, is_spatial_collapse, swish_slot

__all__ = ["MIN_OPSET", "ImageInput", "HeadChain", "Tables", "load_onnx", "image_input", "fix_input_size", "find_head",
           "candidates", "label", "classifier_output", "feature_layout", "dynamic_batch"]

MIN_OPSET = 13
FINAL_ACTIVATIONS = {"Softmax": "softmax", "LogSoftmax": "softmax", "Sigmoid": "sigmoid"}


@dataclass(frozen=True)
class ImageInput:
    """The classifier's image input.

    Attributes:
        name: the ONNX input name.
        layout: ``NCHW`` (PyTorch) or ``NHWC``.
        height, width, channels: the image size the model takes.
        batch: the static batch size, or ``None`` when the batch is dynamic.
    """

    name: str
    layout: str
    height: int
    width: int
    channels: int
    batch: Optional[int]


@dataclass(frozen=True)
class HeadChain:
    """The classifier head from the explanation tensor to the logits.

    Attributes:
        target: the explanation tensor A.
        layout: ``NCHW`` or ``NHWC`` layout of A.
        feature_shape: ``(h, w, C)`` of A.
        nodes: the head's nodes in execution order (final softmax excluded).
        slots: for each node, the index of its input on the path from A.
        collapse: the index in ``nodes`` of the spatial collapse.
        logits: the logits tensor (input of the final softmax, or the graph output).
        probabilities: the tensor holding the model's own softmax/sigmoid output, if any.
        activation: ``softmax`` or ``sigmoid``.
        num_logits: K.
        kinds: for each node, its key in ``ops.RULES``: the op type, or ``ops.SWISH`` for a
            ``Mul(x, Sigmoid(x))`` (empty: the op types).
        gates: the ``Sigmoid`` nodes of those, off the path but part of the head (kept float).
    """

    target: str
    layout: str
    feature_shape: Tuple[int, int, int]
    nodes: Tuple[object, ...]
    slots: Tuple[int, ...]
    collapse: int
    logits: str
    probabilities: Optional[str]
    activation: str
    num_logits: int
    kinds: Tuple[str, ...] = ()
    gates: Tuple[object, ...] = ()

    @property
    def rules(self) -> Tuple[object, ...]:
        """The ``ops.Rule`` of each node, in order."""
        return tuple(RULES[k] for k in (self.kinds or [n.op_type for n in self.nodes]))

    @property
    def node_names(self) -> List[str]:
        """Names of every node of the head: the chain and its gates."""
        return [n.name for n in (*self.nodes, *self.gates)]

    @property
    def collapse_kind(self) -> str:
        """``pool`` (global average/max pooling) or ``flatten``."""
        return "flatten" if self.nodes[self.collapse].op_type in ("Flatten", "Reshape") else "pool"

    @property
    def tensors(self) -> List[str]:
        """Every tensor the head's backward pass reads: path inputs and outputs of each node."""
        names = [self.target]
        for node, slot in zip(self.nodes, self.slots):
            names += [node.input[slot], node.output[0]]
        return list(dict.fromkeys(names))


class Tables:
    """Lookups over one graph: producers, consumers, constants, inferred shapes, opset."""

    def __init__(self, model) -> None:
        import onnx
        from onnx import numpy_helper

        self.model = model
        self.opset = opset_of(model)
        graph = model.graph
        self.producer: Dict[str, object] = {o: n for n in graph.node for o in n.output}
        self.consumers: Dict[str, List[object]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.consts: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute:
                self.consts[node.output[0]] = _constant_value(node)
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception as exc:  # onnx raises InferenceError/ValidationError subclasses
            raise ModelFileError(f"ONNX shape inference fails on the model: {str(exc).splitlines()[0]}") from exc
        self.shapes: Dict[str, Tuple] = {}
        for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                self.shapes[value.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim
                )
        self.order = {o: i for i, n in enumerate(graph.node) for o in n.output}

    def const(self, name: str) -> Optional[np.ndarray]:
        return self.consts.get(name)

    def shape(self, name: str) -> Tuple:
        """The inferred shape of ``name`` (``None`` for unknown dimensions)."""
        if name not in self.shapes:
            raise ConversionError(
                f"ONNX shape inference gives no shape for tensor {name!r}. Run "
                "onnx.shape_inference.infer_shapes on the model (or re-export it with static shapes)."
            )
        return self.shapes[name]


def opset_of(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _constant_value(node) -> np.ndarray:
    from onnx import helper, numpy_helper

    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    return np.asarray(value)


def _external_files(model) -> List[str]:
    from onnx.external_data_helper import uses_external_data

    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    files = []
    for tensor in tensors:
        if uses_external_data(tensor):
            files += [e.value for e in tensor.external_data if e.key == "location"]
    return list(dict.fromkeys(files))


def load_onnx(path) -> object:
    """Load ``path`` with its external data, refusing what edgecam cannot convert.

    Raises:
        ModelFileError: missing/corrupt file, or external-data files missing.
        ConversionError: opset older than :data:`MIN_OPSET`.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX model '{path}' does not exist. Check the path.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError
        raise ModelFileError(
            f"'{path}' is not a readable ONNX model ({type(exc).__name__}). Export it again with "
            "torch.onnx.export."
        ) from exc
    if not model.graph.node:
        raise ModelFileError(f"'{path}' holds no ONNX graph (0 nodes). Export it again with torch.onnx.export.")
    missing = [f for f in _external_files(model) if not (path.parent / f).is_file()]
    if missing:
        raise ModelFileError(
            f"'{path}' keeps its weights in external-data file(s) {missing} that are not beside it "
            f"in '{path.parent}'. Copy them next to the .onnx (or save with "
            "onnx.save(model, path, save_as_external_data=False))."
        )
    if _external_files(model):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    version = opset_of(model)
    if version < MIN_OPSET:
        raise ConversionError(
            f"'{path}' uses ONNX opset {version}; edgecam converts opset ≥ {MIN_OPSET}. Re-export "
            "with torch.onnx.export(..., opset_version=17) or upgrade it with "
            "onnx.version_converter.convert_version(model, 17)."
        )
    return model


def image_input(model, input_size=None) -> ImageInput:
    """The single 4-D image input, its layout and size.

    Raises:
        ConversionError: several image inputs, no 4-D input, or an unknown size.
    """
    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise ConversionError(
            f"The model has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); edgecam "
            "converts classifiers with exactly one image input. Export the model with one input."
        )
    value = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    if len(dims) != 4 or value.type.tensor_type.elem_type != 1:
        raise ConversionError(
            f"Input {value.name!r} has shape {dims} ({value.type.tensor_type.elem_type=}); edgecam "
            "converts float32 image classifiers with an (N, C, H, W) or (N, H, W, C) input."
        )
    layout = "NCHW" if dims[1] in (1, 3) and dims[3] not in (1, 3) else "NHWC"
    if layout == "NHWC" and dims[3] not in (1, 3):
        raise ConversionError(
            f"Input {value.name!r} has shape {dims}: neither (N, 3, H, W) nor (N, H, W, 3). edgecam "
            "converts RGB or gray image classifiers."
        )
    channels, h, w = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    if input_size is not None:
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if not h or not w:
        raise ConversionError(
            f"Input {value.name!r} has no fixed size {dims}. Pass --input-size H W (input_size=(H, W))."
        )
    return ImageInput(value.name, layout, int(h), int(w), int(channels), dims[0] or None)


def fix_input_size(model, image: ImageInput) -> None:
    """Write the image size into the input's shape, so shape inference sees the feature sizes."""
    dims = next(v for v in model.graph.input if v.name == image.name).type.tensor_type.shape.dim
    sizes = (image.channels, image.height, image.width) if image.layout == "NCHW" else (
        image.height, image.width, image.channels)
    for dim, size in zip(dims[1:], sizes):
        dim.dim_value = int(size)


def classifier_output(model, tables: Tables) -> Tuple[str, Optional[str], str]:
    """``(logits, probabilities or None, activation)`` from the graph's output."""
    outputs = [o.name for o in model.graph.output]
    two_d = [o for o in outputs if len(tables.shapes.get(o, ())) == 2]
    if not two_d:
        raise ConversionError(
            f"No (N, K) classifier output among the model's outputs {outputs}. edgecam converts "
            "image classifiers whose output is the class scores."
        )
    out = two_d[0]
    node = tables.producer.get(out)
    if node is not None and node.op_type in FINAL_ACTIVATIONS:
        axis = attribute(node, "axis", -1)
        if node.op_type != "Sigmoid" and axis not in (-1, 1):
            raise UnsupportedHeadError(f"{node.op_type} {node.name!r} normalises axis {axis}, not the classes.")
        prob = out if node.op_type != "LogSoftmax" else None
        return node.input[0], prob, FINAL_ACTIVATIONS[node.op_type]
    return out, None, "softmax"


def label(node) -> str:
    """A node's name, or its first output's when it has none."""
    return node.name or node.output[0]


def _spatial(shape) -> bool:
    """A 4-D shape with a spatial extent: at least two of its non-batch dimensions above 1."""
    return len(shape) == 4 and None not in shape[1:] and sorted(shape[1:])[1] > 1


def _path_slot(node, tables: Tables) -> int:
    """The input of ``node`` on the path from the feature maps (the one that is not constant, or x of
    ``Mul(x, Sigmoid(x))``)."""
    swish = swish_slot(node, tables.producer)
    if swish is not None:
        return swish
    rule = RULES.get(node.op_type)
    if rule is None:
        raise UnsupportedHeadError(
            f"Node {label(node)!r} ({node.op_type}) in the head is not an operator edgecam can turn into "
            f"an exact CAM head (supported: {', '.join(sorted(RULES))}). Pass --target-tensor after it, "
            "or --approximate."
        )
    live = [i for i in rule.slots if i < len(node.input) and node.input[i] and tables.const(node.input[i]) is None]
    if len(live) != 1:
        raise UnsupportedHeadError(
            f"Node {label(node)!r} ({node.op_type}) in the head combines {len(live)} computed inputs "
            f"({', '.join(node.input[i] for i in live)}); edgecam handles a head that is a chain, one "
            "computed input per node (the others constant)."
        )
    return live[0]


def _collapses(node, tables: Tables, slot: int) -> bool:
    x = node.input[slot]
    return node.op_type in COLLAPSE_OPS and len(tables.shapes.get(x, ())) == 4 and is_spatial_collapse(node, tables)


def find_head(model, tables: Tables, target: Optional[str] = None) -> HeadChain:
    """Walk back from the logits to the explanation tensor (``target``, or the collapse's input).

    Raises:
        LayerError: ``target`` is not a 4-D tensor on the head's path (lists the candidates).
        UnsupportedHeadError: an unknown operator or a branch in the head, or no spatial collapse.
    """
    if target is not None and len(tables.shapes.get(target, ())) != 4:
        raise LayerError(
            f"Tensor {target!r} is not a 4-D tensor of the model. Pass --target-tensor with one of: "
            f"{', '.join(candidates(model, tables)[-8:])}."
        )
    logits, probs, activation = classifier_output(model, tables)
    nodes, slots, kinds, gates, name = [], [], [], [], logits
    collapse = None
    while name != target:
        node = tables.producer.get(name)
        if node is None:
            break
        if target is None and collapse is not None:
            break
        try:
            slot = _path_slot(node, tables)
        except UnsupportedHeadError as exc:
            spatial = any(_spatial(tables.shapes.get(i, ())) for i in node.input if tables.const(i) is None)
            if collapse is None and target is None and spatial:
                raise UnsupportedHeadError(
                    f"No spatial tensor found: walking back from the logits {logits!r}, node {label(node)!r} "
                    f"({node.op_type}) comes before any spatial collapse (GlobalAveragePool, ReduceMean over "
                    "H,W, Flatten/Reshape of a 4-D map into Gemm/MatMul). Pass --target-tensor."
                ) from exc
            raise
        nodes.append(node)
        slots.append(slot)
        if swish_slot(node, tables.producer) is not None:
            kinds.append(SWISH)
            gates.append(tables.producer[node.input[1 - slot]])
        else:
            kinds.append(node.op_type)
        if collapse is None and _collapses(node, tables, slot):
            collapse = len(nodes) - 1
        name = node.input[slot]
    if target is not None and name != target:
        raise LayerError(
            f"Tensor {target!r} is not on the head's path to the logits {logits!r} (the walk back stopped "
            f"at {name!r}). Pass --target-tensor with one of: {', '.join(candidates(model, tables)[-8:])}."
        )
    if collapse is None:
        raise UnsupportedHeadError(
            f"No spatial tensor found: walking back from the logits {logits!r} the head never collapses a "
            "4-D feature map (GlobalAveragePool, ReduceMean over H,W, Flatten/Reshape into Gemm/MatMul)."
        )
    if name not in tables.producer:
        raise UnsupportedHeadError(
            f"No spatial tensor found: the head collapses the model's input {name!r} itself, so there are no "
            "feature maps to explain."
        )
    nodes.reverse()
    slots.reverse()
    kinds.reverse()
    collapse = len(nodes) - 1 - collapse
    shape = tables.shape(name)
    layout = feature_layout(nodes[collapse], tables, name)
    h, w, c = (shape[2], shape[3], shape[1]) if layout == "NCHW" else (shape[1], shape[2], shape[3])
    if None in (h, w, c):
        raise ConversionError(f"The explanation tensor {name!r} has an unknown size {shape}. Pass --input-size H W.")
    k = tables.shape(logits)[-1]
    if not k:
        raise ConversionError(f"The logits {logits!r} have an unknown class count {tables.shape(logits)}.")
    return HeadChain(name, layout, (int(h), int(w), int(c)), tuple(nodes), tuple(slots), collapse, logits, probs,
                     activation, int(k), tuple(kinds), tuple(gates))


def feature_layout(node, tables: Tables, name: str) -> str:
    """``NCHW`` or ``NHWC`` of the explanation tensor, from its collapse (``node``) or the input's layout."""
    from .ops import reduce_axes

    kind = None if node is None else node.op_type
    if kind in ("GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool"):
        return "NCHW"
    if kind in ("ReduceMean", "ReduceMax"):
        return "NCHW" if reduce_axes(node, tables, 4) == (2, 3) else "NHWC"
    graph_input = next(v for v in tables.model.graph.input if v.name not in tables.consts)
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    return "NCHW" if dims[1] in (1, 3) and dims[3] not in (1, 3) else "NHWC"


def candidates(model, tables: Tables) -> List[str]:
    """4-D tensors with a spatial extent (h·w > 1), in execution order: the --target-tensor choices."""
    out = []
    for node in model.graph.node:
        for name in node.output:
            if _spatial(tables.shapes.get(name, ())):
                out.append(name)
    return out


def dynamic_batch(model, image: ImageInput) -> ImageInput:
    """Free a batch fixed at 1 (``torch.onnx.export`` without ``dynamic_axes``) when the graph allows.

    The input's and outputs' first dimension become ``batch`` and the inferred shapes are
    dropped; the change is kept only if onnxruntime then gives, for two images at once, what it
    gives for each alone (a ``Reshape`` to a constant ``[1, -1]`` would not). Returns the input
    as it now is.
    """
    if image.batch != 1:
        return image
    from firmware_host.backends.onnx import load_onnxruntime

    trial = type(model)()
    trial.CopyFrom(model)
    for value in [v for v in trial.graph.input if v.name == image.name] + list(trial.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"
    del trial.graph.value_info[:]
    ort = load_onnxruntime()
    rng = np.random.default_rng(0)
    shape = (2, image.channels, image.height, image.width) if image.layout == "NCHW" else (
        2, image.height, image.width, image.channels)
    x = rng.normal(size=shape).astype(np.float32)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(trial.SerializeToString(), options, providers=["CPUExecutionProvider"])
        pair = session.run(None, {image.name: x})
        single = [session.run(None, {image.name: x[i : i + 1]}) for i in range(2)]
        same = all(np.allclose(p, np.concatenate([s[j] for s in single]), rtol=1e-4, atol=1e-5)
                   for j, p in enumerate(pair))
    except Exception:  # onnxruntime refuses the graph or a shape: keep the fixed batch
        return image
    if not same:
        return image
    model.CopyFrom(trial)
    return ImageInput(image.name, image.layout, image.height, image.width, image.channels, None)
