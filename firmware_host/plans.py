"""The precision plans a bundle ships, and the device's choice among them (no TensorFlow).

Fidelity is decided on the host (``edgecam bundle --plans``: every plan is checked against the
float model's maps, and only plans that pass are shipped); speed is decided where the model runs.
A bundle with plans holds ``models/model.<plan>.tflite`` and ``plans.json`` (both listed in
``MANIFEST.sha256``)::

    {"format": 1, "targets": {...}, "default": "int8",
     "shipped": [{"plan": "int8", "file": "models/model.int8.tflite", "pearson_p05": ..., ...}],
     "left_out": [{"plan": "16x8", "passed": false, "pearson_p05": ..., ...}]}

``edgecam doctor --choose-plan`` (run by install.sh) times every shipped plan with its own
interpreter and this device's thread count, interleaved (:func:`interleaved_ms`), writes the
choice and the table to ``plan.json`` in the release and points ``run.toml``'s ``model`` at the
chosen file. ``plan.json`` records the bundle's own run.toml digest, so the manifest check still
holds (:func:`vouched_run_toml`).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from ._io import atomic_write_text
from .errors import DeployError

__all__ = [
    "PLANS_FILE",
    "CHOICE_FILE",
    "PlanTiming",
    "PlanChoice",
    "interleaved_ms",
    "read_plans",
    "time_plans",
    "choose_plan",
    "read_choice",
    "vouched_run_toml",
]

PLANS_FILE = "plans.json"  # written by the host, in the manifest
CHOICE_FILE = "plan.json"  # written by the device, not in the manifest
PathLike = Union[str, "os.PathLike[str]"]


def interleaved_ms(runners: Mapping[str, Callable[[], None]], rounds: int = 7, calls: int = 10,
                   warmup: int = 3) -> Dict[str, float]:
    """Median latency (ms per call) of each runner, measured round-robin in one run.

    Each round times ``calls`` invocations of every runner in turn, so a noisy neighbour (another
    process, a frequency change, thermal throttling) slows all plans alike and their order holds.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                run()
            samples[name].append((time.perf_counter() - t0) * 1000.0 / calls)
    return {name: float(statistics.median(v)) for name, v in samples.items()}


@dataclass(frozen=True)
class PlanTiming:
    """One shipped plan timed on this device.

    Attributes:
        plan: plan name (``int8``, ``float16``, …).
        file: the model, relative to the release.
        latency_ms: median ``explain`` time of one frame (interleaved with the other plans).
        pearson_p05: the host's fidelity figure for this plan (from ``plans.json``).
    """

    plan: str
    file: str
    latency_ms: float
    pearson_p05: Optional[float] = None


@dataclass(frozen=True)
class PlanChoice:
    """The device's choice: the fastest shipped plan, and the table it was chosen from."""

    plan: str
    file: str
    latency_ms: float
    threads: Optional[int]
    table: Tuple[PlanTiming, ...]

    def as_dict(self) -> Dict[str, Any]:
        return {"plan": self.plan, "file": self.file, "latency_ms": round(self.latency_ms, 3),
                "threads": self.threads,
                "table": [{"plan": t.plan, "file": t.file, "latency_ms": round(t.latency_ms, 3),
                           "pearson_p05": t.pearson_p05} for t in self.table]}

    def format(self) -> str:
        """The table as printed by ``doctor --choose-plan`` and ``bench --plans``."""
        fastest = min(t.latency_ms for t in self.table)
        lines = [f"{'plan':<11} {'ms/frame':>9} {'×fastest':>9} {'p05':>7}  file "
                 f"(threads {self.threads or 'default'})"]
        for t in self.table:
            p05 = f"{t.pearson_p05:7.4f}" if t.pearson_p05 is not None else f"{'—':>7}"
            mark = "  ← chosen" if t.plan == self.plan else ""
            lines.append(f"{t.plan:<11} {t.latency_ms:9.2f} {t.latency_ms / fastest:9.2f} {p05}  {t.file}{mark}")
        return "\n".join(lines)


def read_plans(root: PathLike) -> Optional[Dict[str, Any]]:
    """``plans.json`` of a bundle or release, or None when it ships one model.

    Raises:
        DeployError: the file is unreadable, or names a model outside ``models/`` or missing.
    """
    path = Path(root) / PLANS_FILE
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        shipped = list(table["shipped"])
        files = [str(row["file"]) for row in shipped]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeployError(f"'{path}' is not a readable plan table ({exc}). Rebuild the bundle with `edgecam bundle --plans`.") from exc
    for name in files:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] != ("models",) or not (Path(root) / rel).is_file():
            raise DeployError(f"'{path}' names model {name!r}, which is not a file under models/ of the bundle. "
                              "Rebuild the bundle with `edgecam bundle --plans`.")
    if not shipped:
        raise DeployError(f"'{path}' ships no plan. Rebuild the bundle with `edgecam bundle --plans`.")
    return table


