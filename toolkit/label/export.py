"""``edgecam label DIR --export OUT``: labelled frames → the class-folder dataset ``edgecam train`` reads.

``OUT`` gets:

* ``OUT/<class>/<file>`` for every frame with a class (skipped frames are left out), hard-linked
  to the frame (copied where a link is not possible, or with ``copy=True``). A frame in a
  sub-folder of ``DIR`` keeps its path with ``/`` written ``__``, so class folders stay flat;
* ``OUT/labels.txt`` — the classes in key order (``edgecam train``'s class order);
* ``OUT/labels.csv`` — ``file`` (relative to ``OUT``), ``label``, ``time`` and ``source`` (the
  frame's path in ``DIR``): every exported image traces back to its frame;
* ``OUT/frames.json`` — when ``DIR`` has one (``edgecam frames``), its entries for the exported
  frames with ``file`` relative to ``OUT`` and their ``label``, so ``edgecam train --kfold``
  groups folds by source video (/work/coord contract: ``toolkit.frames.video_groups``).

The dataset is built in a hidden folder beside ``OUT`` and renamed into place, so ``OUT`` is
never half-written. An existing ``OUT`` is replaced only if it is empty or an earlier export.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from firmware_host._io import atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError, OutputError
from firmware_host.imageio import is_image_file

from .store import LABELS_FILE, SKIPPED, LabelRow, format_labels, read_classes, read_labels, write_classes

__all__ = ["EXPORT_MARKER", "ExportResult", "export_labels"]

#: Written in every export, so a later export may replace it (and nothing else).
EXPORT_MARKER = ".edgecam-label-export"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_labels` wrote.

    Attributes:
        out: the dataset folder.
        counts: exported images per class (every class listed).
        linked / copied: images hard-linked / copied.
        skipped: frames labelled ``skipped`` (left out).
        missing: labelled frames no longer in the folder (left out).
        provenance: ``OUT/frames.json`` when the folder had a frames index, else None.
    """

    out: Path
    counts: Dict[str, int]
    linked: int
    copied: int
    skipped: int
    missing: Tuple[str, ...] = field(default=())
    provenance: Optional[Path] = None


@dataclass(frozen=True)
class _Exported(LabelRow):
    """A label row of the export, with the frame it came from."""

    source: str = ""


def export_labels(folder, out, copy: bool = False, classes: Optional[Sequence[str]] = None) -> ExportResult:
    """Write the labelled frames of ``folder`` as a class-folder dataset in ``out`` (module docstring).

    Args:
        folder: the labelled folder (``labels.csv``, and ``labels.txt``/``frames.json`` if present).
        out: the dataset folder to write; outside ``folder``.
        copy: copy every image instead of hard-linking it.
        classes: the class order; default the folder's ``labels.txt``, else the labels found, sorted.

    Raises:
        InputError: no ``labels.csv``, a label outside ``classes``, or ``out`` inside ``folder``.
        OutputError: ``out`` exists and is neither empty nor an earlier export, or cannot be written.
    """
    folder, out = Path(folder), Path(out)
    rows = _labelled_rows(folder)
    classes = _export_classes(folder, rows, classes)
    _check_out(folder, out)
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        written, missing, linked = _place_images(folder, stage, rows, copy)
        write_classes(stage, classes)
        atomic_write_text(stage / LABELS_FILE, format_labels(written, extra={"source": "source"}))
        provenance = _carry_frames_index(folder, stage, written)
        (stage / EXPORT_MARKER).write_text("edgecam label --export\n", encoding="utf-8")
        _swap_into_place(stage, out)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(exc, OSError):  # a full disk, a folder that vanished: one line, nothing half-written
            raise OutputError(f"Writing the export to '{out}' failed: {exc.strerror or exc}. Check free space "
                              "and permissions; nothing was changed there.") from exc
        raise
    counts = {name: sum(1 for r in written if r.label == name) for name in classes}
    return ExportResult(out=out, counts=counts, linked=linked, copied=len(written) - linked,
                        skipped=sum(1 for r in rows if r.label == SKIPPED), missing=tuple(missing),
                        provenance=out / provenance.name if provenance else None)


