"""Heatmap comparison and faithfulness metrics (numpy only).

Two families:

* **Map-vs-map** metrics compare an edge heatmap with the full (host) Grad-CAM of the same image:
  :func:`pearson`, :func:`spearman`, :func:`ssim`, :func:`iou_top`, :func:`peak_distance`,
  :func:`emd` (sliced Earth Mover's Distance), bundled by :func:`compare_maps` into a
  :class:`MapMetrics`. They take ``(h, w)`` maps that already went through
  ``firmware_host.cam.heatmap`` (ReLU, optional resize, min-max normalise to [0, 1]), so the edge
  and host maps are compared after identical post-processing.
* **Faithfulness** (:func:`faithfulness`): deletion and insertion AUC (Petsiuk, Das & Saenko,
  "RISE", BMVC 2018) of a heatmap, scored with any ``predict_fn``, so both maps of an image are
  judged by the *same* model.
* **Against ground-truth boxes** (:func:`pointing_game`, :func:`energy_in_box`, bundled by
  :func:`box_scores`): does the map point at the defect, and how much of its mass lies on it.
  The fog case has no ground truth for where the evidence is; the wood boards do.

:func:`summarize` aggregates per-image values (median, p05, min, ...), ignoring NaN.

Every definition, with its conventions for degenerate (constant) maps, is in ``docs/validate.md``.
No SciPy: it is a development dependency only (the tests compare :func:`spearman` with it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host.compare import correlation
from firmware_host.errors import InputError

__all__ = [
    "MapMetrics",
    "Faithfulness",
    "pearson",
    "spearman",
    "rankdata",
    "ssim",
    "ssim_window",
    "iou_top",
    "peak_distance",
    "emd",
    "compare_maps",
    "summarize",
    "blur",
    "faithfulness",
    "auc",
    "Box",
    "BoxScores",
    "POINTING_TOLERANCE_PX",
    "boxes_mask",
    "scale_boxes",
    "pointing_game",
    "energy_in_box",
    "box_scores",
]

Scale = Tuple[float, float]


def _pair(a: np.ndarray, b: np.ndarray, name: str) -> Tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(
            f"{name} compares two (h, w) maps of the same shape. Got {a.shape} and {b.shape}. "
            "Resize both with firmware_host.cam.heatmap(cam, size) first."
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError(f"{name} got a map with NaN or infinite values; check the model outputs.")
    return a, b


# -- correlation --------------------------------------------------------------------------------
def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of flat vectors: the one shared with the converter's self-check."""
    return correlation(x, y)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation coefficient between two ``(h, w)`` maps, in [-1, 1].

    Invariant to a positive affine change of either map, so it is the same on raw ReLU'd CAMs
    and on their min-max normalised heatmaps. Constant maps: see :func:`_correlation`.
    """
    a, b = _pair(a, b, "pearson")
    return _correlation(a.ravel(), b.ravel())


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties getting the mean of the ranks they span ("average").

    Equivalent to ``scipy.stats.rankdata(values, method="average")``.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # A tie group starts wherever the sorted value changes.
    starts_mask = np.empty(n, dtype=bool)
    if n:
        starts_mask[0] = True
        starts_mask[1:] = xs[1:] != xs[:-1]
    group = np.cumsum(starts_mask) - 1
    starts = np.flatnonzero(starts_mask)
    ends = np.append(starts[1:], n)
    # Positions start..end-1 hold 1-based ranks start+1..end; their mean is (start+end+1)/2.
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks (ties handled), in [-1, 1].

    ReLU'd maps often have many exact zeros; average ranks keep such ties from biasing the score
    (Spearman 1904; the tie rule of ``scipy.stats.spearmanr``).
    """
    a, b = _pair(a, b, "spearman")
    return _correlation(rankdata(a), rankdata(b))


