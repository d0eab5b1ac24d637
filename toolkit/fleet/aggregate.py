"""Fleet figures from scored rows, in any order: per vehicle, per day and model, per log.

A :class:`FleetAggregator` keeps one :class:`LogPart` per log: the scalar columns of its
validated frames (the Pearson lists the medians need, and ``per_frame.parquet``), its skips by
reason, its class counts, a thinned class timeline and its k worst frames with their maps. Nothing
else grows with the number of records. Every figure of :meth:`FleetAggregator.summary` is
computed from sorted values or exact counts, so both engines, which add rows in different orders,
give the same ``fleet_summary.json``. A part is also the unit of the resume cache
(:meth:`LogPart.to_json`).
"""

from __future__ import annotations

import heapq
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .logs import SKIP_REASONS, TIMELINE_POINTS, LogTally, keep_point, thin

__all__ = ["FleetAggregator", "LogPart", "ROW_COLUMNS", "group_stats"]

#: The scalar columns kept per validated frame (``per_frame.parquet``), in order.
ROW_COLUMNS = ("vehicle", "run", "log", "log_sha256", "day", "model", "plan", "frame", "line", "timestamp",
               "frame_path", "recorded_class", "edge_class", "host_class", "host_probability", "pearson",
               "top1_agree", "status")
_TEXT = {"vehicle", "run", "log", "log_sha256", "day", "model", "plan", "frame_path", "status"}
_INT = {"frame", "line", "recorded_class", "edge_class", "host_class"}


def _cell(name: str, value: Any) -> Any:
    if name in _TEXT:
        return sys.intern(str(value))
    if name in _INT:
        return int(value)
    if name == "top1_agree":
        return bool(value)
    return float(value)


@dataclass
class LogPart:
    """Everything the summary needs of one log (see the module docstring)."""

    log: str
    vehicle: str = ""
    run: str = ""
    sha256: str = ""
    model: str = ""
    records: int = 0
    skipped: Counter = field(default_factory=Counter)  # (day, model, reason) → n
    classes: Counter = field(default_factory=Counter)  # (day, model, edge class) → n
    changes: List[Tuple[float, str]] = field(default_factory=list)  # (t, model) where a model starts
    timeline: List[Tuple[float, int, str]] = field(default_factory=list)
    level: int = 0
    rows: Dict[str, list] = field(default_factory=lambda: {c: [] for c in ROW_COLUMNS})
    worst: List[tuple] = field(default_factory=list)  # heap of (-pearson, line, frame dict)

    def add_row(self, row: Mapping[str, Any], k: int) -> None:
        """A validated frame: its scalar columns, and a place among the ``k`` worst if it earns one."""
        for name in ROW_COLUMNS:
            self.rows[name].append(_cell(name, row[name]))
        pearson = float(row["pearson"])
        if k <= 0 or not math.isfinite(pearson):
            return
        key = (-pearson, int(row["line"]))
        if len(self.worst) < k or key > self.worst[0][:2]:
            entry = key + ({name: _cell(name, row[name]) for name in ROW_COLUMNS}
                           | {"edge_cam": np.asarray(row["edge_cam"], np.float32),
                              "full_cam": np.asarray(row["full_cam"], np.float32)},)
            (heapq.heappush if len(self.worst) < k else heapq.heapreplace)(self.worst, entry)

    def add_tally(self, tally: LogTally) -> None:
        ref = tally.ref
        self.vehicle, self.run, self.sha256, self.model = ref.vehicle, ref.run, ref.sha256, ref.model
        self.records += tally.records
        self.skipped.update(tally.skipped)
        self.classes.update(tally.classes)
        self.changes.extend(tally.changes)
        self.level, self.timeline = merge_timelines([(self.level, self.timeline), (tally.level, tally.timeline)])

    @property
    def validated(self) -> int:
        return len(self.rows["pearson"])

    # -- the resume cache ----------------------------------------------------------------------
    def to_json(self) -> str:
        """This part as JSON (floats exact, NaN allowed: only this module reads it back)."""
        worst = [[w[0], w[1], {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in w[2].items()}]
                 for w in self.worst]
        return json.dumps({
            "log": self.log, "vehicle": self.vehicle, "run": self.run, "sha256": self.sha256, "model": self.model,
            "records": self.records, "skipped": [[*k, n] for k, n in sorted(self.skipped.items())],
            "classes": [[*k, n] for k, n in sorted(self.classes.items())], "changes": self.changes,
            "timeline": self.timeline, "level": self.level, "rows": self.rows, "worst": worst,
        })

    @classmethod
    def from_json(cls, text: str) -> "LogPart":
        d = json.loads(text)
        worst = [(w[0], w[1], {k: (np.asarray(v, np.float32) if k.endswith("_cam") else v) for k, v in w[2].items()})
                 for w in d["worst"]]
        heapq.heapify(worst)
        return cls(
            log=d["log"], vehicle=d["vehicle"], run=d["run"], sha256=d["sha256"], model=d["model"],
            records=d["records"], skipped=Counter({tuple(x[:3]): x[3] for x in d["skipped"]}),
            classes=Counter({tuple(x[:3]): x[3] for x in d["classes"]}),
            changes=[tuple(c) for c in d["changes"]], timeline=[tuple(p) for p in d["timeline"]],
            level=d["level"], rows=d["rows"], worst=worst,
        )


