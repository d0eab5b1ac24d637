"""Fog-level road scenes: procedural rendering with exact depth, and atmospheric scattering.

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

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host._io import atomic_path, atomic_write_bytes, atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError, OutputError, SourceError
from firmware_host.imageio import IMAGE_SUFFIXES, list_images, read_image

__all__ = [
    "CLASS_NAMES",
    "KOSCHMIEDER_CONSTANT",
    "VISIBILITY_THRESHOLDS_M",
    "CLASS_VISIBILITY_RANGES_M",
    "IMBALANCE_RATIOS",
    "SKY_DEPTH_M",
    "FogSample",
    "FolderDataset",
    "DriveVideo",
    "transmission",
    "apply_fog",
    "beta_from_visibility",
    "visibility_from_beta",
    "fog_class",
    "render_scene",
    "sample",
    "sample_visibility",
    "class_counts",
    "estimate_horizon",
    "horizon_depth_prior",
    "generate_dataset",
    "load_folder_dataset",
    "fog_schedule",
    "render_drive_video",
]

Size = Union[int, Tuple[int, int], Sequence[int]]

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

_VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


# --------------------------------------------------------------------------------------------
# Physics
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Scene description and rasteriser
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Thing:
    """A roadside or on-road object in world coordinates (metres, along/across the road)."""

    kind: str  # "vehicle" | "oncoming" | "sign" | "tree" | "post"
    z: float  # distance along the road at time 0
    x: float  # lateral offset from the road centre (+ = right)
    width: float
    height: float
    color: Tuple[float, float, float]
    accent: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    speed: float = 0.0  # m/s along the road
    shape: int = 0


@dataclass(frozen=True)
class _Skyline:
    """A distant ridge (hills, treeline) at a fixed distance, drawn above the horizon."""

    distance: float
    base_height: float
    amplitudes: Tuple[float, ...]
    frequencies: Tuple[float, ...]
    phases: Tuple[float, ...]
    color: Tuple[float, float, float]


@dataclass(frozen=True)
class _Scene:
    horizon: float  # horizon row as a fraction of the image height
    focal: float  # focal length as a fraction of the image width
    camera_height: float
    lane_offset: float  # camera's lateral position from the road centre
    half_width: float  # half the paved width
    shoulder: float
    curve_amplitude: float
    curve_length: float
    curve_phase: float
    dash_period: float
    dash_length: float
    dash_phase: float
    asphalt: Tuple[float, float, float]
    gravel: Tuple[float, float, float]
    grass: Tuple[float, float, float]
    centre_marking: Tuple[float, float, float]
    sky_top: Tuple[float, float, float]
    sky_horizon: Tuple[float, float, float]
    light: Tuple[float, float, float]  # illuminant (brightness × colour temperature)
    haze_layer: float  # thickness (m) of the hazy/foggy layer the sky is seen through
    skylines: Tuple[_Skyline, ...]
    things: Tuple[_Thing, ...]
    texture_seed: int


def _jitter(rng: np.random.Generator, color, amount: float) -> Tuple[float, float, float]:
    c = np.clip(np.asarray(color, dtype=np.float64) * (1 + rng.uniform(-amount, amount, 3)), 0, 1)
    return tuple(float(v) for v in c)


def _random_scene(rng: np.random.Generator, road_length: float = 0.0, camera_speed: float = 0.0) -> _Scene:
    """A random road scene. ``road_length`` extends the populated road for a moving camera."""
    half_width = float(rng.uniform(3.0, 5.0))
    shoulder = float(rng.uniform(0.3, 1.5))
    lane_offset = float(half_width / 2 * rng.uniform(0.6, 1.2) * rng.choice([1.0, 1.0, -1.0]))
    brightness = float(rng.uniform(0.55, 1.1))
    warm = float(rng.uniform(-1, 1))
    light = tuple(float(v) for v in brightness * np.array([1 + 0.08 * warm, 1.0, 1 - 0.1 * warm]))
    overcast = float(rng.uniform(0, 1))
    sky_top = tuple(
        float(v) for v in (1 - overcast) * np.array([0.30, 0.50, 0.90]) + overcast * np.full(3, 0.72)
    )
    sky_horizon = tuple(
        float(v) for v in (1 - overcast) * np.array([0.70, 0.80, 0.95]) + overcast * np.full(3, 0.85)
    )
    grass_palette = [(0.20, 0.42, 0.15), (0.35, 0.45, 0.18), (0.50, 0.45, 0.25), (0.15, 0.32, 0.12)]
    grass = _jitter(rng, grass_palette[rng.integers(len(grass_palette))], 0.2)
    asphalt = _jitter(rng, np.full(3, rng.uniform(0.18, 0.42)), 0.05)
    gravel = _jitter(rng, (0.55, 0.50, 0.42), 0.15)
    centre_marking = (0.95, 0.95, 0.92) if rng.random() < 0.7 else (0.95, 0.80, 0.20)

    skylines = []
    if rng.random() < 0.9:  # hills, half a kilometre to a few kilometres away
        skylines.append(_random_skyline(rng, (500.0, 5000.0), (0.015, 0.06), (0.30, 0.36, 0.40)))
    if rng.random() < 0.8:  # a treeline or buildings a few hundred metres away
        skylines.append(_random_skyline(rng, (150.0, 800.0), (0.02, 0.08), (0.12, 0.25, 0.10)))
    skylines.sort(key=lambda s: -s.distance)

    things = []
    far = road_length + 1200.0
    # Delineator posts every 50 m on both verges: a regular depth ladder, as on real roads.
    start = float(rng.uniform(0, 50))
    if rng.random() < 0.8:
        for z in np.arange(start, far, 50.0):
            for side in (-1.0, 1.0):
                things.append(_Thing("post", float(z), side * (half_width + shoulder + 0.3), 0.12, 1.0,
                                     (0.92, 0.92, 0.90), (0.9, 0.1, 0.05)))
    # Signs.
    for z in rng.uniform(8, far * 0.4, rng.poisson(1.5 + road_length / 150)):
        side = rng.choice([-1.0, 1.0], p=[0.25, 0.75])
        palette = [(0.85, 0.10, 0.10), (0.10, 0.30, 0.80), (0.95, 0.80, 0.10), (0.10, 0.55, 0.25)]
        things.append(_Thing("sign", float(z), side * (half_width + shoulder + 1.0), 0.9,
                             float(rng.uniform(2.2, 3.2)), palette[rng.integers(len(palette))],
                             (0.95, 0.95, 0.95), shape=int(rng.integers(3))))
    # Trees in clumps along the verges.
    n_trees = rng.poisson(6 + road_length / 25)
    for z in rng.uniform(5, far * 0.5, n_trees):
        side = rng.choice([-1.0, 1.0])
        height = float(rng.uniform(5, 14))
        things.append(_Thing("tree", float(z), side * (half_width + shoulder + rng.uniform(2, 20)),
                             height * rng.uniform(0.4, 0.7), height,
                             _jitter(rng, (0.12, 0.30, 0.10), 0.3), (0.30, 0.20, 0.12)))
    # Vehicles: ahead in our lane (moving with us) and oncoming.
    palette = [(0.8, 0.1, 0.1), (0.9, 0.9, 0.9), (0.1, 0.1, 0.12), (0.2, 0.3, 0.7), (0.6, 0.6, 0.62),
               (0.9, 0.7, 0.1)]
    for z in rng.uniform(12, 160, rng.integers(0, 3)):
        things.append(_Thing("vehicle", float(z), lane_offset + rng.uniform(-0.4, 0.4),
                             float(rng.uniform(1.7, 2.3)), float(rng.uniform(1.4, 2.8)),
                             _jitter(rng, palette[rng.integers(len(palette))], 0.1),
                             speed=camera_speed * float(rng.uniform(0.9, 1.1))))
    n_oncoming = rng.integers(0, 3) + int(road_length / 60)
    for z in rng.uniform(15, far * 0.6, n_oncoming):
        things.append(_Thing("oncoming", float(z), -lane_offset + rng.uniform(-0.4, 0.4),
                             float(rng.uniform(1.7, 2.3)), float(rng.uniform(1.4, 2.8)),
                             _jitter(rng, palette[rng.integers(len(palette))], 0.1),
                             speed=-float(rng.uniform(8, 20)) if camera_speed else 0.0))

    return _Scene(
        horizon=float(rng.uniform(0.36, 0.5)),
        focal=float(rng.uniform(0.85, 1.15)),
        camera_height=float(rng.uniform(1.2, 1.8)),
        lane_offset=lane_offset,
        half_width=half_width,
        shoulder=shoulder,
        curve_amplitude=float(rng.uniform(0, 40)),
        curve_length=float(rng.uniform(250, 900)),
        curve_phase=float(rng.uniform(0, 2 * math.pi)),
        dash_period=float(rng.uniform(9, 15)),
        dash_length=float(rng.uniform(3, 5)),
        dash_phase=float(rng.uniform(0, 15)),
        asphalt=asphalt,
        gravel=gravel,
        grass=grass,
        centre_marking=centre_marking,
        sky_top=sky_top,
        sky_horizon=sky_horizon,
        light=light,
        haze_layer=float(rng.uniform(300, 1500)),
        skylines=tuple(skylines),
        things=tuple(things),
        texture_seed=int(rng.integers(2**31)),
    )


def _random_skyline(rng, distance_range, relative_height, color) -> _Skyline:
    """A ridge at a log-uniform distance whose height is a fraction of that distance."""
    n = 4
    distance = float(math.exp(rng.uniform(*np.log(distance_range))))
    height = distance * float(rng.uniform(*relative_height))
    return _Skyline(
        distance=distance,
        base_height=height * 0.6,
        amplitudes=tuple(float(a) for a in rng.uniform(0, height * 0.25, n)),
        frequencies=tuple(float(f) for f in rng.uniform(1, 25, n)),
        phases=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, n)),
        color=_jitter(rng, color, 0.25),
    )


def _road_centre(scene: _Scene, ahead, camera_z: float):
    """Lateral position of the road centre ``ahead`` metres in front, relative to the camera.

    The road is a sine in world coordinates; the camera sits ``lane_offset`` right of the centre
    and looks along the road's tangent at its own position.
    """
    k = 2 * math.pi / scene.curve_length

    def centre(z):
        return scene.curve_amplitude * np.sin(k * z + scene.curve_phase)

    slope = scene.curve_amplitude * k * math.cos(k * camera_z + scene.curve_phase)
    return centre(camera_z + ahead) - centre(camera_z) - slope * ahead - scene.lane_offset


def _smooth_noise(seed: int, height: int, width: int, cells=(5, 7)) -> np.ndarray:
    """Low-frequency noise in [-1, 1], ``(H, W)``, fixed by ``seed`` (texture, clouds)."""
    import cv2

    coarse = np.random.default_rng(seed).uniform(-1, 1, cells).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _paint(rgb, depth, y0, y1, x0, x1, color, distance, mask=None) -> None:
    """Z-buffered fill of a pixel box (float bounds, rounded) with ``color`` at ``distance``."""
    h, w = depth.shape
    i0, i1 = max(int(round(y0)), 0), min(int(round(y1)), h)
    j0, j1 = max(int(round(x0)), 0), min(int(round(x1)), w)
    if i1 <= i0 or j1 <= j0:
        return
    visible = depth[i0:i1, j0:j1] > distance
    if mask is not None:
        visible &= mask(np.arange(i0, i1)[:, None] + 0.5, np.arange(j0, j1)[None, :] + 0.5)
    depth[i0:i1, j0:j1][visible] = distance
    rgb[i0:i1, j0:j1][visible] = color


def _draw_thing(rgb, depth, thing: _Thing, px, bottom, scale, distance) -> None:
    """Rasterise one object whose base centre projects to column ``px``, row ``bottom``."""
    w, h = thing.width * scale, thing.height * scale
    left, right, top = px - w / 2, px + w / 2, bottom - h
    color = np.asarray(thing.color, dtype=np.float32)
    accent = np.asarray(thing.accent, dtype=np.float32)
    if thing.kind == "post":
        _paint(rgb, depth, top, bottom, left, right, color, distance)
        _paint(rgb, depth, top + 0.1 * h, top + 0.25 * h, left, right, accent, distance - 0.01)
    elif thing.kind == "sign":
        pole = 0.08 * scale
        plate = thing.width * scale
        _paint(rgb, depth, top + plate, bottom, px - pole / 2, px + pole / 2, (0.5, 0.5, 0.5), distance)
        cy, half = top + plate / 2, plate / 2
        if thing.shape == 0:
            _paint(rgb, depth, top, top + plate, left, right, color, distance)
            _paint(rgb, depth, top + 0.25 * plate, top + 0.75 * plate, left + 0.25 * plate,
                   right - 0.25 * plate, accent, distance - 0.01)
        elif thing.shape == 1:
            _paint(rgb, depth, top, top + plate, left, right, color, distance,
                   lambda y, x: (y - cy) ** 2 + (x - px) ** 2 <= half**2)
            _paint(rgb, depth, top, top + plate, left, right, accent, distance - 0.01,
                   lambda y, x: (y - cy) ** 2 + (x - px) ** 2 <= (0.6 * half) ** 2)
        else:
            _paint(rgb, depth, top, top + plate, left, right, color, distance,
                   lambda y, x: np.abs(x - px) <= (y - top) / 2 * 1.15)
            _paint(rgb, depth, top, top + plate, left, right, accent, distance - 0.01,
                   lambda y, x: (np.abs(x - px) <= (y - top - 0.3 * plate) / 2 * 1.15)
                   & (y < top + 0.85 * plate))
    elif thing.kind == "tree":
        trunk_w = 0.35 * scale
        _paint(rgb, depth, top + 0.5 * h, bottom, px - trunk_w / 2, px + trunk_w / 2, accent, distance)
        cy, ry, rx = top + 0.4 * h, 0.4 * h, w / 2
        _paint(rgb, depth, top, top + 0.8 * h, left, right, color, distance - 0.01,
               lambda y, x: ((y - cy) / max(ry, 1e-6)) ** 2 + ((x - px) / max(rx, 1e-6)) ** 2 <= 1)
    else:  # vehicle (rear view) or oncoming (front view)
        clearance = 0.25 * scale
        _paint(rgb, depth, bottom - clearance, bottom, left + 0.1 * w, left + 0.3 * w, (0.05,) * 3, distance)
        _paint(rgb, depth, bottom - clearance, bottom, right - 0.3 * w, right - 0.1 * w, (0.05,) * 3, distance)
        _paint(rgb, depth, top, bottom - clearance, left, right, color, distance)
        _paint(rgb, depth, top + 0.1 * h, top + 0.4 * h, left + 0.1 * w, right - 0.1 * w,
               (0.08, 0.09, 0.11), distance - 0.01)
        lamp = (0.8, 0.05, 0.05) if thing.kind == "vehicle" else (1.0, 0.95, 0.8)
        for x0 in (left + 0.05 * w, right - 0.2 * w):
            _paint(rgb, depth, top + 0.55 * h, top + 0.68 * h, x0, x0 + 0.15 * w, lamp, distance - 0.01)


def _draw(scene: _Scene, height: int, width: int, camera_z: float = 0.0, time: float = 0.0):
    """Render the clear scene: returns J ``(H, W, 3)`` float32 in [0, 1] and depth ``(H, W)``."""
    H, W = int(height), int(width)
    f = scene.focal * W
    h0 = scene.horizon * H
    cx = W / 2.0
    hc = scene.camera_height
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(W, dtype=np.float32) + 0.5)[None, :]
    noise = _smooth_noise(scene.texture_seed, H, W)
    rgb = np.empty((H, W, 3), np.float32)
    depth = np.full((H, W), SKY_DEPTH_M, np.float32)

    # Sky: a vertical gradient plus soft clouds.
    u = np.clip((h0 - ys) / max(h0, 1.0), 0, 1)[..., None]
    sky = np.asarray(scene.sky_horizon, np.float32) * (1 - u) + np.asarray(scene.sky_top, np.float32) * u
    rgb[:] = sky * (1 + 0.06 * noise[..., None])
    # The sky's "depth" is the path through the hazy boundary layer of thickness L above the
    # road: a ray at elevation θ leaves it after L / sin θ (capped at SKY_DEPTH_M near the
    # horizon). So thin haze leaves a blue sky overhead while fog turns it into airlight.
    elevation = np.arctan2(np.maximum(h0 - ys, 0.0), f)
    with np.errstate(divide="ignore"):
        sky_depth = np.minimum(scene.haze_layer / np.sin(elevation), SKY_DEPTH_M)
    depth[:] = sky_depth.astype(np.float32)

    # Ground plane: row y below the horizon sees the road at Z = f·h_c / (y − h0) (pinhole camera).
    rows = ys[:, 0] > h0 + 0.5
    if rows.any():
        yg = ys[rows]
        ahead = f * hc / (yg - h0)  # (Hg, 1)
        lateral = (xs - cx) * ahead / f  # (Hg, W)
        dist = np.sqrt(lateral**2 + ahead**2 + hc**2)
        world_z = ahead + camera_z
        off = np.abs(lateral - _road_centre(scene, ahead, camera_z))
        albedo = np.empty(off.shape + (3,), np.float32)
        grass = np.asarray(scene.grass, np.float32)
        # Mown stripes anchored to the world, so texture streams past a moving camera.
        stripe = 1 + 0.07 * np.sin(world_z * 0.7 + (lateral > 0) * 1.3)
        albedo[:] = grass * (stripe * (1 + 0.12 * noise[rows]))[..., None]
        road = off < scene.half_width
        verge = (off >= scene.half_width) & (off < scene.half_width + scene.shoulder)
        albedo[verge] = scene.gravel
        albedo[road] = np.asarray(scene.asphalt, np.float32) * (1 + 0.05 * noise[rows][road])[:, None]
        edge = (off > scene.half_width - 0.3) & (off < scene.half_width - 0.12)
        albedo[edge] = (0.92, 0.92, 0.92)
        dash = (off < 0.08) & (np.mod(world_z + scene.dash_phase, scene.dash_period) < scene.dash_length)
        albedo[dash] = scene.centre_marking
        rgb[rows] = albedo
        depth[rows] = np.minimum(dist, SKY_DEPTH_M)

    # Distant ridges: a silhouette of height h(θ) metres at distance D stands f·h/D pixels tall.
    for ridge in scene.skylines:
        angle = (xs[0] - cx) / f
        profile = ridge.base_height + sum(
            a * np.sin(fr * angle + ph)
            for a, fr, ph in zip(ridge.amplitudes, ridge.frequencies, ridge.phases)
        )
        base = h0 + f * hc / ridge.distance
        top = base - f * np.maximum(profile, 0) / ridge.distance
        mask = (ys >= top[None, :]) & (ys < base + 0.5) & (depth > ridge.distance)
        shade = (1 + 0.1 * noise)[mask][:, None]
        rgb[mask] = np.asarray(ridge.color, np.float32) * shade
        depth[mask] = ridge.distance

    # Objects, far to near, z-buffered.
    placed = []
    for thing in scene.things:
        ahead = thing.z + thing.speed * time - camera_z
        if 2.0 < ahead < 3000.0:
            placed.append((ahead, thing))
    for ahead, thing in sorted(placed, key=lambda p: -p[0]):
        x = float(_road_centre(scene, ahead, camera_z)) + thing.x
        scale = f / ahead
        px = cx + x * scale
        if px + thing.width * scale < -1 or px - thing.width * scale > W + 1:
            continue
        _draw_thing(rgb, depth, thing, px, h0 + hc * scale, scale, float(math.hypot(x, ahead)))

    rgb *= np.asarray(scene.light, np.float32)
    return np.clip(rgb, 0, 1), depth


def _size(size: Size) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError) as exc:
            raise InputError(f"size must be an int or (height, width). Got {size!r}.") from exc
    if h < 8 or w < 8:
        raise InputError(f"size must be at least 8×8 pixels. Got {(h, w)}.")
    return h, w


def render_scene(rng: np.random.Generator, size: Size = (64, 64)) -> Tuple[np.ndarray, np.ndarray]:
    """Render one random clear road scene with its depth map.

    The camera is a pinhole 1.2–1.8 m above a flat road; the road has lane markings in perspective
    and verges; vehicles, signs, trees and delineator posts stand at their true distance; hills and
    treelines sit on the horizon; the sky's depth is the path through a 300–1500 m hazy layer,
    L / sin(elevation), capped at :data:`SKY_DEPTH_M`.

    Args:
        rng: ``numpy.random.Generator`` (the scene is a pure function of its state).
        size: ``(height, width)`` or an int for square.

    Returns:
        ``(rgb, depth)``: ``(H, W, 3)`` uint8 clear image J, ``(H, W)`` float32 metres.
    """
    h, w = _size(size)
    clear, depth = _draw(_random_scene(rng), h, w)
    return np.clip(np.rint(clear * 255), 0, 255).astype(np.uint8), depth


def _random_airlight(rng: np.random.Generator) -> np.ndarray:
    """Fog's airlight: bright grey with a slight colour cast (Narasimhan & Nayar's A)."""
    return np.clip(rng.uniform(0.62, 0.95) * (1 + rng.uniform(-0.03, 0.03, 3)), 0, 1).astype(np.float32)


@dataclass(frozen=True)
class FogSample:
    """One generated image and the physics behind it.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, fogged.
        depth: ``(H, W)`` float32 metres.
        beta: extinction coefficient (1/m); 0 for clear air.
        visibility: metres (``inf`` for clear air).
        fog_class: class name, ``fog_class(visibility)``.
        airlight: ``(3,)`` RGB airlight in [0, 1].
    """

    image: np.ndarray = field(repr=False)
    depth: np.ndarray = field(repr=False)
    beta: float
    visibility: float
    fog_class: str
    airlight: Tuple[float, float, float]


def _sensor(rng: np.random.Generator, foggy: np.ndarray) -> np.ndarray:
    """Camera noise and quantisation (float [0, 1] → uint8)."""
    noisy = foggy + rng.normal(0, rng.uniform(0, 2.0) / 255.0, foggy.shape).astype(np.float32)
    return np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)


def sample(
    rng: np.random.Generator,
    fog_class: str,
    size: Size = (64, 64),
    margin: float = DEFAULT_MARGIN,
) -> FogSample:
    """Render a random scene, fog it to a visibility drawn for ``fog_class``, add sensor noise.

    The scene is rendered and fogged at twice the size, then area-downsampled (anti-aliasing
    thin lane markings and distant posts, as a camera's optics would).

    Args:
        rng: random generator.
        fog_class: one of :data:`CLASS_NAMES`.
        size: output ``(height, width)``.
        margin: see :func:`sample_visibility`.

    Returns:
        A :class:`FogSample`.
    """
    import cv2

    h, w = _size(size)
    visibility = sample_visibility(rng, fog_class, margin)
    beta = beta_from_visibility(visibility)
    clear, depth = _draw(_random_scene(rng), 2 * h, 2 * w)
    airlight = _random_airlight(rng)
    foggy = apply_fog(clear, depth, beta, airlight)
    foggy = cv2.resize(foggy, (w, h), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return FogSample(_sensor(rng, foggy), depth, beta, visibility, fog_class,
                     tuple(float(a) for a in airlight))


# --------------------------------------------------------------------------------------------
# Real photos: a horizon depth prior
# --------------------------------------------------------------------------------------------


def estimate_horizon(image: np.ndarray) -> float:
    """Estimate the horizon row of a road photo (pixels from the top).

    The row that best splits the image into a brighter upper part (sky) and a darker lower part
    (ground), searched between 15 % and 75 % of the height; 45 % when no split is brighter above.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
    """
    gray = np.asarray(image, dtype=np.float32).mean(axis=-1) / 255.0
    profile = gray.mean(axis=1)
    h = len(profile)
    cum = np.cumsum(profile)
    rows = np.arange(max(int(0.15 * h), 1), max(int(0.75 * h), 2))
    above = cum[rows - 1] / rows
    below = (cum[-1] - cum[rows - 1]) / (h - rows)
    gain = above - below
    if gain.size == 0 or gain.max() < 0.03:
        return 0.45 * h
    return float(rows[int(np.argmax(gain))])


def horizon_depth_prior(
    shape: Tuple[int, int],
    horizon_row: float,
    camera_height: float = 1.5,
    focal: Optional[float] = None,
) -> np.ndarray:
    """Depth map for a photo with no depth: a flat ground plane below the horizon, sky above.

    A pinhole camera ``camera_height`` metres above flat ground sees row y at distance
    ``f·h_c / (y − horizon)``; ``focal`` defaults to the image width (≈ 53° horizontal field of
    view). Everything at or above the horizon (sky, and — the prior's limit — buildings or trees
    that rise above it) is at :data:`SKY_DEPTH_M`.

    Args:
        shape: ``(H, W)``.
        horizon_row: horizon in pixels from the top (``estimate_horizon``).
        camera_height: metres.
        focal: pixels.

    Returns:
        ``(H, W)`` float32 metres.
    """
    h, w = int(shape[0]), int(shape[1])
    f = float(focal) if focal else float(w)
    ys = np.arange(h, dtype=np.float64) + 0.5
    with np.errstate(divide="ignore"):
        d = np.where(ys > horizon_row + 0.5, f * camera_height / (ys - horizon_row), SKY_DEPTH_M)
    d = np.clip(d, 1.0, SKY_DEPTH_M).astype(np.float32)
    return np.repeat(d[:, None], w, axis=1)


def _fit(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize (area when shrinking)."""
    import cv2

    ih, iw = image.shape[:2]
    target = w / h
    if iw / ih > target:
        cw = max(int(round(ih * target)), 1)
        x0 = (iw - cw) // 2
        image = image[:, x0:x0 + cw]
    else:
        ch = max(int(round(iw / target)), 1)
        y0 = (ih - ch) // 2
        image = image[y0:y0 + ch]
    interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=interp)


