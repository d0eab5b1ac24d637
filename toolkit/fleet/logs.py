"""Run logs of a fleet: finding them, naming their vehicle and run, and reading their frames.

Records are parsed by :func:`firmware_host.telemetry.read_records`, the one reader of run logs,
with the rules of ``edgecam validate --from-log`` (:class:`toolkit.validate.RunLogReader`): a
record is scored here exactly when it would be there. A :class:`FleetLog` reads one log as a
stream: it yields a row per frame to score and keeps a :class:`LogTally` of everything else
(records, skips by reason, the class timeline), so memory does not grow with the log.
"""

from __future__ import annotations

import datetime as _dt
import glob
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host import cam as _cam
from firmware_host.errors import InputError
from firmware_host.telemetry import (BadRecord, LogLine, RunHeader, TelemetryRecord, read_header, read_objects,
                                     read_records)

__all__ = [
    "LogRef", "LogTally", "FleetLog", "discover_logs", "vehicle_and_run", "day_of",
    "SKIP_REASONS", "TIMELINE_POINTS",
]

#: Why a record is not validated (``fleet_summary.json``'s ``skipped``), in report order.
SKIP_REASONS = ("malformed", "invalid", "no_frame_path", "unreadable", "no_model", "sampled_out")
#: At most this many ``[t, class, model]`` points per vehicle in the summary's timeline.
TIMELINE_POINTS = 2000
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class LogRef:
    """One run log of the fleet.

    Attributes:
        path: the ``.jsonl`` file (absolute).
        vehicle: the vehicle it came from.
        run: the run's name (the file's stem, or the ``run`` group of ``--vehicle-from``).
        sha256: sha256 of the log's bytes (the resume cache's key).
        model: the model hash its header names ("" for older logs).
        plan: the precision plan its header names ("").
        picks: with ``--sample``: per day, the indices of the log's scoreable frames to score
            (``((day, (i, ...)), ...)``); None scores every frame.
    """

    path: str
    vehicle: str
    run: str
    sha256: str
    model: str = ""
    plan: str = ""
    picks: Optional[Tuple[Tuple[str, Tuple[int, ...]], ...]] = None


# -- finding logs ------------------------------------------------------------------------------
def discover_logs(inputs: Sequence[Union[str, Path]]) -> List[Path]:
    """The ``.jsonl`` logs named by ``inputs``: files, folders (searched recursively) or globs.

    Returns absolute paths, sorted, each once.

    Raises:
        InputError: an input names nothing, or no log was found at all.
    """
    found = set()
    for item in inputs:
        text = str(item)
        if Path(text).exists():
            paths = [Path(text)]
        elif _GLOB_CHARS.search(text):
            paths = [Path(p) for p in glob.glob(text, recursive=True)]
        else:
            raise InputError(f"'{text}' does not exist. Pass run logs (.jsonl), folders of them or a glob.")
        for path in paths:
            found.update(_logs_under(path))
    if not found:
        raise InputError(f"No .jsonl run log in {', '.join(map(str, inputs)) or 'the inputs'}. Pass the logs "
                         "`edgecam run --log` wrote, or folders holding them.")
    return sorted(found)


