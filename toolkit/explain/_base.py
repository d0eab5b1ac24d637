"""What every explainer shares: the session (model splits, cached), the output type, the bases.

A method is a small frozen dataclass (its options are its fields) with one ``run`` hook; the
CAM family overrides only the weight rule (``weights``), the gradient family only the input
gradient (``gradients``) and its reduction to a map (``reduce``). The tensors all come from the
converter's engine (``converters.reference``), on whole batches inside cached ``tf.function``s,
and every map is post-processed by ``firmware_host.cam``.

Layouts: inputs ``x`` are ``(n, H, W, C)`` float32 model inputs; ``A`` and its gradients are
``(n, h, w, K)``; maps are ``(n, h, w)`` (CAM family) or ``(n, H, W)`` (gradient family).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

import numpy as np

from firmware_host import cam as _cam

_SPLITS: "OrderedDict[tuple, tuple]" = OrderedDict()
_DERIVED: "OrderedDict[tuple, tuple]" = OrderedDict()
_CACHE_SIZE = 16


def _remember(cache: OrderedDict, key, owner, build):
    """A small identity-checked LRU: one split / guided copy per live model, built once."""
    hit = cache.get(key)
    if hit is not None and hit[0] is owner:
        cache.move_to_end(key)
        return hit[1]
    value = build()
    cache[key] = (owner, value)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


@dataclass(frozen=True)
class Output:
    """What a method returns for one chunk of images.

    Attributes:
        raw: ``(n, h, w)`` pre-ReLU maps (layer resolution for the CAM family, input
            resolution for the gradient family).
        logits: ``(n, K)`` pre-activation scores, or ``None`` (attention rollout of a model
            whose final activation could not be split).
        probabilities: ``(n, K)``.
        class_index: ``(n,)`` the class explained per image.
        info: extra per-image arrays, e.g. ``completeness_error`` ``(n,)``.
    """

    raw: np.ndarray
    logits: Optional[np.ndarray]
    probabilities: np.ndarray
    class_index: np.ndarray
    info: Mapping[str, np.ndarray] = field(default_factory=dict)


class Session:
    """One ``explain`` call's view of the model: splits and guided copies, built lazily, cached.

    Args:
        model: the Keras classifier.
        target_layer: explanation layer path (``outer/inner``) or ``None`` (found automatically).
        target: ``logit`` or ``probability``.
        batch_size: the most model inputs run through the network at once (memory bound).
    """

    def __init__(self, model, target_layer: Optional[str], target: str, batch_size: int):
        self.model = model
        self.target_layer = target_layer
        self.target = target
        self.batch_size = int(batch_size)
        self._synced: set = set()

    def _fresh(self, key, clones):
        # Cached splits hold linear clones (softmax split off, guided ReLUs): bring them up to
        # the model's current weights once per call, in case it was trained in between.
        from converters.layers import sync_clones

        if key not in self._synced:
            sync_clones(clones)
            self._synced.add(key)

    def split(self, features: bool = True):
        """The converter's :func:`converters.layers.split_model` of the model (cached)."""
        from converters.layers import split_model

        layer = self.target_layer if features else None
        key = (id(self.model), layer, features)
        split = _remember(_SPLITS, key, self.model,
                          lambda: split_model(self.model, layer, logits=True, features=features))
        self._fresh(("split",) + key, [split.grad_model])
        return split

    def logits_forward(self):
        """``x → logits`` (softmax split off), without looking for an explanation layer."""
        return self.split(features=False).grad_model

    def derived_forward(self, kind: str, build):
        """A callable built once from the logits model by ``build(model)`` and cached with it
        (the same object on every call, so its traced ``tf.function`` is reused)."""
        base = self.logits_forward()
        return _remember(_DERIVED, (kind, id(base)), base, lambda: build(base))

    def guided_forward(self):
        """``x → logits`` with guided-backprop ReLUs (Springenberg et al. 2015), cached."""
        from ._guided import guided_forward

        forward = self.derived_forward("guided", guided_forward)
        self._fresh(("guided", id(forward)), forward.clones)
        return forward

    def probabilities(self, logits: np.ndarray, binary: bool) -> np.ndarray:
        """``(n, K)`` probabilities from split logits (sigmoid of ``[-z, z]`` for a binary split)."""
        z = np.asarray(logits, dtype=np.float64)
        if binary:
            return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    def chunks(self, n: int):
        """``slice``s of at most ``batch_size`` over ``range(n)``."""
        for start in range(0, n, self.batch_size):
            yield slice(start, min(n, start + self.batch_size))


class Method:
    """Base of every explainer. Subclasses are frozen dataclasses whose fields are options.

    Class attributes:
        name: registry key.
        family: ``cam`` (layer maps), ``gradient`` (input-resolution maps), ``layer`` or
            ``attention``.
        class_specific: the map depends on the explained class.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    class_specific: ClassVar[bool] = True

    def run(self, session: Session, x: np.ndarray, class_index: np.ndarray) -> Output:
        """Explain one chunk. ``class_index`` is ``(n,)`` int32, ``-1`` = predicted class."""
        raise NotImplementedError

    def layer(self, session: Session) -> Optional[str]:
        """Path of the layer this method explains, if any (for reports)."""
        return None


class CamMethod(Method):
    """The CAM family: a map ``Σ_k w^c_k A^k`` from the layer activations and their gradients.

    Subclasses define :meth:`weights`; combination, ReLU and resizing are shared
    (``firmware_host.cam``), so every CAM variant is post-processed identically.
    """

    family: ClassVar[str] = "cam"

    def weights(self, A: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Weights for ``cam.combine``: ``(n, 1, 1, K)`` per channel or ``(n, h, w, K)`` per element."""
        raise NotImplementedError

    def features(self, session: Session, x: np.ndarray, class_index: np.ndarray):
        """``(A, logits, grads, chosen, split)`` for the chunk, from the converter's engine."""
        from converters.reference import feature_gradients

        split = session.split()
        A, logits, grads, chosen = feature_gradients(
            split.grad_model, x, class_index, target=session.target, binary=split.binary
        )
        return A, logits, grads, chosen, split

    def run(self, session, x, class_index):
        A, logits, grads, chosen, split = self.features(session, x, class_index)
        raw = _cam.combine(A, self.weights(A, grads))
        return Output(raw, logits, session.probabilities(logits, split.binary), chosen)

    def layer(self, session):
        return session.split().target.path


class GradientMethod(Method):
    """The gradient family: an input-resolution map reduced from a ``(n, H, W, C)`` attribution."""

    family: ClassVar[str] = "gradient"

    def forward(self, session: Session):
        """The network whose input gradient is taken (plain logits by default)."""
        return session.logits_forward()

    def gradients(self, session: Session, x: np.ndarray, class_index: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, Any]]:
        """``(attribution (n, H, W, C), logits, chosen, info)``; plain ``∂y^c/∂x`` by default."""
        from converters.reference import input_gradients

        binary = session.split(features=False).binary
        logits, grads, chosen, _ = input_gradients(
            self.forward(session), x, class_index, target=session.target, binary=binary
        )
        return grads, logits, chosen, {}

    def reduce(self, attribution: np.ndarray) -> np.ndarray:
        """``(n, H, W, C) → (n, H, W)``: ``max_c |g|`` (Simonyan et al. 2013, §3.1)."""
        return np.max(np.abs(attribution), axis=-1)

    def run(self, session, x, class_index):
        attribution, logits, chosen, info = self.gradients(session, x, class_index)
        binary = session.split(features=False).binary
        return Output(self.reduce(attribution), logits, session.probabilities(logits, binary),
                      chosen, info)