def _fog_photo(rng, photo: np.ndarray, fog_class: str, h: int, w: int, margin: float) -> FogSample:
    """Fog a clear photo with the horizon depth prior (at 2× size, then area-downsampled)."""
    import cv2

    clear = _fit(photo, 2 * h, 2 * w)
    depth = horizon_depth_prior(clear.shape[:2], estimate_horizon(clear))
    visibility = sample_visibility(rng, fog_class, margin)
    beta = beta_from_visibility(visibility)
    airlight = _random_airlight(rng)
    foggy = apply_fog(clear.astype(np.float32) / 255.0, depth, beta, airlight)
    foggy = cv2.resize(foggy, (w, h), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return FogSample(_sensor(rng, foggy), depth, beta, visibility, fog_class,
                     tuple(float(a) for a in airlight))


# --------------------------------------------------------------------------------------------
# Dataset on disk
# --------------------------------------------------------------------------------------------


def class_counts(n: int, imbalance: bool = False) -> Dict[str, int]:
    """How many images of each class ``generate_dataset`` makes (largest-remainder rounding).

    Balanced: n/4 each. ``imbalance=True``: :data:`IMBALANCE_RATIOS` (7/13/25/55 %), with at
    least one image per class when n >= 4.
    """
    if n < 1:
        raise InputError(f"n must be >= 1 image. Got {n}.")
    shares = np.array([IMBALANCE_RATIOS[c] if imbalance else 0.25 for c in CLASS_NAMES])
    raw = shares * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n >= len(CLASS_NAMES):
        while (counts == 0).any():
            counts[np.argmax(counts)] -= 1
            counts[np.argmin(counts)] += 1
    return dict(zip(CLASS_NAMES, (int(c) for c in counts)))


def _prepare_out(out: Path) -> None:
    """Refuse to mix a new dataset with unknown files; remove the images of a previous run."""
    ensure_writable_dir(out)
    manifest = out / "dataset.json"
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text(encoding="utf-8"))
            for entry in previous.get("images", []):
                (out / entry["file"]).unlink(missing_ok=True)
            # Until the new manifest is written the folder is not a complete dataset.
            manifest.unlink()
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise OutputError(
                f"'{manifest}' exists but cannot be read ({exc}). Delete '{out}' or choose "
                "another --out."
            ) from exc
    for name in CLASS_NAMES:
        folder = out / name
        if folder.is_dir() and any(folder.iterdir()):
            raise OutputError(
                f"'{folder}' already contains files that are not from an edgecam fog dataset. "
                "Choose an empty --out directory."
            )


