"""``edgecam demo``: a fog-level camera from dataset to explained edge inference in one command.

1. render a fog dataset (atmospheric scattering on procedural road scenes) and a held-out set;
2. train the talk's small CNN;
3. convert it to LiteRT in float32 and int8, with the explanation head;
4. render a drive video in which fog thickens and clears;
5. run that video through ``edgecam run`` in a subprocess with TensorFlow blocked — the device
   path, exactly as on a Raspberry Pi;
6. validate edge heatmaps against full Grad-CAM (float32, int8, and the device's own log);
7. write an index page linking everything.

Seeds are fixed; every step reports progress. ``quick=True`` shrinks every size for the tests.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np

from firmware_host._io import atomic_write_text, ensure_writable_dir
from firmware_host.errors import EdgecamError
from firmware_host.imageio import list_images, read_image

__all__ = ["DemoConfig", "DemoResult", "run_demo", "DEFAULT", "QUICK"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run."""

    n_train: int = 2000
    n_holdout: int = 200
    size: int = 64
    epochs: int = 15
    calibration: int = 96
    video_frames: int = 240
    video_size: tuple = (180, 320)
    fps: float = 12.0
    save_every: int = 4
    min_pearson_float: float = 0.99
    min_pearson_int8: float = 0.95
    min_top1: float = 0.9


DEFAULT = DemoConfig()
QUICK = DemoConfig(n_train=96, n_holdout=16, size=32, epochs=1, calibration=16, video_frames=16,
                   video_size=(64, 96), fps=8.0, save_every=2, min_pearson_float=0.0,
                   min_pearson_int8=0.0, min_top1=0.0)

BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced and measured (everything also in ``summary.json``)."""

    out_dir: Path
    index_html: Path
    summary: Dict[str, Any] = field(repr=False)
    seconds: float = 0.0


def _balanced_calibration(data_dir: Path, limit: int) -> List[np.ndarray]:
    """Images taken round-robin from the class folders (a sorted listing would be one class)."""
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir())
    files = [list_images(f, recursive=False) for f in folders]
    out: List[np.ndarray] = []
    i = 0
    while len(out) < limit and any(i < len(f) for f in files):
        for group in files:
            if i < len(group) and len(out) < limit:
                img = read_image(group[i], rgb=True)
                if img is not None:
                    out.append(img)
        i += 1
    return out


def _device_run(model: Path, video: Path, out: Path, save_every: int, echo) -> Dict[str, Any]:
    """``edgecam run`` in a fresh interpreter where TensorFlow cannot be imported."""
    args = [
        "run", str(model), "--source", str(video), "--out-video", str(out / "drive_explained.mp4"),
        "--log", str(out / "run.jsonl"), "--save-frames", str(save_every), "--smooth", "0.5",
        "--hysteresis", "0.1:3", "--json",
    ]
    code = BLOCK_TF + f"from toolkit.cli import main; main({args!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgecamError(
            f"`edgecam run` on the device path failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"
        )
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    echo(f"      device run: {summary.get('frames', '?')} frames, {summary.get('fps', 0):.1f} fps, "
         f"latency p50 {summary.get('latency_p50_ms', 0):.2f} ms (TensorFlow blocked)")
    return summary


def run_demo(out_dir="edgecam-demo", config: DemoConfig = DEFAULT, seed: int = 0, progress: bool = True,
             echo: Callable[[str], None] = print, fleet: bool = False) -> DemoResult:
    """Run the whole story and return where everything is.

    Args:
        out_dir: output folder (created).
        config: sizes; :data:`DEFAULT` or :data:`QUICK`.
        seed: every random choice derives from it.
        progress: progress bars for the long steps.
        echo: where step messages go.
        fleet: one more step: a small synthetic fleet of this model's run logs and its fleet
            validation report (``edgecam fleet synth`` + ``fleet validate``) in ``fleet/``.
    """
    # The output first: a read-only or full location fails at once, not after minutes of work.
    out = ensure_writable_dir(out_dir)
    from toolkit import train as trainer
    from toolkit.datasets import fog

    start = time.perf_counter()
    clock = _StepClock(echo, total=8 if fleet else 7)

    with clock.step("data", f"Rendering {config.n_train} + {config.n_holdout} foggy road scenes "
                            "(I = J·t + A(1−t), t = e^(−βd))"):
        data = fog.generate_dataset(out / "data", config.n_train, size=config.size, seed=seed, progress=progress)
        holdout = fog.generate_dataset(out / "holdout", config.n_holdout, size=config.size, seed=seed + 1000,
                                       progress=progress)

    with clock.step("train", f"Training the small CNN ({config.epochs} epochs, augmentation as in the talk)"):
        trained = trainer.train(data, out / "train", epochs=config.epochs, seed=seed, progress=progress)
    echo(f"      held-out accuracy {trained.accuracy:.3f} in {trained.seconds:.0f} s → {trained.model_path}")

    with clock.step("convert", "Converting to LiteRT with the explanation head: float32 and int8"):
        models, checks = _convert_float_and_int8(trained, Path(data), out, config, echo)

    with clock.step("video", f"Rendering a {config.video_frames}-frame drive where fog thickens and clears"):
        video = fog.render_drive_video(out / "drive.mp4", frames=config.video_frames, fps=config.fps,
                                       size=config.video_size, seed=seed, progress=progress)

    with clock.step("run", "Running the int8 model on the video with `edgecam run` (device path, no TensorFlow)"):
        run_summary = _device_run(models["int8"], video.path, out, config.save_every, echo)

    with clock.step("validate", "Validating edge heatmaps against full Grad-CAM on held-out images "
                                "and the device log"):
        validations = _validate_edge_maps(trained, models, holdout, out, config, progress)
    _echo_validations(validations, echo)
    fleet_info = _fleet_step(clock, trained, models, out, seed, progress, echo) if fleet else None

    with clock.step("index", "Writing the index page"):
        summary = _demo_summary(seed, config, trained, checks, run_summary, validations, clock.seconds)
        if fleet_info is not None:
            summary["fleet"] = fleet_info
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
        index = _write_index(out, summary, trained, video)
    total = time.perf_counter() - start
    echo(f"Done in {total:.0f} s. Open {index}")
    return DemoResult(out_dir=out, index_html=index, summary=summary, seconds=total)


def _fleet_step(clock: "_StepClock", trained, models: Dict[str, Path], out: Path, seed: int, progress: bool,
                echo) -> Dict[str, Any]:
    """``--fleet``: vehicles running this model for two days (one updated, one with a failing camera)."""
    from toolkit.fleet.synth import DEMO_FLEET, demo_fleet

    with clock.step("fleet", f"A fleet of {DEMO_FLEET.vehicles} vehicles × {DEMO_FLEET.days} days of "
                             "`edgecam run` logs (a model update, a failing camera) and its validation"):
        return demo_fleet(out / "fleet", trained.model_path, models["none"], seed=seed, progress=progress, echo=echo)


class _StepClock:
    """Numbers the demo's steps as it announces them, and times each one.

    ``seconds[name]`` holds a step's start time while it runs and its duration once it is done.
    """

    def __init__(self, echo: Callable[[str], None], total: int):
        self.echo = echo
        self.total = total
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def step(self, name: str, text: str) -> Iterator[None]:
        self.echo(f"[{len(self.seconds) + 1}/{self.total}] {text}")
        self.seconds[name] = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - self.seconds[name]


def _convert_float_and_int8(trained, data: Path, out: Path, config: DemoConfig,
                            echo) -> Tuple[Dict[str, Path], Dict[str, Any]]:
    """Convert the trained model twice; return ``({quantize: path}, {quantize: self-check dict})``."""
    from converters import convert

    calib = _balanced_calibration(data, config.calibration)
    models = {}
    checks = {}
    for quant, name in (("none", "fog_float32.tflite"), ("int8", "fog_int8.tflite")):
        result = convert(trained.model_path, out / name, quantize=quant, calibration=calib,
                         labels=trained.labels_path, emit_baseline=quant == "int8")
        models[quant] = result.path
        checks[quant] = result.self_check.as_dict()
        echo(f"      {name}: {result.metadata.cam_mode} CAM, {result.size_bytes / 1024:.0f} KiB, self-check "
             f"Pearson {result.self_check.pearson_median:.4f}, top-1 {result.self_check.top1_agreement:.3f}")
    return models, checks


def _validate_edge_maps(trained, models: Dict[str, Path], holdout, out: Path, config: DemoConfig,
                        progress: bool) -> Dict[str, Any]:
    """Validate float32 and int8 on the held-out images, and the int8 device run's log."""
    from toolkit.validate import validate, validate_log

    validations = {}
    for quant, threshold in (("none", config.min_pearson_float), ("int8", config.min_pearson_int8)):
        tag = "float32" if quant == "none" else "int8"
        validations[tag] = validate(trained.model_path, models[quant], holdout, out / f"validate_{tag}",
                                    min_pearson=threshold, min_top1=config.min_top1, progress=progress)
    validations["device_log"] = validate_log(trained.model_path, models["int8"], out / "run.jsonl",
                                             out / "validate_device_log", progress=progress)
    return validations