# -- SSIM ---------------------------------------------------------------------------------------
def ssim_window(height: int, width: int) -> Tuple[int, float]:
    """Gaussian window ``(size, sigma)`` used by :func:`ssim` for an ``height × width`` map.

    Wang et al. (2004) use an 11×11 Gaussian with σ = 1.5. Feature maps are often smaller
    (7×7, 4×4), so the window shrinks to the largest odd size that fits, and σ shrinks in
    proportion (σ = 1.5·size/11) so the window keeps the paper's shape. A 1-pixel-wide map gets a
    1×1 window, where SSIM reduces to the per-pixel luminance/contrast term.
    """
    size = min(11, int(height), int(width))
    if size % 2 == 0:
        size -= 1
    size = max(size, 1)
    return size, 1.5 * size / 11.0


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    if size == 1:
        return np.ones(1)
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with a symmetric 1-D kernel on both axes.

    Tap-by-tap accumulation of shifted slices: a few vector operations per tap, no
    window-sized temporaries.
    """
    win = kernel.size
    h, w = x.shape
    rows = np.zeros((h - win + 1, w))
    for t, weight in enumerate(kernel):
        rows += weight * x[t : t + h - win + 1]
    out = np.zeros((h - win + 1, w - win + 1))
    for t, weight in enumerate(kernel):
        out += weight * rows[:, t : t + w - win + 1]
    return out


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float = 1.0,
    window: Optional[int] = None,
    sigma: Optional[float] = None,
) -> float:
    """Mean structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004, Eq. 13 and 17).

    Local means, variances and covariance are Gaussian-weighted over the window (Section III-C),
    evaluated only where the window fits inside the map ("valid"), and averaged (MSSIM, Eq. 17).
    Constants ``C1 = (0.01·L)²`` and ``C2 = (0.03·L)²`` with ``L = data_range``.

    Args:
        a, b: ``(h, w)`` heatmaps in [0, 1] (``firmware_host.cam.heatmap`` output).
        data_range: L, the dynamic range of the maps.
        window, sigma: override the window; default :func:`ssim_window`.

    Returns:
        MSSIM in [-1, 1]; 1.0 for identical maps (two constant maps included).
    """
    a, b = _pair(a, b, "ssim")
    default_size, default_sigma = ssim_window(*a.shape)
    size = default_size if window is None else int(window)
    if size < 1 or size > min(a.shape):
        raise InputError(f"ssim window {size} does not fit a {a.shape} map; use 1..{min(a.shape)}.")
    kernel = _gaussian_kernel(size, default_sigma if sigma is None else float(sigma))
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a = _filter_valid(a, kernel)
    mu_b = _filter_valid(b, kernel)
    var_a = _filter_valid(a * a, kernel) - mu_a**2
    var_b = _filter_valid(b * b, kernel) - mu_b**2
    cov = _filter_valid(a * b, kernel) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


# -- top-k overlap, peak, distribution distance -------------------------------------------------
def _top_mask(m: np.ndarray, fraction: float) -> np.ndarray:
    """Cells at or above the map's own ``1 - fraction`` quantile, excluding its minimum value.

    Excluding the minimum keeps a ReLU'd map's sea of exact zeros out of its "top" set when fewer
    than ``fraction`` of its cells are positive; a constant map therefore has an empty top set.
    """
    threshold = np.quantile(m, 1.0 - fraction)
    return (m >= threshold) & (m > m.min())


def iou_top(a: np.ndarray, b: np.ndarray, fraction: float = 0.2) -> float:
    """Intersection-over-union of the two maps' top-``fraction`` regions, in [0, 1].

    Each map is thresholded at its own ``1 - fraction`` quantile (numpy's linear interpolation),
    so a map with a different scale or offset selects the same cells. Both top sets empty (both
    maps constant) → 1.0; exactly one empty → 0.0.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"iou_top fraction must be in (0, 1). Got {fraction}.")
    a, b = _pair(a, b, "iou_top")
    ma, mb = _top_mask(a, fraction), _top_mask(b, fraction)
    union = int(np.count_nonzero(ma | mb))
    if union == 0:
        return 1.0
    return float(np.count_nonzero(ma & mb) / union)


def _cell_scale(shape: Tuple[int, int], cells: Optional[Tuple[int, int]]) -> Scale:
    """Size of one map pixel in feature-map cells ``(rows, cols)``."""
    if cells is None:
        return 1.0, 1.0
    return cells[0] / shape[0], cells[1] / shape[1]


def peak_distance(
    a: np.ndarray, b: np.ndarray, cells: Optional[Tuple[int, int]] = None
) -> float:
    """Euclidean distance between the two maps' argmax positions, in feature-map cells.

    Args:
        a, b: ``(h, w)`` maps; the peak is ``firmware_host.cam.peak`` (first maximum on ties).
        cells: ``(h_f, w_f)`` feature-map size when ``a``/``b`` are at a higher (input)
            resolution, to express the distance in cells; ``None`` if the maps are at
            feature-map resolution.
    """
    from firmware_host import cam as _cam

    a, b = _pair(a, b, "peak_distance")
    sy, sx = _cell_scale(a.shape, cells)
    ra, ca = _cam.peak(a)
    rb, cb = _cam.peak(b)
    return float(math.hypot((ra - rb) * sy, (ca - cb) * sx))


