"""Writing a fog dataset to disk: ``out/<class>/fog_000000.png``, labels.txt, dataset.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from firmware_host._io import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError, OutputError

from .folder import Size, parse_size
from .photos import fog_photo, load_photos
from .physics import (CLASS_NAMES, CLASS_VISIBILITY_RANGES_M, DEFAULT_MARGIN, IMBALANCE_RATIOS,
                      VISIBILITY_THRESHOLDS_M)
from .scene import sample

__all__ = ["class_counts", "generate_dataset", "prepare_dataset_dir"]


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


def prepare_dataset_dir(out: Path, class_names=CLASS_NAMES, kind: str = "fog") -> None:
    """Refuse to mix a new dataset with unknown files; remove the images of a previous run.

    Args:
        out: the dataset root (created).
        class_names: the class folders that must be empty unless ``dataset.json`` lists their files.
        kind: the dataset's name in the error message (``fog``, ``wood``).
    """
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
    for name in class_names:
        folder = out / name
        if folder.is_dir() and any(folder.iterdir()):
            raise OutputError(
                f"'{folder}' already contains files that are not from an edgecam {kind} dataset. "
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
    h, w = parse_size(size)
    counts = class_counts(int(n), imbalance)
    out = Path(out_dir)
    photos = None
    if images_dir is not None:
        photos = load_photos(Path(images_dir))
    prepare_dataset_dir(out)
    for name in CLASS_NAMES:
        (out / name).mkdir(exist_ok=True)
    entries = _write_images(out, counts, seed, (h, w), photos, margin, progress)
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


def _write_images(out: Path, counts: Dict[str, int], seed: int, size: Tuple[int, int],
                  photos: Optional[list], margin: float, progress: bool) -> List[dict]:
    """Render (or fog a photo for) every image in shuffled class order; return the manifest entries.

    Each image draws from its own child of ``SeedSequence(seed)``: reproducible image by image.
    """
    import cv2
    from tqdm.auto import tqdm

    h, w = size
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
            item = fog_photo(rng, photo, name, h, w, margin)
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
    return entries
