"""A synthetic fleet: N vehicles × D days of real ``edgecam run`` logs, for tests, demos and benchmarks.

Every log is written by the device path itself (:func:`firmware_host.runner.run`, the code behind
``edgecam run --log --save-frames --vehicle-id``) on drive videos from the fog generator
(:func:`toolkit.datasets.drive.render_drive_video`). Only the clock is simulated: each drive
starts at a time within the driving hours of its day, and its frames are ``frame_interval_s``
apart (the source's ``clock``), so the timestamps, the run header and the days are those of a
real fleet. Morning drives meet dense fog, afternoon drives clear air.

Three things a fleet operator must see are built in, and written down in ``fleet.json``:

* **a model update**: the first vehicle runs model A, then model B (another Keras model, by
  default model A with perturbed weights: a "retrained" version with another source sha256)
  from the middle of its drives on;
* **a degraded camera**: the last vehicle's frames are dimmed, blurred and noisy
  (:func:`degrade_frame`) before inference, more so drive after drive. Its CAMs become weak and
  noise-dominated, so the maps it logs no longer match full Grad-CAM on the frames it saved:
  its fidelity drifts;
* **broken records**: a record cut in the middle of the file (``malformed``), a record whose
  CAM is not a list of numbers (``invalid``), a log whose last line a power cut truncated and a
  saved frame that no longer decodes (``unreadable_frame``).

Layout under ``OUT``: ``models/`` (the Keras files and their conversions), ``logs/<vehicle>/
run-<YYYYMMDD>-<HHMM>.jsonl`` with ``run-…_frames/`` beside it (the vehicle is the log's folder
and the ``vehicle`` of every record), and ``fleet.json`` (the truth: vehicles, runs, faults,
the model change). TensorFlow is needed to convert (and perturb) the models only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host._io import atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError

__all__ = ["FleetSpec", "SynthRun", "Fault", "SynthFleet", "synthesize_fleet", "degrade_frame", "perturb_model",
           "demo_fleet", "DEMO_FLEET", "FAULT_KINDS"]

PathLike = Union[str, Path]

#: The injected faults, one of each per fleet (when there are enough logs).
FAULT_KINDS = ("malformed", "invalid", "truncated", "unreadable_frame")

_DAY = 86400.0


@dataclass(frozen=True)
class FleetSpec:
    """The shape of a synthetic fleet (every size small by default: seconds, not minutes).

    Attributes:
        vehicles: number of vehicles (``veh-01`` …).
        days: number of days, from ``first_day`` (``YYYY-MM-DD``, UTC).
        drives_per_day: drives per vehicle and day, spread over ``hours`` (UTC, start and end).
        frames: frames per drive; ``frame_interval_s`` simulated seconds apart.
        save_every: every Nth frame is saved beside the log (``--save-frames``).
        size: ``(height, width)`` of the drive videos.
        seed: every random choice derives from it.
        model_change / degraded / faults: build in the model update, the degraded camera and
            the broken records (see the module docstring).
    """

    vehicles: int = 6
    days: int = 2
    drives_per_day: int = 2
    frames: int = 16
    frame_interval_s: float = 60.0
    save_every: int = 2
    size: Tuple[int, int] = (48, 64)
    first_day: str = "2026-03-02"
    hours: Tuple[float, float] = (6.0, 20.0)
    seed: int = 0
    model_change: bool = True
    degraded: bool = True
    faults: bool = True

    def __post_init__(self) -> None:
        checks = [
            ("vehicles", 1 <= self.vehicles <= 1000, "in [1, 1000]"),
            ("days", 1 <= self.days <= 366, "in [1, 366]"),
            ("drives_per_day", 1 <= self.drives_per_day <= 24, "in [1, 24]"),
            ("frames", 2 <= self.frames <= 100_000, "in [2, 100000]"),
            ("save_every", 1 <= self.save_every <= self.frames, "in [1, frames]"),
            ("frame_interval_s", 0 < self.frame_interval_s <= 3600, "in (0, 3600]"),
            ("size", len(self.size) == 2 and all(16 <= int(v) <= 1080 for v in self.size),
             "(height, width), each in [16, 1080]"),
            ("hours", 0 <= self.hours[0] < self.hours[1] <= 24, "(start, end) with 0 <= start < end <= 24"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise InputError(f"FleetSpec.{name} must be {rule}. Got: {getattr(self, name)!r}.")
        _parse_day(self.first_day)
        span = (self.hours[1] - self.hours[0]) * 3600 / self.drives_per_day
        if self.frames * self.frame_interval_s > span:
            raise InputError(
                f"A drive of {self.frames} frames {self.frame_interval_s:g} s apart does not fit in "
                f"{span / 60:.0f} min ({self.drives_per_day} drives in {self.hours[0]:g}-{self.hours[1]:g} h). "
                "Pass fewer frames, a shorter interval or fewer drives per day.")

    @property
    def vehicle_ids(self) -> Tuple[str, ...]:
        width = max(2, len(str(self.vehicles)))
        return tuple(f"veh-{i + 1:0{width}d}" for i in range(self.vehicles))

    @property
    def changing_vehicle(self) -> Optional[str]:
        """The vehicle that switches to model B (needs two drives at least)."""
        return self.vehicle_ids[0] if self.model_change and self.days * self.drives_per_day >= 2 else None

    @property
    def degraded_vehicle(self) -> Optional[str]:
        """The vehicle with the degraded camera (another one than the changing vehicle)."""
        ids = self.vehicle_ids
        if not self.degraded or (len(ids) == 1 and self.changing_vehicle is not None):
            return None
        return ids[-1]


@dataclass(frozen=True)
class SynthRun:
    """One drive of one vehicle: one ``edgecam run`` and its log.

    Attributes:
        vehicle / day: who and when (``YYYY-MM-DD``, UTC).
        log: the ``.jsonl``.
        started: unix seconds of its first frame.
        model: ``a`` or ``b``; ``model_sha256`` the source Keras file's sha256 in the records.
        frames / saved: frames explained, frames saved beside the log.
        severity: camera degradation in [0, 1] (0: a healthy camera).
        dense_visibility: the drive's thickest fog, in metres.
    """

    vehicle: str
    day: str
    log: Path
    started: float
    model: str
    model_sha256: str
    frames: int
    saved: int
    severity: float
    dense_visibility: float


@dataclass(frozen=True)
class Fault:
    """A broken record or frame put into a log on purpose: ``kind`` (in :data:`FAULT_KINDS`),
    the ``log``, its 1-based ``line`` and, for ``unreadable_frame``, the ``frame`` file."""

    kind: str
    log: Path
    line: int
    frame: Optional[Path] = None


@dataclass(frozen=True)
class SynthFleet:
    """What :func:`synthesize_fleet` wrote.

    Attributes:
        out_dir: the output folder; ``logs_dir`` its ``logs/``; ``truth`` its ``fleet.json``.
        keras: ``{"a": path, "b": path}`` the Keras models (what ``fleet validate --keras`` takes).
        edge: ``{"a": path, "b": path}`` their conversions (what the vehicles ran).
        sha256: ``{"a": hex, "b": hex}`` the Keras files' sha256 (the records' ``model``).
        runs: every drive, in order of vehicle and time.
        faults: the injected faults.
        changing_vehicle / degraded_vehicle: the vehicles with the model update / bad camera.
        model_change_at: unix seconds of the changing vehicle's first drive on model B.
        seconds: wall time of the generation.
    """

    out_dir: Path
    logs_dir: Path
    truth: Path
    keras: Mapping[str, Path]
    edge: Mapping[str, Path]
    sha256: Mapping[str, str]
    runs: Tuple[SynthRun, ...] = field(repr=False)
    faults: Tuple[Fault, ...] = field(repr=False)
    changing_vehicle: Optional[str] = None
    degraded_vehicle: Optional[str] = None
    model_change_at: Optional[float] = None
    seconds: float = 0.0

    @property
    def logs(self) -> List[Path]:
        return [run.log for run in self.runs]


# -- the camera and the models -----------------------------------------------------------------
def degrade_frame(image_bgr: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """A failing camera: dimmed exposure, a blurred (dirty or misfocused) lens and sensor noise.

    Args:
        image_bgr: ``(H, W, 3)`` uint8.
        severity: 0 (healthy: the image unchanged) to 1 (exposure × 0.07, blur σ = 2.5 px,
            noise σ = 5 grey levels).
        rng: the noise's generator.

    Returns:
        A new ``(H, W, 3)`` uint8 image.
    """
    import cv2

    s = float(np.clip(severity, 0.0, 1.0))
    if s == 0:
        return image_bgr.copy()
    x = cv2.GaussianBlur(image_bgr, (0, 0), 2.5 * s).astype(np.float32)
    x = x * (1.0 - 0.93 * s) + rng.normal(0.0, 5.0 * s, x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def perturb_model(keras_path: PathLike, out: PathLike, seed: int = 0, scale: float = 0.05) -> Path:
    """Model "B": a copy of a Keras model with every weight array multiplied by ``1 + scale·N(0, 1)``.

    A stand-in for a retrained version: same architecture and classes, close predictions, another
    file and so another source sha256.

    Raises:
        InputError / ConversionError: the model cannot be loaded (see ``converters.loading``).
    """
    from converters.loading import load_keras_model

    model = load_keras_model(keras_path)
    rng = np.random.default_rng(seed)
    model.set_weights([w * (1.0 + scale * rng.standard_normal(w.shape)).astype(w.dtype) for w in model.get_weights()])
    out = Path(out)
    ensure_writable_dir(out.parent)
    model.save(out)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _converted_from(edge: Path, sha: str) -> bool:
    """Whether ``edge`` is an edgecam model converted from the Keras file with this sha256."""
    from firmware_host.errors import EdgecamError
    from firmware_host.formats import read_metadata

    try:
        return edge.is_file() and read_metadata(edge).source.get("sha256") == sha
    except EdgecamError:
        return False


def _edge_model(keras: Path, models_dir: Path, labels: Optional[Sequence[str]], given: Optional[Path] = None) -> Path:
    """The conversion of ``keras``: ``given``, one beside it or one in ``models_dir`` made from these
    exact bytes is reused, else it is converted (float32) into ``models_dir``."""
    sha = _sha256(keras)
    for candidate in (*([given] if given else []), keras.with_suffix(".tflite"), models_dir / f"{keras.stem}.tflite"):
        if _converted_from(candidate, sha):
            return candidate
    from converters import convert

    beside = keras.with_name(f"{keras.stem}_labels.txt")
    result = convert(keras, models_dir / f"{keras.stem}.tflite", quantize="none",
                     labels=labels if labels is not None else (beside if beside.is_file() else None))
    return Path(result.path)


def _prepare_models(model_a: PathLike, model_b: Optional[PathLike], models_dir: Path, seed: int,
                    echo: Callable[[str], None], edge_a: Optional[PathLike] = None) -> Tuple[Dict[str, Path], Dict[str, Path]]:
    """``({"a", "b"} → Keras path, {"a", "b"} → converted path)``; B is made from A when not given."""
    keras_a = Path(model_a)
    if not keras_a.is_file():
        raise InputError(f"--model '{keras_a}' is not a file. Pass the Keras model (.keras) the fleet runs.")
    edge_a = _edge_model(keras_a, models_dir, None, None if edge_a is None else Path(edge_a))
    if model_b is None:
        keras_b = models_dir / f"{keras_a.stem}_b.keras"
        if not keras_b.is_file():  # made once per output folder, then reused with its conversion
            echo(f"model B: {keras_a.name} with perturbed weights → {keras_b}")
            perturb_model(keras_a, keras_b, seed=seed + 1)
    else:
        keras_b = Path(model_b)
        if not keras_b.is_file():
            raise InputError(f"--model-b '{keras_b}' is not a file. Pass a second Keras model, or omit it.")
    if _sha256(keras_b) == _sha256(keras_a):
        raise InputError(f"--model-b '{keras_b}' has the same bytes as --model: a model change needs another model.")
    from firmware_host.formats import read_metadata

    edge_b = _edge_model(keras_b, models_dir, list(read_metadata(edge_a).classes))
    return {"a": keras_a, "b": keras_b}, {"a": edge_a, "b": edge_b}


# -- the schedule ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Drive:
    vehicle: str
    day: str
    index: int  # the vehicle's drive number, 0-based
    start: float
    dense_visibility: float
    model: str
    severity: float
    seed: int


def _parse_day(text: str) -> float:
    try:
        day = _dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=_dt.timezone.utc)
    except (TypeError, ValueError):
        raise InputError(f"FleetSpec.first_day must be a date YYYY-MM-DD. Got: {text!r}.") from None
    return day.timestamp()


def _fog_at(hour: float, spec: FleetSpec, rng: np.random.Generator) -> float:
    """The thickest fog of a drive starting at ``hour``: dense at dawn, clear by the afternoon."""
    h0, h1 = spec.hours
    phase = (hour - h0) / max(h1 - h0, 1e-9)
    log_v = math.log(20.0) + (math.log(3000.0) - math.log(20.0)) * min(1.0, 1.6 * phase)
    return float(math.exp(log_v + rng.normal(0.0, 0.3)))


def _schedule(spec: FleetSpec) -> List[_Drive]:
    """Every drive of every vehicle, in order of vehicle and time."""
    rng = np.random.default_rng(spec.seed)
    first = _parse_day(spec.first_day)
    per_vehicle = spec.days * spec.drives_per_day
    slot = (spec.hours[1] - spec.hours[0]) * 3600 / spec.drives_per_day
    length = spec.frames * spec.frame_interval_s
    drives = []
    for v, vehicle in enumerate(spec.vehicle_ids):
        for n in range(per_vehicle):
            day, k = divmod(n, spec.drives_per_day)
            start = first + day * _DAY + spec.hours[0] * 3600 + k * slot + float(rng.uniform(0, slot - length))
            start = float(round(start))
            hour = (start - first - day * _DAY) / 3600
            model = "b" if vehicle == spec.changing_vehicle and n >= per_vehicle // 2 else "a"
            severity = 0.5 + 0.5 * n / max(per_vehicle - 1, 1) if vehicle == spec.degraded_vehicle else 0.0
            drives.append(_Drive(vehicle, _dt.datetime.fromtimestamp(start, _dt.timezone.utc).strftime("%Y-%m-%d"),
                                 n, start, _fog_at(hour, spec, rng), model, severity,
                                 int(spec.seed * 100_003 + v * 1009 + n)))
    return drives


# -- one drive ---------------------------------------------------------------------------------
def _source_for(drive: _Drive, spec: FleetSpec, work: Path) -> Path:
    """The drive's video; for a degraded camera, its frames as the camera delivered them (PNG folder)."""
    import cv2

    from toolkit.datasets.drive import render_drive_video

    video = render_drive_video(work / "drive.avi", frames=spec.frames, fps=10.0,
                               size=spec.size, seed=drive.seed, dense_visibility=drive.dense_visibility,
                               progress=False).path
    if drive.severity <= 0:
        return video
    folder = ensure_writable_dir(work / "camera")
    rng = np.random.default_rng(drive.seed)
    capture = cv2.VideoCapture(str(video))
    try:
        i = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            cv2.imwrite(str(folder / f"{i:06d}.png"), degrade_frame(frame, drive.severity, rng))
            i += 1
    finally:
        capture.release()
    return folder


