"""Find the explanation layer of a Keras CNN and split the model around it.

Shared by the converter and the host explainers (``toolkit.explain``), so both explain the same
layer and the same pre-softmax logit.

* :func:`find_target` — the last layer with a spatial ``(N, H, W, C)`` output before the spatial
  collapse, descending into nested models (a backbone used as a layer); or the layer named by
  the user, ``outer/inner`` for nested models. A wrong name lists the candidates.
* :func:`split_model` — a Keras model ``x → (A, logits)``: the explanation layer's activations
  and the classifier's pre-activation output (the final softmax/sigmoid split off), built by
  replaying the model's graph, so nested backbones work without "Graph disconnected" and
  without the user rebuilding anything.
* :func:`head_chain` — the layers between the explanation layer and the output, in order,
  when they form a chain (for the converter's head analysis).

Layer paths use ``/`` between nesting levels: ``"mobilenetv2_1.00_224/out_relu"``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from firmware_host.errors import LayerError, UnsupportedHeadError

__all__ = [
    "Target",
    "ModelSplit",
    "walk_layers",
    "output_shape",
    "spatial_candidates",
    "find_target",
    "final_activation",
    "split_model",
    "head_chain",
    "replay_graph",
    "linear_clone",
    "sync_clones",
]

SEP = "/"
_SQUASH = ("softmax", "sigmoid")


@dataclass(frozen=True)
class Target:
    """The explanation layer.

    Attributes:
        path: ``outer/inner`` name of the layer.
        layer: the Keras layer object.
        containers: the models from the outermost to the one holding ``layer``.
        shape: ``(h, w, channels)`` of its output.
    """

    path: str
    layer: object
    containers: Tuple[object, ...]
    shape: Tuple[int, int, int]


@dataclass(frozen=True)
class ModelSplit:
    """``model`` split at ``target``: ``grad_model(x) → [A, logits]``.

    Attributes:
        grad_model: Keras model with outputs ``[A (N, h, w, C), logits (N, K)]`` (only
            ``logits`` when split with ``features=False``).
        target: the explanation layer (``None`` with ``features=False``).
        activation: the final activation split off: ``softmax``, ``sigmoid`` or ``linear``.
        num_logits: K (2 for a single sigmoid output, see ``binary``).
        binary: the model has one sigmoid output, explained as two classes whose logits are
            ``[-z, z]`` (so class 0 is "negative", class 1 "positive", as in the probabilities
            ``[1 - p, p]``).
    """

    grad_model: object
    target: Optional[Target]
    activation: str
    num_logits: int
    binary: bool = False


# -- graph helpers ---------------------------------------------------------------------------
def _keras():
    import keras

    return keras


def _graph(model):
    """The Functional graph of a model (Sequential keeps it in ``_functional``)."""
    functional = getattr(model, "_functional", None)
    if functional is not None:
        return functional
    if hasattr(model, "_nodes_by_depth") and hasattr(model, "_run_through_graph"):
        return model
    return None


def _is_container(layer) -> bool:
    return _graph(layer) is not None and hasattr(layer, "layers")


def output_shape(layer) -> Optional[Tuple]:
    """The layer's output shape, or None when it has no single built output."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    shape = getattr(out, "shape", None)
    return tuple(shape) if shape is not None else None


def walk_layers(model, prefix: str = "", containers: Tuple = ()):
    """Every layer of ``model``, depth first, nested models included.

    Yields:
        ``(path, layer, containers)``: the ``outer/inner`` path, the layer, and the models that
        contain it (outermost first).
    """
    containers = containers + (model,)
    for layer in model.layers:
        path = prefix + layer.name
        yield path, layer, containers
        if _is_container(layer):
            yield from walk_layers(layer, path + SEP, containers)


def spatial_candidates(model) -> List[str]:
    """Paths of every layer whose output is ``(N, H, W, C)`` (InputLayers excluded)."""
    out = []
    for path, layer, _ in walk_layers(model):
        if type(layer).__name__ == "InputLayer" or _is_container(layer):
            continue
        shape = output_shape(layer)
        if shape is not None and len(shape) == 4:
            out.append(path)
    return out


