"""Folder-per-class image datasets: read ``dir/<class>/*.png|jpg|…`` into arrays.

Generic (no fog in it): ``edgecam train`` reads its data with :func:`load_folder_dataset`, and
the fog generator writes datasets in this layout. numpy + OpenCV only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host.errors import InputError, SourceError
from firmware_host.imageio import IMAGE_SUFFIXES, list_images, read_image

__all__ = ["Size", "FolderDataset", "load_folder_dataset", "parse_size", "fit_image", "read_images"]

#: An image size: ``(height, width)``, or an int for a square.
Size = Union[int, Tuple[int, int], Sequence[int]]


def parse_size(size: Size) -> Tuple[int, int]:
    """``(height, width)`` from an int or a pair; at least 8×8.

    Raises:
        InputError: not an int or a pair of ints, or smaller than 8×8.
    """
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


def fit_image(image: np.ndarray, h: int, w: int) -> np.ndarray:
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


def read_images(paths: Sequence[Path]) -> Tuple[List[Tuple[Path, np.ndarray]], int]:
    """Decode each file to ``(H, W, 3)`` RGB uint8.

    Returns:
        ``([(path, image), …] of the readable files, number of unreadable files)``.
    """
    images, skipped = [], 0
    for path in paths:
        img = read_image(path, rgb=True)
        if img is None:
            skipped += 1
        else:
            images.append((path, img))
    return images, skipped



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
    h, w = parse_size(size)
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
        images, unreadable = read_images(list_images(folder))
        skipped += unreadable
        for path, img in images:
            xs.append(fit_image(img, h, w))
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