def generate_dataset(
    out_dir,
    n: int,
    size: Size = (64, 64),
    seed: int = 0,
    imbalance: bool = False,
    images_dir=None,
    progress: bool = True,
    margin: float = DEFAULT_MARGIN,
) -> Path:
    """Write a folder-per-class fog dataset: ``out/<class>/fog_000000.png``.

    Also writes ``labels.txt`` (class order, one per line) and ``dataset.json`` (seed, size,
    counts and each image's β, visibility, class and airlight). Each image draws from its own
    child of ``SeedSequence(seed)``, so a dataset is reproducible image by image.

    Args:
        out_dir: output directory (created; must not hold foreign files in the class folders).
        n: number of images.
        size: ``(height, width)`` or int.
        seed: RNG seed.
        imbalance: use :data:`IMBALANCE_RATIOS` instead of equal classes.
        images_dir: optional folder of the user's own clear road photos; they are fogged with
            :func:`horizon_depth_prior` (cycled through) instead of rendered scenes.
        progress: show a tqdm progress bar.
        margin: see :func:`sample_visibility`.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        InputError: bad n/size; SourceError: ``images_dir`` has no readable image;
        OutputError: ``out_dir`` not writable or not empty.
    """
    import cv2
    from tqdm.auto import tqdm

    h, w = _size(size)
    counts = class_counts(int(n), imbalance)
    out = Path(out_dir)
    photos = None
    if images_dir is not None:
        photos = _load_photos(Path(images_dir))
    _prepare_out(out)
    for name in CLASS_NAMES:
        (out / name).mkdir(exist_ok=True)

    root = np.random.SeedSequence(seed)
    order_rng = np.random.default_rng(root.spawn(1)[0])
    labels = np.concatenate([np.full(counts[c], i) for i, c in enumerate(CLASS_NAMES)])
    order_rng.shuffle(labels)
    children = root.spawn(len(labels))
    entries = []
    for index, (label, child) in enumerate(
        tqdm(list(zip(labels, children)), desc="fog dataset", unit="img", disable=not progress)
    ):
        rng = np.random.default_rng(child)
        name = CLASS_NAMES[int(label)]
        if photos is None:
            item = sample(rng, name, (h, w), margin)
            source = "synthetic"
        else:
            photo_path, photo = photos[index % len(photos)]
            item = _fog_photo(rng, photo, name, h, w, margin)
            source = str(photo_path.name)
        rel = f"{name}/fog_{index:06d}.png"
        ok, png = cv2.imencode(".png", np.ascontiguousarray(item.image[..., ::-1]))
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
            raise OutputError(f"OpenCV could not encode '{rel}' as PNG.")
        # No fsync per image (10 ms each); dataset.json, written durably last, marks completion.
        atomic_write_bytes(out / rel, png.tobytes(), durable=False)
        entries.append({
            "file": rel,
            "class": name,
            "beta": item.beta,
            "visibility_m": None if math.isinf(item.visibility) else round(item.visibility, 3),
            "airlight": [round(a, 4) for a in item.airlight],
            "source": source,
        })
    atomic_write_text(out / "labels.txt", "\n".join(CLASS_NAMES) + "\n")
    manifest = {
        "format": "edgecam-fog-dataset",
        "version": 1,
        "seed": int(seed),
        "size": [h, w],
        "n": len(entries),
        "imbalance": bool(imbalance),
        "margin": margin,
        "classes": list(CLASS_NAMES),
        "counts": counts,
        "visibility_thresholds_m": list(VISIBILITY_THRESHOLDS_M),
        "visibility_ranges_m": {k: list(v) for k, v in CLASS_VISIBILITY_RANGES_M.items()},
        "depth_source": "rendered" if photos is None else "horizon prior",
        "note": "visibility_m null means clear air (beta = 0, infinite visibility)",
        "images": entries,
    }
    atomic_write_text(out / "dataset.json", json.dumps(manifest, indent=1) + "\n")
    return out


