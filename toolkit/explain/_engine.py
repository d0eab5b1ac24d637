"""``explain`` / ``explain_full``: validate, batch, run a registered method, post-process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from firmware_host import cam as _cam
from firmware_host.errors import InputError

from ._base import Session

ClassIndex = Union[None, int, Sequence[int], np.ndarray]


@dataclass(frozen=True)
class Explanations:
    """The maps of one method for a batch, with what was explained.

    Attributes:
        method: registry name.
        maps: ``(N, H, W)`` float32 in [0, 1] at input resolution (``upsampled``), or the
            ReLU'd raw maps ``(N, h, w)`` at the layer's resolution (gradient methods: input
            resolution) with ``upsample=False``.
        class_index: ``(N,)`` int, the class explained per image.
        probabilities: ``(N, K)`` model probabilities.
        logits: ``(N, K)`` pre-activation scores (a single sigmoid output is ``[-z, z]``).
        layer: path of the explained layer (``outer/inner``), ``None`` for gradient methods.
        upsampled: whether ``maps`` are the [0, 1] heatmaps at input resolution.
        info: per-image extras, e.g. ``completeness_error`` ``(N,)`` for integrated gradients.
    """

    method: str
    maps: np.ndarray
    class_index: np.ndarray
    probabilities: np.ndarray
    logits: np.ndarray
    layer: Optional[str]
    upsampled: bool
    info: Mapping[str, np.ndarray] = field(default_factory=dict)


def _method(name: str, kwargs: Mapping[str, Any]):
    from . import METHODS

    cls = METHODS.get(name)
    if cls is None:
        raise InputError(f"Unknown explanation method {name!r}. Choose one of: {', '.join(METHODS)}.")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        options = ", ".join(getattr(cls, "__dataclass_fields__", {})) or "none"
        raise InputError(
            f"Method {name!r} got unknown options {sorted(kwargs)}; its options are: {options}."
        ) from exc


def _check_images(images) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4:
        raise InputError(
            f"images must be a batch (N, H, W, C) already preprocessed for the model. Got shape "
            f"{x.shape}; for one image use images[None]."
        )
    if len(x) == 0:
        raise InputError(f"images is an empty batch (shape {x.shape}); pass at least one image.")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"images must be numeric. Got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise InputError("images contain NaN or infinite values.")
    return x


def _num_classes(model) -> int:
    k = int(model.outputs[0].shape[-1])
    return 2 if k == 1 else k  # one sigmoid output is explained as two classes


def _check_classes(class_index: ClassIndex, n: int, k: int) -> np.ndarray:
    if class_index is None:
        return np.full((n,), -1, np.int32)
    ci = np.asarray(class_index)
    if ci.ndim > 1 or (ci.ndim == 1 and len(ci) != n) or not np.issubdtype(ci.dtype, np.integer):
        raise InputError(
            f"class_index must be None, an int, or one int per image ({n}). Got {class_index!r}."
        )
    ci = np.broadcast_to(ci.astype(np.int32), (n,)).copy()
    bad = ci[(ci < 0) | (ci >= k)]
    if bad.size:
        raise InputError(f"class_index {int(bad[0])} is out of range: the model has {k} classes (0..{k - 1}).")
    return ci


def explain_full(model, images, method: str = "gradcam", target_layer: Optional[str] = None,
                 class_index: ClassIndex = None, upsample: bool = True, batch_size: int = 32,
                 target: str = "logit", **method_kwargs) -> Explanations:
    """Explain a batch with one method; the maps plus the classes and probabilities explained.

    Args:
        model: a built Keras 3 Functional or Sequential classifier (nested backbones and a
            softmax/sigmoid fused into the last layer are fine).
        images: ``(N, H, W, C)`` model inputs, already preprocessed. Not modified.
        method: a name in ``METHODS``.
        target_layer: explanation layer (``outer/inner`` for nested models); ``None`` = the
            last spatial layer before the classifier head. CAM family and layer visualisation.
        class_index: ``None`` (predicted class), an int, or one int per image.
        upsample: ``True`` → ``(N, H, W)`` heatmaps in [0, 1] (``firmware_host.cam.heatmap``);
            ``False`` → ReLU'd raw maps at the layer's resolution.
        batch_size: at most this many model inputs per forward/backward pass (bounds memory;
            also chunks Score-CAM masks, integrated-gradient steps and SmoothGrad samples).
        target: ``logit`` (pre-softmax score, default) or ``probability``.
        **method_kwargs: the method's options (e.g. ``steps=128`` for integrated gradients).

    Returns:
        :class:`Explanations`.

    Raises:
        InputError: bad images, class index, method name or option.
        LayerError: no usable explanation layer (the message lists the candidates).
    """
    from converters.reference import TARGETS

    if target not in TARGETS:
        raise InputError(f"target must be one of {TARGETS}. Got: {target!r}.")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be >= 1. Got: {batch_size}.")
    explainer = _method(method, method_kwargs)
    x = _check_images(images)
    ci = _check_classes(class_index, len(x), _num_classes(model))
    session = Session(model, target_layer, target, batch_size)
    outs = [explainer.run(session, x[part], ci[part]) for part in session.chunks(len(x))]
    raw = np.concatenate([o.raw for o in outs]).astype(np.float32)
    maps = _cam.heatmap(raw, x.shape[1:3]) if upsample else _cam.relu(raw)
    info = {key: np.concatenate([o.info[key] for o in outs]) for key in (outs[0].info if outs else {})}
    return Explanations(
        method=method,
        maps=maps,
        class_index=np.concatenate([o.class_index for o in outs]).astype(np.int64),
        probabilities=np.concatenate([o.probabilities for o in outs]),
        logits=np.concatenate([o.logits for o in outs]),
        layer=explainer.layer(session),
        upsampled=bool(upsample),
        info=info,
    )


def explain(model, images, method: str = "gradcam", target_layer: Optional[str] = None,
            class_index: ClassIndex = None, upsample: bool = True, batch_size: int = 32,
            target: str = "logit", **method_kwargs) -> np.ndarray:
    """Explanation maps for a batch: ``(N, H, W)`` float32 in [0, 1] at input resolution.

    Same arguments as :func:`explain_full`, which also returns the explained classes and the
    probabilities. Example::

        maps = toolkit.explain(model, x, method="gradcam++")           # (N, H, W) in [0, 1]
        raw = toolkit.explain(model, x, upsample=False)                # (N, h, w) ReLU'd
        ig = toolkit.explain(model, x, "integrated_gradients", steps=128, baseline="blur")
    """
    return explain_full(model, images, method, target_layer, class_index, upsample, batch_size,
                        target, **method_kwargs).maps
