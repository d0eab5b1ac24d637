"""``edgecam bundle --plans``: convert and check every candidate precision plan on the host.

Fidelity is decided here, against the float model's own maps on held-out calibration images
(:mod:`converters.quant`); the device decides speed (:mod:`firmware_host.plans`). A plan that
misses the targets is listed with its figures and never shipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from firmware_host.errors import ConversionError, FidelityError, InputError, ModelFileError

__all__ = ["PlanFile", "PlanSet", "parse_plans", "plans_from_keras", "plans_from_files"]

PathLike = Union[str, "os.PathLike[str]"]
# The plan names; converters.quant.LITERT_PLANS (imported lazily: it is not needed for .tflite inputs).
PLAN_ORDER = ("int8", "int8-mixed", "16x8", "dynamic", "float16", "none")


@dataclass(frozen=True)
class PlanFile:
    """One candidate plan: its converted file (None when conversion failed) and its figures.

    Attributes:
        plan: plan name.
        path: the converted model, or None.
        row: ``PlanFigures.as_dict()``-shaped figures (``passed``, ``pearson_p05``, ``p05_by_class`` …).
    """

    plan: str
    path: Optional[Path]
    row: Dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.row.get("passed")) and self.path is not None


@dataclass(frozen=True)
class PlanSet:
    """Every candidate, in nominal order, and the targets they were held to."""

    plans: Tuple[PlanFile, ...]
    targets: Dict[str, float]

    @property
    def shipped(self) -> Tuple[PlanFile, ...]:
        return tuple(p for p in self.plans if p.passed)

    @property
    def left_out(self) -> Tuple[PlanFile, ...]:
        return tuple(p for p in self.plans if not p.passed)


def parse_plans(text: str) -> Tuple[str, ...]:
    """``auto`` (every LiteRT plan) or a comma-separated list of plan names, in nominal order.

    Raises:
        InputError: an unknown or repeated name.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["auto"]:
        return PLAN_ORDER
    unknown = [n for n in names if n not in PLAN_ORDER]
    if not names or unknown or len(set(names)) != len(names):
        raise InputError(f"--plans takes 'auto' or plan names separated by commas, each once: "
                         f"{', '.join(PLAN_ORDER)}. Got: {text!r}.")
    return tuple(n for n in PLAN_ORDER if n in names)


def _targets(min_p05: Optional[float], min_top1: Optional[float]):
    from converters.quant import AUTO_TARGETS, Targets

    return Targets(pearson_p05=AUTO_TARGETS.pearson_p05 if min_p05 is None else min_p05,
                   top1=AUTO_TARGETS.top1 if min_top1 is None else min_top1,
                   pearson_median=AUTO_TARGETS.pearson_median)


def _row(plan: str, check: Optional[Dict[str, Any]], targets, size: Optional[int]) -> Dict[str, Any]:
    """The figures of one plan from its self-check, judged against ``targets``."""
    from converters.quant import Fidelity, PlanFigures

    if not check or check.get("pearson_p05") is None:
        return PlanFigures(plan, error="no fidelity check in its metadata (convert it with --calibration)",
                           size_bytes=size).as_dict()
    fid = Fidelity(int(check.get("images", 0)), float(check["pearson_median"]), float(check["pearson_p05"]),
                   float(check["pearson_min"]), float(check.get("top1_agreement", check.get("top1", 0.0))),
                   float(check.get("prob_max_abs_diff", 0.0)), dict(check.get("p05_by_class") or {}))
    return PlanFigures(plan, fid, not targets.missed(fid), size_bytes=size).as_dict()


def plans_from_keras(model: Any, workdir: PathLike, plans: Sequence[str], calibration: Any,
                     min_p05: Optional[float] = None, min_top1: Optional[float] = None, **convert_options: Any) -> PlanSet:
    """Convert ``model`` once per plan into ``workdir`` and judge each on held-out images.

    Every plan is converted with the same targets (auto's unless given) and
    ``allow_low_fidelity``, so a plan that misses them is still measured: it is then listed with
    its figures, and :class:`PlanSet` ``shipped`` leaves it out.

    Args:
        model: a Keras model or the path of a ``.keras``/``.h5`` file.
        workdir: where the candidate ``model.<plan>.tflite`` files are written.
        plans: plan names (:func:`parse_plans`).
        calibration: a folder of images or a list of RGB uint8 images (a quarter is held out).
        min_p05 / min_top1: the targets (default: ``converters.quant.AUTO_TARGETS``).
        convert_options: passed to :func:`converters.convert` (labels, target_layer, …).

    Raises:
        InputError: no calibration images.
    """
    from dataclasses import asdict

    from converters import convert
    from converters.export import load_images
    from converters.quant import PlanFigures

    if calibration is None:
        raise InputError("--plans needs --calibration DIR: every plan is checked against the float model's maps "
                         "on held-out calibration images before it may ship.")
    if isinstance(calibration, (str, Path)):
        calibration, _ = load_images(calibration, convert_options.pop("max_calibration", None))
    targets = _targets(min_p05, min_top1)
    out: List[PlanFile] = []
    for plan in plans:
        path = Path(workdir) / f"model.{plan}.tflite"
        try:
            result = convert(model, path, quantize=plan, calibration=calibration, targets=targets,
                             allow_low_fidelity=True, **convert_options)
        except (ConversionError, FidelityError) as exc:
            out.append(PlanFile(plan, None, PlanFigures(plan, error=str(exc)[:300]).as_dict()))
            continue
        check = result.self_check.as_dict() if result.self_check is not None else None
        row = _row(plan, check, targets, result.size_bytes)
        out.append(PlanFile(plan, path, row))
    return PlanSet(tuple(out), asdict(targets))


def plans_from_files(files: Sequence[PathLike], min_p05: Optional[float] = None,
                     min_top1: Optional[float] = None) -> PlanSet:
    """Judge converted ``.tflite`` files by the self-check in their metadata (one file per plan).

    The plan is the metadata's ``quantization``; the figures are its ``self_check`` (measured
    by ``edgecam convert`` on held-out calibration images). A file without a self-check is
    listed, never shipped: its maps were not checked.

    Raises:
        ModelFileError: a file is not a converted ``.tflite``, two files have the same plan, or
            the files are not the same network (classes or input size differ).
    """
    from dataclasses import asdict

    from firmware_host.metadata import read_metadata

    targets = _targets(min_p05, min_top1)
    seen: Dict[str, Path] = {}
    shape = None
    out: List[PlanFile] = []
    for name in files:
        path = Path(name)
        if path.suffix != ".tflite":
            raise ModelFileError(f"Bundling several plans takes converted .tflite files. Got: '{path}'.")
        meta = read_metadata(path)
        plan = meta.quantization
        if plan in seen:
            raise ModelFileError(f"'{path}' and '{seen[plan]}' are both plan {plan}; pass one file per plan.")
        seen[plan] = path
        this = (tuple(meta.classes), meta.preprocessing.height, meta.preprocessing.width)
        if shape is not None and this != shape:
            raise ModelFileError(f"'{path}' is not the same network as '{files[0]}' (classes or input size "
                                 "differ); a bundle's plans are one model at several precisions.")
        shape = this
        out.append(PlanFile(plan, path, _row(plan, meta.self_check, targets, path.stat().st_size)))
    order = {p: i for i, p in enumerate(PLAN_ORDER)}
    out.sort(key=lambda p: order.get(p.plan, len(order)))
    return PlanSet(tuple(replace(p) for p in out), asdict(targets))
