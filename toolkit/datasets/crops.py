"""Cropping data augmentation: square crops of large images, labelled by the boxes they contain.

The talk's wood classifier is trained on crops of the boards, not on whole boards: a defect that
is 1 % of a board fills a good part of a 128-px crop. ``edgecam train DIR --crop SIZE`` reads
``DIR`` (folder-per-class, with ``boxes.json``) through :func:`load_crops`.

**The label rule.** A crop takes the class of a box when at least ``min_fraction`` (default
0.5) of that box's area lies inside the crop (the box with the largest share wins); a crop that
holds no part of any box is background (``sound``); a crop that holds a sliver of a box (more
than 0 and less than ``min_fraction``) is ambiguous and is drawn again (after 20 draws it is left
out). Images of the background class without boxes give background crops only.

**The sampling.** Per image, ``per_image`` crops: for an image with boxes, half of them are
placed so that a random box lies wholly inside (when it fits; else centred on it), the other
half uniformly; images without boxes are cropped uniformly. Each image's crops draw from their
own child of ``SeedSequence(seed)``. Every crop remembers its image (``groups``), so the held-out
split and the folds of ``edgecam train`` (grouped, :func:`toolkit.train.stratified_group_folds`)
keep all crops of a board on one side.

numpy + OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host._io import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError, OutputError, SourceError
from firmware_host.imageio import list_images, read_image

from .boxes import LabelledBox, read_boxes, write_boxes

__all__ = ["MIN_FRACTION", "CropSet", "box_fraction_inside", "crop_label", "sample_crops", "load_crops",
           "write_crops"]

#: Share of a box's area a crop must hold to take the box's class.
MIN_FRACTION = 0.5
_DRAWS = 20


@dataclass(frozen=True)
class CropSet:
    """Crops and their labels. Unpacks as ``x, y, class_names``.

    Attributes:
        x: ``(N, S, S, 3)`` uint8 RGB crops.
        y: ``(N,)`` int64 class indices into ``class_names``.
        class_names: class order.
        groups: ``(N,)`` the source image of each crop (its path relative to the dataset).
        origins: ``(N, 2)`` int ``(y, x)`` of each crop in its image.
        boxes: per crop, the boxes (crop coordinates, clipped) that gave its label.
    """

    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    class_names: Tuple[str, ...]
    groups: np.ndarray = field(repr=False)
    origins: np.ndarray = field(repr=False)
    boxes: Tuple[Tuple[LabelledBox, ...], ...] = field(repr=False)

    def __iter__(self):
        return iter((self.x, self.y, self.class_names))


def box_fraction_inside(box: Sequence[float], origin: Tuple[int, int], size: int) -> float:
    """Share of ``box`` ``(x0, y0, x1, y1)``'s area inside the ``size`` crop at ``origin`` ``(y, x)``.

    A box of zero area counts as inside (1.0) when its corner is in the crop, else 0.0.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cy, cx = origin
    ix = max(0.0, min(x1, cx + size) - max(x0, cx))
    iy = max(0.0, min(y1, cy + size) - max(y0, cy))
    area = (x1 - x0) * (y1 - y0)
    if area <= 0:
        return float(cx <= x0 < cx + size and cy <= y0 < cy + size)
    return ix * iy / area


def crop_label(boxes: Sequence[LabelledBox], origin: Tuple[int, int], size: int, background: str,
               min_fraction: float = MIN_FRACTION) -> Optional[Tuple[str, Tuple[LabelledBox, ...]]]:
    """The crop's class and the boxes that gave it, or None when ambiguous (rule in the module docstring)."""
    shares = [box_fraction_inside(b.box, origin, size) for b in boxes]
    inside = [(s, b) for s, b in zip(shares, boxes) if s >= min_fraction]
    if inside:
        label = max(inside, key=lambda t: t[0])[1].label
        cy, cx = origin
        kept = tuple(LabelledBox(b.label, (max(b.box[0] - cx, 0.0), max(b.box[1] - cy, 0.0),
                                           min(b.box[2] - cx, size), min(b.box[3] - cy, size)))
                     for _, b in inside)
        return label, kept
    if any(s > 0 for s in shares):
        return None
    return background, ()


def _placed(rng: np.random.Generator, box, shape, size) -> Tuple[int, int]:
    """A crop origin that holds ``box`` wholly (random among those), or centred on it if too big."""
    h, w = shape
    x0, y0, x1, y1 = box
    out = []
    for lo_edge, hi_edge, length in ((y0, y1, h), (x0, x1, w)):
        lo = max(0, int(np.ceil(hi_edge)) - size)
        hi = min(int(np.floor(lo_edge)), length - size)
        if lo <= hi:
            out.append(int(rng.integers(lo, hi + 1)))
        else:
            out.append(int(np.clip(round((lo_edge + hi_edge - size) / 2), 0, length - size)))
    return out[0], out[1]