_EMD_DIRECTIONS = 64


def _as_distribution(m: np.ndarray) -> np.ndarray:
    total = m.sum()
    if total <= 0:
        # An all-zero map highlights nothing: treat it as uniform mass (docs/validate.md).
        return np.full(m.shape, 1.0 / m.size)
    return m / total


def emd(
    a: np.ndarray,
    b: np.ndarray,
    cells: Optional[Tuple[int, int]] = None,
    directions: int = _EMD_DIRECTIONS,
) -> float:
    """Sliced Earth Mover's Distance between the maps as mass distributions, in cells.

    Each map is normalised to sum 1 (an all-zero map becomes uniform) and placed on its pixel
    centres. The 1-D Wasserstein-1 distance between the projections on ``directions`` evenly
    spaced angles θ_k = kπ/M is ``∫|F_a - F_b|`` (Rabin, Peyré, Delon & Bernot 2011, "sliced
    Wasserstein"); we average over angles and divide by the mean ``|cos θ_k|``, so that a rigid
    horizontal or vertical shift of a map by ``d`` cells scores exactly ``d`` (a diagonal shift
    scores within 1% of its length). 0 for identical maps.

    Args:
        a, b: ``(h, w)`` non-negative maps of the same shape.
        cells: ``(h_f, w_f)`` feature-map size when the maps are at a higher resolution.
        directions: number of projection angles M (even).
    """
    a, b = _pair(a, b, "emd")
    if np.any(a < 0) or np.any(b < 0):
        raise InputError("emd needs non-negative maps (ReLU'd CAMs or heatmaps).")
    diff = (_as_distribution(a) - _as_distribution(b)).ravel().astype(np.float32)
    orders, gaps, norm = _projections(a.shape, _cell_scale(a.shape, cells), int(directions))
    # Per direction: W1 = Σ_i |CDF_a - CDF_b|(p_i) · (p_{i+1} - p_i) over the sorted projections.
    # float32 halves the memory traffic of this (directions × pixels) pass; relative error ~1e-6.
    cdf = np.cumsum(diff[orders], axis=1)
    np.abs(cdf, out=cdf)
    return float(np.sum(cdf[:, :-1] * gaps, dtype=np.float64)) / directions / norm


@functools.lru_cache(maxsize=16)
def _projections(shape: Tuple[int, int], scale: Scale, directions: int):
    """Sort orders ``(M, n)`` and gaps ``(M, n-1)`` of the pixel centres projected on M angles.

    The grid is the same for every image of a run, so this is computed once per shape.
    """
    if directions < 2 or directions % 2:
        raise InputError(f"emd directions must be an even number >= 2. Got {directions}.")
    rows, cols = np.indices(shape, dtype=np.float64)
    ys, xs = (rows.ravel() + 0.5) * scale[0], (cols.ravel() + 0.5) * scale[1]
    theta = np.arange(directions) * (np.pi / directions)
    proj = np.cos(theta)[:, None] * xs[None, :] + np.sin(theta)[:, None] * ys[None, :]
    orders = np.argsort(proj, axis=1, kind="stable")
    gaps = np.diff(np.take_along_axis(proj, orders, axis=1), axis=1).astype(np.float32)
    orders = orders.astype(np.int32 if orders.shape[1] < 2**31 else np.int64)
    orders.setflags(write=False)
    gaps.setflags(write=False)
    return orders, gaps, float(np.mean(np.abs(np.cos(theta))))


