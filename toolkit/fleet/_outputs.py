"""The files of a fleet validation: ``fleet_summary.json``, ``per_frame.parquet``, ``worst/*.npz``, the report."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from firmware_host import cam as _cam
from firmware_host._io import atomic_open, atomic_write_text

from .aggregate import FleetAggregator
from .spool import spool_sources, write_per_frame

__all__ = ["write_outputs", "write_worst"]

_THUMB = 256  # longest side of the frame kept in worst/<n>.npz


def _summary(plan, opts, aggregator: FleetAggregator) -> Dict[str, Any]:
    from .api import SUMMARY_SCHEMA

    figures = aggregator.summary(plan.class_names, opts.thresholds)
    return {
        "schema": SUMMARY_SCHEMA,
        "engine": opts.engine,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": {"sample": plan.sample, **opts.thresholds, "method": plan.method,
                    "target_layer": plan.target_layer, "vehicle_from": opts.vehicle_from},
        "class_names": list(plan.class_names),
        "models": {sha: {"keras": spec.keras, "name": spec.name, "edge": spec.edge}
                   for sha, spec in sorted(plan.models.items())},
        "totals": figures["totals"],
        "vehicles": figures["vehicles"],
        "logs": figures["logs"],
        "worst_frames": [],
        "verdict": figures["verdict"],
    }


def _thumbnail(path: str) -> Optional[np.ndarray]:
    import cv2

    from toolkit.validate import read_rgb

    image = read_rgb(path)
    if image is None:
        return None
    h, w = image.shape[:2]
    scale = _THUMB / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def write_worst(out_dir: Path, aggregator: FleetAggregator) -> List[Dict[str, Any]]:
    """``worst/<n>.npz`` (``image`` RGB uint8 when the frame is readable, ``edge`` and ``full`` heatmaps at
    feature-map resolution in [0, 1]) for the k worst frames; returns the summary's ``worst_frames``."""
    folder = out_dir / "worst"
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.npz"):
        stale.unlink()
    entries = []
    for n, frame in enumerate(aggregator.worst_frames()):
        arrays = {"edge": _cam.heatmap(frame["edge_cam"]), "full": np.asarray(frame["full_cam"], np.float32)}
        image = _thumbnail(frame["frame_path"])
        if image is not None:
            arrays["image"] = image
        with atomic_open(folder / f"{n}.npz", "wb") as handle:
            np.savez_compressed(handle, **arrays)
        entries.append({key: frame[key] for key in ("vehicle", "day", "log", "frame", "line", "pearson",
                                                    "recorded_class", "host_class", "edge_class", "model")}
                       | {"file": f"worst/{n}.npz"})
    return entries


def _report(out_dir: Path) -> Optional[Path]:
    """``fleet_report.html`` by :mod:`toolkit.fleet.report`, when that module is installed."""
    try:
        report = importlib.import_module("toolkit.fleet.report")
    except ModuleNotFoundError as exc:
        if exc.name != "toolkit.fleet.report":
            raise
        return None
    written = report.write_report(out_dir)
    return Path(written) if written is not None else out_dir / "fleet_report.html"


def write_outputs(out_dir: Path, plan, opts, aggregator: FleetAggregator, reused: int = 0):
    """Write every output file; return the :class:`~toolkit.fleet.api.FleetResult`."""
    from .api import FleetResult

    summary = _summary(plan, opts, aggregator)
    summary["worst_frames"] = write_worst(out_dir, aggregator)
    per_frame = write_per_frame(out_dir / "per_frame.parquet",
                                spool_sources(aggregator.parts.values(), out_dir / "cache"))
    summary_path = atomic_write_text(out_dir / "fleet_summary.json",
                                     json.dumps(summary, indent=1, allow_nan=False) + "\n")
    report = _report(out_dir)
    return FleetResult(summary=summary, passed=bool(summary["verdict"]["pass"]), out_dir=out_dir,
                       summary_path=summary_path, per_frame_path=per_frame, report_path=report, reused=reused)
