"""Procedural wood boards with small defects and their boxes: the talk's second case.

"Solving wood heterogeneous texture classification: a deep learning approach with cropping data
augmentation" classifies wood surfaces whose texture varies a lot from board to board. This
module renders such boards (numpy + OpenCV, vectorised; no TensorFlow):

* **growth rings** — the surface of a flat-sawn board cuts the tree's rings at a slant, which
  draws stretched arches ("cathedrals"). A ring's phase is a random piecewise-linear function of
  the distance to the pith, so ring widths vary ring by ring; low-frequency warp noise bends the
  rings (varying curvature); latewood is a sharp dark band at the end of each ring;
* **grain noise** — streaks stretched along the grain (the board's length, x), pores, and a
  large, faint colour blotch;
* **colour between boards** — earlywood colour from pale pine to mid oak, latewood darker by a
  random factor: the "heterogeneous texture".

Classes (:data:`CLASS_NAMES`), one defect per defect board, each small against the board (about
0.3–2 % of its area on a 512 × 512 board; sizes scale with the board):

* ``sound`` — no defect;
* ``knot`` — an oval, dark branch section (ring pattern and dark rim) that the grain bends around;
* ``crack`` — a thin, tapering, jagged check running roughly along the grain;
* ``resin`` — a resin pocket: a lens of dark amber resin along the grain, with a glossy highlight
  and a faint stain around it.

Every defect's bounding box ``[x0, y0, x1, y1]`` (pixels, x1/y1 exclusive) is recorded. The
dataset on disk (:func:`generate_wood_dataset`) is folder-per-class (``edgecam train`` reads it)
with ``boxes.json``; its layout is in docs/wood.md.

Layouts: images ``(H, W, 3)`` RGB (float32 0–1 from the renderer, uint8 on disk); sizes are
``(height, width)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from firmware_host._io import atomic_write_bytes, atomic_write_text
from firmware_host.errors import InputError, OutputError

from .boxes import LabelledBox, write_boxes
from .folder import Size, parse_size
from .writer import prepare_dataset_dir

__all__ = ["CLASS_NAMES", "BACKGROUND", "DEFECTS", "BOXES_FILE", "WoodBoard", "render_board",
           "wood_counts", "generate_wood_dataset"]

#: The classes, background first. Folder names of the dataset and ``labels.txt`` order.
CLASS_NAMES = ("sound", "knot", "crack", "resin")
#: The class of a board, or crop, without a defect.
BACKGROUND = "sound"
DEFECTS = CLASS_NAMES[1:]
#: The boxes of a dataset, keyed by image path relative to the dataset root.
BOXES_FILE = "boxes.json"

# Earlywood colours (RGB 0–1) of the palest and the darkest species boards draw between.
_PALE = np.array([0.90, 0.78, 0.58], np.float32)
_DARK = np.array([0.62, 0.42, 0.26], np.float32)


@dataclass(frozen=True)
class WoodBoard:
    """One rendered board.

    Attributes:
        image: ``(H, W, 3)`` float32 RGB in [0, 1].
        label: a name in :data:`CLASS_NAMES`.
        boxes: one ``(x0, y0, x1, y1)`` int pixel box per defect (empty for ``sound``).
        earlywood: the board's earlywood colour (RGB 0–1).
        ring_width: the mean ring width in pixels.
    """

    image: np.ndarray
    label: str
    boxes: Tuple[Tuple[int, int, int, int], ...]
    earlywood: Tuple[float, float, float]
    ring_width: float


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], cells: Tuple[int, int]) -> np.ndarray:
    """Zero-mean, unit-ish noise at ``cells`` resolution, cubic-resized to ``shape`` ``(h, w)``."""
    import cv2

    coarse = rng.standard_normal((max(cells[0], 2), max(cells[1], 2))).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _ellipse_distance(xx, yy, cx, cy, rx, ry):
    """Normalised elliptical distance: 1 on the ellipse ``(cx, cy, rx, ry)``."""
    return np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)


def _ring_phase(rng: np.random.Generator, r: np.ndarray, width: float) -> np.ndarray:
    """Ring number (float) at distance ``r``: rings of random width around ``width`` pixels."""
    n = int(r.max() / (0.4 * width)) + 4
    widths = width * rng.lognormal(0.0, 0.35, n)
    radii = np.concatenate([[0.0], np.cumsum(widths)])
    return np.interp(r, radii, np.arange(n + 1, dtype=np.float64)).astype(np.float32)


def _knot_geometry(rng, h, w, scale):
    ry = rng.uniform(11, 22) * scale
    rx = ry * rng.uniform(1.0, 1.6)
    cx = rng.uniform(rx + 8 * scale, w - rx - 8 * scale)
    cy = rng.uniform(ry + 8 * scale, h - ry - 8 * scale)
    return cx, cy, rx, ry


def render_board(rng: np.random.Generator, label: str, size: Size = 512) -> WoodBoard:
    """Render one board of class ``label`` (see the module docstring).

    Args:
        rng: the random generator (one per board keeps datasets reproducible board by board).
        label: a name in :data:`CLASS_NAMES`.
        size: ``(height, width)`` or int; at least 64 px each way.

    Raises:
        InputError: unknown label or a board smaller than 64 × 64.
    """
    if label not in CLASS_NAMES:
        raise InputError(f"label must be one of {', '.join(CLASS_NAMES)}. Got {label!r}.")
    h, w = parse_size(size)
    if min(h, w) < 64:
        raise InputError(f"A wood board must be at least 64 × 64 px. Got {(h, w)}.")
    scale = min(h, w) / 512.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    knot = _knot_geometry(rng, h, w, scale) if label == "knot" else None

    # Distance to the pith: the pith runs along x, above or below the board (or through it),
    # and the slanted cut stretches the rings along x (the arches of a flat-sawn board).
    width = rng.uniform(7, 16) * scale
    pith_y = rng.uniform(-0.6, 1.6) * h
    slant = rng.uniform(0.08, 0.35)
    apex_x = rng.uniform(0.1, 0.9) * w
    r = np.sqrt((yy - pith_y) ** 2 + (slant * (xx - apex_x)) ** 2)
    # Warp: bends rings by up to a few ring widths (curvature varies over the board).
    r += rng.uniform(1.0, 3.0) * width * _smooth_noise(rng, (h, w), (4, 6))
    if knot is not None:
        cx, cy, rx, ry = knot
        # The grain flows around the branch: rings bulge around the knot.
        r += 1.2 * ry * np.exp(-0.5 * _ellipse_distance(xx, yy, cx, cy, 1.4 * rx, 1.4 * ry) ** 2)
    phase = _ring_phase(rng, np.abs(r), width)
    t = phase - np.floor(phase)
    latewood = t ** rng.uniform(3.0, 7.0)

    early = (_PALE + rng.uniform(0, 1) * (_DARK - _PALE)) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
    late = early * rng.uniform(0.55, 0.8) * np.array([1.0, 0.93, 0.85], np.float32)
    streaks = _smooth_noise(rng, (h, w), (h // 3, max(w // 48, 2)))
    blotch = _smooth_noise(rng, (h, w), (3, 3))
    pores = rng.standard_normal((h, w)).astype(np.float32)
    shade = 1.0 + 0.06 * streaks + 0.05 * blotch + 0.025 * pores
    image = (early + latewood[..., None] * (late - early)) * shade[..., None]

    boxes: List[Tuple[float, float, float, float]] = []
    if knot is not None:
        boxes.append(_draw_knot(rng, image, xx, yy, knot, late))
    elif label == "crack":
        boxes.append(_draw_crack(rng, image, h, w, scale))
    elif label == "resin":
        boxes.append(_draw_resin(rng, image, xx, yy, h, w, scale))
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    int_boxes = tuple(_int_box(b, h, w) for b in boxes)
    return WoodBoard(image, label, int_boxes, tuple(float(v) for v in early), float(width))


def _int_box(box, h: int, w: int) -> Tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0),
            min(int(np.ceil(x1)), w), min(int(np.ceil(y1)), h))


def _blend(image: np.ndarray, alpha: np.ndarray, colour) -> None:
    """``image = image·(1 − α) + colour·α`` in place; ``colour`` an RGB or an ``(H, W, 3)`` field."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    image *= 1.0 - a
    image += a * colour