def _load_photos(directory: Path):
    if not directory.is_dir():
        raise SourceError(f"--images must be a folder of road photos. '{directory}' is not a directory.")
    photos, skipped = [], 0
    for path in list_images(directory):
        img = read_image(path, rgb=True)
        if img is None:
            skipped += 1
        else:
            photos.append((path, img))
    if not photos:
        raise SourceError(
            f"No readable image in '{directory}' ({skipped} unreadable). Put clear-weather road "
            f"photos ({', '.join(IMAGE_SUFFIXES)}) there."
        )
    if skipped:
        warnings.warn(f"Skipped {skipped} unreadable file(s) in '{directory}'.", stacklevel=3)
    return photos


@dataclass(frozen=True)
class FolderDataset:
    """Images read from a folder-per-class dataset. Unpacks as ``x, y, class_names``.

    Attributes:
        x: ``(N, H, W, 3)`` uint8 RGB.
        y: ``(N,)`` int64 class indices into ``class_names``.
        class_names: class order (``labels.txt`` if present, else sorted folder names).
        paths: the file of each row of ``x``.
        skipped: number of files that could not be decoded (left out).
    """

    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    class_names: Tuple[str, ...]
    paths: Tuple[str, ...] = field(repr=False)
    skipped: int = 0

    def __iter__(self):
        return iter((self.x, self.y, self.class_names))