# -- bundles and aggregation -------------------------------------------------------------------
@dataclass(frozen=True)
class MapMetrics:
    """All map-vs-map metrics of one image pair (see the functions of the same names)."""

    pearson: float
    spearman: float
    ssim: float
    iou_top10: float
    iou_top20: float
    peak_distance: float
    emd: float

    def as_dict(self, prefix: str = "") -> Dict[str, float]:
        """``{prefix + name: value}`` in field order."""
        return {prefix + f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


#: Metrics where larger means more similar (the rest are distances: smaller is better).
SIMILARITIES = ("pearson", "spearman", "ssim", "iou_top10", "iou_top20")
DISTANCES = ("peak_distance", "emd")


def compare_maps(
    edge: np.ndarray, full: np.ndarray, cells: Optional[Tuple[int, int]] = None
) -> MapMetrics:
    """Every map-vs-map metric between an edge heatmap and a full heatmap of one image.

    Args:
        edge, full: ``(h, w)`` heatmaps from ``firmware_host.cam.heatmap`` (same size).
        cells: the feature-map size when the maps are at input resolution, so that distances
            are reported in feature-map cells.
    """
    return MapMetrics(
        pearson=pearson(edge, full),
        spearman=spearman(edge, full),
        ssim=ssim(edge, full),
        iou_top10=iou_top(edge, full, 0.1),
        iou_top20=iou_top(edge, full, 0.2),
        peak_distance=peak_distance(edge, full, cells),
        emd=emd(edge, full, cells),
    )


def summarize(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Aggregate per-image values: ``n, mean, median, min, max, p05, p95`` (NaN ignored).

    Percentiles use numpy's linear interpolation. With no finite value every statistic is
    ``None`` (JSON ``null``) and ``n`` is 0.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None, "p05": None, "p95": None}
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "min": float(x.min()),
        "max": float(x.max()),
        "p05": float(np.percentile(x, 5)),
        "p95": float(np.percentile(x, 95)),
    }


# -- faithfulness: deletion / insertion (Petsiuk et al. 2018) ---------------------------------
@dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion scores of N heatmaps.

    Attributes:
        deletion_auc: ``(N,)`` area under the class probability as the most salient pixels are
            removed first (lower = more faithful).
        insertion_auc: ``(N,)`` area as the most salient pixels are revealed first (higher =
            more faithful).
        deletion_curves / insertion_curves: ``(N, steps + 1)`` probability at each step; column
            0 is the untouched image (deletion) or the baseline (insertion).
    """

    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    deletion_curves: np.ndarray
    insertion_curves: np.ndarray


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under ``(N, steps + 1)`` curves sampled evenly on x ∈ [0, 1]."""
    c = np.asarray(curves, dtype=np.float64)
    steps = c.shape[-1] - 1
    if steps < 1:
        raise InputError("auc needs curves with at least 2 points.")
    return (c.sum(axis=-1) - 0.5 * (c[..., 0] + c[..., -1])) / steps


