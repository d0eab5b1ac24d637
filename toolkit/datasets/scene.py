"""Procedural road scenes with exact per-pixel depth, and fogged samples of them.

A scene (:class:`Scene`) is a random layout in world coordinates — road, verges, markings,
skylines, posts, signs, trees, vehicles — drawn by a pinhole camera (:func:`draw_scene`) into a
clear image J and its depth d, which :func:`toolkit.datasets.physics.apply_fog` fogs.
numpy + OpenCV only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Tuple

import numpy as np

from .folder import Size, parse_size
from .physics import DEFAULT_MARGIN, SKY_DEPTH_M, apply_fog, beta_from_visibility, sample_visibility

__all__ = ["Scene", "FogSample", "random_scene", "draw_scene", "render_scene", "random_airlight",
           "sensor_readout", "sample"]


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
class Scene:
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


def random_scene(rng: np.random.Generator, road_length: float = 0.0, camera_speed: float = 0.0) -> Scene:
    """A random road scene. ``road_length`` extends the populated road for a moving camera."""
    half_width = float(rng.uniform(3.0, 5.0))
    shoulder = float(rng.uniform(0.3, 1.5))
    lane_offset = float(half_width / 2 * rng.uniform(0.6, 1.2) * rng.choice([1.0, 1.0, -1.0]))
    colours = _random_colours(rng)
    skylines = []
    if rng.random() < 0.9:  # hills, half a kilometre to a few kilometres away
        skylines.append(_random_skyline(rng, (500.0, 5000.0), (0.015, 0.06), (0.30, 0.36, 0.40)))
    if rng.random() < 0.8:  # a treeline or buildings a few hundred metres away
        skylines.append(_random_skyline(rng, (150.0, 800.0), (0.02, 0.08), (0.12, 0.25, 0.10)))
    skylines.sort(key=lambda s: -s.distance)
    verge = half_width + shoulder
    things = _random_roadside(rng, verge, road_length) + _random_vehicles(rng, lane_offset, road_length, camera_speed)
    return Scene(
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
        **colours,
        haze_layer=float(rng.uniform(300, 1500)),
        skylines=tuple(skylines),
        things=tuple(things),
        texture_seed=int(rng.integers(2**31)),
    )


def _random_colours(rng: np.random.Generator) -> dict:
    """Illuminant, sky, ground and marking colours (RGB in [0, 1]) of a scene."""
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
    return dict(asphalt=asphalt, gravel=gravel, grass=grass, centre_marking=centre_marking,
                sky_top=sky_top, sky_horizon=sky_horizon, light=light)


def _random_roadside(rng: np.random.Generator, verge: float, road_length: float) -> list:
    """Delineator posts, signs and trees along the verges (``verge``: paved half width + shoulder)."""
    things = []
    far = road_length + 1200.0
    # Delineator posts every 50 m on both verges: a regular depth ladder, as on real roads.
    start = float(rng.uniform(0, 50))
    if rng.random() < 0.8:
        for z in np.arange(start, far, 50.0):
            for side in (-1.0, 1.0):
                things.append(_Thing("post", float(z), side * (verge + 0.3), 0.12, 1.0,
                                     (0.92, 0.92, 0.90), (0.9, 0.1, 0.05)))
    # Signs.
    for z in rng.uniform(8, far * 0.4, rng.poisson(1.5 + road_length / 150)):
        side = rng.choice([-1.0, 1.0], p=[0.25, 0.75])
        palette = [(0.85, 0.10, 0.10), (0.10, 0.30, 0.80), (0.95, 0.80, 0.10), (0.10, 0.55, 0.25)]
        things.append(_Thing("sign", float(z), side * (verge + 1.0), 0.9,
                             float(rng.uniform(2.2, 3.2)), palette[rng.integers(len(palette))],
                             (0.95, 0.95, 0.95), shape=int(rng.integers(3))))
    # Trees in clumps along the verges.
    n_trees = rng.poisson(6 + road_length / 25)
    for z in rng.uniform(5, far * 0.5, n_trees):
        side = rng.choice([-1.0, 1.0])
        height = float(rng.uniform(5, 14))
        things.append(_Thing("tree", float(z), side * (verge + rng.uniform(2, 20)),
                             height * rng.uniform(0.4, 0.7), height,
                             _jitter(rng, (0.12, 0.30, 0.10), 0.3), (0.30, 0.20, 0.12)))
    return things


def _random_vehicles(rng: np.random.Generator, lane_offset: float, road_length: float, camera_speed: float) -> list:
    """Vehicles: ahead in our lane (moving with us) and oncoming."""
    things = []
    far = road_length + 1200.0
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
    return things


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


def _road_centre(scene: Scene, ahead, camera_z: float):
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


def draw_scene(scene: Scene, height: int, width: int, camera_z: float = 0.0, time: float = 0.0):
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
    h, w = parse_size(size)
    clear, depth = draw_scene(random_scene(rng), h, w)
    return np.clip(np.rint(clear * 255), 0, 255).astype(np.uint8), depth


def random_airlight(rng: np.random.Generator) -> np.ndarray:
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


def sensor_readout(rng: np.random.Generator, foggy: np.ndarray) -> np.ndarray:
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

    h, w = parse_size(size)
    visibility = sample_visibility(rng, fog_class, margin)
    beta = beta_from_visibility(visibility)
    clear, depth = draw_scene(random_scene(rng), 2 * h, 2 * w)
    airlight = random_airlight(rng)
    foggy = apply_fog(clear, depth, beta, airlight)
    foggy = cv2.resize(foggy, (w, h), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return FogSample(sensor_readout(rng, foggy), depth, beta, visibility, fog_class,
                     tuple(float(a) for a in airlight))