def load_folder_dataset(directory, size: Size = (64, 64), class_names: Optional[Sequence[str]] = None) -> FolderDataset:
    """Read a folder-per-class image dataset (``dir/<class>/*.png|jpg|…``) into arrays.

    Images are centre-cropped to the target aspect ratio and resized to ``size``. Files that
    cannot be decoded are skipped and counted (with a warning).

    Args:
        directory: the dataset root.
        size: ``(height, width)`` or int.
        class_names: class order; default ``labels.txt`` in the root if present, else the sorted
            sub-folder names.

    Returns:
        A :class:`FolderDataset` (``x, y, class_names = load_folder_dataset(...)``).

    Raises:
        SourceError: the folder is missing, has no class folders, or holds no readable image.
    """
    root = Path(directory)
    h, w = _size(size)
    if not root.is_dir():
        raise SourceError(f"Dataset folder '{root}' does not exist. Pass a folder with one sub-folder per class.")
    if class_names is None:
        labels_file = root / "labels.txt"
        if labels_file.is_file():
            class_names = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names = tuple(class_names)
    if not class_names:
        raise SourceError(
            f"'{root}' has no class sub-folders. Expected '{root}/<class>/<image>.png', e.g. "
            "'edgecam dataset fog --out DIR' makes one."
        )
    xs, ys, paths, skipped = [], [], [], 0
    for index, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in list_images(folder):
            img = read_image(path, rgb=True)
            if img is None:
                skipped += 1
                continue
            xs.append(_fit(img, h, w))
            ys.append(index)
            paths.append(str(path))
    if not xs:
        raise SourceError(
            f"No readable image in '{root}' (class folders: {', '.join(class_names)}; {skipped} "
            f"unreadable file(s)). Put images ({', '.join(IMAGE_SUFFIXES)}) in '{root}/<class>/'."
        )
    if skipped:
        warnings.warn(f"Skipped {skipped} unreadable image file(s) under '{root}'.", stacklevel=2)
    return FolderDataset(np.stack(xs), np.asarray(ys, dtype=np.int64), class_names, tuple(paths), skipped)


