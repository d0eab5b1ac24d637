"""Precision plans: how the explained graph becomes a smaller model, and which plan still tells the truth.

A *plan* is one way to turn the float graph into a LiteRT (or ONNX) file. The LiteRT plans, from
the cheapest (nominally, on an ARM CPU with XNNPACK) to the most precise:

======================  ===========================================================================
``int8``                full-integer: int8 weights and activations, int8 input/output; an in-graph
                        gradient head stays float32
``int8-mixed``          int8, but the explanation layer's producer and the CAM head stay float32
                        (a float island where the map is formed)
``16x8``                int16 activations, int8 weights (LiteRT's 16x8 mode; float input/output)
``dynamic``             int8 weights, float activations (dynamic-range quantization)
``float16``             float16 weights, float32 compute
``none``                float32
======================  ===========================================================================

Why int8 can lie about the map: activation ranges are set per tensor by the calibration images,
and on the fog task activation size follows image contrast. Clear images set the range, so deep in
the net a foggy image gets a fraction of one int8 step, and its map flattens (docs/convert.md).

:func:`measure_fidelity` compares a converted model with the float model's own Grad-CAM on
held-out images (median/p05/min Pearson, top-1 agreement, p05 per class);
:func:`interleaved_latency` times plans against each other in one interleaved run; and
:func:`choose` picks the cheapest plan that meets the :class:`Targets`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from firmware_host import cam as _cam
from firmware_host.compare import pearson
from firmware_host.plans import interleaved_ms

__all__ = [
    "LITERT_PLANS",
    "NOMINAL_COST",
    "PLAN_SUMMARIES",
    "Targets",
    "GATES",
    "AUTO_TARGETS",
    "default_targets",
    "targets_from_dict",
    "figures_from_dict",
    "describe_precision",
    "Fidelity",
    "PlanFigures",
    "Reference",
    "measure_fidelity",
    "interleaved_latency",
    "choose",
    "split_held_out",
    "format_table",
]

log = logging.getLogger("edgecam.convert")

# From the least to the most precise: the order plans are tried in, and the gate's suggestions.
LITERT_PLANS = ("int8", "int8-mixed", "16x8", "dynamic", "float16", "none")
# Nominal cost on an ARM CPU with XNNPACK, cheapest first (``cost="nominal"``). 16x8 is last: it
# has no optimised kernels (measured 9–61× int8 on x86; MobileNetV3's HARD_SWISH has no int16 one).
NOMINAL_COST = ("int8", "int8-mixed", "dynamic", "float16", "none", "16x8")
PLAN_SUMMARIES = {
    "int8": "int8 weights and activations (full integer)",
    "int8-mixed": "int8 with the explanation layer's producer and the CAM head in float32",
    "16x8": "int16 activations, int8 weights",
    "dynamic": "int8 weights, float activations (dynamic range)",
    "float16": "float16 weights",
    "none": "float32",
}


@dataclass(frozen=True)
class Targets:
    """Fidelity bounds against the float model's own maps on held-out images.

    Attributes:
        pearson_p05: 5th percentile of the per-image CAM Pearson (the tail: foggy frames).
        top1: fraction of images whose predicted class matches the float model's.
        pearson_median: median per-image CAM Pearson.
    """

    pearson_p05: float = 0.98
    top1: float = 0.99
    pearson_median: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and np.isfinite(value) and -1.0 <= value <= 1.0):
                from firmware_host.errors import InputError

                raise InputError(f"Fidelity target {name} must be a number in [-1, 1]. Got: {value!r}.")

    def missed(self, fid: "Fidelity") -> List[str]:
        """The bounds ``fid`` misses, as short phrases (empty: it passes)."""
        out = []
        if fid.pearson_median < self.pearson_median:
            out.append(f"Pearson median {fid.pearson_median:.4f} < {self.pearson_median}")
        if fid.pearson_p05 < self.pearson_p05:
            out.append(f"Pearson p05 {fid.pearson_p05:.4f} < {self.pearson_p05}")
        if fid.top1 < self.top1:
            out.append(f"top-1 agreement {fid.top1:.3f} < {self.top1}")
        return out


# The bounds an explicitly chosen plan must meet (docs/convert.md, "The gate"); auto uses AUTO_TARGETS.
GATES: Dict[str, Targets] = {
    "none": Targets(pearson_p05=0.99, top1=1.0, pearson_median=0.999),
    "float16": Targets(pearson_p05=0.98, top1=0.95, pearson_median=0.99),
    "dynamic": Targets(pearson_p05=0.9, top1=0.9, pearson_median=0.95),
    "16x8": Targets(pearson_p05=0.9, top1=0.9, pearson_median=0.95),
    "int8-mixed": Targets(pearson_p05=0.9, top1=0.85, pearson_median=0.9),
    "int8": Targets(pearson_p05=0.9, top1=0.85, pearson_median=0.9),
}
AUTO_TARGETS = Targets()


def default_targets(quantize: str) -> Targets:
    """The targets ``quantize`` is held to unless others are given: auto's, or the plan's gate."""
    return AUTO_TARGETS if quantize == "auto" else GATES.get(quantize, AUTO_TARGETS)


@dataclass(frozen=True)
class Reference:
    """The float model's own answer on the held-out images: what every plan is compared with.

    Attributes:
        maps: raw (pre-ReLU) Grad-CAM ``(N, h, w)``.
        classes: the float model's predicted class ``(N,)``.
        probabilities: ``(N, K)``.
        class_names: for the per-class table.
    """

    maps: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    class_names: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Fidelity:
    """Agreement of one converted model with :class:`Reference`."""

    images: int
    pearson_median: float
    pearson_p05: float
    pearson_min: float
    top1: float
    prob_max_abs_diff: float
    p05_by_class: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "images": self.images,
            "pearson_median": round(self.pearson_median, 6),
            "pearson_p05": round(self.pearson_p05, 6),
            "pearson_min": round(self.pearson_min, 6),
            "top1": round(self.top1, 6),
            "prob_max_abs_diff": round(self.prob_max_abs_diff, 6),
            "p05_by_class": {k: round(v, 6) for k, v in self.p05_by_class.items()},
        }


@dataclass(frozen=True)
class PlanFigures:
    """One row of the table of plans tried.

    Attributes:
        plan: plan name.
        fidelity: measured agreement, or ``None`` when the conversion failed.
        passed: meets the targets.
        latency_ms: median interpreter latency on this machine (``None``: not timed).
        latency_ratio: latency over plain int8's, measured interleaved in the same run.
        size_bytes: file size.
        error: why the plan could not be converted, if it could not.
    """

    plan: str
    fidelity: Optional[Fidelity] = None
    passed: bool = False
    latency_ms: Optional[float] = None
    latency_ratio: Optional[float] = None
    size_bytes: Optional[int] = None
    error: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"plan": self.plan, "passed": self.passed}
        if self.fidelity is not None:
            out.update(self.fidelity.as_dict())
        for key in ("latency_ms", "latency_ratio"):
            value = getattr(self, key)
            out[key] = None if value is None else round(float(value), 4)
        out["size_bytes"] = self.size_bytes
        if self.error:
            out["error"] = self.error
        return out


def split_held_out(n: int, fraction: float = 0.25, minimum: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """Indices ``(calibrate, held_out)``: every ``1/fraction``-th image is held out.

    With fewer than ``2 * minimum`` images there is too little to hold out: both are all images
    (the self-check then says so through its ``source``).
    """
    every = np.arange(n)
    if n < 2 * minimum:
        return every, every
    step = max(2, int(round(1.0 / fraction)))
    held = every[step - 1 :: step]
    return np.setdiff1d(every, held), held


def measure_fidelity(explain_batch: Callable, images: Sequence[np.ndarray], ref: Reference,
                     batch: int = 16) -> Fidelity:
    """Compare a converted model's maps and classes with ``ref`` (the float model's Grad-CAM).

    Args:
        explain_batch: ``ExplainableModel.explain_batch`` of the converted model.
        images: the held-out RGB uint8 images ``ref`` was computed on.
        ref: the float model's maps, classes and probabilities.

    Pearson is per image, at feature-map resolution, both maps ReLU'd, for the class the float
    model predicts (``firmware_host.compare.pearson``, the same as ``edgecam validate``).
    """
    agree, corr, pdiff = [], [], []
    for start in range(0, len(images), batch):
        classes = ref.classes[start : start + batch]
        for i, exp in enumerate(explain_batch(images[start : start + batch], class_index=classes)):
            probs = ref.probabilities[start + i]
            # A tie in the float scores (e.g. an untrained net) is agreement whichever wins.
            agree.append(float(abs(probs[exp.predicted_index] - probs[classes[i]]) <= 1e-6))
            corr.append(pearson(exp.cam, _cam.relu(ref.maps[start + i])))
            pdiff.append(float(np.abs(exp.probabilities - probs).max()))
    corr_arr = np.asarray(corr)
    by_class = {}
    for c in np.unique(ref.classes):
        name = ref.class_names[int(c)] if int(c) < len(ref.class_names) else str(int(c))
        by_class[name] = float(np.percentile(corr_arr[ref.classes == c], 5))
    return Fidelity(
        images=len(corr),
        pearson_median=float(np.median(corr_arr)),
        pearson_p05=float(np.percentile(corr_arr, 5)),
        pearson_min=float(np.min(corr_arr)),
        top1=float(np.mean(agree)),
        prob_max_abs_diff=float(np.max(pdiff)),
        p05_by_class=by_class,
    )


def interleaved_latency(runners: Mapping[str, Callable[[], None]], rounds: int = 7, calls: int = 10,
                        warmup: int = 3) -> Dict[str, float]:
    """Median latency (ms per call) of each runner, measured round-robin in one run.

    Each round times ``calls`` invocations of every runner in turn, so a noisy neighbour slows all
    plans alike and the *ratios* stay meaningful on a shared machine (the device times its shipped
    plans with the same helper: :func:`firmware_host.plans.interleaved_ms`).
    """
    return interleaved_ms(runners, rounds=rounds, calls=calls, warmup=warmup)


def choose(rows: Sequence[PlanFigures], cost: str = "measured") -> Optional[PlanFigures]:
    """The cheapest passing plan: lowest measured latency, or first in :data:`NOMINAL_COST` (``cost="nominal"``)."""
    passing = [r for r in rows if r.passed]
    if not passing:
        return None
    if cost == "measured" and all(r.latency_ms is not None for r in passing):
        return min(passing, key=lambda r: r.latency_ms)
    rank = {name: i for i, name in enumerate(NOMINAL_COST)}
    return min(passing, key=lambda r: rank.get(r.plan, len(rank)))


def format_table(rows: Sequence[PlanFigures], targets: Targets, chosen: Optional[str] = None) -> str:
    """The table of plans tried, as printed by ``edgecam convert`` and ``edgecam inspect``."""
    head = (f"{'plan':<11} {'median':>7} {'p05':>7} {'min':>7} {'top-1':>6} {'×int8':>6} {'KiB':>7}  "
            f"verdict (targets: p05 ≥ {targets.pearson_p05}, top-1 ≥ {targets.top1})")
    lines = [head]
    for r in rows:
        f = r.fidelity
        nums = (f"{f.pearson_median:7.4f} {f.pearson_p05:7.4f} {f.pearson_min:7.4f} {f.top1:6.3f}"
                if f is not None else f"{'—':>7} {'—':>7} {'—':>7} {'—':>6}")
        ratio = f"{r.latency_ratio:6.2f}" if r.latency_ratio is not None else f"{'—':>6}"
        size = f"{r.size_bytes / 1024:7.1f}" if r.size_bytes else f"{'—':>7}"
        verdict = "pass" if r.passed else ("failed: " + r.error if r.error else "misses: " + "; ".join(targets.missed(f)))
        mark = "  ← chosen" if r.plan == chosen else ""
        lines.append(f"{r.plan:<11} {nums} {ratio} {size}  {verdict}{mark}")
    return "\n".join(lines)


def figures_from_dict(d: Mapping[str, Any]) -> PlanFigures:
    """Inverse of :meth:`PlanFigures.as_dict` (the rows stored in the metadata)."""
    fid = None
    if d.get("pearson_median") is not None:
        fid = Fidelity(int(d.get("images", 0)), float(d["pearson_median"]), float(d["pearson_p05"]),
                       float(d["pearson_min"]), float(d["top1"]), float(d.get("prob_max_abs_diff", 0.0)),
                       dict(d.get("p05_by_class") or {}))
    return PlanFigures(str(d["plan"]), fid, bool(d.get("passed")), d.get("latency_ms"), d.get("latency_ratio"),
                       d.get("size_bytes"), d.get("error"))


def describe_precision(precision: Mapping[str, Any]) -> List[str]:
    """Lines for ``edgecam inspect``: the plan, its targets and the table of plans tried."""
    targets = targets_from_dict(precision.get("targets") or {})
    lines = [f"plan {precision.get('plan')} (asked: {precision.get('requested')}; targets p05 ≥ "
             f"{targets.pearson_p05}, top-1 ≥ {targets.top1})"]
    if precision.get("low_fidelity"):
        lines.append("LOW FIDELITY: written with --allow-low-fidelity although it misses these bounds")
    rows = [figures_from_dict(r) for r in precision.get("tried") or []]
    if rows:
        lines.extend(format_table(rows, targets, precision.get("plan")).splitlines())
    return lines


def targets_from_dict(d: Mapping[str, Any]) -> Targets:
    """Inverse of ``asdict(Targets)`` (metadata round trip)."""
    return Targets(**{k: float(v) for k, v in d.items() if k in Targets.__dataclass_fields__})
