"""Report figures (matplotlib, Agg canvas, no pyplot state) and PNG encoding."""

from __future__ import annotations

import base64
import io
import logging
from typing import Mapping, Optional, Sequence

import numpy as np

from firmware_host.errors import InputError

__all__ = ["png_data_uri", "figure_data_uri", "metric_histograms", "metric_scatters"]

# Per-image columns plotted when present, with the axis label shown.
HISTOGRAMS = (
    ("pearson", "Pearson r"),
    ("spearman", "Spearman ρ"),
    ("ssim", "SSIM"),
    ("iou_top10", "top-10% IoU"),
    ("iou_top20", "top-20% IoU"),
    ("emd", "sliced EMD (cells)"),
)
# (x column, y column, title, draw the diagonal y = x)
SCATTERS = (
    ("pearson", "ssim", "Pearson vs SSIM", False),
    ("deletion_auc_full", "deletion_auc_edge", "deletion AUC (lower = more faithful)", True),
    ("insertion_auc_full", "insertion_auc_edge", "insertion AUC (higher = more faithful)", True),
)


def png_data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of an RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8 image."""
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise InputError(f"png_data_uri needs a uint8 (H, W[, 3]) image. Got {img.dtype} {img.shape}.")
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise InputError(f"OpenCV could not encode a {img.shape} image as PNG.")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _figure(width: float, height: float):
    """A matplotlib figure, or None without matplotlib: the report then has no charts.

    ``edgecam validate ORIGINAL.onnx EXPLAINED.onnx`` runs with ``edgecam[onnx]`` alone, which
    does not install matplotlib; its tables and map overlays need only OpenCV.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        logging.getLogger("edgecam.report").warning(
            "report.html has no charts: matplotlib is not installed (%s); pip install matplotlib.", exc)
        return None
    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def figure_data_uri(fig) -> str:
    """Render a matplotlib ``Figure`` to a base64 PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _column(records: Sequence[Mapping], key: str) -> np.ndarray:
    values = []
    for r in records:
        v = r.get(key)
        if v is None or v == "":
            continue
        try:
            values.append(float(v))
        except (TypeError, ValueError):
            continue
    x = np.asarray(values, dtype=np.float64)
    return x[np.isfinite(x)]


def metric_histograms(records: Sequence[Mapping], prefix: str = "") -> Optional[str]:
    """A grid of histograms of the per-image metrics present in ``records`` (data URI or None)."""
    present = [(prefix + k, label) for k, label in HISTOGRAMS if _column(records, prefix + k).size]
    if not present:
        return None
    cols = 3
    rows = (len(present) + cols - 1) // cols
    fig = _figure(4.0 * cols, 2.8 * rows)
    if fig is None:
        return None
    for i, (key, label) in enumerate(present):
        ax = fig.add_subplot(rows, cols, i + 1)
        x = _column(records, key)
        lo, hi = float(x.min()), float(x.max())
        if hi - lo < 1e-6:  # all equal (e.g. identical maps): give the bars a visible width
            lo, hi = lo - 0.05, hi + 0.05
        ax.hist(x, bins=min(30, max(5, x.size // 3)), range=(lo, hi), color="#3b6ea5", edgecolor="white")
        ax.axvline(float(np.median(x)), color="#c0392b", linewidth=1.5, label="median")
        ax.set_xlabel(label)
        ax.set_ylabel("images")
        ax.tick_params(axis="x", labelrotation=30)  # near-1.0 values have long tick labels
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return figure_data_uri(fig)


def metric_scatters(records: Sequence[Mapping]) -> Optional[str]:
    """Scatter plots of the metric pairs present in ``records`` (data URI or None)."""
    pairs = []
    for xk, yk, title, diagonal in SCATTERS:
        pts = [
            (float(r[xk]), float(r[yk]))
            for r in records
            if r.get(xk) not in (None, "") and r.get(yk) not in (None, "")
        ]
        pts = [p for p in pts if np.isfinite(p[0]) and np.isfinite(p[1])]
        if pts:
            pairs.append((xk, yk, title, diagonal, np.asarray(pts)))
    if not pairs:
        return None
    fig = _figure(4.2 * len(pairs), 3.8)
    if fig is None:
        return None
    for i, (xk, yk, title, diagonal, pts) in enumerate(pairs):
        ax = fig.add_subplot(1, len(pairs), i + 1)
        ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.6, color="#3b6ea5")
        if diagonal:
            lo = float(min(pts.min(), 0.0))
            hi = float(max(pts.max(), 1.0))
            ax.plot([lo, hi], [lo, hi], color="#888888", linewidth=1, linestyle="--", label="y = x")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel(xk)
        ax.set_ylabel(yk)
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return figure_data_uri(fig)