def _echo_validations(validations: Dict[str, Any], echo) -> None:
    for tag, res in validations.items():
        pear = res.summary["pearson"]
        echo(f"      {tag}: {res.summary['images']} images, Pearson median {pear['median']:.4f} "
             f"(p05 {pear['p05']:.4f}), top-1 agreement {res.summary['top1_agreement']:.3f} "
             f"→ {'PASS' if res.passed else 'FAIL'}")


def _demo_summary(seed: int, config: DemoConfig, trained, checks: Dict[str, Any], run_summary: Dict[str, Any],
                  validations: Dict[str, Any], seconds: Dict[str, float]) -> Dict[str, Any]:
    """What ``summary.json`` holds (the index step, still running, is left out of the timings)."""
    return {
        "seed": seed,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
        "accuracy": trained.accuracy,
        "train_seconds": trained.seconds,
        "self_check": checks,
        "run": run_summary,
        "validation": {tag: {"summary": str(res.summary_path), "report": str(res.report_path),
                             "passed": res.passed, "pearson_median": res.summary["pearson"]["median"],
                             "top1_agreement": res.summary["top1_agreement"]}
                       for tag, res in validations.items()},
        "seconds": {k: round(v, 1) for k, v in seconds.items() if k != "index"},
    }


def _write_index(out: Path, summary: Dict[str, Any], trained, video) -> Path:
    """A plain page linking every artefact, with the headline numbers."""

    def rel(path) -> str:
        return html.escape(str(Path(path).resolve().relative_to(out.resolve())))

    rows = "".join(
        f"<tr><td>{html.escape(tag)}</td><td>{v['pearson_median']:.4f}</td><td>{v['top1_agreement']:.3f}</td>"
        f"<td>{'PASS' if v['passed'] else 'FAIL'}</td><td><a href='{rel(v['report'])}'>report</a></td></tr>"
        for tag, v in summary["validation"].items()
    )
    checks = "".join(
        f"<li>{'float32' if q == 'none' else q}: Pearson median {c['pearson_median']:.4f}, top-1 {c['top1_agreement']:.3f}</li>"
        for q, c in summary["self_check"].items()
    )
    run = summary["run"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgecam demo</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}img{{max-width:100%}}</style>
</head><body>
<h1>edgecam demo: a fog-level camera, explained on the device</h1>
<p>Seed {summary['seed']}. Timings (s): {html.escape(json.dumps(summary['seconds']))}.</p>
<h2>1. Data and training</h2>
<p>Held-out accuracy <b>{summary['accuracy']:.3f}</b> ({summary['train_seconds']:.0f} s of training).
Dataset: <a href="data/dataset.json">data/dataset.json</a>. Model: <a href="{rel(trained.model_path)}">model.keras</a>.</p>
<img src="{rel(trained.confusion_png)}" alt="confusion matrix" width="420">
<h2>2. Export with the explanation head</h2>
<ul><li><a href="fog_float32.tflite">fog_float32.tflite</a>, <a href="fog_int8.tflite">fog_int8.tflite</a>
(<a href="fog_int8.plain.tflite">plain baseline</a>)</li>{checks}</ul>
<h2>3. On the device</h2>
<p><a href="{rel(video.path)}">drive video</a> → <a href="drive_explained.mp4">annotated video</a>,
<a href="run.jsonl">telemetry (JSONL)</a>: {run.get('frames', '?')} frames at {run.get('fps', 0):.1f} fps,
latency p50 {run.get('latency_p50_ms', 0):.2f} ms, TensorFlow blocked.</p>
<h2>4. Edge vs full Grad-CAM</h2>
<table><tr><th>edge model</th><th>Pearson median</th><th>top-1 agreement</th><th>verdict</th><th></th></tr>{rows}</table>
{_fleet_html(summary.get("fleet"), rel)}<p>Everything as JSON: <a href="summary.json">summary.json</a>.</p>
</body></html>
"""
    return atomic_write_text(out / "index.html", page)


def _fleet_html(fleet: Any, rel: Callable[[Any], str]) -> str:
    """The index's fleet section (``--fleet``), or nothing."""
    if not fleet:
        return ""
    report = f"<a href='{rel(fleet['report'])}'>fleet report</a>" if fleet.get("report") else "no report"
    failing = html.escape(", ".join(fleet.get("failing_vehicles", [])) or "none")
    return (f"<h2>5. A fleet</h2><p>{fleet['runs']} run logs (<a href='{rel(fleet['truth'])}'>what was built in</a>): "
            f"{report}; failing vehicles: {failing}.</p>\n")
