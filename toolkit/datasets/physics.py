"""Fog physics: atmospheric scattering, visibility, and the four fog classes.

The four classes of the source talk (dense-fog, moderate-fog, light-fog, no-fog) are defined by
meteorological visibility V. Fog is added to a clear scene J with known per-pixel depth d (metres)
by the atmospheric scattering model (Koschmieder 1924; Narasimhan & Nayar 2002, Eq. 1–3; used for
Foggy Cityscapes by Sakaridis et al. 2018, Eq. 1):

    I(x) = J(x)·t(x) + A·(1 − t(x)),     t(x) = exp(−β·d(x))

with airlight A and extinction coefficient β. Visibility is where the contrast of a black object
against the horizon falls to 2 %: exp(−β·V) = 0.02, hence V = −ln(0.02)/β ≈ 3.912/β.

Everything here is numpy + OpenCV, importable on the device (no TensorFlow).

Layouts: images are ``(H, W, 3)`` RGB (uint8 0–255, or float32 0–1 where stated); depth maps are
``(H, W)`` float32 metres; sizes are ``(height, width)``.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

from firmware_host.errors import InputError

__all__ = [
    "CLASS_NAMES",
    "KOSCHMIEDER_CONSTANT",
    "VISIBILITY_THRESHOLDS_M",
    "CLASS_VISIBILITY_RANGES_M",
    "NO_FOG_CLEAR_AIR_SHARE",
    "IMBALANCE_RATIOS",
    "SKY_DEPTH_M",
    "DEFAULT_MARGIN",
    "transmission",
    "apply_fog",
    "beta_from_visibility",
    "visibility_from_beta",
    "fog_class",
    "sample_visibility",
]

#: Class order used for labels everywhere (labels.txt, model outputs, dataset.json).
CLASS_NAMES: Tuple[str, ...] = ("dense-fog", "moderate-fog", "light-fog", "no-fog")

#: −ln(0.02): Koschmieder's 2 % contrast threshold, V = 3.912 / β.
KOSCHMIEDER_CONSTANT = -math.log(0.02)

#: Class boundaries on visibility (metres). A boundary belongs to the lighter class:
#: dense V < 50, moderate 50 ≤ V < 200, light 200 ≤ V < 1000, no-fog V ≥ 1000 (β = 0 is V = ∞).
VISIBILITY_THRESHOLDS_M: Tuple[float, float, float] = (50.0, 200.0, 1000.0)

#: Visibility range each class is sampled from (log-uniform). Only the outer ends are choices:
#: fog thicker than 10 m is rare on roads, and 50 km is very clear air.
CLASS_VISIBILITY_RANGES_M: Dict[str, Tuple[float, float]] = {
    "dense-fog": (10.0, 50.0),
    "moderate-fog": (50.0, 200.0),
    "light-fog": (200.0, 1000.0),
    "no-fog": (1000.0, 50_000.0),
}

#: Share of no-fog samples rendered with β = 0 exactly (perfectly clear air).
NO_FOG_CLEAR_AIR_SHARE = 0.25

#: Class shares with ``imbalance=True``: clear days dominate real road footage, dense fog is rare.
IMBALANCE_RATIOS: Dict[str, float] = {
    "dense-fog": 0.07,
    "moderate-fog": 0.13,
    "light-fog": 0.25,
    "no-fog": 0.55,
}

#: Farthest depth (the sky at the horizon, and the horizon prior's sky). Finite so β = 0 gives t = 1.
SKY_DEPTH_M = 10_000.0

#: Default margin: sampled visibilities stay this factor away from the class boundaries, so a
#: label is never decided by a few percent of β that no camera can resolve (see docs/fog.md).
DEFAULT_MARGIN = 1.25


def _check_beta(beta) -> float:
    try:
        value = float(beta)
    except (TypeError, ValueError) as exc:
        raise InputError(f"beta must be a number (1/m). Got {beta!r}.") from exc
    if not math.isfinite(value) or value < 0:
        raise InputError(
            f"beta (extinction coefficient, 1/m) must be finite and >= 0. Got {value}. "
            "Use beta_from_visibility(V) to convert a visibility in metres."
        )
    return value


def _check_depth(depth) -> np.ndarray:
    d = np.asarray(depth, dtype=np.float32)
    if d.size and (np.isnan(d).any() or (d < 0).any()):
        raise InputError(
            f"depth must be metres >= 0 with no NaN. Got min {np.nanmin(d) if d.size else 0}, "
            f"NaN count {int(np.isnan(d).sum())}. Clip or fill the depth map first."
        )
    return d


def transmission(depth, beta: float) -> np.ndarray:
    """Fraction of scene radiance that reaches the camera, t = exp(−β·d).

    Beer–Lambert attenuation along the line of sight (Narasimhan & Nayar 2002, Eq. 1).

    Args:
        depth: distances in metres, any shape (usually ``(H, W)``); may contain ``inf``.
        beta: extinction coefficient in 1/m, >= 0.

    Returns:
        float32 array of ``depth``'s shape, values in [0, 1].

    Raises:
        InputError: negative/NaN depth or a negative/non-finite beta.
    """
    b = _check_beta(beta)
    d = _check_depth(depth)
    if b == 0.0:
        # Clear air: t = 1 everywhere, including infinite depth (avoid 0·∞ = NaN).
        return np.ones_like(d, dtype=np.float32)
    return np.exp(-b * d.astype(np.float64)).astype(np.float32)


def apply_fog(image, depth, beta: float, airlight) -> np.ndarray:
    """Add homogeneous fog: I = J·t + A·(1 − t) with t = exp(−β·d).

    Args:
        image: clear scene J, ``(H, W, 3)`` or ``(H, W)``; uint8 (0–255) or float (0–1).
        depth: ``(H, W)`` distance of each pixel in metres.
        beta: extinction coefficient in 1/m (``beta_from_visibility``).
        airlight: A in [0, 1] (fraction of white): a scalar, or ``(3,)`` RGB for a coloured fog.

    Returns:
        The fogged image with ``image``'s dtype and shape (uint8 is rounded and clipped).

    Raises:
        InputError: shape mismatch between image and depth, a bad dtype, or airlight out of [0, 1].
    """
    img = np.asarray(image)
    if img.dtype == np.uint8:
        clear = img.astype(np.float32) / 255.0
    elif np.issubdtype(img.dtype, np.floating):
        clear = img.astype(np.float32)
    else:
        raise InputError(
            f"image must be uint8 (0-255) or float (0-1). Got dtype {img.dtype}."
        )
    d = _check_depth(depth)
    if img.ndim not in (2, 3) or d.shape != img.shape[:2]:
        raise InputError(
            f"depth must be (H, W) matching the image. Got image {img.shape}, depth {d.shape}."
        )
    air = np.asarray(airlight, dtype=np.float32)
    if air.ndim > 1 or air.size not in (1, 3) or (air < 0).any() or (air > 1).any():
        raise InputError(
            f"airlight must be a scalar or (3,) RGB in [0, 1]. Got {airlight!r}."
        )
    if img.ndim == 2 and air.size != 1:
        raise InputError("A gray image needs a scalar airlight. Got an RGB airlight.")
    t = transmission(d, beta)
    if img.ndim == 3:
        t = t[..., None]
    foggy = clear * t + air * (1.0 - t)
    if img.dtype == np.uint8:
        return np.clip(np.rint(foggy * 255.0), 0, 255).astype(np.uint8)
    return foggy.astype(np.float32)


def beta_from_visibility(visibility):
    """Extinction coefficient from meteorological visibility: β = 3.912 / V (Koschmieder).

    Args:
        visibility: metres, > 0; ``inf`` gives β = 0. Scalar or array.

    Returns:
        β in 1/m (a float for scalar input, else a float64 array).

    Raises:
        InputError: a visibility <= 0 or NaN.
    """
    v = np.asarray(visibility, dtype=np.float64)
    if np.isnan(v).any() or (v <= 0).any():
        raise InputError(f"visibility must be metres > 0 (inf for clear air). Got {visibility!r}.")
    beta = KOSCHMIEDER_CONSTANT / v
    return float(beta) if beta.ndim == 0 else beta


def visibility_from_beta(beta):
    """Meteorological visibility V = 3.912 / β in metres; β = 0 gives ``inf``.

    Raises:
        InputError: a negative or NaN β.
    """
    b = np.asarray(beta, dtype=np.float64)
    if np.isnan(b).any() or (b < 0).any():
        raise InputError(f"beta must be >= 0 (1/m). Got {beta!r}.")
    with np.errstate(divide="ignore"):
        v = KOSCHMIEDER_CONSTANT / b
    return float(v) if v.ndim == 0 else v


def fog_class(visibility: Optional[float]) -> str:
    """The fog class of a visibility in metres (``None`` or ``inf`` means clear air).

    dense-fog V < 50 m; moderate-fog 50 ≤ V < 200; light-fog 200 ≤ V < 1000; no-fog V ≥ 1000.

    Raises:
        InputError: a visibility <= 0 or NaN.
    """
    if visibility is None:
        return CLASS_NAMES[3]
    v = float(visibility)
    if math.isnan(v) or v <= 0:
        raise InputError(f"visibility must be metres > 0 (inf for clear air). Got {visibility!r}.")
    for name, threshold in zip(CLASS_NAMES, VISIBILITY_THRESHOLDS_M):
        if v < threshold:
            return name
    return CLASS_NAMES[3]


def sample_visibility(rng: np.random.Generator, fog_class: str, margin: float = DEFAULT_MARGIN) -> float:
    """Draw a visibility (metres) for a class, log-uniform in its range, ``inf`` for clear air.

    Args:
        rng: the random generator.
        fog_class: one of :data:`CLASS_NAMES`.
        margin: factor >= 1 kept between the sample and each class boundary
            (1.0 samples the whole range).

    Raises:
        InputError: unknown class or margin < 1.
    """
    lo, hi = _class_range(fog_class)
    if not margin >= 1.0:
        raise InputError(f"margin must be >= 1 (a factor away from class boundaries). Got {margin}.")
    if fog_class == CLASS_NAMES[3] and rng.random() < NO_FOG_CLEAR_AIR_SHARE:
        return math.inf
    # Only the class boundaries get the margin; the outer ends of the scale are not boundaries.
    if fog_class != CLASS_NAMES[0]:
        lo *= margin
    if fog_class != CLASS_NAMES[3]:
        hi /= margin
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _class_range(name: str) -> Tuple[float, float]:
    if name not in CLASS_VISIBILITY_RANGES_M:
        raise InputError(f"Unknown fog class {name!r}. Use one of: {', '.join(CLASS_NAMES)}.")
    return CLASS_VISIBILITY_RANGES_M[name]