def _logs_under(path: Path) -> List[Path]:
    if path.is_dir():
        return [p.resolve() for p in path.rglob("*.jsonl")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    return [path.resolve()] if path.is_file() else []


def _first_vehicle_field(path: Union[str, Path], header: Optional[RunHeader]) -> Optional[str]:
    """The ``vehicle`` the header or the first record carries (``edgecam run --vehicle-id``)."""
    if header is not None and header.vehicle:
        return header.vehicle
    for item in read_objects(path):
        if isinstance(item, LogLine) and not RunHeader.is_header(item.value):
            value = item.value.get("vehicle")
            return value if isinstance(value, str) and value else None
    return None


def vehicle_and_run(path: Union[str, Path], pattern: Optional[str] = None,
                    header: Optional[RunHeader] = None) -> Tuple[str, str]:
    """The vehicle and run of a log.

    With ``pattern`` (``--vehicle-from``): a regular expression searched in the log's POSIX path;
    its ``vehicle`` group (else its first group) names the vehicle and an optional ``run`` group
    the run. Without it: the ``vehicle`` field of the header or first record if there is one,
    else the log's parent folder name. The run defaults to the file's stem.

    Raises:
        InputError: ``pattern`` is not a valid expression, has no group, or does not match.
    """
    path = Path(path)
    run = path.stem
    if pattern:
        match = _search(pattern, path.as_posix())
        groups = match.groupdict()
        vehicle = groups.get("vehicle") or match.group(1)
        return vehicle, groups.get("run") or run
    header = read_header(path) if header is None else header
    return _first_vehicle_field(path, header) or path.parent.name or "unknown", run


def _search(pattern: str, text: str) -> "re.Match":
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"--vehicle-from {pattern!r} is not a regular expression: {exc}.") from exc
    if regex.groups < 1:
        raise InputError(f"--vehicle-from {pattern!r} has no group. Mark the vehicle with a group, e.g. "
                         r"'fleet/(?P<vehicle>[^/]+)/'.")
    match = regex.search(text)
    if match is None or not (match.groupdict().get("vehicle") or match.group(1)):
        raise InputError(f"--vehicle-from {pattern!r} does not match the log '{text}'. Give a pattern every "
                         "log path matches, or leave it out (vehicle = the log's folder name).")
    return match


def day_of(timestamp: Any) -> str:
    """``YYYY-MM-DD`` (UTC) of a record's timestamp (unix seconds or ISO text), ``unknown`` if none."""
    try:
        if isinstance(timestamp, str):
            moment = _dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=_dt.timezone.utc)
            return moment.astimezone(_dt.timezone.utc).date().isoformat()
        if isinstance(timestamp, (int, float)) and math.isfinite(timestamp):
            return _dt.datetime.fromtimestamp(float(timestamp), _dt.timezone.utc).date().isoformat()
    except (ValueError, OverflowError, OSError):
        pass
    return "unknown"


def _seconds(timestamp: Any) -> float:
    """Unix seconds of a timestamp (NaN when unknown)."""
    if isinstance(timestamp, (int, float)) and math.isfinite(timestamp):
        return float(timestamp)
    if isinstance(timestamp, str) and day_of(timestamp) != "unknown":
        moment = _dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.timezone.utc)
        return moment.timestamp()
    return math.nan


# -- the tally: everything about a log but its scored frames ------------------------------------
@dataclass
class LogTally:
    """What reading one log counted, besides the frames it yielded for scoring.

    Attributes:
        ref: the log.
        records: usable records (every frame the device logged).
        skipped: ``{(day, model, reason): n}``.
        classes: ``{(day, model, edge_class): n}`` over every usable record.
        changes: ``[(t, model), ...]`` where the log starts and wherever the model changes.
        timeline: ``[(t, edge_class, model), ...]``, thinned by a hash of ``t`` to at most
            :data:`TIMELINE_POINTS` (the same points whatever the order logs are read in).
        level: the thinning level: a point is kept when the low ``level`` bits of its hash are 0.
    """

    ref: LogRef
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    changes: List[Tuple[float, str]] = field(default_factory=list)
    timeline: List[Tuple[float, int, str]] = field(default_factory=list)
    level: int = 0

    def see(self, t: float, day: str, model: str, edge_class: int) -> None:
        """Count one usable record."""
        self.records += 1
        self.classes[(day, model, edge_class)] += 1
        if math.isnan(t):
            return
        if not self.changes or self.changes[-1][1] != model:
            self.changes.append((t, model))
        if keep_point(t, self.level):
            self.timeline.append((t, int(edge_class), model))
            self.level, self.timeline = thin(self.timeline, self.level)

    def skip(self, day: str, model: str, reason: str, n: int = 1) -> None:
        self.skipped[(day, model, reason)] += n