def _drive(drive: _Drive, spec: FleetSpec, model, sha: str, logs_dir: Path, work: Path) -> SynthRun:
    """Render the drive and run the device path on it: one headed log with saved frames."""
    from firmware_host.runner import run

    stamp = _dt.datetime.fromtimestamp(drive.start, _dt.timezone.utc).strftime("%Y%m%d-%H%M")
    log = ensure_writable_dir(logs_dir / drive.vehicle) / f"run-{stamp}.jsonl"
    scratch = ensure_writable_dir(work / f"{drive.vehicle}-{drive.index}")
    try:
        summary = run(model, _source_for(drive, spec, scratch), log=log, save_frames=spec.save_every,
                      vehicle_id=drive.vehicle, fsync_every=10**6,  # no power cut to survive: close() syncs
                      notify=lambda message: None,
                      source_options={"clock": lambda i, t0=drive.start: t0 + i * spec.frame_interval_s})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the video (and degraded frames) are not kept
    saved = -(-summary.frames // spec.save_every)
    return SynthRun(drive.vehicle, drive.day, log, drive.start, drive.model, sha, summary.frames, saved,
                    round(drive.severity, 4), round(drive.dense_visibility, 2))


# -- faults ------------------------------------------------------------------------------------
def _lines(log: Path) -> List[str]:
    return log.read_text(encoding="utf-8").splitlines(keepends=True)


def _inject(kind: str, log: Path, rng: np.random.Generator) -> Fault:
    """Break one record (or frame) of ``log`` the way ``kind`` says; never the header (line 1)."""
    lines = _lines(log)
    if kind == "truncated":  # a power cut in the middle of the last record
        last = lines[-1]
        lines[-1] = last[: max(1, len(last) // 2)].rstrip("\n")
        log.write_text("".join(lines), encoding="utf-8")
        return Fault(kind, log, len(lines))
    framed = [i for i, text in enumerate(lines[1:-1], start=1) if '"frame_path"' in text]
    i = int(rng.choice(framed)) if framed else 1
    record = json.loads(lines[i])
    if kind == "unreadable_frame":
        frame = log.parent / record["frame_path"]
        frame.write_bytes(b"\xff\xd8 not a JPEG any more\n")
        return Fault(kind, log, i + 1, frame)
    if kind == "invalid":
        record["cam"] = "unreadable"
        lines[i] = json.dumps(record, separators=(",", ":")) + "\n"
    else:  # malformed: a line cut short in the middle of the file (a bad sector, a bad copy)
        lines[i] = lines[i][: len(lines[i]) // 3] + "\n"
    log.write_text("".join(lines), encoding="utf-8")
    return Fault(kind, log, i + 1)


def _inject_faults(runs: Sequence[SynthRun], spec: FleetSpec) -> List[Fault]:
    """One fault of each kind, each in another log of a healthy vehicle (as far as there are logs)."""
    if not spec.faults:
        return []
    rng = np.random.default_rng(spec.seed + 7)
    special = {spec.changing_vehicle, spec.degraded_vehicle}
    candidates = [r.log for r in runs if r.vehicle not in special] or [r.log for r in runs]
    order = rng.permutation(len(candidates))
    return [_inject(kind, candidates[int(order[i % len(order)])], rng) for i, kind in enumerate(FAULT_KINDS)]


# -- the fleet ---------------------------------------------------------------------------------
def synthesize_fleet(out_dir: PathLike, model_a: PathLike, model_b: Optional[PathLike] = None,
                     spec: Optional[FleetSpec] = None, echo: Callable[[str], None] = lambda message: None,
                     edge_a: Optional[PathLike] = None, **overrides: Any) -> SynthFleet:
    """Write a synthetic fleet (see the module docstring) into ``out_dir``.

    Args:
        out_dir: output folder (created); an existing ``logs/`` in it is replaced.
        model_a: the Keras model every vehicle runs (its ``.tflite`` beside it, when converted
            from these bytes, is reused; else it is converted, float32).
        model_b: the model the changing vehicle switches to (default: ``model_a`` with
            perturbed weights, written to ``models/`` once and reused by later calls).
        spec: a :class:`FleetSpec`; ``overrides`` are its fields by name.
        echo: progress messages.
        edge_a: a conversion of ``model_a`` to run (used when converted from these bytes).

    Returns:
        A :class:`SynthFleet`; the same truth is in ``out_dir/fleet.json``.

    Raises:
        InputError: bad sizes, or a model that is not a file.
        ConversionError: a model cannot be converted.
    """
    spec = replace(spec or FleetSpec(), **overrides)
    start = time.perf_counter()
    out = ensure_writable_dir(out_dir)
    keras, edge = _prepare_models(model_a, model_b, ensure_writable_dir(out / "models"), spec.seed, echo, edge_a)
    from firmware_host import ExplainableModel

    loaded = {key: ExplainableModel(path) for key, path in edge.items()}
    sha = {key: _sha256(path) for key, path in keras.items()}
    logs_dir = out / "logs"
    shutil.rmtree(logs_dir, ignore_errors=True)
    drives = _schedule(spec)
    echo(f"{spec.vehicles} vehicles × {spec.days} days × {spec.drives_per_day} drives of {spec.frames} frames")
    with tempfile.TemporaryDirectory(prefix="edgecam-fleet-") as work:
        runs = tuple(_drive(d, spec, loaded[d.model], sha[d.model], logs_dir, Path(work)) for d in drives)
    faults = tuple(_inject_faults(runs, spec))
    change = next((r.started for r in runs if r.vehicle == spec.changing_vehicle and r.model == "b"), None)
    fleet = SynthFleet(out, logs_dir, out / "fleet.json", keras, edge, sha, runs, faults, spec.changing_vehicle,
                       spec.degraded_vehicle, change, time.perf_counter() - start)
    atomic_write_text(fleet.truth, json.dumps(_truth(fleet, spec), indent=1) + "\n")
    echo(f"{len(runs)} logs in {fleet.seconds:.1f} s → {logs_dir}")
    return replace(fleet, seconds=time.perf_counter() - start)


def _truth(fleet: SynthFleet, spec: FleetSpec) -> Dict[str, Any]:
    """``fleet.json``: what was built in, for tests and for reading a fleet report against."""
    def rel(path: Path) -> str:
        return path.resolve().relative_to(fleet.out_dir.resolve()).as_posix() if path.resolve().is_relative_to(
            fleet.out_dir.resolve()) else str(path)

    return {
        "format": "edgecam-synth-fleet", "version": 1,
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()},
        "models": {k: {"keras": str(fleet.keras[k]), "edge": str(fleet.edge[k]), "sha256": fleet.sha256[k]}
                   for k in ("a", "b")},
        "changing_vehicle": fleet.changing_vehicle, "model_change_at": fleet.model_change_at,
        "degraded_vehicle": fleet.degraded_vehicle,
        "runs": [{"vehicle": r.vehicle, "day": r.day, "log": rel(r.log), "started": r.started, "model": r.model,
                  "model_sha256": r.model_sha256, "frames": r.frames, "saved": r.saved, "severity": r.severity,
                  "dense_visibility_m": r.dense_visibility} for r in fleet.runs],
        "faults": [{"kind": f.kind, "log": rel(f.log), "line": f.line,
                    **({"frame": rel(f.frame)} if f.frame is not None else {})} for f in fleet.faults],
    }


# -- the demo's optional step ------------------------------------------------------------------
#: ``edgecam demo --fleet``: 4 vehicles × 2 days × 2 drives of 12 frames.
DEMO_FLEET = FleetSpec(vehicles=4, days=2, drives_per_day=2, frames=12, size=(72, 96))


def demo_fleet(out_dir: PathLike, keras: PathLike, edge: PathLike, seed: int = 0, progress: bool = False,
               echo: Callable[[str], None] = print, spec: FleetSpec = DEMO_FLEET) -> Dict[str, Any]:
    """Write a small fleet of the demo's model and validate it with ``edgecam fleet validate``.

    Returns:
        What the demo's summary records: the fleet folder, its truth, and (when fleet validation
        is installed: pyarrow) the report, the verdict and the failing vehicles.
    """
    from firmware_host.errors import MissingDependencyError

    fleet = synthesize_fleet(out_dir, keras, spec=replace(spec, seed=seed), echo=echo, edge_a=edge)
    info: Dict[str, Any] = {"logs": str(fleet.logs_dir), "truth": str(fleet.truth), "runs": len(fleet.runs),
                            "degraded_vehicle": fleet.degraded_vehicle, "changing_vehicle": fleet.changing_vehicle}
    try:
        from toolkit.fleet.api import fleet_validate

        result = fleet_validate([fleet.logs_dir], [fleet.keras["a"], fleet.keras["b"]], fleet.out_dir / "report",
                                [fleet.edge["a"], fleet.edge["b"]], min_p05=0.98, progress=progress)
    except (ImportError, MissingDependencyError) as exc:
        echo(f"      fleet validation skipped: {exc}")
        return info
    verdict = result.summary["verdict"]
    report = result.report_path or result.summary_path
    echo(f"      fleet: {len(fleet.runs)} logs, failing vehicles {', '.join(verdict['failing_vehicles']) or 'none'} "
         f"→ {report}")
    return {**info, "report": str(report), "passed": verdict["pass"], "failing_vehicles": list(verdict["failing_vehicles"])}
