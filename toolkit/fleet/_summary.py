"""The figures of ``fleet_summary.json`` from the aggregator's log parts (see docs/fleet.md)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .aggregate import LogPart, group_stats, merge_timelines
from .logs import SKIP_REASONS

__all__ = ["fleet_figures"]


def fleet_figures(parts: List[LogPart], class_names: Sequence[str], thresholds: Mapping[str, Optional[float]]
                  ) -> Dict[str, Any]:
    """``totals``, ``vehicles`` (worst first), ``logs`` and ``verdict`` of the fleet."""
    by_vehicle: Dict[str, List[LogPart]] = defaultdict(list)
    for part in parts:
        by_vehicle[part.vehicle].append(part)
    vehicles = [_vehicle(name, by_vehicle[name], class_names, thresholds) for name in sorted(by_vehicle)]
    vehicles.sort(key=_worst_first)
    failing = [v["vehicle"] for v in vehicles if v["status"] == "fail"]
    skipped = _reasons(Counter(), parts)
    return {
        "totals": {"logs": sum(1 for p in parts if p.sha256), "records": sum(p.records for p in parts)
                   + skipped.get("malformed", 0) + skipped.get("invalid", 0),
                   "frames": sum(p.records for p in parts), "validated": sum(p.validated for p in parts),
                   "skipped": skipped},
        "vehicles": vehicles,
        "logs": sorted((_log_entry(p) for p in parts if p.sha256), key=lambda e: (e["vehicle"], e["log"])),
        "verdict": {"pass": not failing, "failing_vehicles": failing,
                    "thresholds": {k: thresholds.get(k) for k in ("min_pearson", "min_p05", "min_top1")}},
    }


def _reasons(counts: Counter, parts: Sequence[LogPart], where=lambda key: True) -> Dict[str, int]:
    """``{reason: n}`` in :data:`SKIP_REASONS` order (zero counts included)."""
    for part in parts:
        for key, n in part.skipped.items():
            if where(key):
                counts[key[2]] += n
    return {reason: int(counts.get(reason, 0)) for reason in SKIP_REASONS} | {
        k: int(v) for k, v in sorted(counts.items()) if k not in SKIP_REASONS}


def _rows(parts: Sequence[LogPart], where=lambda day, model: True) -> Tuple[List[float], int, List[str]]:
    """The Pearson values, top-1 agreements and plans of the validated frames in ``where``'s groups."""
    pearson, agree, plans = [], 0, set()
    for part in parts:
        for (day, model), group in part.groups.items():
            if where(day, model):
                pearson.extend(group.pearson)
                agree += group.agree
                plans |= group.plans
    return pearson, agree, sorted(plans)


def _histogram(parts: Sequence[LogPart], class_names: Sequence[str], where=lambda day, model: True) -> Dict[str, int]:
    counts: Counter = Counter()
    for part in parts:
        for (day, model, c), n in part.classes.items():
            if where(day, model):
                counts[int(c)] += n
    name = lambda c: class_names[c] if 0 <= c < len(class_names) else str(c)  # noqa: E731
    return {name(c): int(counts[c]) for c in sorted(counts)}


def _day(parts: Sequence[LogPart], day: str, model: str, class_names: Sequence[str]) -> Dict[str, Any]:
    where = lambda d, m: (d, m) == (day, model)  # noqa: E731
    pearson, top1, plans = _rows(parts, where)
    hist = _histogram(parts, class_names, where)
    return {"day": day, "model": model, "plan": ",".join(plans),
            "frames": sum(hist.values()), **group_stats(pearson, top1),
            "class_histogram": hist, "skipped": _reasons(Counter(), parts, lambda k: (k[0], k[1]) == (day, model))}


def _model_changes(parts: Sequence[LogPart]) -> List[Dict[str, Any]]:
    """Where the vehicle's model changes, over its logs in time order."""
    starts = sorted({(t, m) for p in parts for t, m in p.changes if m and not math.isnan(t)})
    changes, last = [], None
    for t, model in starts:
        if last is not None and model != last:
            changes.append({"t": t, "from": last, "to": model})
        last = model
    return changes


def _vehicle(name: str, parts: Sequence[LogPart], class_names: Sequence[str],
             thresholds: Mapping[str, Optional[float]]) -> Dict[str, Any]:
    pearson, top1, _ = _rows(parts)
    stats = group_stats(pearson, top1)
    keys = {(d, m) for p in parts for (d, m, _) in list(p.classes) + list(p.skipped)}
    keys |= {key for p in parts for key in p.groups}
    failures = _failures(stats, thresholds)
    hist = _histogram(parts, class_names)
    _, timeline = merge_timelines((p.level, p.timeline) for p in parts)
    return {
        "vehicle": name, "status": "fail" if failures else "pass", "failures": failures,
        "frames": sum(p.records for p in parts), **stats, "class_histogram": hist,
        "skipped": _reasons(Counter(), parts), "models": sorted({m for d, m in keys if m}),
        "model_changes": _model_changes(parts),
        "days": [_day(parts, d, m, class_names) for d, m in sorted(keys)],
        "timeline": [[t, c, m] for t, c, m in sorted(timeline)],
    }


def _failures(stats: Mapping[str, Any], thresholds: Mapping[str, Optional[float]]) -> List[str]:
    """Which gates a vehicle fails, as sentences ("pearson median 0.71 < 0.90")."""
    gates = [("min_pearson", "pearson_median", "pearson median"), ("min_p05", "pearson_p05", "pearson p05"),
             ("min_top1", "top1", "top-1 agreement")]
    active = [(thresholds[k], stat, label) for k, stat, label in gates if thresholds.get(k) is not None]
    if active and not stats["validated"]:
        return ["no validated frame (see skipped)"]
    return [f"{label} {stats[stat]:.4f} < {bound:.4f}" for bound, stat, label in active
            if stats[stat] is None or stats[stat] < bound]


def _worst_first(v: Mapping[str, Any]) -> tuple:
    p05 = v["pearson_p05"]
    top1 = v["top1"]
    return (v["status"] != "fail", -math.inf if p05 is None else p05, -math.inf if top1 is None else top1,
            v["vehicle"])


def _log_entry(part: LogPart) -> Dict[str, Any]:
    pearson, top1, _ = _rows([part])
    stats = group_stats(pearson, top1)
    return {"log": part.log, "vehicle": part.vehicle, "run": part.run, "sha256": part.sha256, "model": part.model,
            "records": part.records, "validated": stats["validated"], "pearson_median": stats["pearson_median"],
            "pearson_p05": stats["pearson_p05"], "top1": stats["top1"], "skipped": _reasons(Counter(), [part])}
