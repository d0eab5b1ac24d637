"""``edgecam doctor``: is this device ready to run edgecam? Runs ON the device, no TensorFlow.

Reports Python, numpy, OpenCV, the LiteRT interpreter backend and its version, camera devices,
free disk space, an installed bundle's integrity, and whether the model loads and explains a
synthetic test frame (with timing).
"""

from __future__ import annotations

import glob
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from .errors import EdgecamError

__all__ = ["Check", "DoctorReport", "run_doctor", "synthetic_frame"]

MIN_FREE_BYTES = 200 << 20  # a release with its venv takes ~150 MiB


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes:
        name: what was checked (``python``, ``interpreter``, ``model``, …).
        ok: True (fine), False (a problem that stops edgecam), None (information or a warning).
        detail: what was found, and how to fix it when ``ok`` is False.
    """

    name: str
    ok: Optional[bool]
    detail: str


@dataclass(frozen=True)
class DoctorReport:
    """All checks, in order. ``ok`` is False when any check failed."""

    checks: Tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok is not False for check in self.checks)

    def get(self, name: str) -> Check:
        """The check called ``name``."""
        return next(check for check in self.checks if check.name == name)

    def format(self) -> str:
        """The report as aligned text lines: ``[ ok ] name  detail``."""
        marks = {True: "[ ok ]", False: "[FAIL]", None: "[ -- ]"}
        width = max(len(c.name) for c in self.checks)
        return "\n".join(f"{marks[c.ok]} {c.name:<{width}}  {c.detail}" for c in self.checks)


def synthetic_frame(height: int, width: int) -> np.ndarray:
    """A deterministic RGB uint8 test frame ``(height, width, 3)``: gradients plus a bright disc."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    yy, xx = np.mgrid[0:height, 0:width]
    disc = ((yy - height * 0.4) ** 2 + (xx - width * 0.6) ** 2) < (min(height, width) * 0.2) ** 2
    frame = np.stack([np.broadcast_to(rows, (height, width)), np.broadcast_to(cols, (height, width)),
                      np.where(disc, 255.0, 64.0)], axis=-1)
    return frame.astype(np.uint8)


def _python() -> Check:
    ok = sys.version_info >= (3, 9)
    detail = f"{platform.python_version()} ({sys.executable}, {platform.machine()})"
    return Check("python", ok, detail if ok else f"{detail}: edgecam needs Python ≥ 3.9")


def _opencv() -> Check:
    try:
        import cv2
    except ImportError:
        return Check("opencv", False, "not installed: pip install opencv-python-headless (cameras and videos need it)")
    return Check("opencv", True, cv2.__version__)


def _interpreter() -> Check:
    from .backends.litert import load_interpreter_class

    try:
        _, name, version = load_interpreter_class()
    except EdgecamError as exc:
        return Check("interpreter", False, str(exc))
    return Check("interpreter", True, f"{name} {version}")


def _tensorflow() -> Check:
    # The device runtime must never pull TensorFlow in; if something did, say so loudly.
    if sys.modules.get("tensorflow") is not None:
        return Check("tensorflow", False, "imported by this process: the device runtime must not need it")
    return Check("tensorflow", True, "not needed, not imported")


def _cameras() -> Check:
    devices = sorted(glob.glob("/dev/video*"))
    if not devices:
        return Check("cameras", None, "no /dev/video* devices (fine for video files and streams)")
    return Check("cameras", True, ", ".join(devices))


def _disk(where: Path) -> Check:
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return Check("disk", None, f"cannot stat '{where}': {exc.strerror}")
    ok = free >= MIN_FREE_BYTES
    detail = f"{free / 2**30:.2f} GiB free in {where}"
    return Check("disk", ok, detail if ok else f"{detail}: need ≥ {MIN_FREE_BYTES >> 20} MiB; free some space")


def _bundle(bundle: Path) -> Tuple[Check, Optional[Path], Optional[Check]]:
    from .manifest import verify_manifest
    from .runconfig import load_run_config

    try:
        files = verify_manifest(bundle, strict=False)
        options = load_run_config(bundle / "run.toml")
    except EdgecamError as exc:
        return Check("bundle", False, str(exc)), None, None
    model = options.get("model")
    detail = f"{bundle}: {len(files)} files match MANIFEST.sha256; run.toml ok"
    return Check("bundle", True, detail), Path(model) if model else None, _source(options.get("source"))


def _source(source) -> Optional[Check]:
    # Information only: the camera may be plugged in later, and the previous release would need
    # it too. A runner that cannot open it sends no telemetry, and deploy rolls back, naming it.
    text = str(source).strip() if source is not None else ""
    device = f"/dev/video{text}" if text.isdigit() else text if text.startswith("/dev/video") else None
    if device is None or not sys.platform.startswith("linux"):
        return None
    if Path(device).exists():
        return Check("source", True, f"run.toml reads {device}")
    return Check("source", None, f"run.toml reads {device}, which does not exist (camera not found): "
                                 "the runner cannot start until it is plugged in")


