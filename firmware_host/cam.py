"""CAM post-processing shared by the device and the host: ReLU, normalise, resize, colour, overlay.

This is the single path every heatmap takes, on the device (:class:`Explanation`) and on the
host (``toolkit.explain``, ``toolkit.validate``), so that edge and full maps are compared after
*identical* processing. numpy + OpenCV only.

Layouts: a CAM is ``(h, w)`` or a batch ``(N, h, w)``; images are ``(H, W, 3)`` RGB uint8.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError

__all__ = [
    "relu",
    "combine",
    "normalize",
    "resize",
    "heatmap",
    "colorize",
    "overlay",
    "peak",
]

Size = Union[int, Tuple[int, int], Sequence[int]]


def relu(cam: np.ndarray) -> np.ndarray:
    """ReLU of a raw class map, as float32 (Grad-CAM Eq. 2, Selvaraju et al. 2017)."""
    return np.maximum(np.asarray(cam, dtype=np.float32), 0.0)


def combine(feature_maps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Raw (pre-ReLU) class map from feature maps and per-class weights.

    Args:
        feature_maps: ``(..., h, w, C)`` activations A.
        weights: ``(C,)`` channel weights α (Grad-CAM / CAM), or ``(h, w, C)`` element weights
            (HiResCAM: the map is ``sum_k w_ijk * A_ijk``).

    Returns:
        ``(..., h, w)`` float32, ``sum_k weights_k * A^k``.
    """
    fmaps = np.asarray(feature_maps, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim == 1:
        return fmaps @ w
    return np.sum(fmaps * w, axis=-1, dtype=np.float32)


def normalize(cam: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Min-max normalise each map to [0, 1]; a constant map becomes all zeros.

    Scale-invariant: ``normalize(c * cam) == normalize(cam)`` for any ``c > 0``, however small
    the values (untrained networks give maps of ~1e-13). A map counts as constant when its range
    is zero or below ``eps`` times its magnitude (float32 round-off, not signal).

    Works on ``(h, w)`` or ``(N, h, w)``; never modifies its input.
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim not in (2, 3):
        raise InputError(f"normalize expects a (h, w) or (N, h, w) map. Got shape {cam.shape}.")
    axes = (-2, -1)
    lo = cam.min(axis=axes, keepdims=True)
    hi = cam.max(axis=axes, keepdims=True)
    span = hi - lo
    varies = (span > 0) & (span > eps * np.maximum(np.abs(lo), np.abs(hi)))
    out = np.where(varies, (cam - lo) / np.where(varies, span, 1.0), 0.0)
    return out.astype(np.float32)


def _size_hw(size: Size) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) <= 0:
        raise InputError(f"size must be an int or (height, width) of positive ints. Got: {size}")
    return size  # type: ignore[return-value]


def resize(cam: np.ndarray, size: Size) -> np.ndarray:
    """Bilinear resize of ``(h, w)`` or ``(N, h, w)`` maps to ``size = (height, width)``.

    Bilinear interpolation keeps values inside the input's range, so resizing and min-max
    normalisation commute.
    """
    import cv2

    height, width = _size_hw(size)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim == 2:
        if cam.shape == (height, width):
            return cam.copy()
        return cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    if cam.ndim == 3:
        return np.stack([resize(c, (height, width)) for c in cam]) if len(cam) else np.zeros(
            (0, height, width), np.float32
        )
    raise InputError(f"resize expects a (h, w) or (N, h, w) map. Got shape {cam.shape}.")


def heatmap(cam: np.ndarray, size: Optional[Size] = None) -> np.ndarray:
    """The visual heatmap: ``normalize(resize(relu(cam)))``, float32 in [0, 1].

    Args:
        cam: raw or ReLU'd ``(h, w)`` / ``(N, h, w)`` class map.
        size: ``(height, width)`` to resize to; ``None`` keeps feature-map resolution.
    """
    out = relu(cam)
    if size is not None:
        out = resize(out, size)
    return normalize(out)


def colorize(heat: np.ndarray, colormap: int = None, bgr: bool = False) -> np.ndarray:
    """Map a [0, 1] heatmap ``(H, W)`` to an RGB (``bgr=True``: OpenCV's BGR) uint8 image (JET by default)."""
    import cv2

    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise InputError(f"colorize expects a (H, W) heatmap. Got shape {heat.shape}.")
    levels = np.clip(heat * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colored = cv2.applyColorMap(levels, cv2.COLORMAP_JET if colormap is None else colormap)
    return colored if bgr else cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45, bgr: bool = False) -> np.ndarray:
    """Blend a colourised heatmap over an RGB (or gray) uint8 image of any size.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` gray uint8.
        heat: heatmap in [0, 1] at any resolution; it is resized to the image.
        alpha: weight of the heatmap colour.
        bgr: ``image`` and the result are OpenCV BGR (video frames: no colour conversion).

    Returns:
        ``(H, W, 3)`` RGB (or BGR) uint8.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InputError(f"overlay expects a uint8 image. Got dtype {img.dtype}.")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise InputError(f"overlay expects an (H, W, 3) RGB or (H, W) gray image. Got {img.shape}.")
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != img.shape[:2]:
        heat = resize(heat, img.shape[:2])
    color = colorize(np.clip(heat, 0.0, 1.0), bgr=bgr)
    blended = img.astype(np.float32) * (1.0 - alpha) + color.astype(np.float32) * alpha
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def peak(cam: np.ndarray) -> Tuple[int, int]:
    """``(row, col)`` of the maximum of a 2-D map (first one on ties)."""
    cam = np.asarray(cam)
    if cam.ndim != 2:
        raise InputError(f"peak expects a (h, w) map. Got shape {cam.shape}.")
    r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(r), int(c)
