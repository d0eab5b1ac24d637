"""``fleet_validate``: many vehicles' run logs against full Grad-CAM, one summary, a CI gate.

Stages: :func:`~toolkit.fleet.plan.build_plan` (logs, vehicles, models, sample) → the resume
cache (logs already scored with the same models and options are not scored again) → an engine
from :data:`ENGINES` (``local``: this process; ``ray``: a Ray Data pipeline) → the outputs:
``fleet_summary.json``, ``per_frame.parquet``, ``worst/<n>.npz`` and ``fleet_report.html``.
Their schema is in docs/fleet.md.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from firmware_host._io import atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError, MissingDependencyError

from .aggregate import FleetAggregator, LogPart
from .logs import LogRef
from .plan import FleetPlan, build_plan, frames_of

__all__ = ["FleetOptions", "FleetPlan", "FleetResult", "ENGINES", "engine_names", "fleet_validate",
           "SUMMARY_SCHEMA"]

SUMMARY_SCHEMA = "edgecam.fleet_summary/1"
_CACHE_VERSION = 1


# -- engines -----------------------------------------------------------------------------------
def _local(plan: FleetPlan, options: "FleetOptions", bar=None) -> FleetAggregator:
    from .engine_local import run_local

    return run_local(plan, progress=bar if bar is not None else options.progress)


def _ray(plan: FleetPlan, options: "FleetOptions", bar=None) -> FleetAggregator:
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "--engine ray needs Ray, which is not installed. Install the fleet extra: pip install 'edgecam[fleet]' "
            "(or use --engine local).") from exc
    try:
        module = importlib.import_module("toolkit.fleet.engine_ray")
    except ModuleNotFoundError as exc:
        if exc.name != "toolkit.fleet.engine_ray":
            raise
        raise MissingDependencyError("This edgecam has no Ray engine (toolkit/fleet/engine_ray.py). Use "
                                     "--engine local.") from exc
    return module.run_ray(plan, address=options.ray_address, num_cpus=options.num_cpus, progress=options.progress)


#: ``--engine`` name → ``(plan, options, progress bar or None) → FleetAggregator``.
ENGINES: Dict[str, Callable[..., FleetAggregator]] = {"local": _local, "ray": _ray}
#: Frames scored between two writes of the resume cache, per engine (None: all logs in one go).
CHECKPOINT_FRAMES = {"local": 2048, "ray": None}


def engine_names() -> Tuple[str, ...]:
    return tuple(ENGINES)


# -- options and result ------------------------------------------------------------------------
def _option(default: Any, flag: str, help: str, **more: Any) -> Any:
    """A :class:`FleetOptions` field and its command-line spelling (``toolkit/cli/fleet.py`` reads it).

    ``more``: ``low`` (an integer's minimum), ``choices``, ``metavar``, ``invert`` (a boolean whose
    flag sets it to False: ``--quiet``, ``--no-resume``, ``--unsafe``).
    """
    return field(default=default, metadata={"flag": flag, "help": help, **more})


@dataclass(frozen=True)
class FleetOptions:
    """How a fleet validation runs: the one definition of ``edgecam fleet validate``'s options.

    Attributes:
        vehicle_from: regular expression over a log's path whose ``vehicle`` (else first) group
            names the vehicle; None: the record's ``vehicle`` field, else the log's folder name.
        sample: frames per vehicle and day, spread evenly (None: every saved frame).
        min_pearson / min_p05 / min_top1: gates per vehicle on the median and 5th percentile of
            the Pearson and on top-1 agreement (None: no gate).
        method / target_layer / safe_mode / batch_size: as ``edgecam validate``.
        k_worst: worst frames kept (``worst/*.npz``, the report's links).
        engine: a name in :data:`ENGINES`; ray_address / num_cpus: the Ray engine's cluster.
        progress: a progress bar over frames; resume: reuse ``OUT/cache`` from an earlier run.

    Raises:
        InputError: an unknown engine or method, a threshold out of range, a batch size < 1.
    """

    vehicle_from: Optional[str] = _option(
        None, "--vehicle-from", "Regex over each log's path; its 'vehicle' (else first) group names the vehicle, an "
        "optional 'run' group the run. Default: the records' vehicle field, else the log's folder name.",
        metavar="REGEX")
    sample: Optional[int] = _option(None, "--sample", "Frames per vehicle and day, spread evenly.", low=1, metavar="N")
    min_pearson: Optional[float] = _option(None, "--min-pearson", "Fail (exit 1) a vehicle whose median Pearson is below this.")
    min_p05: Optional[float] = _option(None, "--min-p05", "Fail (exit 1) a vehicle whose 5th-percentile Pearson is below this.")
    min_top1: Optional[float] = _option(None, "--min-top1", "Fail (exit 1) a vehicle whose top-1 agreement is below this.")
    method: str = _option("gradcam", "--method", "Host explainer to compare with.")
    target_layer: Optional[str] = _option(None, "--target-layer", "Layer of the full Grad-CAM (default: as `edgecam convert`).")
    safe_mode: bool = _option(True, "--unsafe", "Load Keras models with safe_mode off (trusted files only).", invert=True)
    batch_size: int = _option(32, "--batch-size", "Frames per Grad-CAM pass.", low=1)
    k_worst: int = _option(12, "--worst", "Worst frames kept for the report (worst/*.npz).", low=0, metavar="K")
    engine: str = _option("local", "--engine", "local: this process; ray: a Ray Data pipeline (pip install "
                          "'edgecam[fleet]').", choices=("local", "ray"))
    ray_address: Optional[str] = _option(None, "--ray-address", "Join this Ray cluster (default: start a local Ray).")
    num_cpus: Optional[int] = _option(None, "--num-cpus", "CPUs of the local Ray instance.", low=1)
    progress: bool = _option(True, "--quiet", "No progress bar.", invert=True)
    resume: bool = _option(True, "--no-resume", "Score every log again (ignore OUT/cache).", invert=True)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"Unknown engine {self.engine!r}. Choose one of: {', '.join(ENGINES)}.")
        from toolkit.explain import METHODS

        if self.method not in METHODS:
            raise InputError(f"Unknown method {self.method!r}. Choose one of: {', '.join(sorted(METHODS))}.")
        for name in ("min_pearson", "min_p05"):
            value = getattr(self, name)
            if value is not None and not -1.0 <= float(value) <= 1.0:
                raise InputError(f"{name} must be in [-1, 1]. Got {value}.")
        if self.min_top1 is not None and not 0.0 <= float(self.min_top1) <= 1.0:
            raise InputError(f"min_top1 is a fraction in [0, 1]. Got {self.min_top1}.")
        if self.batch_size < 1 or self.k_worst < 0:
            raise InputError(f"batch_size must be >= 1 and k_worst >= 0. Got {self.batch_size}, {self.k_worst}.")

    @classmethod
    def of(cls, options: Optional["FleetOptions"] = None, **overrides: Any) -> "FleetOptions":
        """``options`` (default: the defaults) with fields replaced by keyword (TypeError for an unknown one)."""
        return replace(options if options is not None else cls(), **overrides)

    @property
    def thresholds(self) -> Dict[str, Optional[float]]:
        return {"min_pearson": self.min_pearson, "min_p05": self.min_p05, "min_top1": self.min_top1}


@dataclass(frozen=True)
class FleetResult:
    """What a fleet validation produced.

    Attributes:
        summary: the ``fleet_summary.json`` content.
        passed: every vehicle meets every gate that was set.
        out_dir: the output folder; summary_path / per_frame_path / report_path: its files
            (``report_path`` None until the report module is installed).
        reused: logs whose results came from the resume cache.
    """

    summary: Mapping[str, Any]
    passed: bool
    out_dir: Path
    summary_path: Path
    per_frame_path: Path
    report_path: Optional[Path]
    reused: int = 0

    def describe(self) -> str:
        """A few human lines: the verdict, the failing vehicles, the worst ones, the files."""
        s = self.summary
        t = s["totals"]
        gated = any(v is not None for v in s["verdict"]["thresholds"].values())
        verdict = "NO GATE" if not gated else ("PASS" if self.passed else "FAIL")
        skipped = ", ".join(f"{n} {k}" for k, n in t["skipped"].items() if n) or "none"
        lines = [f"{verdict}: {len(s['vehicles'])} vehicles, {t['logs']} logs ({self.reused} from cache), "
                 f"{t['validated']} of {t['frames']} frames validated (skipped: {skipped})"]
        for v in s["vehicles"][:10]:
            stats = f"Pearson median {_fmt(v['pearson_median'])} p05 {_fmt(v['pearson_p05'])} top-1 {_fmt(v['top1'])}"
            mark = "FAIL" if v["status"] == "fail" else "ok  "
            lines.append(f"  [{mark}] {v['vehicle']}: {v['validated']} frames, {stats}"
                         + (f" — {'; '.join(v['failures'])}" if v["failures"] else ""))
        lines.append(f"  summary: {self.summary_path}")
        if self.report_path is not None:
            lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# -- the resume cache --------------------------------------------------------------------------
class _PartCache:
    """``OUT/cache/<key>.json``: a log's :class:`LogPart`, keyed by its content and everything that scores it."""

    def __init__(self, folder: Path, plan: FleetPlan) -> None:
        self.folder = ensure_writable_dir(folder)
        models = {sha: {"keras": spec.keras, "edge": spec.edge, "pre": asdict(spec.preprocessing),
                        "classes": spec.classes, "map": spec.feature_map_shape}
                  for sha, spec in sorted(plan.models.items())}
        self.salt = json.dumps({"v": _CACHE_VERSION, "models": models, "method": plan.method,
                                "layer": plan.target_layer, "k": plan.k_worst}, sort_keys=True, default=str)

    def path(self, ref: LogRef) -> Path:
        key = json.dumps([self.salt, asdict(ref)], sort_keys=True, default=str)
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def load(self, refs: Iterable[LogRef], aggregator: FleetAggregator) -> List[LogRef]:
        """Add the cached parts to ``aggregator``; return the logs still to score."""
        todo = []
        for ref in refs:
            path = self.path(ref)
            try:
                part = LogPart.from_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError, IndexError):  # absent or damaged: score again
                todo.append(ref)
                continue
            if part.spool and not (self.folder / part.spool).is_file():  # its rows are gone: score again
                todo.append(ref)
                continue
            aggregator.add_part(part)
        return todo

    def spool(self, refs: Sequence[LogRef]) -> str:
        """The row spool of an engine run over ``refs`` (its own name: earlier spools stay valid)."""
        key = json.dumps([self.salt] + [asdict(ref) for ref in refs], sort_keys=True, default=str)
        return str(self.folder / f"rows-{hashlib.sha256(key.encode()).hexdigest()[:24]}.parquet")

    def store(self, refs: Iterable[LogRef], aggregator: FleetAggregator) -> None:
        for ref in refs:
            atomic_write_text(self.path(ref), aggregator.part(ref.path).to_json())


def _chunks(plan: FleetPlan, refs: Sequence[LogRef], budget: Optional[int]) -> Iterable[FleetPlan]:
    """``plan`` over consecutive groups of ``refs`` of about ``budget`` frames (one group if None)."""
    if budget is None:
        yield plan.with_logs(refs)
        return
    chunk: List[LogRef] = []
    frames = 0
    for ref in refs:
        chunk.append(ref)
        frames += frames_of(ref)
        if frames >= budget:
            yield plan.with_logs(chunk, frames)
            chunk, frames = [], 0
    if chunk:
        yield plan.with_logs(chunk, frames)


def _score(plan: FleetPlan, todo: Sequence[LogRef], opts: "FleetOptions", cache: _PartCache,
           aggregator: FleetAggregator) -> None:
    """Run the engine over the logs still to score, writing the cache after each chunk of logs."""
    from tqdm.auto import tqdm

    local = opts.engine == "local"
    with tqdm(total=plan.with_logs(todo).frames, unit="frame", desc="fleet validate",
              disable=not (opts.progress and local)) as bar:
        for sub in _chunks(plan, todo, CHECKPOINT_FRAMES.get(opts.engine)):
            sub = replace(sub, spool=cache.spool(sub.logs))
            fresh = ENGINES[opts.engine](sub, opts, bar if local else None)
            fresh.close()
            cache.store(sub.logs, fresh)
            aggregator.merge(fresh)


# -- the run -----------------------------------------------------------------------------------
def _need_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("per_frame.parquet is written with pyarrow, which is not installed: "
                                     "pip install 'edgecam[host]' (or pip install pyarrow).") from exc


def _plan(inputs, keras, edges, opts: "FleetOptions") -> FleetPlan:
    return build_plan(inputs, keras, edges, vehicle_from=opts.vehicle_from, sample=opts.sample,
                      method=opts.method, batch_size=opts.batch_size, target_layer=opts.target_layer,
                      safe_mode=opts.safe_mode, k_worst=opts.k_worst)


def fleet_validate(
    inputs: Sequence[Union[str, Path]],
    keras: Sequence[Union[str, Path]],
    out: Union[str, Path],
    edges: Sequence[Union[str, Path]] = (),
    options: Optional[FleetOptions] = None,
    **overrides: Any,
) -> FleetResult:
    """Validate a fleet's run logs against full Grad-CAM of their Keras models.

    Args:
        inputs: run logs (``.jsonl``), folders searched for them, or globs.
        keras: the Keras models the fleet ran (matched to logs by the sha256 of their bytes).
        out: the output folder.
        edges: the converted models (optional): their metadata gives the preprocessing and classes.
        options: a :class:`FleetOptions`; **overrides: its fields by keyword (``sample=60``,
            ``min_pearson=0.9``, ``engine="ray"`` …).

    Returns:
        A :class:`FleetResult`; ``passed`` is False when a vehicle fails a gate.

    Raises:
        InputError: no log, no model, bad options. MissingDependencyError: pyarrow, or Ray for
        ``engine="ray"``. OutputError: ``out`` is not writable.
    """
    opts = FleetOptions.of(options, **overrides)
    _need_pyarrow()
    out_dir = ensure_writable_dir(out)
    plan = _plan(inputs, keras, edges, opts)
    cache = _PartCache(out_dir / "cache", plan)
    aggregator = FleetAggregator(plan.k_worst)
    todo = cache.load(plan.logs, aggregator) if opts.resume else list(plan.logs)
    if todo:
        _score(plan, todo, opts, cache, aggregator)
    from ._outputs import write_outputs

    return write_outputs(out_dir, plan, opts, aggregator, reused=len(plan.logs) - len(todo))
