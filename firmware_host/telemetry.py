"""One line of ``edgecam run --log``: the :class:`TelemetryRecord` type and its one tolerant reader.

The telemetry sink writes a record with :meth:`TelemetryRecord.to_json`; every reader of a run
log (``firmware_host.sinks.read_jsonl``, ``edgecam validate --from-log``) parses it back with
:func:`read_records` (typed records) or :func:`read_objects` (raw JSON objects), so there is one
set of rules for what a good line is. The schema is the table in ``docs/run.md``.

API (stable names):

* :class:`TelemetryRecord` — frozen; ``from_explanation(...)`` (the writer's constructor, values
  rounded as logged), ``from_dict(d, line=0, *, num_classes=None, cam_shape=None,
  require_finite=False)`` (raises :class:`~firmware_host.errors.InputError` naming the broken
  field), ``to_dict()`` / ``to_json()`` (one line, no newline), ``frame_file(log_dir)`` (the
  saved frame, only if it lies under ``log_dir``).
* :class:`BadRecord` — a line that is not a usable record: ``line`` (1-based), ``reason``
  (``"malformed"``: not JSON, cut, nested too deep or too long; ``"not_object"``: JSON but not
  an object; ``"invalid"``: an object whose fields break the rules), ``detail`` and ``last``
  (True for an unterminated last line, which is what a power cut mid-write leaves).
* :func:`read_records(path, ...) <read_records>` — ``Iterator[TelemetryRecord | BadRecord]``;
  never raises for the content of a line: ``1e400``, 4000-digit integers, 100,000-deep arrays,
  NaN, wrong types, binary garbage all become :class:`BadRecord`. Blank lines are skipped.
* :func:`read_objects(path) <read_objects>` — ``Iterator[LogLine | BadRecord]``, the JSON level
  only (no field checks).
* :class:`RunHeader` — the first line ``edgecam run`` writes in every log (segment): schema
  ``edgecam.run/1``, ``vehicle``, the model file's ``model_sha256``, its metadata's
  ``source_model_sha256``, ``model_name``, ``plan`` and ``started``. :func:`read_records` skips
  header lines (they are not records, and not counted as broken) unless ``headers=True``, which
  yields them; :func:`read_header` returns a log's header (None for logs written before it).

Both readers raise :class:`~firmware_host.errors.InputError` only when the file itself cannot be
read (missing, a directory, a FIFO or device, an I/O error).

Rules of a valid record (:meth:`TelemetryRecord.from_dict`): ``class_index`` (int),
``probabilities`` (non-empty list of numbers) and ``cam`` (non-empty rectangular ``h × w`` list
of numbers) are required; ``null`` stands for a non-finite number and reads as NaN;
``predicted_index`` defaults to the argmax of ``probabilities`` and ``frame`` to ``line - 1``;
both indices must lie in ``[0, K)``. Integers are JSON integers (or integral floats), never
booleans. ``vehicle`` and ``model`` (the source-model sha256, else the model file's) are
optional strings. Unknown keys are kept in ``extra``.

No TensorFlow: numpy and the standard library.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError

__all__ = [
    "TelemetryRecord", "BadRecord", "LogLine", "RunHeader", "read_records", "read_objects", "read_header",
    "check_vehicle_id", "HEADER_SCHEMA", "MAX_LINE_CHARS",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Longest line read as a record (characters); a longer one is a :class:`BadRecord`. A 56×56
#: CAM at 4 significant digits is about 30 KB, so this leaves room for any real map.
MAX_LINE_CHARS = 16 << 20

# The fields the writer emits, in the order it emits them (the on-disk key order).
_FIELDS = (
    "timestamp", "frame", "class_index", "label", "predicted_index", "confidence", "probabilities",
    "latency_ms", "cam", "peak", "frame_path", "shown_index", "shown_label", "smoothed_probabilities", "plan",
    "vehicle", "model",
)

#: ``header`` of the first line of a run log (major version after the slash).
HEADER_SCHEMA = "edgecam.run/1"
_HEADER_PREFIX = "edgecam.run/"

# A vehicle id: short, printable, safe as a file or folder name and in a URL.
_VEHICLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def check_vehicle_id(value: Any) -> str:
    """``value`` if it is a valid vehicle id (``--vehicle-id``), else :class:`InputError`.

    A vehicle id is 1 to 64 characters: ASCII letters, digits, ``.``, ``_``, ``:`` and ``-``,
    starting with a letter or digit (``van-07``, ``bus_12``, ``fleet:0042``).
    """
    if not isinstance(value, str) or not _VEHICLE_ID.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise InputError(
            "--vehicle-id ID must be 1 to 64 ASCII letters, digits, '.', '_', ':' or '-', starting "
            f"with a letter or digit (e.g. van-07). Got: {shown}."
        )
    return value


def _finite_or_none(values: np.ndarray) -> list:
    """Nested list of ``values`` with NaN/±inf as ``None`` (JSON has no NaN)."""
    out = values.astype(object)
    out[~np.isfinite(values)] = None
    return out.tolist()


def _scalar_or_none(value: Optional[float]):
    return None if value is None or not math.isfinite(value) else value


def _significant(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (small CAMs keep their shape)."""
    flat = [float(f"{v:.{digits}g}") if math.isfinite(v) else math.nan for v in values.ravel().tolist()]
    return np.asarray(flat, dtype=np.float64).reshape(values.shape)


