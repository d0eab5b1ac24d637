"""Render the validation report: one HTML file, images inlined as base64 PNG, no scripts."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host import cam as _cam
from firmware_host._io import atomic_write_text
from firmware_host.errors import InputError

from .figures import metric_histograms, metric_scatters, png_data_uri

__all__ = ["CSS", "ReportCase", "case_html", "render_report", "write_report"]

# Metrics shown under each case, in order (when the case has them).
CASE_METRICS = ("pearson", "spearman", "ssim", "iou_top20", "peak_distance", "emd")


@dataclass(frozen=True)
class ReportCase:
    """One image shown side by side in the report.

    Attributes:
        name: file name or frame id.
        image: ``(H, W, 3)`` RGB uint8 original (a thumbnail is fine).
        edge_heat: ``(h, w)`` edge heatmap in [0, 1] (any resolution; resized to ``image``).
        full_heat: ``(h, w)`` full Grad-CAM heatmap in [0, 1], same resolution as ``edge_heat``.
        metrics: metric name → value shown under the images.
        caption: one line, e.g. the two models' predictions.
        group: heading the case is listed under (``"worst"``, ``"best"``, ...).
    """

    name: str
    image: np.ndarray
    edge_heat: np.ndarray
    full_heat: np.ndarray
    metrics: Mapping[str, float] = field(default_factory=dict)
    caption: str = ""
    group: str = "cases"

    def __post_init__(self) -> None:
        edge = np.asarray(self.edge_heat, dtype=np.float32)
        full = np.asarray(self.full_heat, dtype=np.float32)
        if edge.ndim != 2 or edge.shape != full.shape:
            raise InputError(
                f"ReportCase '{self.name}': edge and full heatmaps must be (h, w) of the same "
                f"shape. Got {edge.shape} and {full.shape}."
            )


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em;margin:0 0 12px} h2{font-size:1.2em;margin:28px 0 8px;border-bottom:1px solid #ddd}
.banner{padding:14px 18px;border-radius:6px;color:#fff;font-size:1.1em;margin-bottom:16px}
.pass{background:#2e7d32} .fail{background:#c62828} .none{background:#546e7a}
.banner ul{margin:6px 0 0 18px;padding:0;font-size:.9em}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th{background:#f3f3f3}
td.k,th.k{text-align:left}
.case{display:flex;gap:8px;align-items:flex-start;margin:10px 0;flex-wrap:wrap}
.case figure{margin:0;text-align:center;font-size:.8em}
.case img{width:180px;height:auto;image-rendering:auto;border:1px solid #ccc}
.meta{font-size:.85em;color:#444;margin:2px 0 14px}
.fig img{max-width:100%;height:auto}
.warn{background:#fff8e1;border:1px solid #ffcc80;padding:8px 14px;border-radius:6px;margin-bottom:12px}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(value))


def _stats_rows(summary: Mapping, path: str = "") -> List[Tuple[str, Mapping]]:
    """Every ``{"median": ...}`` block of the summary, with its dotted path."""
    rows = []
    for key, value in summary.items():
        if not isinstance(value, Mapping):
            continue
        name = f"{path}{key}"
        if "median" in value:
            rows.append((name, value))
        else:
            rows.extend(_stats_rows(value, name + "."))
    return rows


def _banner(summary: Mapping) -> str:
    checks = summary.get("checks") or []
    passed = summary.get("passed")
    if not checks:
        cls, title = "none", "NO GATE: no thresholds were set (pass --min-pearson / --min-top1)"
    elif passed:
        cls, title = "pass", "PASS: every threshold is met"
    else:
        cls, title = "fail", "FAIL: a threshold is not met"
    items = "".join(
        f"<li>{'✔' if c.get('passed') else '✘'} {html.escape(str(c.get('name')))} = "
        f"{_fmt(c.get('value'))} (needs ≥ {_fmt(c.get('threshold'))})</li>"
        for c in checks
    )
    return f'<div class="banner {cls}"><strong>{html.escape(title)}</strong>' + (
        f"<ul>{items}</ul>" if items else ""
    ) + "</div>"


def _fact_value(value: Any) -> Optional[str]:
    """A scalar, a flat mapping (``skipped``, ``thresholds``) or a list of scalars; else None."""
    if isinstance(value, Mapping):
        # Metric statistics belong to the metrics table, nested blocks to nothing here.
        if "median" in value or any(isinstance(v, (Mapping, list, tuple)) for v in value.values()):
            return None
        return ", ".join(f"{html.escape(str(k))}: {_fmt(v)}" for k, v in value.items()) or "–"
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (Mapping, list, tuple)) for v in value):
            return None
        return " × ".join(_fmt(v) for v in value)
    return _fmt(value)


def _facts(summary: Mapping) -> str:
    rows = "".join(
        f'<tr><th class="k">{html.escape(str(k))}</th><td class="k">{text}</td></tr>'
        for k, text in ((k, _fact_value(v)) for k, v in summary.items())
        if text is not None and k not in ("passed", "warnings", "checks")
    )
    return f"<table>{rows}</table>" if rows else ""


def _warnings(summary: Mapping) -> str:
    items = "".join(f"<li>{html.escape(str(w))}</li>" for w in summary.get("warnings") or [])
    return f'<div class="warn"><strong>Warnings</strong><ul>{items}</ul></div>' if items else ""


def _stats_table(summary: Mapping) -> str:
    rows = _stats_rows(summary)
    if not rows:
        return ""
    cols = ("median", "p05", "min", "mean", "max", "p95", "n")
    head = '<tr><th class="k">metric</th>' + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
    body = "".join(
        f'<tr><td class="k">{html.escape(name)}</td>'
        + "".join(f"<td>{_fmt(stats.get(c))}</td>" for c in cols)
        + "</tr>"
        for name, stats in rows
    )
    return f"<table>{head}{body}</table>"


def case_html(case: ReportCase) -> str:
    """One case as HTML: its heading, the four panels (original, edge, full, |difference|), metrics."""
    image = np.asarray(case.image)
    size = image.shape[:2]
    edge = _cam.heatmap(case.edge_heat, size)
    full = _cam.heatmap(case.full_heat, size)
    # The difference is shown on the same [0, 1] scale as the maps: |edge - full|.
    diff = np.abs(edge - full)
    panels = (
        ("original", image),
        ("edge map", _cam.overlay(image, edge)),
        ("full Grad-CAM", _cam.overlay(image, full)),
        (f"|difference| (max {float(diff.max()):.2f})", _cam.colorize(diff)),
    )
    figures = "".join(
        f'<figure><img src="{png_data_uri(img)}" alt="{html.escape(case.name)}: {html.escape(label)}">'
        f"<figcaption>{html.escape(label)}</figcaption></figure>"
        for label, img in panels
    )
    shown = [(k, case.metrics[k]) for k in CASE_METRICS if k in case.metrics]
    shown += [(k, v) for k, v in case.metrics.items() if k not in CASE_METRICS]
    metrics = " · ".join(f"{html.escape(k)} {_fmt(v)}" for k, v in shown)
    caption = f" — {html.escape(case.caption)}" if case.caption else ""
    return (
        f"<h3>{html.escape(case.name)}{caption}</h3><div class=\"case\">{figures}</div>"
        f'<p class="meta">{metrics}</p>'
    )


def _cases_html(cases: Iterable[ReportCase]) -> str:
    groups: dict = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    return "".join(
        f"<h2>{html.escape(group)}</h2>" + "".join(case_html(c) for c in items)
        for group, items in groups.items()
    )


def render_report(
    summary: Mapping,
    records: Sequence[Mapping] = (),
    cases: Sequence[ReportCase] = (),
    title: str = "edgecam validation: edge vs full Grad-CAM",
) -> str:
    """The report as one self-contained HTML string.

    Args:
        summary: the ``summary.json`` dict (verdict, ``checks``, metric blocks with ``median``...).
        records: per-image rows (``per_image.csv`` as dicts) for the histograms and scatters.
        cases: images to show side by side, grouped by :attr:`ReportCase.group`.
        title: page title and heading.
    """
    hist = metric_histograms(records)
    scatter = metric_scatters(records)
    figures = "".join(
        f'<div class="fig"><img src="{uri}" alt="{alt}"></div>'
        for uri, alt in ((hist, "metric histograms"), (scatter, "metric scatter plots"))
        if uri
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _banner(summary),
        _warnings(summary),
        _facts(summary),
        "<h2>Metrics</h2>",
        _stats_table(summary),
        f"<h2>Distributions</h2>{figures}" if figures else "",
        _cases_html(cases),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(
    path: Union[str, Path],
    summary: Mapping,
    records: Sequence[Mapping] = (),
    cases: Sequence[ReportCase] = (),
    title: Optional[str] = None,
) -> Path:
    """Render the report and write it atomically to ``path``; returns the path."""
    kwargs = {} if title is None else {"title": title}
    return atomic_write_text(path, render_report(summary, records, cases, **kwargs))