def merge_timelines(items: Iterable[Tuple[int, List[tuple]]], limit: int = TIMELINE_POINTS):
    """One thinned timeline from several: the highest level of any, then thinned to ``limit``."""
    items = list(items)
    level = max((lv for lv, _ in items), default=0)
    points = sorted({p for _, pts in items for p in pts if keep_point(p[0], level)})
    return thin(points, level, limit)


def group_stats(pearson: Sequence[float], top1: Sequence[bool]) -> Dict[str, Any]:
    """``validated``, ``pearson_median``, ``pearson_p05`` (numpy's linear percentile) and ``top1``.

    Computed from sorted values and exact counts: the same whatever order frames came in.
    """
    values = np.sort(np.asarray(pearson, dtype=np.float64))
    finite = values[np.isfinite(values)]
    n = len(values)
    return {
        "validated": n,
        "pearson_median": None if finite.size == 0 else float(np.median(finite)),
        "pearson_p05": None if finite.size == 0 else float(np.percentile(finite, 5)),
        "top1": None if n == 0 else int(np.sum(np.asarray(top1, dtype=bool))) / n,
    }


class FleetAggregator:
    """Accumulates scored rows and log tallies; :meth:`summary` gives ``fleet_summary.json``'s figures.

    Args:
        k_worst: how many worst frames (lowest Pearson) the summary lists, with their maps.
    """

    def __init__(self, k_worst: int = 12) -> None:
        self.k_worst = int(k_worst)
        self.parts: Dict[str, LogPart] = {}

    def part(self, log: str) -> LogPart:
        if log not in self.parts:
            self.parts[log] = LogPart(log=log)
        return self.parts[log]

    def add_rows(self, rows: Mapping[str, Sequence[Any]]) -> None:
        """Scored rows (a dict of equal-length columns, as :class:`FrameScorer` returns them)."""
        for i in range(len(rows["status"])):
            row = {name: values[i] for name, values in rows.items()}
            part = self.part(str(row["log"]))
            part.vehicle, part.run, part.sha256 = str(row["vehicle"]), str(row["run"]), str(row["log_sha256"])
            if row["status"] == "ok":
                part.add_row(row, self.k_worst)
            else:
                part.skipped[(str(row["day"]), str(row["model"]), str(row["status"]))] += 1

    def add_skipped(self, vehicle: str, day: str, model: str, reason: str, n: int = 1, log: str = "") -> None:
        """Count ``n`` records of a vehicle skipped for ``reason`` (one of :data:`SKIP_REASONS`)."""
        part = self.part(log or f"<{vehicle}>")
        part.vehicle = part.vehicle or vehicle
        part.skipped[(day, model, reason)] += int(n)

    def add_tally(self, tally: LogTally) -> None:
        """What reading a log counted besides its scored frames (:attr:`FleetLog.tally`)."""
        self.part(tally.ref.path).add_tally(tally)

    def add_part(self, part: LogPart) -> None:
        """A whole log's part (from the resume cache)."""
        self.parts[part.log] = part

    def merge(self, other: "FleetAggregator") -> "FleetAggregator":
        """Add another aggregator's parts (logs are disjoint: each log is read by one engine run)."""
        for part in other.parts.values():
            self.add_part(part)
        return self

    def worst_frames(self) -> List[Dict[str, Any]]:
        """The ``k_worst`` frames of the fleet, lowest Pearson first (ties: log, line)."""
        entries = [(-w[0], w[2]["log"], w[1], w[2]) for p in self.parts.values() for w in p.worst]
        return [e[3] for e in sorted(entries, key=lambda e: e[:3])[: self.k_worst]]

    def summary(self, class_names: Sequence[str] = (), thresholds: Optional[Mapping[str, Optional[float]]] = None
                ) -> Dict[str, Any]:
        """The figures of ``fleet_summary.json``: ``totals``, ``vehicles`` (worst first), ``logs``, ``verdict``.

        The caller adds ``schema``, ``engine``, ``options``, ``models`` and ``worst_frames``' files.
        """
        from ._summary import fleet_figures

        return fleet_figures(list(self.parts.values()), class_names, dict(thresholds or {}))


__all__ += ["merge_timelines", "SKIP_REASONS"]