def _candidates_hint(model, limit: int = 12) -> str:
    cands = spatial_candidates(model)
    if not cands:
        return "the model has no layer with a spatial (N, H, W, C) output"
    shown = cands[-limit:]
    more = f" (and {len(cands) - limit} earlier)" if len(cands) > limit else ""
    return "candidates, last first: " + ", ".join(reversed(shown)) + more


def _history(tensor):
    hist = getattr(tensor, "_keras_history", None)
    if hist is None:
        return None, None
    op, node_index, _ = hist
    nodes = getattr(op, "_inbound_nodes", [])
    node = nodes[node_index] if node_index < len(nodes) else None
    return op, node


def _target_from_path(model, path: str) -> Target:
    names = [p for p in path.split(SEP) if p]
    if not names:
        raise LayerError(f"Empty target layer name {path!r}. {_candidates_hint(model)}.")
    container, containers = model, (model,)
    layer = None
    for depth, name in enumerate(names):
        try:
            layer = container.get_layer(name)
        except ValueError:
            where = SEP.join(names[:depth]) or "the model"
            nested = ""
            if depth == 0 and SEP not in path:
                matches = [p for p, _, _ in walk_layers(model) if p.split(SEP)[-1] == name]
                if len(matches) == 1:
                    return _target_from_path(model, matches[0])
                if matches:
                    nested = f" It exists in nested models as: {', '.join(matches)}."
            raise LayerError(
                f"No layer named {name!r} in {where}.{nested} Pass --target-layer with one of the "
                f"{_candidates_hint(model)}."
            ) from None
        if depth < len(names) - 1:
            if not _is_container(layer):
                raise LayerError(
                    f"{SEP.join(names[: depth + 1])!r} is a {type(layer).__name__}, not a nested "
                    f"model, so {path!r} cannot be inside it. {_candidates_hint(model)}."
                )
            container = layer
            containers = containers + (layer,)
    if _is_container(layer):
        # A nested model named as a whole: explain its output layer.
        return _descend_to_output(layer, path, containers + (layer,))
    shape = output_shape(layer)
    if shape is None or len(shape) != 4:
        raise LayerError(
            f"Layer {path!r} is not a spatial layer (output shape {shape}); Grad-CAM needs an "
            f"(N, H, W, C) feature map. Pass --target-layer with one of the {_candidates_hint(model)}."
        )
    return Target(path=path, layer=layer, containers=containers, shape=_hwc(shape, path))


def _hwc(shape, path) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    """``(h, w, C)``; ``None`` where unknown: a nested model built for any input size
    (``include_top=False`` without ``input_shape``) has no static sizes inside, even when the
    outer model has one. :func:`split_model` resolves them from the replayed graph."""
    return tuple(None if v is None else int(v) for v in shape[1:4])  # type: ignore[return-value]


def _resolved_shape(tensor, path) -> Tuple[int, int, int]:
    shape = tuple(tensor.shape)
    if len(shape) != 4 or None in shape[1:]:
        raise LayerError(
            f"Layer {path!r} has an unknown spatial size {shape}: the model was built for any "
            "input size. Pass --input-size H W (input_size=(H, W)), or build it with "
            "keras.Input(shape=(H, W, C))."
        )
    return int(shape[1]), int(shape[2]), int(shape[3])


def _descend_to_output(model, prefix: str, containers: Tuple) -> Target:
    """The layer producing a nested model's (spatial) output."""
    graph = _graph(model)
    op, _ = _history(graph.outputs[0])
    if op is None:
        raise LayerError(f"Cannot trace the output of nested model {prefix!r}.")
    path = prefix + SEP + op.name
    if _is_container(op):
        return _descend_to_output(op, path, containers + (op,))
    return Target(path=path, layer=op, containers=containers, shape=_hwc(output_shape(op), path))


_GLOBAL_POOLS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D")


def _is_pooled(shape) -> bool:
    return len(shape) == 4 and shape[1] == 1 and shape[2] == 1


def _collapses_below(tensor) -> bool:
    """Whether walking back from ``tensor`` through 1×1 (or already flat) tensors of a chain of
    single-input layers reaches a global pooling: then those 1×1 maps are the head, not A."""
    while True:
        op, node = _history(tensor)
        if op is None or _is_container(op):
            return False
        if type(op).__name__ in _GLOBAL_POOLS:
            return True
        inputs = node.input_tensors if node is not None else []
        if len(inputs) != 1:
            return False
        shape = tuple(inputs[0].shape)
        if len(shape) == 4 and not _is_pooled(shape):
            return False
        tensor = inputs[0]