def _draw_knot(rng, image, xx, yy, knot, late):
    cx, cy, rx, ry = knot
    d = _ellipse_distance(xx, yy, cx, cy, rx, ry)
    inside = np.clip((1.0 - d) / 0.08, 0.0, 1.0)
    body = late * rng.uniform(0.45, 0.7) * (0.85 + 0.15 * np.cos(d * 2 * np.pi * rng.uniform(2.5, 4.5)))[..., None]
    _blend(image, inside, body)
    # The dark rim where the bark of the branch was enclosed.
    rim = np.exp(-0.5 * ((d - 1.0) / 0.07) ** 2) * rng.uniform(0.6, 0.9)
    _blend(image, rim, late * 0.35)
    pad = 1.15
    return cx - pad * rx, cy - pad * ry, cx + pad * rx, cy + pad * ry


def _draw_crack(rng, image, h, w, scale):
    import cv2

    length = rng.uniform(50, 110) * scale
    x0 = rng.uniform(8 * scale, w - length - 8 * scale)
    y0 = rng.uniform(16 * scale, h - 16 * scale)
    slope = np.tan(rng.uniform(-0.15, 0.15))
    n = max(int(length), 2)
    xs = x0 + np.arange(n, dtype=np.float32)
    # A jagged path: a smoothed random walk around a straight, slightly slanted line.
    walk = np.cumsum(rng.normal(0, 0.6 * scale, n)).astype(np.float32)
    walk = cv2.GaussianBlur(walk[None, :], (0, 0), 2.0).ravel()
    walk -= np.linspace(walk[0], walk[-1], n, dtype=np.float32)  # both ends on the line
    ys = y0 + slope * (xs - x0) + walk
    ys = np.clip(ys, 6 * scale, h - 6 * scale)
    half = rng.uniform(1.0, 2.0) * scale * np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 0.6 + 0.35
    c0, c1 = int(xs[0]), int(xs[0]) + n
    top = int(np.floor((ys - half).min())) - 3
    bottom = int(np.ceil((ys + half).max())) + 4
    top, bottom = max(top, 0), min(bottom, h)
    rows = np.arange(top, bottom, dtype=np.float32)[:, None]
    dist = np.abs(rows - ys[None, :]) - half[None, :]
    gap = np.clip(0.5 - dist, 0.0, 1.0)
    shadow = 0.35 * np.exp(-0.5 * (np.maximum(dist, 0) / 1.2) ** 2)
    region = image[top:bottom, c0:c1]
    _blend(region, shadow, region * 0.6)
    _blend(region, gap, np.array([0.10, 0.07, 0.05], np.float32))
    pad = 2.0
    return xs[0] - pad, (ys - half).min() - pad, xs[-1] + 1 + pad, (ys + half).max() + pad


