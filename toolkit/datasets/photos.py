"""Fogging the user's own clear road photos: a horizon depth prior instead of true depth."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from firmware_host.errors import SourceError
from firmware_host.imageio import IMAGE_SUFFIXES, list_images

from .folder import fit_image, read_images
from .physics import SKY_DEPTH_M, apply_fog, beta_from_visibility, sample_visibility
from .scene import FogSample, random_airlight, sensor_readout

__all__ = ["estimate_horizon", "horizon_depth_prior", "fog_photo", "load_photos"]


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


def fog_photo(rng, photo: np.ndarray, fog_class: str, h: int, w: int, margin: float) -> FogSample:
    """Fog a clear photo with the horizon depth prior (at 2× size, then area-downsampled)."""
    import cv2

    clear = fit_image(photo, 2 * h, 2 * w)
    depth = horizon_depth_prior(clear.shape[:2], estimate_horizon(clear))
    visibility = sample_visibility(rng, fog_class, margin)
    beta = beta_from_visibility(visibility)
    airlight = random_airlight(rng)
    foggy = apply_fog(clear.astype(np.float32) / 255.0, depth, beta, airlight)
    foggy = cv2.resize(foggy, (w, h), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return FogSample(sensor_readout(rng, foggy), depth, beta, visibility, fog_class,
                     tuple(float(a) for a in airlight))


def load_photos(directory: Path) -> List[Tuple[Path, np.ndarray]]:
    """The readable photos of ``directory`` as ``(path, RGB image)``; warns about the others.

    Raises:
        SourceError: not a folder, or no readable image in it.
    """
    if not directory.is_dir():
        raise SourceError(f"--images must be a folder of road photos. '{directory}' is not a directory.")
    photos, skipped = read_images(list_images(directory))
    if not photos:
        raise SourceError(
            f"No readable image in '{directory}' ({skipped} unreadable). Put clear-weather road "
            f"photos ({', '.join(IMAGE_SUFFIXES)}) there."
        )
    if skipped:
        warnings.warn(f"Skipped {skipped} unreadable file(s) in '{directory}'.", stacklevel=3)
    return photos