def find_target(model, target_layer: Optional[str] = None) -> Target:
    """The explanation layer of ``model``.

    With ``target_layer=None``: walk back from the output to the first tensor that is still
    spatial ``(N, H, W, C)`` — the last layer before the spatial collapse — descending into
    nested models. ``(N, 1, 1, C)`` tensors that come after a global pooling with
    ``keepdims=True`` (GAP → 1×1 conv heads) belong to the head and are walked past; a genuine
    1×1 feature map with no global pooling after it is kept. Otherwise the named layer
    (``outer/inner`` for nested models; a bare inner
    name is accepted when it is unique).

    Raises:
        LayerError: naming what was found and listing the candidates.
    """
    if target_layer:
        return _target_from_path(model, target_layer)
    graph = _graph(model)
    if graph is None or not getattr(graph, "outputs", None):
        raise LayerError(
            f"Model {getattr(model, 'name', '?')!r} is not built as a graph (subclassed model or "
            "Sequential without an Input). Build it with keras.Input(shape=...) first."
        )
    tensor, prefix, containers = graph.outputs[0], "", (model,)
    # A global pooling with keepdims=True (MobileNet v1/v3 heads: GAP → 1×1 convs → Flatten)
    # leaves (N, 1, 1, C) tensors after the spatial collapse; they are not feature maps.
    collapsed = _collapses_below(tensor)
    while True:
        shape = tuple(tensor.shape)
        op, node = _history(tensor)
        if op is None or type(op).__name__ == "InputLayer":
            raise LayerError(
                f"Model {model.name!r} has no spatial layer before its output: walking back from "
                f"the output reached the input. Grad-CAM needs a convolutional feature map; "
                f"{_candidates_hint(model)}."
            )
        if len(shape) == 4 and not (collapsed and _is_pooled(shape)):
            path = prefix + op.name
            if _is_container(op):
                return _descend_to_output(op, path, containers + (op,))
            return Target(path=path, layer=op, containers=containers, shape=_hwc(shape, path))
        if _is_container(op):
            # A nested model whose output is already collapsed (e.g. pooling="avg"): look inside.
            inner = _graph(op)
            prefix, containers = prefix + op.name + SEP, containers + (op,)
            tensor = inner.outputs[0]
            continue
        if type(op).__name__ in _GLOBAL_POOLS:
            collapsed = False  # its input is before the collapse
        inputs = node.input_tensors if node is not None else []
        if len(inputs) != 1:
            raise LayerError(
                f"Cannot find the explanation layer automatically: layer {prefix + op.name!r} "
                f"has {len(inputs)} inputs. Pass --target-layer with one of the "
                f"{_candidates_hint(model)}."
            )
        tensor = inputs[0]


# -- the final activation --------------------------------------------------------------------
def _activation_name(layer) -> str:
    if type(layer).__name__ == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None) or (act if isinstance(act, str) else "linear")
    return str(name)


def final_activation(model) -> Tuple[List[str], str, bool]:
    """Locate the final softmax/sigmoid.

    Returns:
        ``(path, name, standalone)``: path of the layer that applies it (as a list of names per
        nesting level), ``softmax``/``sigmoid``/``linear``, and whether that layer is only the
        activation (Activation/Softmax layer, dropped) rather than fused into e.g. a Dense.
    """
    graph = _graph(model)
    path: List[str] = []
    tensor = graph.outputs[0]
    while True:
        op, _ = _history(tensor)
        if op is None:
            return path, "linear", False
        if _is_container(op):
            path.append(op.name)
            tensor = _graph(op).outputs[0]
            continue
        path.append(op.name)
        name = _activation_name(op)
        if name in _SQUASH:
            standalone = type(op).__name__ in ("Activation", "Softmax")
            return path, name, standalone
        return path, "linear", False


