"""Whole-board inference: explain a large image as tiles and stitch the tile maps into one map.

A model trained on 128-px crops of 512-px wood boards (``edgecam train --crop``) sees one crop
at a time; ``edgecam run``/``predict --tiles SIZE[:STRIDE]`` cut each frame into ``SIZE`` × ``SIZE``
tiles every ``STRIDE`` pixels (the last row and column of tiles are moved back so they end on the
frame's edge: every pixel is covered), explain all tiles in one batch, and stitch:

* **maps** (:func:`stitch`): every tile's map is spread over its tile's pixels (each map cell
  covers ``SIZE / h`` × ``SIZE / w`` pixels), overlapping tiles are **averaged** pixel by pixel,
  and the result is area-averaged onto the frame's cell grid — ``round(H·h/SIZE)`` ×
  ``round(W·w/SIZE)`` cells, the resolution of one tile's map. When the tile origins fall on
  cell boundaries this is exactly the mean of the overlapping cells. All tiles explain the same
  class, so their raw (ReLU'd, not normalised) maps share one scale;
* **probabilities** (:func:`board_probabilities`): with a background class (``sound``,
  :data:`BACKGROUND_NAMES`), the frame is background only if every tile is: the background gets
  the *smallest* tile probability, every other class its *largest* (a defect anywhere is a
  defect), then they are renormalised to sum to 1. Without a background class, the mean over tiles.

The explained class is the frame's (the argmax of those probabilities, or the one asked for);
tiles that predicted another class are explained again for it. The result is an ordinary
:class:`~firmware_host.model.Explanation` whose ``cam`` is the stitched map, so the run loop, the
sinks and the telemetry log work unchanged.

No TensorFlow: numpy and OpenCV.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError
from .model import Explanation

__all__ = ["TileSpec", "parse_tiles", "tile_origins", "cut_tiles", "stitch", "board_probabilities",
           "TiledModel", "BACKGROUND_NAMES", "MAX_TILES"]

#: Class names taken as "no defect" when the background is not given.
BACKGROUND_NAMES = ("sound", "background", "normal", "ok", "no-defect", "none")
#: Refuse frames that would need more tiles than this (a stride of 1 on a 4K frame).
MAX_TILES = 4096
_BATCH = 64


@dataclass(frozen=True)
class TileSpec:
    """Tiles of ``size`` × ``size`` pixels every ``stride`` pixels."""

    size: int
    stride: int

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 8192:
            raise InputError(f"--tiles SIZE must be in [8, 8192] pixels. Got {self.size}.")
        if not 1 <= self.stride <= self.size:
            raise InputError(f"--tiles STRIDE must be in [1, SIZE={self.size}] (no gaps between tiles). "
                             f"Got {self.stride}.")

    def __str__(self) -> str:
        return f"{self.size}:{self.stride}"


def parse_tiles(value: Any) -> Optional[TileSpec]:
    """``"128"`` → 128-px tiles with stride 64 (half a tile); ``"128:96"`` → stride 96.

    Also accepts a :class:`TileSpec`, an int, or a ``(size, stride)`` pair; ``None`` stays None.

    Raises:
        InputError: not ``SIZE`` or ``SIZE:STRIDE`` with integers in range.
    """
    if value is None or isinstance(value, TileSpec):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    text = str(value).strip()
    match = re.fullmatch(r"(\d{1,5})(?::(\d{1,5}))?", text)
    if not match:
        raise InputError(f"--tiles must be SIZE or SIZE:STRIDE in pixels, e.g. 128 or 128:64. Got {text[:40]!r}.")
    size = int(match.group(1))
    stride = int(match.group(2)) if match.group(2) else max(size // 2, 1)
    return TileSpec(size, stride)


def tile_origins(length: int, size: int, stride: int) -> Tuple[int, ...]:
    """Start of each tile along one axis: ``0, stride, 2·stride, …`` then ``length − size``.

    Raises:
        InputError: the axis is shorter than a tile.
    """
    if length < size:
        raise InputError(f"The image is {length} px along one side, smaller than the {size}-px tiles. "
                         "Pass a smaller --tiles SIZE or a larger image.")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return tuple(starts)


def cut_tiles(image: np.ndarray, spec: TileSpec) -> Tuple[List[np.ndarray], List[Tuple[int, int]]]:
    """The tiles of ``image`` ``(H, W[, C])`` and their ``(y, x)`` origins, row by row.

    Raises:
        InputError: the image is smaller than a tile, or would need more than :data:`MAX_TILES`.
    """
    h, w = image.shape[:2]
    ys = tile_origins(h, spec.size, spec.stride)
    xs = tile_origins(w, spec.size, spec.stride)
    if len(ys) * len(xs) > MAX_TILES:
        raise InputError(f"--tiles {spec} cuts a {w}x{h} image into {len(ys) * len(xs)} tiles (at most "
                         f"{MAX_TILES}). Pass a larger STRIDE.")
    origins = [(y, x) for y in ys for x in xs]
    return [image[y:y + spec.size, x:x + spec.size] for y, x in origins], origins


def stitch(maps: Sequence[np.ndarray], origins: Sequence[Tuple[int, int]], tile: int,
           shape: Tuple[int, int], out_shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """One map over the whole image from the tiles' maps; overlaps averaged.

    Args:
        maps: ``(h, w)`` map of each tile (all the same shape), e.g. raw CAMs.
        origins: ``(y, x)`` pixel origin of each tile.
        tile: tile size in pixels (each map covers ``tile`` × ``tile`` pixels).
        shape: the image's ``(H, W)``.
        out_shape: the stitched map's ``(rows, cols)``; default the image on the tiles' cell grid,
            ``(round(H·h/tile), round(W·w/tile))``.

    Returns:
        ``out_shape`` float32: pixel-wise mean of the covering tiles' cells, area-averaged onto
        the output grid. Pixels no tile covers count as 0.
    """
    import cv2

    stack = np.asarray(maps, dtype=np.float32)
    if stack.ndim != 3 or len(stack) != len(origins) or len(stack) == 0:
        raise InputError(f"stitch needs one (h, w) map per tile origin. Got {stack.shape} maps for "
                         f"{len(origins)} origins.")
    height, width = int(shape[0]), int(shape[1])
    h, w = stack.shape[1:]
    if out_shape is None:
        out_shape = (max(int(round(height * h / tile)), 1), max(int(round(width * w / tile)), 1))
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.int32)
    for m, (y, x) in zip(stack, origins):
        # Nearest-neighbour spreads each cell over the pixels it covers, no blending across cells.
        up = cv2.resize(m, (tile, tile), interpolation=cv2.INTER_NEAREST)
        y1, x1 = min(y + tile, height), min(x + tile, width)
        total[y:y1, x:x1] += up[: y1 - y, : x1 - x]
        count[y:y1, x:x1] += 1
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0).astype(np.float32)
    if mean.shape == tuple(out_shape):
        return mean
    return cv2.resize(mean, (int(out_shape[1]), int(out_shape[0])), interpolation=cv2.INTER_AREA)


def board_probabilities(probs: np.ndarray, background: Optional[int]) -> np.ndarray:
    """The frame's ``(K,)`` probabilities from its tiles' ``(N, K)`` (rule in the module docstring)."""
    p = np.asarray(probs, dtype=np.float64)
    if background is None:
        out = p.mean(axis=0)
    else:
        out = p.max(axis=0)
        out[background] = p[:, background].min()
    total = out.sum()
    return (out / total if total > 0 else np.full(p.shape[1], 1.0 / p.shape[1])).astype(np.float32)


def _background_index(classes: Sequence[str], background: Optional[str]) -> Optional[int]:
    if background is not None:
        if background not in classes:
            raise InputError(f"Background class {background!r} is not one of the model's classes "
                             f"({', '.join(classes)}).")
        return list(classes).index(background)
    for i, name in enumerate(classes):
        if name.lower() in BACKGROUND_NAMES:
            return i
    return None


class TiledModel:
    """Wraps an :class:`~firmware_host.ExplainableModel`: ``explain(frame)`` explains the frame
    as tiles and returns one :class:`~firmware_host.model.Explanation` with the stitched map.

    Args:
        model: the explainable model (anything with ``explain_batch``, ``classes``, ``metadata``).
        spec: the tiles (:func:`parse_tiles`).
        background: the "no defect" class; default the class named like one of
            :data:`BACKGROUND_NAMES`, else none (mean of the tiles' probabilities).
    """

    def __init__(self, model, spec: TileSpec, background: Optional[str] = None) -> None:
        self.model = model
        self.spec = parse_tiles(spec)
        self.background = _background_index(tuple(model.classes), background)

    @property
    def classes(self) -> Tuple[str, ...]:
        return tuple(self.model.classes)

    @property
    def metadata(self):
        return getattr(self.model, "metadata", None)

    @property
    def path(self):
        return getattr(self.model, "path", None)

    def _explain(self, tiles: List[np.ndarray], class_index: Optional[int]) -> List[Explanation]:
        out: List[Explanation] = []
        for start in range(0, len(tiles), _BATCH):
            out.extend(self.model.explain_batch(tiles[start:start + _BATCH], class_index=class_index))
        return out

    def explain(self, image: np.ndarray, class_index: Optional[int] = None) -> Explanation:
        """Explain ``image`` (uint8 RGB ``(H, W, 3)`` or gray, at least one tile in size) as tiles."""
        tiles, origins = cut_tiles(np.asarray(image), self.spec)
        exps = self._explain(tiles, class_index)
        latency = sum(e.latency_ms for e in exps[::_BATCH])  # explain_batch shares one latency per batch
        probs = board_probabilities(np.stack([e.probabilities for e in exps]), self.background)
        chosen = int(np.argmax(probs)) if class_index is None else int(class_index)
        redo = [i for i, e in enumerate(exps) if e.class_index != chosen]
        if redo:
            again = self._explain([tiles[i] for i in redo], chosen)
            latency += sum(e.latency_ms for e in again[::_BATCH])
            for i, e in zip(redo, again):
                exps[i] = e
        cam = stitch([e.cam for e in exps], origins, self.spec.size, image.shape[:2])
        first = exps[0]
        return Explanation(probabilities=probs, class_index=chosen, predicted_index=int(np.argmax(probs)),
                           label=self.classes[chosen], cam=cam, latency_ms=latency,
                           approximate=first.approximate, classes=self.classes)

    def explain_batch(self, images: Sequence[np.ndarray], class_index=None) -> List[Explanation]:
        """:meth:`explain` for each image (``class_index``: None, one int, or one per image)."""
        idx = np.broadcast_to(np.asarray(-1 if class_index is None else class_index), (len(images),))
        return [self.explain(img, None if int(c) < 0 else int(c)) for img, c in zip(images, idx)]
