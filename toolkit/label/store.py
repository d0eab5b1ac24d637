"""Labels on disk: ``DIR/labels.csv`` (file, label, time), rewritten atomically after every change.

A frame is named by its path relative to ``DIR`` (POSIX). ``labels.csv`` holds one row per frame
that has been labelled or skipped (label ``skipped``), sorted by file; rows for files that are no
longer in ``DIR`` are kept. ``DIR/labels.txt`` holds the classes in key order (1…N), the same file
and order ``edgecam train`` reads in a dataset root, so a restart needs no ``--classes``.

Every change goes through :meth:`LabelStore.set` or :meth:`LabelStore.undo`, which rewrite the
whole file through ``firmware_host._io`` (temp file, fsync, rename): a crash or Ctrl-C at any
moment leaves the previous or the new complete file, never half of one.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from firmware_host._io import atomic_write_text
from firmware_host.errors import InputError
from toolkit.validate import csv_cell, csv_text

__all__ = [
    "CLASSES_FILE",
    "COLUMNS",
    "LABELS_FILE",
    "MAX_CLASSES",
    "SKIPPED",
    "LabelRow",
    "LabelStore",
    "format_labels",
    "parse_classes",
    "read_classes",
    "read_labels",
    "write_classes",
]

LABELS_FILE = "labels.csv"
CLASSES_FILE = "labels.txt"
COLUMNS = ("file", "label", "time")
#: The label of a skipped frame: not a class, left out of the export, not asked again.
SKIPPED = "skipped"
#: Keys 1…9 label a frame.
MAX_CLASSES = 9
# A class name becomes a folder name on export and a CSV cell: a word character first (so never
# a spreadsheet formula, a hidden folder or ".."), then words, spaces, dots, plus and minus.
_CLASS_NAME = re.compile(r"\w[\w .+-]{0,62}", re.UNICODE)

Folder = Union[str, Path]


def parse_classes(classes: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    """``"dense-fog,moderate-fog,…"`` (or a sequence) → the class names, checked.

    Raises:
        InputError: no class, more than :data:`MAX_CLASSES`, a repeated name, ``skipped``, or a
            name that is not a plain folder name.
    """
    names = [c.strip() for c in (classes.split(",") if isinstance(classes, str) else classes)]
    names = [c for c in names if c]
    if not names:
        raise InputError("--classes needs at least one class name, e.g. --classes dense-fog,light-fog,no-fog.")
    if len(names) > MAX_CLASSES:
        raise InputError(f"--classes has {len(names)} classes; keys 1-{MAX_CLASSES} label at most {MAX_CLASSES}. "
                         "Merge some classes or label in two passes.")
    for name in names:
        if not _CLASS_NAME.fullmatch(name) or name.endswith((".", " ")):
            raise InputError(
                f"Class name {name!r} is not a plain folder name: start with a letter or digit, then use "
                "letters, digits, spaces, '.', '+', '-' or '_' (at most 63 characters).")
        if name.casefold() == SKIPPED:
            raise InputError(f"'{SKIPPED}' is what the s key records; choose another class name.")
    folded = [n.casefold() for n in names]
    repeated = sorted({n for n in names if folded.count(n.casefold()) > 1})
    if repeated:
        raise InputError(f"--classes names {', '.join(repeated)} more than once (case-insensitively); "
                         "each class becomes a folder, so names must differ.")
    return tuple(names)


def read_classes(folder: Folder) -> Optional[Tuple[str, ...]]:
    """The classes saved in ``DIR/labels.txt`` by an earlier session, or None."""
    path = Path(folder) / CLASSES_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the saved classes '{path}': {exc}. Pass --classes again.") from exc
    return parse_classes(text.splitlines())


def write_classes(folder: Folder, classes: Sequence[str]) -> Path:
    """Save ``classes`` (key order) to ``DIR/labels.txt``, atomically."""
    return atomic_write_text(Path(folder) / CLASSES_FILE, "".join(f"{c}\n" for c in classes))


@dataclass(frozen=True)
class LabelRow:
    """One row of ``labels.csv``.

    Attributes:
        file: the frame, relative to the labelled folder (POSIX).
        label: a class name, or :data:`SKIPPED`.
        time: when it was set, ISO 8601 UTC (``2026-12-01T17:55:02Z``).
    """

    file: str
    label: str
    time: str


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_labels(path: Folder) -> Dict[str, LabelRow]:
    """Rows of a ``labels.csv`` by file (the last row wins if a file repeats); ``{}`` if absent.

    Cells written inert for spreadsheets (a leading ``'``) are read back as they were given.

    Raises:
        InputError: not UTF-8, no ``file,label,time`` header, or a row without a file or label.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read '{path}': {exc}. Restore it from a copy or move it away to start again.") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return {}
    if tuple(h.strip() for h in header[:3]) != COLUMNS:
        raise InputError(f"'{path}' does not start with the header {','.join(COLUMNS)} (found {header[:3]}). "
                         "It is not an edgecam labels file; move it away.")
    rows: Dict[str, LabelRow] = {}
    for line, cells in enumerate(reader, start=2):
        if not cells:
            continue
        cells = [csv_text(c) for c in cells] + ["", "", ""]
        if not cells[0] or not cells[1]:
            raise InputError(f"'{path}' line {line}: a row needs a file and a label (found {cells[:3]}). "
                             "Fix or delete that line.")
        rows[cells[0]] = LabelRow(cells[0], cells[1], cells[2])
    return rows


def format_labels(rows: Iterable[LabelRow], extra: Optional[Mapping[str, str]] = None) -> str:
    """``labels.csv`` text: header, then one row per label (cells made inert for spreadsheets).

    Args:
        rows: the rows, written in the order given.
        extra: column name → attribute of each row to add after ``time`` (used by the export).
    """
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    extra = dict(extra or {})
    writer.writerow([*COLUMNS, *extra])
    for row in rows:
        writer.writerow([csv_cell(row.file), csv_cell(row.label), csv_cell(row.time),
                         *(csv_cell(getattr(row, attr)) for attr in extra.values())])
    return out.getvalue()


def _lock_folder(folder: Path) -> Optional[int]:
    """An exclusive lock on the folder for this session (released when the process ends, even killed).

    Two sessions on one folder would each rewrite ``labels.csv`` from their own memory, and the
    last one would erase the other's labels.

    Raises:
        InputError: another session holds it.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InputError(f"Another edgecam label session is labelling '{folder}'; two would overwrite each "
                         "other's labels. Use that one, or stop it first.") from None
    return fd


class LabelStore:
    """The labels of one folder's frames, saved after every change (thread-safe).

    The store locks the folder while it is open (:meth:`close`): one session per folder.

    Args:
        folder: the labelled folder; ``labels.csv`` is read from and written to it.
        classes: the class names (key order).
        files: the frames that may be labelled (relative POSIX names).

    Raises:
        InputError: ``labels.csv`` is unreadable, or names a label that is not in ``classes``, or
            another session has the folder open.
    """

    def __init__(self, folder: Folder, classes: Sequence[str], files: Sequence[str]) -> None:
        self.path = Path(folder) / LABELS_FILE
        self.classes = tuple(classes)
        self.files = frozenset(files)
        self._rows = read_labels(self.path)
        unknown = sorted({r.label for r in self._rows.values()} - set(self.classes) - {SKIPPED})
        if unknown:
            raise InputError(
                f"'{self.path}' has labels that are not in --classes: {', '.join(unknown)}. Add them to "
                f"--classes (now {','.join(self.classes)}) or edit the file.")
        self._undo: List[Tuple[str, Optional[LabelRow]]] = []
        self._lock = threading.Lock()
        self._folder_lock = _lock_folder(Path(folder))

    def close(self) -> None:
        """Let another session label the folder (every change is already saved). Idempotent."""
        if self._folder_lock is not None:
            os.close(self._folder_lock)
            self._folder_lock = None

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def label(self, file: str) -> Optional[str]:
        """The label of ``file`` (a class or :data:`SKIPPED`), None when it has none."""
        row = self._rows.get(file)
        return row.label if row else None

    def counts(self) -> Dict[str, int]:
        """Labelled frames per class (every class listed) and ``skipped``, among ``files``."""
        counts = {name: 0 for name in (*self.classes, SKIPPED)}
        with self._lock:
            rows = list(self._rows.values())
        for row in rows:
            if row.file in self.files:
                counts[row.label] += 1
        return counts

    def set(self, file: str, label: str) -> LabelRow:
        """Label (or skip) ``file`` and save; the change can be undone.

        Raises:
            InputError: ``file`` is not one of the frames, or ``label`` is not a class nor ``skipped``.
        """
        if file not in self.files:
            raise InputError(f"'{file}' is not one of the frames being labelled.")
        if label not in self.classes and label != SKIPPED:
            raise InputError(f"Label {label!r} is not one of {', '.join(self.classes)} or '{SKIPPED}'.")
        with self._lock:
            row = LabelRow(file, label, _now())
            self._undo.append((file, self._rows.get(file)))
            self._rows[file] = row
            self._save()
        return row

    def undo(self) -> Optional[str]:
        """Undo the latest :meth:`set` of this session and save; return its file (None: nothing to undo)."""
        with self._lock:
            if not self._undo:
                return None
            file, previous = self._undo.pop()
            if previous is None:
                self._rows.pop(file, None)
            else:
                self._rows[file] = previous
            self._save()
        return file

    def _save(self) -> None:
        atomic_write_text(self.path, format_labels(sorted(self._rows.values(), key=lambda r: r.file)))