# Clone → the layer it copies, so clones can follow later weight updates (training goes on
# after a split was built and cached). Weak keys: a dropped split frees its clones.
_CLONE_SOURCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def linear_clone(layer):
    """A copy of ``layer`` with ``activation='linear'`` and the same weights (see :func:`sync_clones`)."""
    keras = _keras()
    config = layer.get_config()
    config["activation"] = "linear"
    config["name"] = layer.name + "_logits"
    clone = type(layer).from_config(config)
    clone.build(layer.input.shape)
    for dst, src in zip(clone.weights, layer.weights):
        dst.assign(keras.ops.convert_to_tensor(src))
    _CLONE_SOURCES[clone] = weakref.ref(layer)
    return clone


def sync_clones(layers) -> None:
    """Copy the current weights of the original layers into their :func:`linear_clone`\ s.

    Args:
        layers: layers or models to scan (models are walked, nested ones included); anything
            that is not a clone is skipped.
    """
    for item in layers:
        inner = [layer for _, layer, _ in walk_layers(item)] if _is_container(item) else [item]
        for layer in inner:
            ref = _CLONE_SOURCES.get(layer)
            source = ref() if ref is not None else None
            if source is not None:
                for dst, src in zip(layer.weights, source.weights):
                    dst.assign(src.value)


# -- graph replay ----------------------------------------------------------------------------
def replay_graph(container, inputs, substitute: Callable, descend: Callable = lambda path: True,
                 prefix: str = ""):
    """Re-run a Functional/Sequential model's graph on ``inputs``, substituting some layers.

    Works on symbolic Keras tensors (to build a new model) and on real tensors (inside a
    ``tf.function``), and goes into nested models, so a backbone used as a layer is replayed
    layer by layer instead of being called as one block.

    Args:
        container: the model whose graph is replayed.
        inputs: a tensor, or a list of tensors for a multi-input model.
        substitute: ``(path, op) → callable | None``; a callable replaces the layer at ``path``
            (``outer/inner`` names) and is called with the node's arguments.
        descend: ``path → bool``: replay a nested model at ``path`` layer by layer (True) or
            call it as a whole (False) when ``substitute`` did not replace it.
        prefix: path of ``container`` itself followed by ``/`` (internal).

    Returns:
        The outputs of the graph (a single tensor for a single-output model).
    """
    graph = _graph(container)

    def operation_fn(op):
        path = prefix + op.name
        replacement = substitute(path, op)
        if replacement is not None:
            return replacement
        if _is_container(op) and descend(path):
            def call(*args, **kwargs):
                sub_inputs = args[0] if len(args) == 1 else list(args)
                return replay_graph(op, sub_inputs, substitute, descend, path + SEP)

            return call
        return op

    outputs = graph._run_through_graph(inputs, operation_fn=operation_fn)
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        outputs = outputs[0]
    return outputs


def _replay(container, inputs, capture: Optional[str], strip: Optional[str], linear, store):
    """Re-run ``container``'s graph on ``inputs``, capturing ``capture`` and replacing ``strip``."""

    def substitute(path, op):
        if path == strip:
            return linear
        if path == capture:
            def call(*args, **kwargs):
                out = op(*args, **kwargs)
                store["A"] = out
                return out

            return call
        return None

    def descend(path):
        return any(p and p.startswith(path + SEP) for p in (capture, strip))

    return replay_graph(container, inputs, substitute, descend)