def blur(images: np.ndarray, sigma: Optional[float] = None) -> np.ndarray:
    """Gaussian blur of ``(N, H, W, C)`` float images (reflect padding), the default baseline.

    RISE's insertion starts from a blurred image; we use the same blurred image as the deletion
    baseline too, because "zero" means a different colour under every preprocessing (ImageNet
    mean/std, [-1, 1], [0, 1]) while a blur removes the content in any of them.

    Args:
        images: ``(N, H, W, C)`` preprocessed model inputs.
        sigma: standard deviation in pixels; default ``max(H, W) / 16``.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"blur expects (N, H, W, C) images. Got shape {x.shape}.")
    h, w = x.shape[1:3]
    s = max(h, w) / 16.0 if sigma is None else float(sigma)
    radius = max(1, int(math.ceil(3 * s)))
    kernel = _gaussian_kernel(2 * radius + 1, max(s, 1e-6)).astype(np.float32)
    out = x
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect" if x.shape[axis] > radius else "edge")
        # Accumulate shifted copies tap by tap: memory stays at two image batches (a strided
        # window view times the kernel would materialise taps × batch floats).
        acc = np.zeros_like(out)
        length = x.shape[axis]
        for t, weight in enumerate(kernel):
            index = [slice(None)] * 4
            index[axis] = slice(t, t + length)
            acc += weight * padded[tuple(index)]
        out = acc
    return out


def _baseline(images: np.ndarray, baseline) -> np.ndarray:
    if isinstance(baseline, str):
        if baseline == "blur":
            return blur(images)
        if baseline == "mean":
            return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).astype(np.float32)
        if baseline == "zero":
            return np.zeros_like(images, dtype=np.float32)
        raise InputError(f"baseline must be 'blur', 'mean', 'zero' or an array. Got {baseline!r}.")
    base = np.asarray(baseline, dtype=np.float32)
    if base.shape != images.shape:
        raise InputError(f"baseline array has shape {base.shape}; the images have {images.shape}.")
    return base


def faithfulness(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    heatmaps: np.ndarray,
    class_indices: Union[int, Sequence[int], np.ndarray],
    steps: int = 16,
    baseline: Union[str, np.ndarray] = "blur",
    batch_size: int = 32,
) -> Faithfulness:
    """Deletion and insertion AUC of heatmaps (Petsiuk, Das & Saenko, RISE, BMVC 2018, Sec. 4.1).

    Pixels are ordered by decreasing heatmap value (stable, so ties keep raster order). At step
    ``k = 0..steps`` the first ``round(k·P/steps)`` of the ``P`` pixels are replaced by the
    baseline (deletion, starting from the image) or copied from the image onto the baseline
    (insertion). The class probability at each step gives a curve whose trapezoidal area over
    the fraction of pixels is the AUC. All perturbed images go through ``predict_fn`` in chunks
    of ``batch_size``, so memory stays O(batch_size) and any model can be the judge: score the
    edge map and the full map of an image with the same ``predict_fn``.

    Args:
        predict_fn: ``(B, H, W, C) float32 → (B, K)`` class probabilities.
        images: ``(N, H, W, C)`` preprocessed inputs of ``predict_fn``.
        heatmaps: ``(N, H, W)`` saliency at input resolution (higher = more important).
        class_indices: the class scored, one int or one per image.
        steps: number of perturbation steps K (curve has K + 1 points).
        baseline: ``"blur"`` (default, see :func:`blur`), ``"mean"`` (per-image channel mean),
            ``"zero"``, or an ``(N, H, W, C)`` array.
        batch_size: images per ``predict_fn`` call.

    Returns:
        A :class:`Faithfulness`.

    Raises:
        InputError: mismatched shapes, or ``predict_fn`` returns a wrong shape.
    """
    x = np.asarray(images, dtype=np.float32)
    heat = np.asarray(heatmaps, dtype=np.float32)
    if x.ndim != 4 or heat.shape != x.shape[:3]:
        raise InputError(
            f"faithfulness needs images (N, H, W, C) and heatmaps (N, H, W) at the same "
            f"resolution. Got {x.shape} and {heat.shape}; resize with firmware_host.cam.heatmap."
        )
    if steps < 1 or batch_size < 1:
        raise InputError(f"steps and batch_size must be >= 1. Got {steps} and {batch_size}.")
    n, h, w = heat.shape
    classes = np.broadcast_to(np.asarray(class_indices, dtype=np.int64), (n,))
    base = _baseline(x, baseline)
    pixels = h * w
    counts = np.rint(np.arange(steps + 1) * pixels / steps).astype(np.int64)
    # rank[i, p] = position of pixel p in image i's saliency order.
    order = np.argsort(-heat.reshape(n, pixels), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(pixels)[None, :], axis=1)

    curves = np.empty((2, n, steps + 1), dtype=np.float64)
    jobs = [(mode, i, k) for i in range(n) for mode in (0, 1) for k in range(steps + 1)]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        batch = np.empty((len(chunk),) + x.shape[1:], dtype=np.float32)
        for j, (mode, i, k) in enumerate(chunk):
            touched = (rank[i] < counts[k]).reshape(h, w, 1)
            # Deletion: touched pixels take the baseline; insertion: touched pixels show the image.
            if mode == 0:
                batch[j] = np.where(touched, base[i], x[i])
            else:
                batch[j] = np.where(touched, x[i], base[i])
        probs = np.asarray(predict_fn(batch))
        if probs.ndim != 2 or probs.shape[0] != len(chunk):
            raise InputError(
                f"predict_fn must return (batch, classes) probabilities; for a batch of "
                f"{len(chunk)} it returned shape {probs.shape}."
            )
        for j, (mode, i, k) in enumerate(chunk):
            curves[mode, i, k] = probs[j, classes[i]]
    return Faithfulness(
        deletion_auc=auc(curves[0]),
        insertion_auc=auc(curves[1]),
        deletion_curves=curves[0],
        insertion_curves=curves[1],
    )


# -- against ground-truth boxes -----------------------------------------------------------------
#: A box ``(x0, y0, x1, y1)`` in pixels: columns x0 ≤ x < x1, rows y0 ≤ y < y1.
Box = Tuple[float, float, float, float]
#: The pointing game's tolerance (Zhang et al. 2018, Sec. 5.1: 15 pixels).
POINTING_TOLERANCE_PX = 15.0


def _boxes(boxes: Sequence[Box]) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    if not np.all(np.isfinite(b)) or np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        raise InputError(f"Boxes must be finite (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1. Got {b.tolist()[:4]}.")
    return b


def scale_boxes(boxes: Sequence[Box], from_size: Tuple[int, int], to_size: Tuple[int, int]) -> np.ndarray:
    """``(n, 4)`` boxes moved from an image of ``(height, width)`` ``from_size`` to ``to_size``."""
    b = _boxes(boxes).copy()
    sy, sx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    b[:, [0, 2]] *= sx
    b[:, [1, 3]] *= sy
    return b


def boxes_mask(shape: Tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """``(h, w)`` bool: pixels whose centre ``(c + 0.5, r + 0.5)`` lies in any box."""
    b = _boxes(boxes)
    rows = np.arange(shape[0]) + 0.5
    cols = np.arange(shape[1]) + 0.5
    mask = np.zeros(tuple(shape), dtype=bool)
    for x0, y0, x1, y1 in b:
        mask |= ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    return mask


def pointing_game(heat: np.ndarray, boxes: Sequence[Box], tolerance: float = POINTING_TOLERANCE_PX) -> float:
    """1.0 when the map's maximum lies within ``tolerance`` pixels of a box, else 0.0.

    The pointing game of Zhang, Bargal, Lin, Brandt, Shen & Sclaroff ("Top-down neural attention
    by excitation backprop", IJCV 2018, Sec. 5.1): the peak (first maximum in raster order, as
    ``firmware_host.cam.peak``) is a hit when the distance from its pixel centre to the nearest
    box is at most ``tolerance``.

    Args:
        heat: ``(h, w)`` map at the resolution of the boxes' pixels.
        boxes: the ground-truth boxes ``(x0, y0, x1, y1)``.
        tolerance: pixels (15 in the paper).

    Returns:
        1.0 (hit) or 0.0 (miss); NaN when there is no box (nothing to point at). A constant map
        has no peak: a miss.
    """
    h = np.asarray(heat, dtype=np.float64)
    if h.ndim != 2 or not np.all(np.isfinite(h)):
        raise InputError(f"pointing_game needs a finite (h, w) map. Got shape {h.shape}.")
    b = _boxes(boxes)
    if len(b) == 0:
        return float("nan")
    if h.max() == h.min():
        return 0.0
    r, c = np.unravel_index(int(np.argmax(h)), h.shape)
    py, px = r + 0.5, c + 0.5
    dx = np.maximum(np.maximum(b[:, 0] - px, 0.0), px - b[:, 2])
    dy = np.maximum(np.maximum(b[:, 1] - py, 0.0), py - b[:, 3])
    return float(np.min(np.hypot(dx, dy)) <= tolerance)


def energy_in_box(heat: np.ndarray, boxes: Sequence[Box]) -> float:
    """Share of the map's mass inside the boxes (their union), in [0, 1].

    The energy-based pointing game of Wang et al. ("Score-CAM", CVPR-W 2020, Sec. 4.2):
    ``Σ_{inside} heat / Σ heat`` of a non-negative map. A uniform map scores the boxes' area
    share (the chance level); an all-zero map scores 0; NaN when there is no box.
    """
    h = np.asarray(heat, dtype=np.float64)
    if h.ndim != 2 or not np.all(np.isfinite(h)) or np.any(h < 0):
        raise InputError(f"energy_in_box needs a finite, non-negative (h, w) map. Got shape {h.shape}.")
    if len(_boxes(boxes)) == 0:
        return float("nan")
    total = h.sum()
    if total <= 0:
        return 0.0
    return float(h[boxes_mask(h.shape, boxes)].sum() / total)


@dataclass(frozen=True)
class BoxScores:
    """A map against the ground-truth boxes of its image.

    Attributes:
        pointing: 1.0 hit / 0.0 miss (:func:`pointing_game`).
        energy: mass share inside the boxes (:func:`energy_in_box`).
        area: the boxes' share of the map's pixels (the chance level of ``energy``).
    """

    pointing: float
    energy: float
    area: float


def box_scores(heat: np.ndarray, boxes: Sequence[Box], tolerance: float = POINTING_TOLERANCE_PX) -> BoxScores:
    """:func:`pointing_game`, :func:`energy_in_box` and the boxes' area share of one map."""
    h = np.asarray(heat)
    area = float(boxes_mask(h.shape[:2], boxes).mean()) if len(boxes) else float("nan")
    return BoxScores(pointing_game(h, boxes, tolerance), energy_in_box(h, boxes), area)