def _model(path: Path, repeats: int) -> Check:
    from .model import ExplainableModel

    try:
        start = time.perf_counter()
        model = ExplainableModel(path)
        load_ms = (time.perf_counter() - start) * 1000.0
        frame = synthetic_frame(*model.input_size)
        model.explain(frame)  # warm-up: the first call allocates tensors
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            exp = model.explain(frame)
            times.append((time.perf_counter() - start) * 1000.0)
    except EdgecamError as exc:
        return Check("model", False, str(exc))
    if not np.all(np.isfinite(exp.cam)) or not np.all(np.isfinite(exp.probabilities)):
        return Check("model", False, f"'{path}' produced non-finite outputs on the test frame; convert it again")
    h, w = exp.cam.shape
    return Check(
        "model",
        True,
        f"{path.name}: loads in {load_ms:.0f} ms ({model.backend.name}); explains a "
        f"{model.input_size[0]}×{model.input_size[1]} test frame in {statistics.median(times):.1f} ms "
        f"(median of {len(times)}) → {exp.label} {exp.confidence:.2f}, CAM {h}×{w}",
    )


def _plan(bundle: Path, choose: bool, threads: Optional[int]) -> Optional[Check]:
    """The plan this release runs: chosen here now (``choose``), as chosen before, or None (one model)."""
    from .plans import choose_plan, read_choice, read_plans

    try:
        if read_plans(bundle) is None:
            return Check("plan", False, f"'{bundle}' ships one model: nothing to choose. Build the bundle with "
                                        "`edgecam bundle MODEL --plans auto --calibration DIR`.") if choose else None
        if choose:
            choice = choose_plan(bundle, threads=threads)
            table = "; ".join(f"{t.plan} {t.latency_ms:.2f} ms" for t in choice.table)
            return Check("plan", True, f"chose {choice.plan} ({choice.latency_ms:.2f} ms/frame, fastest of {table}); "
                                       f"run.toml now runs {choice.file}")
    except EdgecamError as exc:
        return Check("plan", False, str(exc))
    chosen = read_choice(bundle)
    if chosen is None:
        return Check("plan", None, "several plans shipped, none chosen on this device yet: run "
                                   "`edgecam doctor --bundle DIR --choose-plan`")
    return Check("plan", True, f"{chosen['plan']} ({chosen.get('latency_ms')} ms/frame, chosen {chosen.get('chosen_at', '?')})")


def run_doctor(
    bundle: Optional[Union[str, Path]] = None,
    model: Optional[Union[str, Path]] = None,
    repeats: int = 5,
    choose_plan: bool = False,
    threads: Optional[int] = None,
) -> DoctorReport:
    """Check this device; with a bundle or model, also load it and explain a test frame.

    Args:
        bundle: an extracted bundle or installed release (checks its manifest and run.toml, then
            the model run.toml names).
        model: a ``.tflite`` to load (overrides the bundle's).
        repeats: timed ``explain`` calls after one warm-up.
        choose_plan: time every plan the bundle ships, choose the fastest and point its
            run.toml at it (:func:`firmware_host.plans.choose_plan`), before the model check.
        threads: interpreter threads for ``choose_plan`` (default: run.toml's ``threads``).

    Returns:
        A :class:`DoctorReport`; problems are reported as failed checks, never raised.
    """
    checks: List[Check] = [_python(), Check("numpy", True, np.__version__), _opencv(), _interpreter(),
                           _tensorflow(), _cameras()]
    model_path = Path(model) if model else None
    if bundle is not None:
        plan = _plan(Path(bundle), choose_plan, threads)
        check, bundled, source = _bundle(Path(bundle))
        checks.append(check)
        if source is not None:
            checks.append(source)
        model_path = model_path or bundled
        if plan is not None:
            checks.append(plan)
    checks.append(_disk(Path(bundle) if bundle else Path.cwd()))
    if model_path is not None:
        checks.append(_model(model_path, repeats))
        checks.extend(_fidelity(model_path))
    return DoctorReport(tuple(checks))


def _fidelity(path: Path) -> List[Check]:
    """A warning when the model was written with ``--allow-low-fidelity``."""
    from .metadata import read_metadata
    from .model import low_fidelity_reason

    try:
        meta = read_metadata(path)
    except EdgecamError:
        return []  # the model check already says why it cannot be read
    if not meta.low_fidelity:
        return []
    return [Check("fidelity", None, f"LOW FIDELITY: {path.name} was written with --allow-low-fidelity; "
                  f"{low_fidelity_reason(meta)}")]