def _labelled_rows(folder: Path) -> List[LabelRow]:
    path = folder / LABELS_FILE
    if not path.is_file():
        raise InputError(f"'{folder}' has no {LABELS_FILE}: label it first with edgecam label {folder} --classes ...")
    return sorted(read_labels(path).values(), key=lambda r: r.file)


def _export_classes(folder: Path, rows: Sequence[LabelRow], classes: Optional[Sequence[str]]) -> Tuple[str, ...]:
    found = sorted({r.label for r in rows} - {SKIPPED})
    classes = tuple(classes) if classes else (read_classes(folder) or tuple(found))
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise InputError(f"{folder / LABELS_FILE} has labels not in the classes {', '.join(classes)}: "
                         f"{', '.join(unknown)}. Pass --classes with every class.")
    return classes


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def _check_out(folder: Path, out: Path) -> None:
    src, dst = folder.resolve(), out.resolve()
    if _inside(dst, src) or _inside(src, dst):
        raise InputError(f"--export '{out}' and the labelled folder '{folder}' must not contain each other "
                         "(the exported images would be listed as frames next time). Choose a folder outside it.")
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"--export '{out}' is a file. Choose a folder.")
    if dst.is_dir() and any(dst.iterdir()) and not (dst / EXPORT_MARKER).is_file():
        raise OutputError(f"--export '{out}' is a folder that is not empty and not an earlier export; "
                          "nothing was written. Choose a new folder.")


def _flat_name(file: str) -> str:
    return file.replace("/", "__")


def _place_images(folder: Path, stage: Path, rows: Sequence[LabelRow], copy: bool):
    """Link or copy each labelled frame into ``stage/<class>/``; return (rows written, missing, linked)."""
    root = folder.resolve()
    written, missing, linked, taken = [], [], 0, set()
    for row in rows:
        if row.label == SKIPPED:
            continue
        source = folder / row.file
        # labels.csv may have been edited: a row naming a path outside the folder is not a frame.
        if not _inside(source.resolve(), root) or ".." in Path(row.file).parts or not is_image_file(source):
            missing.append(row.file)
            continue
        name, n = _flat_name(row.file), 1
        while f"{row.label}/{name}".casefold() in taken:  # a__b.png vs a/b.png; case-insensitive disks
            n += 1
            stem, suffix = os.path.splitext(_flat_name(row.file))
            name = f"{stem}-{n}{suffix}"
        taken.add(f"{row.label}/{name}".casefold())
        target = stage / row.label / name
        target.parent.mkdir(exist_ok=True)
        linked += _link_or_copy(source, target, copy)
        written.append(_Exported(f"{row.label}/{name}", row.label, row.time, source=row.file))
    return written, missing, linked


def _link_or_copy(source: Path, target: Path, copy: bool) -> bool:
    """Hard-link ``source`` to ``target`` (True), or copy it (False) when asked or when linking fails."""
    if not copy:
        try:
            os.link(source, target)
            return True
        except OSError:  # another file system, or links not allowed: copy instead
            pass
    shutil.copyfile(source, target)  # an OSError is reported by export_labels, naming OUT
    return False


def _carry_frames_index(folder: Path, stage: Path, written: Sequence[_Exported]) -> Optional[Path]:
    """``stage/frames.json``: the folder's frames index for the exported images, re-addressed."""
    from toolkit.frames import FRAMES_JSON, read_frames_index

    if not (folder / FRAMES_JSON).is_file():
        return None
    index = read_frames_index(folder / FRAMES_JSON)
    by_file = {entry["file"]: entry for entry in index["frames"]}
    frames = []
    for row in written:
        entry = by_file.get(row.source)
        if entry is not None:
            frames.append({**entry, "file": row.file, "label": row.label})
    path = stage / FRAMES_JSON
    atomic_write_text(path, json.dumps({**index, "frames": frames}, indent=1, allow_nan=False) + "\n")
    return path


def _swap_into_place(stage: Path, out: Path) -> None:
    """Rename the finished ``stage`` to ``out``; an earlier export there is removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.rename(out, old)
    try:
        os.rename(stage, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