@dataclass(frozen=True, eq=False)
class TelemetryRecord:
    """One line of a run log, with the values as written (rounded, ``null`` read as NaN).

    Attributes:
        frame: frame index in the source.
        class_index: the class ``cam`` explains (the shown class).
        predicted_index: argmax of ``probabilities``.
        probabilities: ``(K,)`` float64 raw probabilities of the frame.
        cam: ``(h, w)`` float64 CAM at feature-map resolution, ReLU'd, not normalised.
        timestamp: unix seconds when grabbed (an ISO string in foreign logs), or None.
        label: name of ``class_index``, or None.
        confidence: ``probabilities[class_index]`` as logged (NaN if logged as null), or None.
        latency_ms: interpreter time, or None.
        peak: ``(row, col)`` of the CAM maximum, or None.
        frame_path: the saved frame, relative to the log's directory, or None.
        shown_index / shown_label: the hysteresis class drawn on screen, or None.
        smoothed_probabilities: ``(K,)`` EMA of the probabilities (``--smooth`` > 0), or None.
        plan: the model's precision plan (``int8``, ``float16`` …), so fleet validation can split
            by it, or None when unknown.
        vehicle: the ``--vehicle-id`` of the run, or None.
        model: the sha256 (hex) of the model's source Keras file, else of the model file itself,
            or None in logs written before it was recorded.
        extra: keys this version does not know, as read.
        line: 1-based line in the file read from (0 when not read from a file).

    Compare records with ``a.to_dict() == b.to_dict()`` (they hold arrays).
    """

    frame: int
    class_index: int
    predicted_index: int
    probabilities: np.ndarray
    cam: np.ndarray
    timestamp: Union[float, str, None] = None
    label: Optional[str] = None
    confidence: Optional[float] = None
    latency_ms: Optional[float] = None
    peak: Optional[Tuple[int, int]] = None
    frame_path: Optional[str] = None
    shown_index: Optional[int] = None
    shown_label: Optional[str] = None
    smoothed_probabilities: Optional[np.ndarray] = None
    plan: Optional[str] = None
    vehicle: Optional[str] = None
    model: Optional[str] = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0

    # -- writing ----------------------------------------------------------------------------
    @classmethod
    def from_explanation(
        cls,
        explanation,
        *,
        frame: int,
        timestamp: float,
        shown_index: Optional[int] = None,
        shown_label: Optional[str] = None,
        smoothed_probabilities: Optional[np.ndarray] = None,
        cam_digits: int = 4,
        plan: Optional[str] = None,
        vehicle: Optional[str] = None,
        model: Optional[str] = None,
    ) -> "TelemetryRecord":
        """The record of one explained frame, rounded as it is logged.

        Args:
            explanation: a :class:`~firmware_host.Explanation` (or anything with its
                ``probabilities``, ``class_index``, ``predicted_index``, ``label``,
                ``confidence``, ``latency_ms``, ``cam`` and ``peak()``).
            frame / timestamp: the frame's index and grab time (unix seconds).
            shown_index / shown_label: the class on screen after smoothing and hysteresis.
            smoothed_probabilities: the EMA of the probabilities, logged when given.
            cam_digits: significant digits kept in ``cam``.
            plan: the model's precision plan (its metadata's ``quantization``), logged when given.
            vehicle / model: the run's vehicle id and model hash (:class:`RunHeader`), when given.
        """
        smoothed = None
        if smoothed_probabilities is not None:
            smoothed = np.round(np.asarray(smoothed_probabilities, dtype=np.float64).reshape(-1), 6)
        return cls(
            frame=int(frame),
            class_index=int(explanation.class_index),
            predicted_index=int(explanation.predicted_index),
            probabilities=np.round(np.asarray(explanation.probabilities, dtype=np.float64).reshape(-1), 6),
            cam=_significant(np.asarray(explanation.cam, dtype=np.float64), int(cam_digits)),
            timestamp=round(float(timestamp), 6),
            label=explanation.label,
            confidence=round(float(explanation.confidence), 6),
            latency_ms=round(float(explanation.latency_ms), 3),
            peak=tuple(int(v) for v in explanation.peak()),  # type: ignore[arg-type]
            shown_index=None if shown_index is None else int(shown_index),
            shown_label=shown_label,
            smoothed_probabilities=smoothed,
            plan=plan,
            vehicle=vehicle,
            model=model,
        )

    def with_frame_path(self, frame_path: Optional[str]) -> "TelemetryRecord":
        """A copy naming the saved frame (a path relative to the log's directory)."""
        return replace(self, frame_path=frame_path)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object of this record, keys in the writer's order; NaN/inf become ``None``."""
        values = {
            "timestamp": self.timestamp,
            "frame": self.frame,
            "class_index": self.class_index,
            "label": self.label,
            "predicted_index": self.predicted_index,
            "confidence": _scalar_or_none(self.confidence),
            "probabilities": _finite_or_none(self.probabilities),
            "latency_ms": _scalar_or_none(self.latency_ms),
            "cam": _finite_or_none(self.cam),
            "peak": None if self.peak is None else list(self.peak),
            "frame_path": self.frame_path,
            "shown_index": self.shown_index,
            "shown_label": self.shown_label,
            "smoothed_probabilities": (
                None if self.smoothed_probabilities is None else _finite_or_none(self.smoothed_probabilities)
            ),
            "plan": self.plan,
            "vehicle": self.vehicle,
            "model": self.model,
        }
        # Absent optional fields stay absent (a null confidence is kept: it was logged as null).
        out = {k: v for k, v in values.items() if v is not None or (k == "confidence" and self.confidence is not None)}
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    def to_json(self) -> str:
        """One line of JSON (no trailing newline), strict: never ``NaN`` or ``Infinity``."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelemetryRecord):
            return NotImplemented
        return self.to_dict() == other.to_dict() and self.line == other.line

    __hash__ = None  # type: ignore[assignment]

    # -- reading ----------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        line: int = 0,
        *,
        num_classes: Optional[int] = None,
        cam_shape: Optional[Sequence[int]] = None,
        require_finite: bool = False,
    ) -> "TelemetryRecord":
        """Parse one JSON object of a run log (the rules are in the module docstring).

        Args:
            data: the decoded JSON object.
            line: its 1-based line number (``frame`` defaults to ``line - 1``).
            num_classes: K the probabilities must have, or None for any.
            cam_shape: ``(h, w)`` the CAM must have, or None for any.
            require_finite: refuse records whose probabilities or CAM hold null/NaN/inf.

        Raises:
            InputError: a required field is missing or a field breaks the rules (the message
                names the field).
        """
        if not isinstance(data, Mapping):
            raise InputError(f"a telemetry record is a JSON object. Got {type(data).__name__}.")
        probs = _numbers(_required(data, "probabilities"), 1, "probabilities")
        cam = _numbers(_required(data, "cam"), 2, "cam")
        k = probs.size
        class_index = _index(_required(data, "class_index"), "class_index", k)
        if "predicted_index" in data:
            predicted = _index(data["predicted_index"], "predicted_index", k)
        else:
            predicted = int(np.argmax(np.nan_to_num(probs, nan=-np.inf)))
        if num_classes is not None and k != num_classes:
            raise InputError(f"probabilities has {k} classes; the model has {num_classes}.")
        if cam_shape is not None and tuple(cam.shape) != tuple(cam_shape[:2]):
            raise InputError(f"cam is {cam.shape[0]}x{cam.shape[1]}; the model's map is {cam_shape[0]}x{cam_shape[1]}.")
        if require_finite and not (np.isfinite(probs).all() and np.isfinite(cam).all()):
            raise InputError("probabilities or cam hold null/NaN/inf (a failing model or sensor).")
        smoothed = data.get("smoothed_probabilities")
        return cls(
            frame=_integer(data["frame"], "frame") if "frame" in data else max(0, line - 1),
            class_index=class_index,
            predicted_index=predicted,
            probabilities=probs,
            cam=cam,
            timestamp=_optional(data, "timestamp", (float, str), _timestamp),
            label=_optional(data, "label", (str,)),
            confidence=_optional(data, "confidence", (float,), lambda v, n: _number(v, n), nullable=True),
            latency_ms=_optional(data, "latency_ms", (float,), lambda v, n: _number(v, n)),
            peak=_optional(data, "peak", (list,), _peak),
            frame_path=_optional(data, "frame_path", (str,)),
            shown_index=_optional(data, "shown_index", (int,), lambda v, n: _index(v, n, k)),
            shown_label=_optional(data, "shown_label", (str,)),
            smoothed_probabilities=None if smoothed is None else _numbers(smoothed, 1, "smoothed_probabilities"),
            plan=_optional(data, "plan", (str,)),
            vehicle=_optional(data, "vehicle", (str,)),
            model=_optional(data, "model", (str,)),
            extra={key: value for key, value in data.items() if key not in _FIELDS},
            line=int(line),
        )

    def frame_file(self, log_dir: PathLike) -> Optional[Path]:
        """The saved frame as a path under ``log_dir``, or None.

        None when the record names no frame, or names one outside the log's folder: absolute
        paths, ``..`` that climb out, or symlinks that lead out are refused, so a crafted log
        cannot make a reader open any file of the host.
        """
        if not self.frame_path or "\x00" in self.frame_path:
            return None
        rel = Path(self.frame_path)
        if rel.is_absolute() or rel.drive or ".." in rel.parts:
            return None
        base = Path(log_dir)
        try:
            resolved = (base / rel).resolve()
            resolved.relative_to(base.resolve())
        except (OSError, ValueError, RuntimeError):
            return None
        return base / rel


@dataclass(frozen=True)
class RunHeader:
    """The first line of every run log (and of every rotated segment): which run this is.

    On disk: ``{"header": "edgecam.run/1", "vehicle": ..., "model_sha256": ...,
    "source_model_sha256": ..., "model_name": ..., "plan": ..., "started": ...}``.

    Attributes:
        vehicle: ``--vehicle-id``, or None.
        model_sha256: sha256 (hex) of the model file that ran (``.tflite``/``.onnx``), or None.
        source_model_sha256: sha256 (hex) of the Keras file it was converted from (its
            metadata's ``source["sha256"]``), or None. Fleet validation matches ``--keras``
            files by it.
        model_name: the model file's name, or None.
        plan: the model's precision plan, or None.
        started: unix seconds when the run started, or None.
        schema: ``edgecam.run/<major>``.
        extra: keys this version does not know, as read.
        line: 1-based line in the file read from (0 when not read from a file).
    """

    vehicle: Optional[str] = None
    model_sha256: Optional[str] = None
    source_model_sha256: Optional[str] = None
    model_name: Optional[str] = None
    plan: Optional[str] = None
    started: Optional[float] = None
    schema: str = HEADER_SCHEMA
    extra: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0

    _KEYS = ("vehicle", "model_sha256", "source_model_sha256", "model_name", "plan", "started")

    @property
    def model(self) -> Optional[str]:
        """The hash frame records carry in ``model``: the source model's, else the model file's."""
        return self.source_model_sha256 or self.model_sha256

    @staticmethod
    def is_header(data: Any) -> bool:
        """Whether a decoded JSON line is a run header (an object whose ``header`` is ``edgecam.run/…``)."""
        return isinstance(data, Mapping) and isinstance(data.get("header"), str) and data["header"].startswith(
            _HEADER_PREFIX)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"header": self.schema}
        out.update((key, getattr(self, key)) for key in self._KEYS)
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    def to_json(self) -> str:
        """One line of JSON (no trailing newline)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], line: int = 0) -> "RunHeader":
        """Parse a header line (:meth:`is_header` must be true).

        Raises:
            InputError: not a header, or a field of the wrong type (the message names it).
        """
        if not cls.is_header(data):
            raise InputError(f"a run header is an object with \"header\": \"{HEADER_SCHEMA}\".")
        started = _optional(data, "started", (float,), lambda v, n: _number(v, n))
        return cls(
            vehicle=_optional(data, "vehicle", (str,)),
            model_sha256=_optional(data, "model_sha256", (str,)),
            source_model_sha256=_optional(data, "source_model_sha256", (str,)),
            model_name=_optional(data, "model_name", (str,)),
            plan=_optional(data, "plan", (str,)),
            started=None if started is None or not math.isfinite(started) else started,
            schema=data["header"],
            extra={k: v for k, v in data.items() if k != "header" and k not in cls._KEYS},
            line=int(line),
        )


