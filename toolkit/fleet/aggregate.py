"""Fleet figures from scored rows, in any order: per vehicle, per day and model, per log.

A :class:`FleetAggregator` keeps one :class:`LogPart` per log: per day and model, the Pearson
values of its validated frames (8 bytes each: the medians need them) and counts; its skips by
reason, its class counts, a thinned class timeline and its k worst frames with their maps. The
per-frame rows go to a :class:`~toolkit.fleet.spool.RowSpool` on disk (``per_frame.parquet``).
Nothing else grows with the number of records. Every figure of :meth:`FleetAggregator.summary` is
computed from sorted values or exact counts, so both engines, which add rows in different orders,
give the same ``fleet_summary.json``. A part is also the unit of the resume cache
(:meth:`LogPart.to_json`).
"""

from __future__ import annotations

import heapq
import json
import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .logs import SKIP_REASONS, TIMELINE_POINTS, LogTally, keep_point, thin
from .spool import ROW_COLUMNS, RowSpool

__all__ = ["FleetAggregator", "LogPart", "Group", "ROW_COLUMNS", "SKIP_REASONS", "group_stats", "merge_timelines"]

#: What a worst frame keeps besides its maps (the summary's ``worst_frames`` entries).
_WORST_KEYS = ("vehicle", "day", "log", "frame", "line", "pearson", "recorded_class", "host_class", "edge_class",
               "model", "frame_path")


@dataclass
class Group:
    """The validated frames of one log, day and model: their Pearson values (8 bytes each) and counts."""

    pearson: array = field(default_factory=lambda: array("d"))
    agree: int = 0
    plans: set = field(default_factory=set)

    def add(self, pearson: float, agree: bool, plan: str) -> None:
        self.pearson.append(float(pearson))
        self.agree += bool(agree)
        if plan:
            self.plans.add(str(plan))


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
    groups: Dict[Tuple[str, str], Group] = field(default_factory=dict)  # (day, model) → validated frames
    worst: List[tuple] = field(default_factory=list)  # heap of (-pearson, line, frame dict)
    spool: str = ""  # the RowSpool file (in the cache folder) holding this log's per-frame rows

    def add_row(self, row: Mapping[str, Any], k: int) -> None:
        """A validated frame: its group's figures, and a place among the ``k`` worst if it earns one."""
        key = (str(row["day"]), str(row["model"]))
        self.groups.setdefault(key, Group()).add(row["pearson"], row["top1_agree"], str(row["plan"]))
        pearson = float(row["pearson"])
        if k <= 0 or not math.isfinite(pearson):
            return
        rank = (-pearson, int(row["line"]))
        if len(self.worst) < k or rank > self.worst[0][:2]:
            entry = rank + ({name: _plain(row[name]) for name in _WORST_KEYS}
                            | {"edge_cam": np.array(row["edge_cam"], np.float32),
                               "full_cam": np.array(row["full_cam"], np.float32)},)
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
        return sum(len(g.pearson) for g in self.groups.values())

    # -- the resume cache ----------------------------------------------------------------------
    def to_json(self) -> str:
        """This part as JSON (floats exact, NaN allowed: only this module reads it back)."""
        worst = [[w[0], w[1], {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in w[2].items()}]
                 for w in self.worst]
        groups = [[d, m, g.pearson.tolist(), g.agree, sorted(g.plans)] for (d, m), g in sorted(self.groups.items())]
        return json.dumps({
            "log": self.log, "vehicle": self.vehicle, "run": self.run, "sha256": self.sha256, "model": self.model,
            "records": self.records, "skipped": [[*k, n] for k, n in sorted(self.skipped.items())],
            "classes": [[*k, n] for k, n in sorted(self.classes.items())], "changes": self.changes,
            "timeline": self.timeline, "level": self.level, "groups": groups, "worst": worst, "spool": self.spool,
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
            level=d["level"], groups={(g[0], g[1]): Group(array("d", g[2]), g[3], set(g[4])) for g in d["groups"]},
            worst=worst, spool=d["spool"],
        )


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


def merge_timelines(items: Iterable[Tuple[int, List[tuple]]], limit: int = TIMELINE_POINTS):
    """One thinned timeline from several: the highest level of any, then thinned to ``limit``."""
    items = list(items)
    level = max((lv for lv, _ in items), default=0)
    points = sorted({p for _, pts in items for p in pts if keep_point(p[0], level)})
    return thin(points, level, limit)


def group_stats(pearson: Sequence[float], agree: int) -> Dict[str, Any]:
    """``validated``, ``pearson_median``, ``pearson_p05`` (numpy's linear percentile) and ``top1``.

    ``agree`` is how many of the ``len(pearson)`` frames agree on the top-1 class. Computed from
    sorted values and exact counts: the same whatever order frames came in.
    """
    values = np.sort(np.asarray(pearson, dtype=np.float64))
    finite = values[np.isfinite(values)]
    n = len(values)
    return {
        "validated": n,
        "pearson_median": None if finite.size == 0 else float(np.median(finite)),
        "pearson_p05": None if finite.size == 0 else float(np.percentile(finite, 5)),
        "top1": None if n == 0 else int(agree) / n,
    }


class FleetAggregator:
    """Accumulates scored rows and log tallies; :meth:`summary` gives ``fleet_summary.json``'s figures.

    Args:
        k_worst: how many worst frames (lowest Pearson) the summary lists, with their maps.
        spool: where the rows of validated frames are streamed (None: not kept).
    """

    def __init__(self, k_worst: int = 12, spool: Optional[RowSpool] = None) -> None:
        self.k_worst = int(k_worst)
        self.spool = spool
        self.parts: Dict[str, LogPart] = {}

    @classmethod
    def for_plan(cls, plan) -> "FleetAggregator":
        """The aggregator an engine fills for ``plan`` (its ``k_worst``; rows to ``plan.spool`` if set)."""
        return cls(plan.k_worst, RowSpool(plan.spool) if plan.spool else None)

    def close(self) -> None:
        """Finish the row spool (call once the engine is done). Idempotent."""
        if self.spool is not None:
            self.spool.close()

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
                if self.spool is not None:
                    self.spool.write(row)
                    part.spool = self.spool.name
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