def split_model(model, target_layer: Optional[str] = None, logits: bool = True,
                features: bool = True) -> ModelSplit:
    """Split ``model`` into ``x → [A, logits]`` at the explanation layer.

    Args:
        model: a built Keras 3 functional or Sequential model, possibly with nested models.
        target_layer: layer path (``outer/inner``) or ``None`` to find it (:func:`find_target`).
        logits: split off a final softmax/sigmoid so the second output is the pre-activation
            logit (Grad-CAM targets the score before the softmax, Selvaraju et al. 2017 §3).
        features: with ``False`` no explanation layer is looked for and ``grad_model(x)``
            returns only the logits ``(N, K)`` (``target`` is ``None``): for input-gradient
            explainers and models without a spatial layer (e.g. ViT-style).

    Returns:
        :class:`ModelSplit`.

    Raises:
        LayerError: no usable explanation layer.
    """
    keras = _keras()
    if _graph(model) is None:
        raise LayerError(
            f"Model {getattr(model, 'name', '?')!r} has no layer graph (a subclassed model, or a "
            "Sequential built without keras.Input); edgecam needs a functional model or a "
            "Sequential starting with keras.Input(shape=(H, W, C))."
        )
    if len(_graph(model).outputs) != 1:
        raise UnsupportedHeadError(
            f"Model {model.name!r} has {len(_graph(model).outputs)} outputs; edgecam explains "
            "single-output classifiers. Build a model with only the classification output."
        )
    if len(_graph(model).inputs) != 1:
        raise UnsupportedHeadError(
            f"Model {model.name!r} has {len(_graph(model).inputs)} inputs; edgecam explains "
            "single-image classifiers (one (N, H, W, C) input). Build a model with one image input."
        )
    target = find_target(model, target_layer) if features else None
    path, act, standalone = final_activation(model)
    strip = SEP.join(path) if (logits and act in _SQUASH) else None
    linear = None
    if strip:
        layer = _layer_at(model, path)
        if standalone:
            linear = lambda x, *args, **kwargs: x  # noqa: E731 - drop the activation layer
        elif hasattr(layer, "activation"):
            linear = linear_clone(layer)
        else:  # pragma: no cover - every Keras layer with a fused activation has the attribute
            raise UnsupportedHeadError(f"Cannot split the {act} off layer {strip!r}.")
    graph = _graph(model)
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"x{i}") for i, t in enumerate(graph.inputs)]
    store: Dict[str, object] = {}
    replay_in = inputs[0] if len(inputs) == 1 else inputs
    outputs = _replay(model, replay_in, target.path if target else None, strip, linear, store)
    if target is not None and "A" not in store:
        raise LayerError(
            f"Layer {target.path!r} is not on the path from the model input to its output. "
            f"Pass --target-layer with one of the {_candidates_hint(model)}."
        )
    if target is not None:
        target = replace(target, shape=_resolved_shape(store["A"], target.path))
    binary = strip is not None and act == "sigmoid" and int(outputs.shape[-1]) == 1
    if binary:
        # One sigmoid output is explained as two classes: 0 = negative (logit -z), 1 = positive (z).
        outputs = keras.ops.concatenate([-outputs, outputs], axis=-1)
    grad_outputs = [store["A"], outputs] if target is not None else outputs
    grad_model = keras.Model(replay_in, grad_outputs, name=f"{model.name}_edgecam_split")
    num_logits = int(grad_model.outputs[-1].shape[-1])
    return ModelSplit(
        grad_model=grad_model,
        target=target,
        activation=act if act in _SQUASH else "linear",
        num_logits=num_logits,
        binary=binary,
    )


def _layer_at(model, names: Sequence[str]):
    layer = model
    for name in names:
        layer = layer.get_layer(name)
    return layer


# -- the head as a chain ---------------------------------------------------------------------
def head_chain(model, target: Target) -> List[object]:
    """Layers from the explanation layer (exclusive) to the output (inclusive), in order.

    Nested models in the head are flattened into their layers.

    Raises:
        UnsupportedHeadError: the head is not a chain (a layer with several inputs, e.g. a
            residual connection after the explanation layer).
    """
    names = target.path.split(SEP)
    return _chain_back(model, names, "")


def _chain_back(container, names: Optional[List[str]], prefix: str) -> List[object]:
    graph = _graph(container)
    tensor = graph.outputs[0]
    chain: List[object] = []
    while True:
        op, node = _history(tensor)
        if op is None or type(op).__name__ == "InputLayer":
            if names is None:
                return chain  # a whole nested head model, flattened
            raise UnsupportedHeadError(
                f"Layer {prefix + names[0]!r} does not feed the output through a chain of "
                "single-input layers."
            )
        if names is not None and op.name == names[0]:
            if len(names) == 1:
                return chain
            return _chain_back(op, names[1:], prefix + op.name + SEP) + chain
        if _is_container(op):
            chain = _chain_back(op, None, prefix + op.name + SEP) + chain
        else:
            chain.insert(0, op)
        inputs = node.input_tensors if node is not None else []
        if len(inputs) != 1:
            raise UnsupportedHeadError(
                f"The head after the explanation layer is not a chain: layer "
                f"{prefix + op.name!r} has {len(inputs)} inputs."
            )
        tensor = inputs[0]