def sample_crops(rng: np.random.Generator, image: np.ndarray, boxes: Sequence[LabelledBox], size: int,
                 per_image: int, background: str, min_fraction: float = MIN_FRACTION
                 ) -> List[Tuple[Tuple[int, int], str, Tuple[LabelledBox, ...]]]:
    """``[(origin (y, x), label, boxes in crop coordinates), …]`` for one image (module docstring).

    Raises:
        InputError: the image is smaller than the crop.
    """
    h, w = image.shape[:2]
    if h < size or w < size:
        raise InputError(f"--crop {size} is larger than an image of {w}x{h}. Pass a smaller --crop.")
    out = []
    for k in range(per_image):
        for _ in range(_DRAWS):
            if boxes and k < per_image // 2:
                origin = _placed(rng, boxes[int(rng.integers(len(boxes)))].box, (h, w), size)
            else:
                origin = (int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)))
            labelled = crop_label(boxes, origin, size, background, min_fraction)
            if labelled is not None:
                out.append((origin, *labelled))
                break
    return out


def _class_names(root: Path) -> Tuple[str, ...]:
    labels = root / "labels.txt"
    if labels.is_file():
        return tuple(line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip())
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))


def load_crops(directory: Union[str, Path], size: int, per_image: int = 8, seed: int = 0,
               background: str = "sound", min_fraction: float = MIN_FRACTION) -> CropSet:
    """Read a folder-per-class dataset with ``boxes.json`` and cut labelled crops of every image.

    Images are read one at a time (memory holds the crops, not the boards).

    Args:
        directory: the dataset (``edgecam dataset wood`` writes one).
        size: crop side in pixels.
        per_image: crops per image.
        seed: sampling seed.
        background: the class of crops without a defect; must be one of the dataset's classes.
        min_fraction: see :func:`crop_label`.

    Raises:
        SourceError: no folder, no ``boxes.json``, or no readable image.
        InputError: bad size, a background that is not a class, a box of an unknown class.
    """
    root = Path(directory)
    boxes_file = root / "boxes.json"
    if not root.is_dir() or not boxes_file.is_file():
        raise SourceError(f"--crop needs a dataset folder with boxes.json; '{root}' has none. Make one with "
                          "`edgecam dataset wood --out DIR`, or train without --crop.")
    if int(size) < 32 or int(per_image) < 1:
        raise InputError(f"--crop must be at least 32 px and crops per image at least 1. Got {size}, {per_image}.")
    boxes = read_boxes(boxes_file)
    names = _class_names(root)
    if background not in names:
        raise InputError(f"The background class {background!r} is not among the dataset's classes "
                         f"({', '.join(names)}).")
    index = {n: i for i, n in enumerate(names)}
    xs, ys, groups, origins, kept = [], [], [], [], []
    files = [(name, path) for name in names if (root / name).is_dir() for path in list_images(root / name)]
    children = np.random.SeedSequence(seed).spawn(max(len(files), 1))
    for (name, path), child in zip(files, children):
        image = read_image(path, rgb=True)
        if image is None:
            continue
        rel = path.relative_to(root).as_posix()
        own = boxes.get(rel, ())
        unknown = [b.label for b in own if b.label not in index]
        if unknown:
            raise InputError(f"'{boxes_file}': {rel} has a box of class {unknown[0]!r}, which is not a class "
                             f"of the dataset ({', '.join(names)}).")
        for (oy, ox), label, crop_boxes in sample_crops(np.random.default_rng(child), image, own, int(size),
                                                        int(per_image), background, min_fraction):
            xs.append(image[oy:oy + size, ox:ox + size])
            ys.append(index[label])
            groups.append(rel)
            origins.append((oy, ox))
            kept.append(crop_boxes)
    if not xs:
        raise SourceError(f"No readable image in '{root}' to crop (classes {', '.join(names)}).")
    return CropSet(np.stack(xs), np.asarray(ys, np.int64), names, np.asarray(groups), np.asarray(origins),
                   tuple(kept))


def write_crops(out_dir: Union[str, Path], crops: CropSet) -> Path:
    """Write crops as a folder-per-class dataset with its own ``boxes.json`` (crop coordinates).

    Raises:
        OutputError: the folder is not writable or already holds a class folder with files.
    """
    import cv2

    out = ensure_writable_dir(out_dir)
    for name in crops.class_names:
        folder = out / name
        if folder.is_dir() and any(folder.iterdir()):
            raise OutputError(f"'{folder}' already holds files. Choose an empty folder for the crops.")
        folder.mkdir(exist_ok=True)
    boxes: Dict[str, Tuple[LabelledBox, ...]] = {}
    for i, (crop, label) in enumerate(zip(crops.x, crops.y)):
        rel = f"{crops.class_names[int(label)]}/crop_{i:06d}.png"
        ok, png = cv2.imencode(".png", np.ascontiguousarray(crop[..., ::-1]))
        if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
            raise OutputError(f"OpenCV could not encode '{rel}'.")
        atomic_write_bytes(out / rel, png.tobytes(), durable=False)
        boxes[rel] = crops.boxes[i]
    atomic_write_text(out / "labels.txt", "\n".join(crops.class_names) + "\n")
    write_boxes(out / "boxes.json", boxes)
    return out