def time_plans(root: PathLike, threads: Optional[int] = None, rounds: int = 7, calls: int = 10) -> Tuple[PlanTiming, ...]:
    """Time every shipped plan of ``root`` on this device, each with its own interpreter.

    Every plan explains the same synthetic frame (the whole ``explain`` call the runner makes:
    preprocess, invoke, CAM), interleaved so the comparison is fair on a busy device.

    Raises:
        DeployError: the bundle ships no plans (``plans.json`` missing or broken).
        ModelFileError / MetadataError: a shipped model does not load.
    """
    from .doctor import synthetic_frame
    from .model import ExplainableModel

    table = read_plans(root)
    if table is None:
        raise DeployError(f"'{root}' ships one model, no plans to choose from (no {PLANS_FILE}). Build the "
                          "bundle with `edgecam bundle MODEL --plans auto --calibration DIR`.")
    rows = table["shipped"]
    runners = {}
    for row in rows:
        model = ExplainableModel(Path(root) / row["file"], num_threads=threads)
        frame = synthetic_frame(*model.input_size)
        runners[str(row["plan"])] = (lambda m=model, f=frame: m.explain(f))
    timed = interleaved_ms(runners, rounds=rounds, calls=calls)
    return tuple(PlanTiming(str(r["plan"]), str(r["file"]), timed[str(r["plan"])], r.get("pearson_p05")) for r in rows)


def choose_plan(root: PathLike, threads: Optional[int] = None, rounds: int = 7, calls: int = 10,
                write: bool = True) -> PlanChoice:
    """Time the shipped plans, choose the fastest, and (``write``) record it in the release.

    Writes ``plan.json`` (the choice and the table, and the digests of the bundle's run.toml and
    of the one written) and rewrites ``run.toml`` so that ``model`` names the chosen file, both
    atomically. Only plans that passed the host's fidelity check are shipped, so every candidate
    here is faithful; speed alone decides.

    Args:
        root: an extracted bundle or installed release with ``plans.json``.
        threads: interpreter threads (the runner's ``threads`` in run.toml when None).

    Raises:
        DeployError: no plans shipped, or run.toml changed since the bundle was built.
    """
    from .manifest import read_manifest, sha256_file
    from .runconfig import dumps_run_config, parse_run_config

    root = Path(root)
    run_toml = root / "run.toml"
    options = parse_run_config(run_toml.read_text(encoding="utf-8"), str(run_toml))
    if threads is None and isinstance(options.get("threads"), int):
        threads = options["threads"]
    table = time_plans(root, threads=threads, rounds=rounds, calls=calls)
    best = min(table, key=lambda t: t.latency_ms)
    choice = PlanChoice(best.plan, best.file, best.latency_ms, threads, table)
    if write:
        bundled = read_manifest(root).get("run.toml")
        current = sha256_file(run_toml)
        previous = read_choice(root)
        if current != bundled and (previous is None or previous.get("run_toml_sha256") != current):
            raise DeployError(f"'{run_toml}' differs from the bundle's and from the last plan choice: it was edited. "
                              "Reinstall the bundle, then run `edgecam doctor --choose-plan` again.")
        options["model"] = best.file
        text = dumps_run_config(options, f"edgecam run options; model chosen on this device by `edgecam doctor "
                                         f"--choose-plan`\n(plan {best.plan}, {best.latency_ms:.2f} ms/frame; "
                                         f"table in {CHOICE_FILE}). Keys: docs/deploy.md.")
        record = {**choice.as_dict(), "chosen_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "bundle_run_toml_sha256": bundled, "run_toml_sha256": _sha256_text(text)}
        atomic_write_text(root / CHOICE_FILE, json.dumps(record, indent=2) + "\n")
        atomic_write_text(run_toml, text)
    return choice


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_choice(root: PathLike) -> Optional[Dict[str, Any]]:
    """``plan.json`` of a release (the device's choice), or None when no plan was chosen there."""
    path = Path(root) / CHOICE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("plan"), str) else None


def vouched_run_toml(root: PathLike, listed: str, actual: str) -> bool:
    """True when run.toml differs from the manifest only because the device chose a plan.

    ``plan.json`` must record the manifest's digest as the bundle's run.toml and ``actual`` as
    the one it wrote; any other change to run.toml is still a modified release.
    """
    choice = read_choice(root)
    return bool(choice) and choice.get("bundle_run_toml_sha256") == listed and choice.get("run_toml_sha256") == actual

