"""What a fleet validation will do, decided before any frame is scored: :class:`FleetPlan`.

:func:`build_plan` finds the logs, names their vehicle and run, hashes them, matches the models
and, with ``--sample N``, picks N frames per vehicle and day spread evenly over the day (a first
pass over the records counts the scoreable frames per vehicle and day; nothing is kept but the
counts). The plan is a frozen value both engines run: everything a worker needs is in it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host.errors import InputError
from firmware_host.telemetry import read_header

from .logs import FleetLog, LogRef, discover_logs, vehicle_and_run
from .models import ModelSpec, file_sha256, load_specs

__all__ = ["FleetPlan", "build_plan", "frames_of", "sample_picks", "to_columns", "model_batches"]


@dataclass(frozen=True)
class FleetPlan:
    """The logs, the models and how frames are picked and scored.

    Attributes:
        logs: the run logs (:class:`~toolkit.fleet.logs.LogRef`), sorted by path.
        models: ``{sha256: ModelSpec}`` of the ``--keras`` files.
        sample: ``--sample``: frames per vehicle and day (None: every saved frame).
        method: the host explainer.
        batch_size: frames per Grad-CAM pass.
        target_layer: layer of the full Grad-CAM (None: the converter's choice).
        safe_mode: load Keras files with Keras' safe_mode.
        k_worst: worst frames kept for the report.
        frames: frames to score (with ``sample``), else an upper bound (the progress bar's total).
        spool: where engines stream the per-frame rows (:meth:`FleetAggregator.for_plan`); "" none.
    """

    logs: Tuple[LogRef, ...]
    models: Mapping[str, ModelSpec] = field(default_factory=dict)
    sample: Optional[int] = None
    method: str = "gradcam"
    batch_size: int = 32
    target_layer: Optional[str] = None
    safe_mode: bool = True
    k_worst: int = 12
    frames: int = 0
    spool: str = ""

    def resolve(self, model_hash: str) -> Optional[str]:
        """The ``models`` key a logged model hash names; a log without hash gets the only model, if one."""
        if not model_hash:
            return next(iter(self.models)) if len(self.models) == 1 else None
        if model_hash in self.models:
            return model_hash
        return next((sha for sha, spec in self.models.items() if model_hash in spec.aliases), None)

    def shapes(self) -> Dict[str, Tuple[int, Tuple[int, int]]]:
        """``{sha256: (num_classes, (h, w))}`` the records of each model must have."""
        return {sha: (spec.num_classes, tuple(spec.feature_map_shape)) for sha, spec in self.models.items()}

    def fleet_log(self, ref: LogRef) -> FleetLog:
        """A reader of one log of this plan (rows to score, and its tally)."""
        return FleetLog(ref, self.resolve, self.shapes())

    def scorer_kwargs(self) -> Dict[str, Any]:
        """The arguments of :class:`~toolkit.fleet.scoring.FrameScorer` (picklable: a Ray actor's ``fn_constructor_kwargs``)."""
        return {"models": {sha: spec.keras for sha, spec in self.models.items()}, "method": self.method,
                "batch_size": self.batch_size, "specs": dict(self.models), "target_layer": self.target_layer,
                "safe_mode": self.safe_mode}

    @property
    def class_names(self) -> Tuple[str, ...]:
        """The class names of the first model (by hash); fleets share their classes."""
        return self.models[min(self.models)].classes if self.models else ()

    def with_logs(self, logs: Iterable[LogRef], frames: Optional[int] = None) -> "FleetPlan":
        """The same plan over other logs (``frames`` recounted unless given)."""
        logs = tuple(logs)
        return replace(self, logs=logs, frames=sum(map(frames_of, logs)) if frames is None else frames)


def frames_of(ref: LogRef) -> int:
    """Frames of a log to score: its picks with ``--sample``, else its lines naming a saved frame (a bound)."""
    if ref.picks is not None:
        return sum(len(ix) for _, ix in ref.picks)
    with open(ref.path, "rb") as handle:
        return sum(1 for line in handle if b'"frame_path"' in line)


def _ref(path: Path, vehicle_from: Optional[str]) -> LogRef:
    header = read_header(path)
    vehicle, run = vehicle_and_run(path, vehicle_from, header)
    model = (header.source_model_sha256 or header.model_sha256 or "") if header else ""
    plan = (header.plan or "") if header else ""
    return LogRef(str(path), str(vehicle), str(run), file_sha256(path), str(model), str(plan))


def sample_picks(counts: Sequence[Tuple[LogRef, Mapping[str, int]]], n: int
                 ) -> Dict[str, Tuple[Tuple[str, Tuple[int, ...]], ...]]:
    """``{log path: picks}``: ``n`` frames per vehicle and day, spread evenly over its logs in path order.

    Frame ``k·T // n`` (k < n) of the T scoreable frames of a vehicle's day is kept (every frame
    when T ≤ n), the rule ``edgecam validate`` uses for its faithfulness sample.
    """
    totals: Counter = Counter()
    offsets: Dict[Tuple[str, str], int] = {}
    for ref, days in counts:
        for day, k in days.items():
            offsets[(ref.path, day)] = totals[(ref.vehicle, day)]
            totals[(ref.vehicle, day)] += k
    out: Dict[str, Tuple[Tuple[str, Tuple[int, ...]], ...]] = {}
    for ref, days in counts:
        picks = []
        for day in sorted(days):
            total, first = totals[(ref.vehicle, day)], offsets[(ref.path, day)]
            chosen = range(total) if total <= n else (k * total // n for k in range(n))
            picks.append((day, tuple(g - first for g in chosen if first <= g < first + days[day])))
        out[ref.path] = tuple(picks)
    return out


def build_plan(inputs: Sequence[Union[str, Path]], keras: Sequence[Union[str, Path]], edges: Sequence = (),
               vehicle_from: Optional[str] = None, sample: Optional[int] = None, **settings: Any) -> FleetPlan:
    """Find the logs and models and decide what to score.

    Args:
        inputs: log files, folders (searched for ``*.jsonl``) or globs.
        keras / edges: the ``--keras`` and ``--edge`` model files.
        vehicle_from: the ``--vehicle-from`` pattern (see :func:`~toolkit.fleet.logs.vehicle_and_run`).
        sample: frames per vehicle and day, or None for all.
        **settings: other :class:`FleetPlan` fields (``method``, ``batch_size``, ``target_layer``,
            ``safe_mode``, ``k_worst``).

    Raises:
        InputError: no log, no model, a bad pattern or sample size.
    """
    if sample is not None and sample < 1:
        raise InputError(f"--sample must be at least 1 frame per vehicle and day. Got {sample}.")
    models = load_specs(keras, edges, settings.get("target_layer"), settings.get("safe_mode", True))
    refs = tuple(_ref(path, vehicle_from) for path in discover_logs(inputs))
    plan = FleetPlan(logs=refs, models=models, sample=sample, **settings)
    if sample is not None:
        counts = [(ref, plan.fleet_log(ref).candidates()) for ref in refs]
        picks = sample_picks(counts, sample)
        refs = tuple(replace(ref, picks=picks[ref.path]) for ref in refs)
    return plan.with_logs(refs)


# -- rows to numpy batches ---------------------------------------------------------------------
def to_columns(rows: Sequence[Mapping[str, Any]]) -> Dict[str, np.ndarray]:
    """Rows (dicts) → a numpy batch: one array per column, maps stacked (``(N, h, w)``)."""
    out = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        out[name] = np.stack(values) if isinstance(values[0], np.ndarray) else np.asarray(values)
    return out


def model_batches(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[Dict[str, np.ndarray]]:
    """Numpy batches of at most ``size`` rows, each of one model (so its maps stack)."""
    chunk: List[Mapping[str, Any]] = []
    for row in rows:
        if chunk and (len(chunk) >= size or row["model"] != chunk[0]["model"]):
            yield to_columns(chunk)
            chunk = []
        chunk.append(row)
    if chunk:
        yield to_columns(chunk)