def keep_point(t: float, level: int) -> bool:
    """Whether a timeline point at ``t`` survives thinning level ``level`` (a hash, not the order)."""
    return level == 0 or (zlib.crc32(repr(float(t)).encode()) & ((1 << level) - 1)) == 0


def thin(points: List[Tuple[float, int, str]], level: int, limit: int = TIMELINE_POINTS):
    """``(level, points)`` raised until at most ``limit`` points are left."""
    while len(points) > limit:
        level += 1
        points = [p for p in points if keep_point(p[0], level)]
    return level, points


# -- reading one log ---------------------------------------------------------------------------
class FleetLog:
    """One log read for scoring: :meth:`frames` yields a row per frame; :attr:`tally` counts the rest.

    Args:
        ref: the log.
        resolve: ``model hash or "" → spec key or None`` (:meth:`FleetPlan.resolve`).
        shapes: ``{spec key: (num_classes, (h, w))}`` the records of each model must have.
    """

    def __init__(self, ref: LogRef, resolve, shapes: Mapping[str, Tuple[int, Tuple[int, int]]]) -> None:
        self.ref = ref
        self.path = Path(ref.path)
        self.resolve = resolve
        self.shapes = shapes
        self.tally = LogTally(ref)
        self.picks = None if ref.picks is None else {day: set(ix) for day, ix in ref.picks}
        self.seen: Counter = Counter()  # scoreable frames per day so far (the sample's index)

    def frames(self) -> Iterator[Dict[str, Any]]:
        """The rows to score (``docs/fleet.md``: the per-frame columns), in file order."""
        for record in read_records(self.path, require_finite=True):  # a good run header is not a record
            if isinstance(record, BadRecord):
                self.tally.skip("unknown", self.ref.model, "invalid" if record.reason == "invalid" else "malformed")
            elif isinstance(record, TelemetryRecord):
                row = self._row(record)
                if row is not None:
                    yield row

    def candidates(self) -> Counter:
        """Scoreable frames per day, without scoring (the first pass of ``--sample``)."""
        for _ in self.frames():
            pass
        return Counter(self.seen)

    def _row(self, record: TelemetryRecord) -> Optional[Dict[str, Any]]:
        raw = getattr(record, "model", None) or record.extra.get("model") or self.ref.model
        key = self.resolve(raw if isinstance(raw, str) else "")
        model = key or (raw if isinstance(raw, str) else "")
        day, t = day_of(record.timestamp), _seconds(record.timestamp)
        reason = self._reason(record, key)
        if reason == "invalid":
            self.tally.skip(day, model, reason)
            return None
        self.tally.see(t, day, model, record.predicted_index)
        if reason is not None:
            self.tally.skip(day, model, reason)
            return None
        index = self.seen[day]
        self.seen[day] += 1
        if self.picks is not None and index not in self.picks.get(day, ()):
            self.tally.skip(day, model, "sampled_out")
            return None
        return self._columns(record, key, day, t)

    def _reason(self, record: TelemetryRecord, key: Optional[str]) -> Optional[str]:
        """Why the record is not scored (validate --from-log's order), or None."""
        if key is not None:
            k, (h, w) = self.shapes[key]
            if record.probabilities.size != k or tuple(record.cam.shape) != (h, w):
                return "invalid"
        if not record.frame_path:
            return "no_frame_path"
        if record.frame_file(self.path.parent) is None:
            return "invalid"
        return "no_model" if key is None else None

    def _columns(self, record: TelemetryRecord, key: str, day: str, t: float) -> Dict[str, Any]:
        ref = self.ref
        return {
            "vehicle": ref.vehicle, "run": ref.run, "log": ref.path, "log_sha256": ref.sha256, "day": day,
            "model": key, "plan": record.plan or ref.plan, "frame": int(record.frame), "line": int(record.line),
            "timestamp": t, "frame_path": str(record.frame_file(self.path.parent).absolute()),
            "recorded_class": int(record.class_index), "edge_class": int(record.predicted_index),
            "edge_probabilities": record.probabilities.astype(np.float32),
            "edge_cam": _cam.relu(record.cam.astype(np.float32)),
        }