# --------------------------------------------------------------------------------------------
# Drive video
# --------------------------------------------------------------------------------------------


def fog_schedule(frames: int, clear_visibility: float = 5000.0, dense_visibility: float = 15.0) -> np.ndarray:
    """Visibility per frame for a drive into fog and out again (metres, ``(frames,)`` float64).

    log V follows a raised cosine from ``clear_visibility`` down to ``dense_visibility`` at the
    middle frame and back, so every class gets time in proportion to its span of log V.

    Raises:
        InputError: frames < 1 or visibilities not 0 < dense < clear.
    """
    if frames < 1:
        raise InputError(f"frames must be >= 1. Got {frames}.")
    if not 0 < dense_visibility < clear_visibility:
        raise InputError(
            f"Need 0 < dense_visibility < clear_visibility. Got {dense_visibility}, {clear_visibility}."
        )
    phase = np.arange(frames) / max(frames - 1, 1)
    depth_of_fog = (1 - np.cos(2 * np.pi * phase)) / 2  # 0 → 1 → 0
    lo, hi = math.log(dense_visibility), math.log(clear_visibility)
    return np.exp(hi - (hi - lo) * depth_of_fog)


@dataclass(frozen=True)
class DriveVideo:
    """A rendered drive video and its per-frame ground truth.

    Attributes:
        path: the video file.
        truth_path: JSON beside it (``<video stem>.json``) with every frame's visibility, β, class.
        fps: frames per second.
        size: ``(height, width)``.
        classes: per-frame class name.
        visibility: per-frame visibility in metres.
    """

    path: Path
    truth_path: Path
    fps: float
    size: Tuple[int, int]
    classes: Tuple[str, ...] = field(repr=False)
    visibility: Tuple[float, ...] = field(repr=False)

    @property
    def frame_count(self) -> int:
        return len(self.classes)