def _draw_resin(rng, image, xx, yy, h, w, scale):
    rx = rng.uniform(16, 30) * scale
    ry = rng.uniform(5.0, 9.0) * scale
    cx = rng.uniform(rx + 10 * scale, w - rx - 10 * scale)
    cy = rng.uniform(ry + 14 * scale, h - ry - 14 * scale)
    # A lens along the grain: |v| < 1 − u², pointed at both ends.
    u = np.abs(xx - cx) / rx
    v = np.abs(yy - cy) / ry
    d = np.where(u < 1.0, v / np.maximum(1.0 - u * u, 1e-3), 10.0)
    stain = np.exp(-0.5 * (_ellipse_distance(xx, yy, cx, cy, 1.7 * rx, 3.0 * ry) / 1.0) ** 4) * rng.uniform(0.25, 0.4)
    _blend(image, stain, image * np.array([0.75, 0.62, 0.45], np.float32))
    inside = np.clip((1.0 - d) / 0.12, 0.0, 1.0)
    amber = np.array([0.38, 0.19, 0.05], np.float32) * rng.uniform(0.6, 1.0)
    gloss = np.exp(-0.5 * (((xx - cx + 0.3 * rx) / (0.35 * rx)) ** 2 + ((yy - cy + 0.35 * ry) / (0.3 * ry)) ** 2))
    _blend(image, inside, amber + (0.45 * gloss)[..., None] * np.array([1.0, 0.8, 0.5], np.float32))
    return cx - 1.7 * rx, cy - 1.6 * ry, cx + 1.7 * rx, cy + 1.6 * ry


