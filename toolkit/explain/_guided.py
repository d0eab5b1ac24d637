"""A guided-backpropagation copy of a Keras graph (Springenberg et al. 2015, §3.4, Fig. 1).

Every ReLU is replaced by one whose backward pass keeps a gradient only where *both* the
forward input was positive (the ordinary ReLU rule) *and* the incoming gradient is positive
(the deconvnet rule), so only positive evidence flows back to the input.

The copy replays the model's graph (``converters.layers.replay_graph``, nested models included)
on real tensors, substituting:

* ``ReLU`` layers (``max_value``/``threshold`` respected, e.g. MobileNet's ReLU6),
* ``Activation('relu' | 'relu6')`` layers,
* layers with a fused ``activation='relu'`` (Conv2D, Dense, …): a linear clone with the same
  weights (``converters.layers.linear_clone``) followed by the guided ReLU.

Nothing of the original model is modified.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

_RELUS = {"relu": None, "relu6": 6.0}


def guided_relu(forward: Callable, threshold: float = 0.0, max_value: Optional[float] = None) -> Callable:
    """Wrap ``forward`` (a ReLU) with the guided backward rule.

    Args:
        forward: computes the ReLU's output from its input.
        threshold: the input must exceed this for the gradient to pass (the ReLU's kink).
        max_value: for a clipped ReLU (ReLU6), the input must also be below it.

    Returns:
        ``z → forward(z)`` whose gradient is ``dy · [z > threshold] · [z < max] · [dy > 0]``.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def guided(z):
        y = forward(z)

        def grad(dy):
            keep = tf.logical_and(z > threshold, dy > 0)
            if max_value is not None:
                keep = tf.logical_and(keep, z < max_value)
            return dy * tf.cast(keep, dy.dtype)

        return y, grad

    return guided


def _relu_rule(op) -> Optional[Tuple[str, float, Optional[float]]]:
    """``(kind, threshold, max_value)`` if ``op`` applies a ReLU, else ``None``."""
    kind = type(op).__name__
    if kind == "ReLU":
        max_value = getattr(op, "max_value", None)
        return "layer", float(getattr(op, "threshold", 0.0) or 0.0), (None if max_value is None else float(max_value))
    act = getattr(op, "activation", None)
    name = getattr(act, "__name__", None) or (act if isinstance(act, str) else None)
    if name not in _RELUS:
        return None
    return ("layer" if kind == "Activation" else "fused"), 0.0, _RELUS[name]


def guided_forward(model) -> Callable:
    """``x → model(x)`` with guided ReLUs; call it inside a ``tf.function``.

    Args:
        model: a Functional/Sequential Keras model (e.g. ``ModelSplit.grad_model``).

    Returns:
        A callable on real tensors. Linear clones of fused-ReLU layers are created here, once,
        so tracing the callable creates no variables; they are listed in ``forward.clones``
        (``converters.layers.sync_clones`` refreshes them after training).
    """
    from converters.layers import walk_layers, linear_clone, replay_graph

    rules: Dict[str, Tuple] = {}
    clones: Dict[str, object] = {}
    for path, layer, _ in walk_layers(model):
        rule = _relu_rule(layer)
        if rule is None:
            continue
        rules[path] = rule
        if rule[0] == "fused":
            clones[path] = linear_clone(layer)

    def substitute(path, op):
        rule = rules.get(path)
        if rule is None:
            return None
        kind, threshold, max_value = rule
        if kind == "layer":
            relu = guided_relu(lambda z: op(z), threshold, max_value)
            return lambda x, *args, **kwargs: relu(x)
        clone, activation = clones[path], op.activation
        relu = guided_relu(activation, threshold, max_value)
        return lambda *args, **kwargs: relu(clone(*args, **kwargs))

    def forward(x):
        return replay_graph(model, x, substitute)

    forward.clones = list(clones.values())  # kept in step with the model by Session
    return forward