def render_drive_video(
    path,
    frames: Optional[int] = None,
    seconds: float = 20.0,
    fps: float = 10.0,
    size: Size = (240, 320),
    seed: int = 0,
    speed_mps: float = 15.0,
    clear_visibility: float = 20_000.0,
    dense_visibility: float = 15.0,
    progress: bool = True,
) -> DriveVideo:
    """Render a drive along a road while fog thickens from none to dense and clears again.

    One scene is laid out along the road; the camera moves at ``speed_mps``, vehicles move too,
    and the visibility follows :func:`fog_schedule`. The video is written with OpenCV
    (``.mp4`` → 'mp4v', ``.avi`` → 'MJPG', both readable back by opencv-python-headless) via a
    temporary file renamed into place; the per-frame truth is written to ``<stem>.json``.

    Args:
        path: output video, ``.mp4`` or ``.avi``.
        frames: number of frames (default ``seconds * fps``).
        seconds: duration when ``frames`` is not given.
        fps: frame rate.
        size: frame ``(height, width)``.
        seed: RNG seed for the scene, airlight and noise.
        speed_mps: camera speed.
        clear_visibility, dense_visibility: ends of the fog schedule (metres).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`DriveVideo`.

    Raises:
        OutputError: unsupported suffix, unwritable directory, or OpenCV cannot open the writer.
    """
    import cv2
    from tqdm.auto import tqdm

    video = Path(path)
    suffix = video.suffix.lower()
    if suffix not in _VIDEO_CODECS:
        raise OutputError(
            f"Drive video must end with .mp4 or .avi (codecs {_VIDEO_CODECS}). Got '{video}'."
        )
    h, w = _size(size)
    n = int(frames) if frames is not None else int(round(seconds * fps))
    if fps <= 0:
        raise InputError(f"fps must be > 0. Got {fps}.")
    visibility = fog_schedule(n, clear_visibility, dense_visibility)
    ensure_writable_dir(video.parent if str(video.parent) else Path("."))
    rng = np.random.default_rng(seed)
    travel = speed_mps * n / fps
    scene = _random_scene(rng, road_length=travel, camera_speed=speed_mps)
    airlight = _random_airlight(rng)

    # A hidden temporary beside the video, fsync'd and renamed when complete (atomic_path).
    with atomic_path(video) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*_VIDEO_CODECS[suffix]), float(fps), (w, h))
        try:
            if not writer.isOpened():
                raise OutputError(
                    f"OpenCV cannot write '{video}' with codec {_VIDEO_CODECS[suffix]!r}. Try the other "
                    "suffix (.mp4 or .avi)."
                )
            truth = []
            for i in tqdm(range(n), desc="drive video", unit="frame", disable=not progress):
                t = i / fps
                clear, depth = _draw(scene, h, w, camera_z=speed_mps * t, time=t)
                beta = beta_from_visibility(float(visibility[i]))
                frame = _sensor(rng, apply_fog(clear, depth, beta, airlight))
                writer.write(np.ascontiguousarray(frame[..., ::-1]))
                truth.append({
                    "frame": i,
                    "time_s": round(t, 4),
                    "visibility_m": round(float(visibility[i]), 3),
                    "beta": beta,
                    "class": fog_class(float(visibility[i])),
                })
        finally:
            writer.release()
    truth_path = video.with_suffix(".json")
    atomic_write_text(truth_path, json.dumps({
        "format": "edgecam-fog-drive",
        "version": 1,
        "video": video.name,
        "fps": fps,
        "size": [h, w],
        "seed": int(seed),
        "classes": list(CLASS_NAMES),
        "airlight": [round(float(a), 4) for a in airlight],
        "frames": truth,
    }, indent=1) + "\n")
    return DriveVideo(video, truth_path, float(fps), (h, w),
                      tuple(f["class"] for f in truth), tuple(float(v) for v in visibility))