def wood_counts(n: int) -> Dict[str, int]:
    """Boards per class: ``n`` split evenly (the first classes get the remainder)."""
    if n < 1:
        raise InputError(f"n must be >= 1 board. Got {n}.")
    k = len(CLASS_NAMES)
    return {name: n // k + (i < n % k) for i, name in enumerate(CLASS_NAMES)}


def generate_wood_dataset(out_dir, n: int, size: Size = 512, seed: int = 0, progress: bool = True) -> Path:
    """Write ``n`` boards: ``out/<class>/wood_000000.png``, ``labels.txt``, ``boxes.json``, ``dataset.json``.

    ``boxes.json`` maps each image path (relative to ``out``) to its defects:
    ``{"format": "edgecam-boxes", "version": 1, "images": {"knot/wood_000003.png":
    [{"class": "knot", "box": [x0, y0, x1, y1]}], "sound/wood_000000.png": [], ...}}``.
    ``dataset.json`` also holds each board's earlywood colour and mean ring width. Each board draws
    from its own child of ``SeedSequence(seed)``: reproducible board by board.

    Args:
        out_dir: output directory (must not hold foreign files in the class folders).
        n: number of boards, split evenly over :data:`CLASS_NAMES`.
        size: ``(height, width)`` or int (at least 64).
        seed: RNG seed.
        progress: show a progress bar.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        InputError: bad n/size; OutputError: ``out_dir`` not writable or not empty.
    """
    import cv2
    from tqdm.auto import tqdm

    h, w = parse_size(size)
    if min(h, w) < 64:
        raise InputError(f"A wood board must be at least 64 × 64 px. Got {(h, w)}.")
    counts = wood_counts(int(n))
    out = Path(out_dir)
    prepare_dataset_dir(out, CLASS_NAMES, "wood")
    for name in CLASS_NAMES:
        (out / name).mkdir(exist_ok=True)
    root = np.random.SeedSequence(seed)
    labels = np.concatenate([np.full(counts[c], i) for i, c in enumerate(CLASS_NAMES)])
    np.random.default_rng(root.spawn(1)[0]).shuffle(labels)
    entries, boxes = [], {}
    for index, child in enumerate(tqdm(root.spawn(len(labels)), desc="wood boards", unit="board",
                                       disable=not progress)):
        name = CLASS_NAMES[int(labels[index])]
        board = render_board(np.random.default_rng(child), name, (h, w))
        rel = f"{name}/wood_{index:06d}.png"
        pixels = np.rint(board.image * 255.0).astype(np.uint8)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(pixels[..., ::-1]))
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
            raise OutputError(f"OpenCV could not encode '{rel}' as PNG.")
        # No fsync per board; dataset.json, written durably last, marks completion.
        atomic_write_bytes(out / rel, png.tobytes(), durable=False)
        boxes[rel] = [LabelledBox(name, b) for b in board.boxes]
        entries.append({"file": rel, "class": name, "boxes": [list(b) for b in board.boxes],
                        "earlywood": [round(c, 4) for c in board.earlywood],
                        "ring_width_px": round(board.ring_width, 2)})
    atomic_write_text(out / "labels.txt", "\n".join(CLASS_NAMES) + "\n")
    write_boxes(out / BOXES_FILE, boxes)
    manifest = {"format": "edgecam-wood-dataset", "version": 1, "seed": int(seed), "size": [h, w],
                "n": len(entries), "classes": list(CLASS_NAMES), "background": BACKGROUND, "counts": counts,
                "boxes": BOXES_FILE, "images": entries}
    atomic_write_text(out / "dataset.json", json.dumps(manifest, indent=1) + "\n")
    return out
