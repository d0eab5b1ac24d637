"""The fleet report: one self-contained ``fleet_report.html`` from a ``fleet validate`` output folder.

Reads what ``edgecam fleet validate`` wrote in ``--out DIR`` (docs/fleet.md):

- ``fleet_summary.json`` (schema ``edgecam.fleet_summary/1``): totals, the verdict, per vehicle
  its figures, days, model changes and class timeline, the worst frames;
- ``per_frame.parquet`` (optional, read with pyarrow when installed): one row per validated frame,
  for the fidelity-over-time charts (without it, the charts show one point per vehicle-day);
- ``worst/*.npz`` (``image`` uint8 ``(H, W, 3)``, ``edge`` and ``full`` ``(h, w)`` maps): the
  worst frames, drawn with the validation report's panels (:func:`toolkit.report.html.case_html`).

Like the validation report: no scripts and no external URLs; images are base64 PNGs, charts are
inline SVG. Every string that comes from the logs (vehicle names, paths, model names) is escaped.
The page is bounded whatever the fleet's size: at most :data:`MAX_POINTS` points per chart (more
are binned over time), :data:`MAX_SEGMENTS` class segments per strip, :data:`MAX_VEHICLE_SECTIONS`
vehicle sections, :data:`MAX_WORST` worst frames and :data:`MAX_TABLE_ROWS` rows per table.
"""

from __future__ import annotations

import html
import json
import math
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host import cam as _cam
from firmware_host._io import atomic_write_text
from firmware_host.errors import InputError
from toolkit.report import ReportCase
from toolkit.report.html import CSS, case_html

__all__ = [
    "SCHEMA",
    "FramePoints",
    "WorstFrame",
    "load_summary",
    "clean_summary",
    "read_frame_points",
    "load_worst_frames",
    "render_fleet_report",
    "write_report",
]

SCHEMA = "edgecam.fleet_summary/1"
REPORT_NAME = "fleet_report.html"
MAX_POINTS = 240  # fidelity points per vehicle chart; beyond that, medians over time bins
MAX_SEGMENTS = 240  # rectangles per class strip; beyond that, the most frequent class per bin
MAX_VEHICLE_SECTIONS = 100  # vehicles with charts (worst first); the rest are in the table
MAX_WORST = 16  # worst frames drawn (4 PNGs each)
MAX_TABLE_ROWS = 500  # rows of the vehicle and log tables
MAX_CLASSES = 256  # class indices drawn in the strip; others are "unknown"
MAX_DAY_ROWS = 62  # rows of a vehicle's per-day table (a month of days with one model change each)
MAX_FAILURES_SHOWN = 20  # failing vehicles named in the banner
THUMB = 192  # longest side of a worst frame's image, as in the validation report

