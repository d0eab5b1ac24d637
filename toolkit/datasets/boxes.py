"""``boxes.json``: where the defects of a dataset's images are (numpy-free, standard library).

Written by ``edgecam dataset wood`` and by the wood demo's held-out crops; read by
``edgecam train --crop`` (crop labels) and ``edgecam validate`` (pointing game, energy in box)::

    {"format": "edgecam-boxes", "version": 1,
     "images": {"knot/wood_000003.png": [{"class": "knot", "box": [x0, y0, x1, y1]}],
                "sound/wood_000000.png": []}}

Keys are image paths relative to the folder holding ``boxes.json`` (POSIX separators); boxes are
pixels of that image, ``x0 ≤ x < x1``, ``y0 ≤ y < y1``. An image with an empty list has no
defect; an image not listed has no ground truth.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple, Union

from firmware_host._io import atomic_write_text
from firmware_host.errors import InputError

__all__ = ["BOXES_FORMAT", "MAX_BOXES_BYTES", "LabelledBox", "read_boxes", "write_boxes"]

BOXES_FORMAT = "edgecam-boxes"
#: A boxes.json larger than this is refused (a million boards' worth).
MAX_BOXES_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LabelledBox:
    """One defect: its class and its pixel box ``(x0, y0, x1, y1)``."""

    label: str
    box: Tuple[float, float, float, float]


def _box(value, where: str) -> Tuple[float, float, float, float]:
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise InputError(f"{where}: a box must be [x0, y0, x1, y1] numbers. Got {str(value)[:60]}.")
    x0, y0, x1, y1 = (float(v) for v in value)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
        raise InputError(f"{where}: a box needs finite x0 <= x1 and y0 <= y1. Got {value}.")
    return x0, y0, x1, y1


def read_boxes(path: Union[str, Path]) -> Dict[str, Tuple[LabelledBox, ...]]:
    """Image path (relative, POSIX) → its boxes, from a ``boxes.json``.

    Raises:
        InputError: the file is too large, not JSON, or not in the format above (the message
            names the file and the entry).
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BOXES_BYTES:
            raise InputError(f"'{path}' is larger than {MAX_BOXES_BYTES >> 20} MiB; a boxes.json is not.")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"'{path}' cannot be read as a boxes.json ({exc}). Regenerate it with "
                         "`edgecam dataset wood`.") from exc
    if not isinstance(data, dict) or data.get("format") != BOXES_FORMAT or not isinstance(data.get("images"), dict):
        raise InputError(f"'{path}' is not a boxes.json: expected an object with \"format\": \"{BOXES_FORMAT}\" "
                         "and an \"images\" object (see docs/wood.md).")
    out: Dict[str, Tuple[LabelledBox, ...]] = {}
    for name, entries in data["images"].items():
        where = f"'{path}', image {name[:80]!r}"
        if not isinstance(entries, list):
            raise InputError(f"{where}: expected a list of boxes. Got {type(entries).__name__}.")
        boxes = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
                raise InputError(f"{where}: each box is {{\"class\": NAME, \"box\": [x0, y0, x1, y1]}}.")
            boxes.append(LabelledBox(entry["class"], _box(entry.get("box"), where)))
        out[str(name)] = tuple(boxes)
    return out


def write_boxes(path: Union[str, Path], boxes: Mapping[str, Sequence[LabelledBox]]) -> Path:
    """Write ``boxes.json`` atomically (the inverse of :func:`read_boxes`)."""
    images = {name: [{"class": b.label, "box": [round(v, 2) for v in b.box]} for b in entries]
              for name, entries in boxes.items()}
    return atomic_write_text(path, json.dumps({"format": BOXES_FORMAT, "version": 1, "images": images},
                                              indent=1) + "\n")