# -- field parsers: each raises InputError naming the field ------------------------------------


def _required(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise InputError(f"field {name!r} is missing.")
    return data[name]


def _optional(data, name, kinds, parse=None, nullable: bool = False):
    """An optional field: absent (or null) → None; ``parse(value, name)`` checks it."""
    value = data.get(name)
    if value is None:
        return math.nan if (nullable and name in data) else None
    if parse is not None:
        return parse(value, name)
    if not isinstance(value, kinds):
        raise InputError(f"field {name!r} must be {kinds[0].__name__}. Got {type(value).__name__}.")
    return value


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"field {name!r} must be an integer. Got {type(value).__name__}.")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InputError(f"field {name!r} must be an integer. Got {value!r}.")
    if abs(value) > 2**62:
        raise InputError(f"field {name!r} is out of range (more than 2**62 in magnitude).")
    return int(value)


def _index(value: Any, name: str, k: int) -> int:
    index = _integer(value, name)
    if not 0 <= index < k:
        raise InputError(f"field {name!r} = {index} is outside [0, {k}) for {k} probabilities.")
    return index


def _number(value: Any, name: str) -> float:
    """A JSON number (``None`` reads as NaN: the writer logs non-finite values as null)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"field {name!r} holds a {type(value).__name__}, not a number.")
    try:
        return float(value)
    except OverflowError:  # a 400-digit integer
        raise InputError(f"field {name!r} holds an integer too large for a float.") from None


def _numbers(value: Any, ndim: int, name: str) -> np.ndarray:
    """A non-empty (rectangular, for ``ndim`` 2) nested list of numbers → float64 array."""
    rows = [value] if ndim == 1 else value
    if not isinstance(rows, list) or not rows:
        raise InputError(f"field {name!r} must be a non-empty {'list' if ndim == 1 else 'list of rows'}.")
    width = None
    out = []
    for row in rows:
        if not isinstance(row, list) or not row:
            raise InputError(f"field {name!r} must hold non-empty lists of numbers.")
        if width is not None and len(row) != width:
            raise InputError(f"field {name!r} is ragged (rows of {width} and {len(row)} values).")
        width = len(row)
        out.append([_number(v, name) for v in row])
    arr = np.asarray(out, dtype=np.float64)
    return arr[0] if ndim == 1 else arr


def _timestamp(value: Any, name: str) -> Union[float, str]:
    return value if isinstance(value, str) else _number(value, name)


def _peak(value: Any, name: str) -> Tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise InputError(f"field {name!r} must be [row, col].")
    return _integer(value[0], name), _integer(value[1], name)


# -- the reader ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """A line of a run log that holds a JSON object (not yet checked as a record)."""

    line: int
    value: Dict[str, Any]
    last: bool = False


@dataclass(frozen=True)
class BadRecord:
    """A line that is not a usable record (see the module docstring for ``reason``)."""

    line: int
    reason: str
    detail: str
    last: bool = False


def _open_log(path: PathLike):
    """Open a log for reading; FIFOs and devices are refused (opening one could block forever)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise IsADirectoryError(0, kind)
        return open(path, "r", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(
            f"Cannot read log '{path}': {exc.strerror or exc}. Pass the .jsonl file written by "
            "edgecam run --log."
        ) from exc


def _lines(handle, path: PathLike) -> Iterator[Tuple[int, Optional[str], bool]]:
    """``(number, text, last)`` per line; ``text`` None when the line is over MAX_LINE_CHARS."""
    number = 0
    try:
        while True:
            text = handle.readline(MAX_LINE_CHARS)
            if not text:
                return
            number += 1
            if text.endswith("\n"):
                yield number, text, False
                continue
            if len(text) < MAX_LINE_CHARS:  # no newline before the end of the file: a cut line
                yield number, text, True
                return
            while text and not text.endswith("\n"):  # skip the rest of an over-long line
                text = handle.readline(MAX_LINE_CHARS)
            yield number, None, not text
    except OSError as exc:
        raise InputError(f"Reading log '{path}' failed: {exc.strerror or exc}.") from exc


_KINDS = {list: "array", str: "string", bool: "boolean", type(None): "null"}


def read_objects(path: PathLike) -> Iterator[Union[LogLine, BadRecord]]:
    """The JSON objects of a run log, line by line, with :class:`BadRecord` for broken lines.

    Raises:
        InputError: the file cannot be opened or read (not for what a line holds).
    """
    with _open_log(path) as handle:
        for number, text, last in _lines(handle, path):
            if text is None:
                yield BadRecord(number, "malformed", f"longer than {MAX_LINE_CHARS} characters", last)
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:  # also a 4000-digit integer (int max str digits)
                yield BadRecord(number, "malformed", str(exc), last)
                continue
            except RecursionError:  # absurdly nested arrays
                yield BadRecord(number, "malformed", "nested too deeply", last)
                continue
            if not isinstance(value, dict):
                kind = _KINDS.get(type(value), "number")
                yield BadRecord(number, "not_object", f"a JSON {kind}, not an object", last)
                continue
            yield LogLine(number, value, last)


def read_records(
    path: PathLike,
    *,
    num_classes: Optional[int] = None,
    cam_shape: Optional[Sequence[int]] = None,
    require_finite: bool = False,
    headers: bool = False,
) -> Iterator[Union[TelemetryRecord, BadRecord, RunHeader]]:
    """The records of a run log, in file order; broken lines come as :class:`BadRecord`.

    Args:
        path: the ``.jsonl`` file.
        num_classes / cam_shape / require_finite: as :meth:`TelemetryRecord.from_dict`; a
            record that fails them is a ``BadRecord`` with reason ``"invalid"``.
        headers: also yield the :class:`RunHeader` lines (skipped otherwise: a header is not
            a record, and not a broken one). A header with a field of the wrong type is a
            ``BadRecord`` with reason ``"invalid"`` either way.

    Raises:
        InputError: the file cannot be opened or read.

    Example:
        >>> good = [r for r in read_records("run.jsonl") if isinstance(r, TelemetryRecord)]
    """
    for item in read_objects(path):
        if isinstance(item, BadRecord):
            yield item
            continue
        try:
            if RunHeader.is_header(item.value):
                header = RunHeader.from_dict(item.value, item.line)
                if headers:
                    yield header
                continue
            yield TelemetryRecord.from_dict(
                item.value, item.line, num_classes=num_classes, cam_shape=cam_shape,
                require_finite=require_finite,
            )
        except InputError as exc:
            yield BadRecord(item.line, "invalid", str(exc), item.last)


def read_header(path: PathLike) -> Optional[RunHeader]:
    """The :class:`RunHeader` on the first non-blank line of a run log, or None (older logs).

    Reads one line only. A broken first line gives None; :func:`read_records` reports it.

    Raises:
        InputError: the file cannot be opened or read.
    """
    for item in read_objects(path):
        if isinstance(item, LogLine) and RunHeader.is_header(item.value):
            try:
                return RunHeader.from_dict(item.value, item.line)
            except InputError:
                return None
        return None
    return None