# What each skip reason of fleet_summary.json means; unknown reasons are shown by their key.
SKIP_LABELS = {
    "malformed": "corrupt or truncated records",
    "invalid": "records with invalid fields",
    "no_frame_path": "records without a saved frame",
    "unreadable": "frames whose image could not be read",
    "no_model": "records with no matching --keras model",
    "sampled_out": "frames left out by --sample",
}
# Reasons the totals always list, 0 when absent: an operator asks about these first.
ALWAYS_SHOWN = ("malformed", "no_model", "unreadable", "sampled_out")
# Class colours along a fog scale (viridis stops: clear → dense); unknown classes are grey.
CLASS_COLOURS = ("#fde725", "#a0da39", "#4ac16d", "#1fa187", "#277f8e", "#365c8d", "#46327e", "#440154")
MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
UNKNOWN_COLOUR = "#bbbbbb"
# Timestamps drawn on time axes (unix seconds, 2000-01-01 to 2100-01-01 UTC); others are counted.
CLOCK_RANGE = (946684800.0, 4102444800.0)
# Tick spacings for time axes, in seconds (1 min … 1 week).
TICK_STEPS = (60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
CHART_W, FID_H, STRIP_H, LEFT, RIGHT = 900, 170, 46, 52, 12

_FLEET_CSS = """
.tag{display:inline-block;padding:1px 8px;border-radius:4px;color:#fff;font-size:.8em;vertical-align:middle}
.vehicle{margin:18px 0 26px} .vehicle h3{margin:4px 0}
svg.chart{display:block;max-width:100%;height:auto;font-size:11px;font-family:system-ui,sans-serif}
.legend span{display:inline-block;margin-right:12px;font-size:.85em}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;border:1px solid #999}
ul.failures{margin:2px 0 6px 18px;color:#c62828;font-size:.9em}
.note{color:#555;font-size:.85em} table.days{font-size:.8em}
"""


# -- inputs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FramePoints:
    """One vehicle's validated frames, for its fidelity chart.

    Attributes:
        t: ``(N,)`` float64 unix timestamps (NaN when a record had none).
        pearson: ``(N,)`` float64 feature-map Pearson of edge vs full Grad-CAM.
        model: ``(N,)`` object array of source-model sha256 hex (``""`` when unknown).
    """

    t: np.ndarray
    pearson: np.ndarray
    model: np.ndarray


NO_POINTS = FramePoints(t=np.zeros(0), pearson=np.zeros(0), model=np.zeros(0, object))


@dataclass(frozen=True)
class WorstFrame:
    """One worst frame ready to draw: its anchor in the page, vehicle and validation-report case."""

    anchor: str
    vehicle: str
    case: ReportCase


def load_summary(path: Union[str, Path]) -> Dict[str, Any]:
    """Read ``fleet_summary.json`` and check its schema.

    Raises:
        InputError: the file is missing, is not JSON, or has another schema.
    """
    path = Path(path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no fleet summary. Run `edgecam fleet validate ... --out {path.parent}` first.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON fleet summary ({exc}). Re-run `edgecam fleet validate`.") from exc
    if not isinstance(summary, dict) or summary.get("schema") != SCHEMA:
        found = summary.get("schema") if isinstance(summary, dict) else type(summary).__name__
        raise InputError(f"{path}: schema {found!r}, expected {SCHEMA!r}. Re-run `edgecam fleet validate`.")
    return summary


def read_frame_points(path: Union[str, Path]) -> Tuple[Dict[str, FramePoints], List[str]]:
    """Per vehicle, the validated frames of ``per_frame.parquet`` (only the 4 columns it needs).

    Returns:
        ``({vehicle: FramePoints}, notes)``; ``({}, [why])`` when the file is absent, pyarrow is
        not installed or the file cannot be read: the charts then use the per-day figures.
    """
    path = Path(path)
    if not path.is_file():
        return {}, []
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return {}, [f"{path.name} not read (pyarrow is not installed): fidelity is shown per day."]
    try:
        names = set(pq.read_schema(path).names)
        columns = [c for c in ("vehicle", "timestamp", "pearson", "model") if c in names]
        if not {"vehicle", "pearson"} <= set(columns):
            return {}, [f"{path.name} has no vehicle/pearson columns: fidelity is shown per day."]
        # Strings read as dictionaries: no Python object per row (a fleet has 100,000s of frames).
        table = pq.read_table(path, columns=columns, read_dictionary=[c for c in columns if c in ("vehicle", "model")])
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        return {}, [f"{path.name} could not be read ({exc}): fidelity is shown per day."]
    return _split_by_vehicle(table, columns), []


def _codes(column) -> Tuple[np.ndarray, np.ndarray]:
    """A string column as ``(codes, values)`` (dictionary-encoded: no Python string per row)."""
    encoded = column.combine_chunks().dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    values = np.asarray([("" if v is None else str(v)) for v in encoded.dictionary.to_pylist()] + [""], object)
    return np.where(np.isnan(codes), len(values) - 1, codes).astype(np.int64) if codes.dtype.kind == "f" else codes, values


def _split_by_vehicle(table, columns: Sequence[str]) -> Dict[str, FramePoints]:
    n = table.num_rows
    vehicle, names = _codes(table.column("vehicle"))
    pearson = _floats(table.column("pearson").to_numpy(zero_copy_only=False))
    t = _floats(table.column("timestamp").to_numpy(zero_copy_only=False)) if "timestamp" in columns else np.full(n, np.nan)
    model, models = _codes(table.column("model")) if "model" in columns else (np.zeros(n, np.int64), np.array([""], object))
    order = np.argsort(vehicle, kind="stable")
    starts = np.flatnonzero(np.r_[True, vehicle[order][1:] != vehicle[order][:-1]]) if n else np.zeros(0, np.int64)
    out = {}
    for rows in np.split(order, starts[1:]) if n else []:
        out[str(names[vehicle[rows[0]]])] = FramePoints(t=t[rows], pearson=pearson[rows], model=models[model[rows]])
    return out


def _floats(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values] if values.dtype == object else values, np.float64)


def _inside(out_dir: Path, name: str) -> Optional[Path]:
    """``out_dir / name`` if it stays inside ``out_dir`` (the summary's paths are data)."""
    root = out_dir.resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path != root else None


def _thumbnail(image: np.ndarray) -> np.ndarray:
    import cv2

    scale = THUMB / max(image.shape[:2])
    if scale >= 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _class_name(names: Sequence[str], index: Any) -> str:
    try:
        i = int(index)
    except (TypeError, ValueError, OverflowError):
        return "?"
    return str(names[i]) if 0 <= i < len(names) else f"class {i}"


def _worst_case(out_dir: Path, entry: Mapping, names: Sequence[str]) -> ReportCase:
    path = _inside(out_dir, str(entry.get("file", "")))
    if path is None:
        raise InputError("the path leaves the output folder")
    try:
        with np.load(path, allow_pickle=False) as data:
            edge, full = data["edge"], data["full"]
            image = data["image"] if "image" in data.files else None
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:  # numpy: "contains pickled data" for any non-npz
        raise InputError(f"not a readable .npz with image, edge and full ({type(exc).__name__})") from exc
    missing = image is None  # the frame was unreadable when fleet validate ran: maps over grey
    if missing:
        h, w = np.shape(edge)[:2] if np.ndim(edge) == 2 else (1, 1)
        image = np.full((max(1, round(THUMB * h / max(h, w))), max(1, round(THUMB * w / max(h, w))), 3), 128, np.uint8)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InputError(f"image is {image.dtype} {image.shape}, expected uint8 (H, W, 3)")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    caption = ("frame image not available · " if missing else "") + (
        f"{entry.get('day', '')} · recorded {_class_name(names, entry.get('recorded_class'))} · "
        f"host {_class_name(names, entry.get('host_class'))} · edge {_class_name(names, entry.get('edge_class'))}"
        f" · model {str(entry.get('model') or 'unknown')[:12]} · {entry.get('log', '')}"
    )
    return ReportCase(
        name=f"{entry.get('vehicle', '?')} · frame {entry.get('frame', '?')}",
        image=_thumbnail(image),
        edge_heat=_cam.heatmap(np.asarray(edge, np.float32)),
        full_heat=_cam.heatmap(np.asarray(full, np.float32)),
        metrics={"pearson": _number(entry.get("pearson"))},
        caption=caption,
        group="worst frames (lowest Pearson)",
    )


def load_worst_frames(out_dir: Union[str, Path], summary: Mapping) -> Tuple[List[WorstFrame], List[str]]:
    """The first :data:`MAX_WORST` worst frames of the summary, read from ``worst/*.npz``.

    A missing, damaged or out-of-folder file is a note, never an error.
    """
    out_dir = Path(out_dir)
    summary = clean_summary(summary)
    entries, names = summary["worst_frames"], summary["class_names"]
    frames, notes = [], []
    for i, entry in enumerate(entries[:MAX_WORST]):
        try:
            case = _worst_case(out_dir, entry, names)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            notes.append(f"worst frame {entry.get('file')!s}: not shown ({exc}).")
            continue
        frames.append(WorstFrame(anchor=f"wf{i}", vehicle=str(entry.get("vehicle", "")), case=case))
    if len(entries) > MAX_WORST:
        notes.append(f"{len(entries) - MAX_WORST} more worst frames are listed in fleet_summary.json.")
    return frames, notes


# -- the summary's shape -------------------------------------------------------------------------
def _mapping(value: Any) -> Dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def _list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _maps(value: Any) -> List[Dict[str, Any]]:
    return [_mapping(v) for v in _list(value) if isinstance(v, Mapping)]


def _clean_vehicle(vehicle: Mapping) -> Dict[str, Any]:
    v = _mapping(vehicle)
    v.update(failures=[str(f) for f in _list(v.get("failures"))], models=[str(m) for m in _list(v.get("models"))],
             skipped=_mapping(v.get("skipped")), class_histogram=_mapping(v.get("class_histogram")),
             model_changes=_maps(v.get("model_changes")),
             days=[dict(d, class_histogram=_mapping(d.get("class_histogram")), skipped=_mapping(d.get("skipped")))
                   for d in _maps(v.get("days"))],
             timeline=[r for r in _list(v.get("timeline")) if isinstance(r, (list, tuple)) and len(r) >= 2])
    return v


def clean_summary(summary: Mapping) -> Dict[str, Any]:
    """A copy of ``summary`` with every container the report reads of the expected type.

    ``fleet_summary.json`` is data (it can be edited or truncated by hand): a field of the wrong
    type becomes empty instead of crashing the report; scalars are formatted defensively later.
    """
    s = _mapping(summary)
    totals, verdict = _mapping(s.get("totals")), _mapping(s.get("verdict"))
    totals["skipped"] = _mapping(totals.get("skipped"))
    verdict.update(thresholds=_mapping(verdict.get("thresholds")),
                   failing_vehicles=[str(v) for v in _list(verdict.get("failing_vehicles"))])
    s.update(options=_mapping(s.get("options")), class_names=[str(n) for n in _list(s.get("class_names"))],
             models={k: _mapping(m) for k, m in _mapping(s.get("models")).items()}, totals=totals, verdict=verdict,
             vehicles=[_clean_vehicle(v) for v in _maps(s.get("vehicles"))],
             logs=[dict(g, skipped=_mapping(g.get("skipped"))) for g in _maps(s.get("logs"))],
             worst_frames=_maps(s.get("worst_frames")))
    return s


# -- formatting ------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else ("yes" if value else "no")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = _number(value)
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _short(sha: Any) -> str:
    return _e(str(sha or "unknown")[:12])


def _counts(mapping: Any, zeros: bool = True) -> str:
    if not isinstance(mapping, Mapping):
        return "–"
    shown = ", ".join(f"{_e(k)}: {_num(v)}" for k, v in mapping.items() if zeros or _number(v) != 0)
    return shown or ("–" if zeros else "none")


def _utc(t: float, with_date: bool) -> str:
    try:
        moment = datetime.fromtimestamp(t, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "?"
    return moment.strftime("%m-%d %H:%M" if with_date else "%H:%M")


# -- summary sections ------------------------------------------------------------------------------
def _vehicles(summary: Mapping) -> List[Mapping]:
    """Vehicles worst first, as fleetcore orders them: failing ones, then by Pearson p05, then top-1.

    A vehicle with no validated frame (no p05) counts as the worst; one the verdict names as
    failing is marked failing even if its own ``status`` says otherwise.
    """
    failing = set(summary["verdict"]["failing_vehicles"])

    def key(v: Mapping):
        p05, top1 = _number(v.get("pearson_p05")), _number(v.get("top1"))
        return (v.get("status") != "fail", p05 if math.isfinite(p05) else -math.inf,
                top1 if math.isfinite(top1) else -math.inf, str(v.get("vehicle")))

    vehicles = [dict(v, status="fail") if str(v.get("vehicle")) in failing else v
                for v in summary["vehicles"]]
    return sorted(vehicles, key=key)


def _banner(summary: Mapping, vehicles: Sequence[Mapping]) -> str:
    verdict = summary["verdict"]
    thresholds = verdict["thresholds"]
    gate = ", ".join(f"{_e(k)} ≥ {_num(v)}" for k, v in thresholds.items() if v is not None)
    failing = [v for v in vehicles if v.get("status") == "fail"]
    if not gate:
        cls, title = "none", "NO GATE: no thresholds were set (pass --min-pearson / --min-top1)"
    elif verdict.get("pass") and not failing:
        cls, title = "pass", f"PASS: every vehicle meets {gate}"
    else:
        cls, title = "fail", f"FAIL: {len(failing)} of {len(vehicles)} vehicles miss {gate}"
    items = "".join(
        f"<li>{_e(v.get('vehicle'))}: {_e('; '.join(v['failures']) or 'failed')}</li>"
        for v in failing[:MAX_FAILURES_SHOWN]
    )
    if len(failing) > MAX_FAILURES_SHOWN:
        items += f"<li>… and {len(failing) - MAX_FAILURES_SHOWN} more (see the table)</li>"
    return f'<div class="banner {cls}"><strong>{_e(title)}</strong>' + (f"<ul>{items}</ul>" if items else "") + "</div>"


def _totals(summary: Mapping) -> str:
    totals = summary["totals"]
    skipped = totals["skipped"]
    rows = [(label, totals.get(key)) for key, label in (
        ("logs", "logs"), ("records", "records read"), ("frames", "frames"), ("validated", "frames validated"))]
    rows += [(f"skipped: {SKIP_LABELS.get(k, k)}", skipped.get(k, 0)) for k in dict.fromkeys([*skipped, *ALWAYS_SHOWN])]
    rows += [("engine", summary.get("engine")), ("created", summary.get("created"))]
    rows += [(f"option {k}", v) for k, v in summary["options"].items()]
    body = "".join(
        f'<tr><th class="k">{_e(label)}</th><td>{_cell(value)}</td></tr>'
        for label, value in rows
    )
    return f"<h2>Totals</h2><table>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _num(value) if isinstance(value, (float, np.floating)) else str(int(value))
    return "–" if value is None else _e(value)


def _models(summary: Mapping) -> str:
    models = summary["models"]
    if not models:
        return ""
    rows = "".join(
        f'<tr><td class="k" title="{_e(sha)}"><i style="background:{_model_colour(summary, sha)}">&nbsp;&nbsp;</i> '
        f'{_short(sha)}</td><td class="k">{_e(m.get("name", ""))}</td><td class="k">{_e(m.get("keras", ""))}</td></tr>'
        for sha, m in list(models.items())[:MAX_TABLE_ROWS]
    )
    return f'<h2>Models</h2><table class="legend"><tr><th class="k">source sha256</th><th class="k">name</th><th class="k">Keras file</th></tr>{rows}</table>'


def _model_colour(summary: Mapping, sha: Any) -> str:
    models = list(summary["models"])
    return MODEL_COLOURS[models.index(sha) % len(MODEL_COLOURS)] if sha in models else UNKNOWN_COLOUR


def _vehicle_table(vehicles: Sequence[Mapping]) -> str:
    head = "".join(f"<th>{c}</th>" for c in (
        "status", "frames", "validated", "Pearson median", "Pearson p05", "top-1", "models", "model changes", "skipped"))
    rows = []
    for i, v in enumerate(vehicles[:MAX_TABLE_ROWS]):
        status = "fail" if v.get("status") == "fail" else "pass"
        name = _e(v.get("vehicle"))
        link = f'<a href="#v{i}">{name}</a>' if i < MAX_VEHICLE_SECTIONS else name
        failures = "; ".join(v["failures"])
        rows.append(
            f'<tr><td class="k">{link}</td><td class="k"><span class="tag {status}">{status.upper()}</span>'
            f'{" " + _e(failures) if failures else ""}</td><td>{_num(v.get("frames"))}</td>'
            f'<td>{_num(v.get("validated"))}</td><td>{_num(v.get("pearson_median"))}</td>'
            f'<td>{_num(v.get("pearson_p05"))}</td><td>{_num(v.get("top1"))}</td>'
            f'<td>{len(v["models"])}</td><td>{len(v["model_changes"])}</td>'
            f'<td class="k">{_counts(v.get("skipped"), zeros=False)}</td></tr>'
        )
    more = len(vehicles) - MAX_TABLE_ROWS
    note = f'<p class="note">{more} more vehicles in fleet_summary.json.</p>' if more > 0 else ""
    return f'<h2>Vehicles, worst first</h2><table><tr><th class="k">vehicle</th>{head}</tr>{"".join(rows)}</table>{note}'


def _log_table(summary: Mapping) -> str:
    logs = summary["logs"]
    if not logs:
        return ""
    cols = ("records", "validated", "pearson_median", "pearson_p05", "top1")
    head = "".join(f"<th>{c}</th>" for c in ("records", "validated", "median r", "p05 r", "top-1"))
    rows = "".join(
        f'<tr><td class="k">{_e(g.get("vehicle"))}</td><td class="k">{_e(g.get("run"))}</td>'
        f'<td class="k" title="{_e(g.get("sha256"))}">{_e(g.get("log"))}</td><td class="k">{_short(g.get("model"))}</td>'
        + "".join(f"<td>{_num(g.get(c))}</td>" for c in cols)
        + f'<td class="k">{_counts(g.get("skipped"), zeros=False)}</td></tr>'
        for g in logs[:MAX_TABLE_ROWS]
    )
    more = len(logs) - MAX_TABLE_ROWS
    note = f'<p class="note">{more} more logs in fleet_summary.json.</p>' if more > 0 else ""
    return (f'<h2>Logs</h2><table><tr><th class="k">vehicle</th><th class="k">run</th><th class="k">log</th>'
            f'<th class="k">model</th>{head}<th class="k">skipped</th></tr>{rows}</table>{note}')


# -- charts (inline SVG) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Axis:
    """A time axis shared by one vehicle's fidelity chart and class strip (unix seconds → px)."""

    t0: float
    t1: float

    def x(self, t: float) -> float:
        return LEFT + (t - self.t0) / (self.t1 - self.t0) * (CHART_W - LEFT - RIGHT)


def _clock_ok(t: np.ndarray) -> np.ndarray:
    """Timestamps a device clock could have written: 2000 to 2100 (a clock reset to 1970 is not one)."""
    return np.isfinite(t) & (t >= CLOCK_RANGE[0]) & (t <= CLOCK_RANGE[1])


def _axis(*times: np.ndarray) -> Optional[_Axis]:
    t = np.concatenate([np.asarray(a, np.float64).ravel() for a in times] or [np.zeros(0)])
    t = t[_clock_ok(t)]
    if not t.size:
        return None
    lo, hi = float(t.min()), float(t.max())
    if hi - lo < 60:
        lo, hi = lo - 30, hi + 30
    pad = (hi - lo) * 0.01
    return _Axis(lo - pad, hi + pad)


def _time_grid(axis: _Axis, top: float, bottom: float, labels: bool) -> str:
    """Vertical grid lines with UTC labels; midnight lines are darker (one day ends, one begins)."""
    span = axis.t1 - axis.t0
    step = next((s for s in TICK_STEPS if span / s <= 8), math.ceil(span / 8 / 86400) * 86400)
    parts = []
    for i, t in enumerate(np.arange(math.ceil(axis.t0 / step) * step, axis.t1, step)):
        x, midnight = axis.x(float(t)), float(t) % 86400 == 0
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{"#888" if midnight else "#e4e4e4"}"/>')
        if labels:
            anchor = "end" if x > CHART_W - RIGHT - 30 else "middle"  # the last label stays inside
            parts.append(f'<text x="{x:.1f}" y="{bottom + 13}" text-anchor="{anchor}" fill="#555">'
                         f"{_utc(float(t), midnight or i == 0)}</text>")
    return "".join(parts)


def _change_lines(axis: _Axis, changes: Any, top: float, bottom: float, label: bool) -> str:
    """A red dashed line at each model change, its hashes in a tooltip (``<title>``)."""
    parts = []
    for change in changes:
        t = _number(change.get("t"))
        if not math.isfinite(t) or not axis.t0 <= t <= axis.t1:
            continue
        x = axis.x(t)
        parts.append(
            f'<line class="model-change" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#d62728" '
            f'stroke-width="2" stroke-dasharray="5 3"><title>model {_e(change.get("from"))} → '
            f'{_e(change.get("to"))} at {_utc(t, True)} UTC</title></line>'
        )
        if label:
            parts.append(f'<text x="{x + 3:.1f}" y="{top + 10}" fill="#d62728">model → {_short(change.get("to"))}</text>')
    return "".join(parts)


def _binned(t: np.ndarray, y: np.ndarray, bins: int) -> Tuple[np.ndarray, np.ndarray]:
    """At most ``bins`` points: the mean time and median value of each non-empty time bin."""
    if t.size <= bins:
        return t, y
    idx = _bin_index(t, bins)
    order = np.lexsort((y, idx))  # by bin, then value: each bin's median is its middle element(s)
    idx, t, y = idx[order], t[order], y[order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    counts = np.diff(np.r_[starts, t.size])
    median = (y[starts + (counts - 1) // 2] + y[starts + counts // 2]) / 2
    return np.add.reduceat(t, starts) / counts, median


def _bin_index(t: np.ndarray, bins: int) -> np.ndarray:
    """The index of each time among ``bins`` equal bins spanning ``[t.min(), t.max()]``."""
    span = float(t.max() - t.min()) or 1.0
    return np.clip(((t - t.min()) / span * bins).astype(np.int64), 0, bins - 1)


def _frame_series(points: FramePoints, summary: Mapping) -> Tuple[List[Tuple[np.ndarray, np.ndarray, str, str]], str]:
    """(t, pearson, colour, model) per model, binned to :data:`MAX_POINTS` in all; and a note."""
    ok = _clock_ok(points.t) & np.isfinite(points.pearson)
    total = int(ok.sum())
    series = []
    for model in dict.fromkeys(points.model[ok].tolist()):
        keep = ok & (points.model == model)
        budget = max(10, MAX_POINTS * int(keep.sum()) // max(total, 1))
        t, y = _binned(points.t[keep], points.pearson[keep], budget)
        series.append((t, y, _model_colour(summary, model), str(model)))
    shown = sum(s[0].size for s in series)
    note = f"{total} validated frames" + (f", shown as {shown} medians over time bins" if shown < total else "")
    untimed = int((~_clock_ok(points.t) & np.isfinite(points.pearson)).sum())
    return series, note + (f"; {untimed} without a plausible timestamp (2000–2100) are not drawn" if untimed else "")


def _day_series(vehicle: Mapping, summary: Mapping) -> Tuple[List[Tuple[np.ndarray, np.ndarray, str, str]], str]:
    """Without per-frame rows: one point per day and model (its median), at the mean time of its records."""
    t_line, _, m_line = _timeline(vehicle)
    series: Dict[str, Tuple[list, list]] = {}
    for day in vehicle["days"]:
        if not math.isfinite(_number(day.get("pearson_median"))):
            continue
        model = str(day.get("model") or "")
        try:
            start = datetime.strptime(str(day.get("day")), "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
        same = (t_line >= start) & (t_line < start + 86400) & (m_line == model)
        t = float(t_line[same].mean()) if same.any() else start + 43200
        ts, ys = series.setdefault(model, ([], []))
        ts.append(t)
        ys.append(_number(day.get("pearson_median")))
    out = [(np.array(ts), np.array(ys), _model_colour(summary, m), m) for m, (ts, ys) in series.items()]
    return out, "median per day (per_frame.parquet not available)"


def _timeline(vehicle: Mapping) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = vehicle["timeline"]
    t = np.array([_number(r[0]) for r in rows], np.float64)
    cls = np.array([_number(r[1]) for r in rows], np.float64)
    model = np.array([str(r[2]) if len(r) > 2 and r[2] is not None else "" for r in rows], object)
    keep = _clock_ok(t)
    return t[keep], cls[keep], model[keep]


def _pearson_range(values: np.ndarray, gates: Mapping[str, float]) -> Tuple[float, float]:
    """``(low, tick step)`` of the Pearson axis: [0.8, 1] unless a value or gate is lower.

    One range for every healthy vehicle (so they compare at a glance), wide enough that a drift
    from 0.99 to 0.89 spans half the chart; a vehicle far off gets the range it needs.
    """
    finite = [v for v in [*values.tolist(), *gates.values()] if math.isfinite(v)]
    low = max(-1.0, min(0.8, math.floor(min(finite, default=1.0) * 10) / 10))
    span = 1.0 - low
    step = 0.05 if span <= 0.25 else 0.1 if span <= 0.6 else 0.25
    return max(-1.0, math.floor(round(low / step, 9)) * step), step  # the bottom is a labelled tick


def _fidelity_svg(axis: _Axis, series: Sequence[Tuple], gates: Mapping[str, float], changes: Any) -> str:
    """Pearson over time: one dot per frame (or bin), colour = model, dashed lines = the gates."""
    top, bottom = 8.0, FID_H - 22.0
    low, step = _pearson_range(np.concatenate([s[1] for s in series] or [np.zeros(0)]), gates)

    def y(v: float) -> float:
        return bottom - (min(max(v, low), 1.0) - low) / (1.0 - low) * (bottom - top)

    parts = [f'<svg class="chart fidelity" viewBox="0 0 {CHART_W} {FID_H}" width="{CHART_W}" height="{FID_H}" '
             f'role="img" aria-label="Pearson over time">',
             f'<rect x="{LEFT}" y="{top}" width="{CHART_W - LEFT - RIGHT}" height="{bottom - top}" fill="#fafafa"/>',
             _time_grid(axis, top, bottom, labels=True)]
    for v in np.arange(1.0, low - 1e-9, -step):
        parts.append(f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{CHART_W - RIGHT}" y2="{y(v):.1f}" stroke="#e4e4e4"/>'
                     f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v:.2f}</text>')
    for (flag, gate), dash in zip(gates.items(), ("2 2", "6 3")):
        if math.isfinite(gate):
            parts.append(f'<line class="threshold" x1="{LEFT}" y1="{y(gate):.1f}" x2="{CHART_W - RIGHT}" '
                         f'y2="{y(gate):.1f}" stroke="#c62828" stroke-dasharray="{dash}"><title>{flag} '
                         f"{gate:.3f}</title></line>")
    parts.append(_change_lines(axis, changes, top, bottom, label=True))
    for t, v, colour, model in series:
        dots = "".join(f'<circle cx="{axis.x(a):.1f}" cy="{y(b):.1f}" r="2.2"/>' for a, b in zip(t.tolist(), v.tolist()))
        parts.append(f'<g fill="{colour}"><title>model {_e(model or "unknown")}</title>{dots}</g>')
    parts.append(f'<text x="8" y="{(top + bottom) / 2:.0f}" transform="rotate(-90 8 {(top + bottom) / 2:.0f})" '
                 'text-anchor="middle" fill="#555">Pearson</text></svg>')
    return "".join(parts)


def _runs(t: np.ndarray, cls: np.ndarray) -> List[Tuple[float, float, int]]:
    """Consecutive records of one class as ``(start, end, class)``; a long silence ends a run."""
    if not t.size:
        return []
    order = np.argsort(t, kind="stable")
    t, cls = t[order], cls[order]
    gaps = np.diff(t)
    step = float(np.median(gaps[gaps > 0])) if (gaps > 0).any() else 60.0
    ends = np.r_[np.minimum(t[1:], t[:-1] + 5 * step), t[-1] + step]
    runs: List[Tuple[float, float, int]] = []
    for start, end, c in zip(t.tolist(), ends.tolist(), cls.tolist()):
        c = int(c) if math.isfinite(c) else -1
        if runs and runs[-1][2] == c and runs[-1][1] >= start:
            runs[-1] = (runs[-1][0], end, c)
        else:
            runs.append((start, end, c))
    return runs


def _coarse_runs(t: np.ndarray, cls: np.ndarray, bins: int) -> List[Tuple[float, float, int]]:
    """At most ``bins`` runs: the most frequent class of each time bin (ties: the lower class)."""
    runs = _runs(t, cls)
    if len(runs) <= bins:
        return runs
    edges = np.linspace(float(t.min()), float(t.max()), bins + 1)
    idx = _bin_index(t, bins)
    # Class k counts in column k + 1, anything that is not a class (NaN, < 0, huge) in column 0.
    c = np.where(np.isfinite(cls) & (cls >= 0) & (cls < MAX_CLASSES), cls, -1).astype(np.int64) + 1
    counts = np.bincount(idx * (MAX_CLASSES + 1) + c, minlength=bins * (MAX_CLASSES + 1)).reshape(bins, -1)
    out: List[Tuple[float, float, int]] = []
    for b in np.flatnonzero(counts.sum(axis=1)).tolist():
        mode = int(counts[b].argmax()) - 1
        if out and out[-1][2] == mode and out[-1][1] >= edges[b]:
            out[-1] = (out[-1][0], float(edges[b + 1]), mode)
        else:
            out.append((float(edges[b]), float(edges[b + 1]), mode))
    return out


def _class_colour(index: int, n_classes: int) -> str:
    if not 0 <= index < max(n_classes, 1) or n_classes <= 0:
        return UNKNOWN_COLOUR
    if n_classes > len(CLASS_COLOURS):
        return CLASS_COLOURS[index % len(CLASS_COLOURS)]
    return CLASS_COLOURS[round(index * (len(CLASS_COLOURS) - 1) / max(n_classes - 1, 1))]


def _strip_svg(axis: _Axis, vehicle: Mapping, names: Sequence[str]) -> str:
    """The predicted class along the day, from the vehicle's ``timeline`` (every record)."""
    t, cls, _ = _timeline(vehicle)
    top, bottom = 4.0, 26.0
    rects = "".join(
        f'<rect x="{axis.x(a):.1f}" y="{top}" width="{max(axis.x(b) - axis.x(a), 0.6):.1f}" height="{bottom - top}" '
        f'fill="{_class_colour(c, len(names))}"><title>{_e(_class_name(names, c))} '
        f"{_utc(a, True)}–{_utc(b, False)}</title></rect>"
        for a, b, c in _coarse_runs(t, cls, MAX_SEGMENTS)
    )
    return (f'<svg class="chart strip" viewBox="0 0 {CHART_W} {STRIP_H}" width="{CHART_W}" height="{STRIP_H}" '
            f'role="img" aria-label="class over time"><text x="{LEFT - 4}" y="19" text-anchor="end" fill="#555">'
            f'class</text>{_time_grid(axis, top, bottom, labels=True)}{rects}'
            f'{_change_lines(axis, vehicle["model_changes"], top - 2, bottom + 2, label=False)}</svg>')


def _class_legend(names: Sequence[str]) -> str:
    items = "".join(f'<span><i style="background:{_class_colour(i, len(names))}"></i>{_e(n)}</span>'
                    for i, n in enumerate(names))
    return f'<p class="legend">Class strip: {items}<span><i style="background:{UNKNOWN_COLOUR}"></i>unknown</span></p>'


# -- vehicle sections ------------------------------------------------------------------------------
def _vehicle_facts(vehicle: Mapping, summary: Mapping) -> str:
    models = " → ".join(
        f'<span title="{_e(m)}"><i style="background:{_model_colour(summary, m)}"></i>{_short(m)} '
        f'{_e(summary["models"].get(m, {}).get("name", ""))}</span>'
        for m in vehicle["models"]
    )
    return (f'<p class="meta legend">frames {_num(vehicle.get("frames"))} · validated {_num(vehicle.get("validated"))}'
            f' · Pearson median {_num(vehicle.get("pearson_median"))} · p05 {_num(vehicle.get("pearson_p05"))}'
            f' · top-1 {_num(vehicle.get("top1"))} · classes {_counts(vehicle.get("class_histogram"))}'
            f' · skipped {_counts(vehicle.get("skipped"), zeros=False)}</p><p class="meta legend">models: {models or "unknown"}</p>')


def _days_table(vehicle: Mapping) -> str:
    """One row per day and model: the figures an operator compares across a model update."""
    days = vehicle["days"]
    if not days:
        return ""
    cols = ("frames", "validated", "pearson_median", "pearson_p05", "top1")
    rows = "".join(
        f'<tr><td class="k">{_e(d.get("day"))}</td><td class="k" title="{_e(d.get("model"))}">{_short(d.get("model"))}</td>'
        f'<td class="k">{_e(d.get("plan") or "–")}</td>' + "".join(f"<td>{_num(d.get(c))}</td>" for c in cols)
        + f'<td class="k">{_counts(d.get("class_histogram"))}</td>'
        f'<td class="k">{_counts(d.get("skipped"), zeros=False)}</td></tr>'
        for d in days[:MAX_DAY_ROWS]
    )
    more = f'<p class="note">{len(days) - MAX_DAY_ROWS} more days in fleet_summary.json.</p>' if len(days) > MAX_DAY_ROWS else ""
    return ('<table class="days"><tr><th class="k">day (UTC)</th><th class="k">model</th><th class="k">plan</th>'
            '<th>frames</th><th>validated</th><th>median r</th><th>p05 r</th><th>top-1</th>'
            f'<th class="k">classes</th><th class="k">skipped</th></tr>{rows}</table>{more}')


def _vehicle_section(index: int, vehicle: Mapping, summary: Mapping, points: Optional[FramePoints],
                     worst: Sequence[WorstFrame]) -> str:
    status = "fail" if vehicle.get("status") == "fail" else "pass"
    failures = "".join(f"<li>{_e(f)}</li>" for f in vehicle["failures"])
    series, how = _frame_series(points, summary) if points is not None else _day_series(vehicle, summary)
    t_line = _timeline(vehicle)[0]
    axis = _axis(t_line, *(s[0] for s in series))
    thresholds = summary["verdict"]["thresholds"]
    if axis is None:
        charts = '<p class="note">No timestamps in these records: no charts over time.</p>'
    else:
        gates = {"--min-pearson": _number(thresholds.get("min_pearson")), "--min-p05": _number(thresholds.get("min_p05"))}
        fidelity = (_fidelity_svg(axis, series, gates, vehicle["model_changes"])
                    + f'<p class="note">Fidelity: {_e(how)}. Times are UTC.</p>' if any(s[0].size for s in series)
                    else '<p class="note">No validated frames to chart.</p>')
        charts = fidelity + _strip_svg(axis, vehicle, summary["class_names"])
    links = " ".join(f'<a href="#{w.anchor}">{_e(w.case.name)} (r {_num(w.case.metrics.get("pearson"))})</a>'
                     for w in worst)
    return (f'<section class="vehicle" id="v{index}"><h3>{_e(vehicle.get("vehicle"))} '
            f'<span class="tag {status}">{status.upper()}</span></h3>'
            + (f'<ul class="failures">{failures}</ul>' if failures else "")
            + _vehicle_facts(vehicle, summary) + charts + _days_table(vehicle)
            + (f'<p class="meta">worst frames: {links}</p>' if links else "") + "</section>")


def _worst_section(worst: Sequence[WorstFrame], sections: Mapping[str, int]) -> str:
    """The worst frames, each linking back to its vehicle's section (when that has one)."""
    if not worst:
        return ""
    back = {w.anchor: (f'<p class="meta"><a href="#v{sections[w.vehicle]}">↑ {_e(w.vehicle)}</a></p>'
                       if w.vehicle in sections else "") for w in worst}
    return ("<h2>Worst frames (lowest Pearson): frame, edge map, full Grad-CAM, difference</h2>"
            + "".join(f'<div id="{w.anchor}">{case_html(w.case)}{back[w.anchor]}</div>' for w in worst))


def render_fleet_report(summary: Mapping, points: Optional[Mapping[str, FramePoints]] = None,
                        worst: Sequence[WorstFrame] = (), notes: Iterable[str] = (),
                        title: str = "edgecam fleet validation") -> str:
    """The fleet report as one self-contained HTML string.

    Args:
        summary: the ``fleet_summary.json`` dict (see :func:`load_summary`).
        points: per vehicle, its validated frames (:func:`read_frame_points`); ``None`` (or
            empty: no per-frame file) charts each vehicle's fidelity per day instead.
        worst: the worst frames to draw (:func:`load_worst_frames`).
        notes: lines for the warnings box (what could not be read or shown).
        title: page title and heading.
    """
    summary = clean_summary(summary)
    points = points or None  # no per-frame rows at all: every vehicle is charted per day
    vehicles = _vehicles(summary)
    notes = list(notes)
    if len(vehicles) > MAX_VEHICLE_SECTIONS:
        notes.append(f"Charts for the {MAX_VEHICLE_SECTIONS} worst vehicles; the other "
                     f"{len(vehicles) - MAX_VEHICLE_SECTIONS} are in the table and fleet_summary.json.")
    names = summary["class_names"]
    sections = "".join(
        _vehicle_section(i, v, summary, None if points is None else points.get(str(v.get("vehicle")), NO_POINTS),
                         [w for w in worst if w.vehicle == str(v.get("vehicle"))])
        for i, v in enumerate(vehicles[:MAX_VEHICLE_SECTIONS])
    )
    warn = "".join(f"<li>{_e(n)}</li>" for n in notes)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}{_FLEET_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _banner(summary, vehicles),
        f'<div class="warn"><strong>Notes</strong><ul>{warn}</ul></div>' if warn else "",
        _totals(summary),
        _models(summary),
        _vehicle_table(vehicles),
        f"<h2>Per vehicle: fidelity and class over time</h2>{_class_legend(names)}{sections}" if sections else "",
        _worst_section(worst, {str(v.get("vehicle")): i for i, v in enumerate(vehicles[:MAX_VEHICLE_SECTIONS])}),
        _log_table(summary),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(out_dir: Union[str, Path]) -> Path:
    """Write ``fleet_report.html`` in a ``fleet validate`` output folder; returns its path.

    Reads ``fleet_summary.json``, ``per_frame.parquet`` (when present and pyarrow is installed)
    and ``worst/*.npz``. What cannot be read is named in the report's notes, except the summary.

    Raises:
        InputError: ``fleet_summary.json`` is missing, unreadable or of another schema.
    """
    out_dir = Path(out_dir)
    summary = load_summary(out_dir / "fleet_summary.json")
    points, notes = read_frame_points(out_dir / "per_frame.parquet")
    worst, more = load_worst_frames(out_dir, summary)
    return atomic_write_text(out_dir / REPORT_NAME, render_fleet_report(summary, points, worst, notes + more))
