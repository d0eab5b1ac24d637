"""``edgecam demo --case wood``: defects on wood boards, from procedural boards to a tiled device run.

The talk's second case ("heterogeneous wood texture classification with cropping data
augmentation"), end to end:

1. render wood boards with small defects and their boxes (:mod:`toolkit.datasets.wood`), and a
   second set of boards held out for the device;
2. train the small CNN on random crops labelled by the boxes they hold (``train --crop``); the
   held-out crops come from boards the model never saw;
3. convert it to LiteRT in float32 and int8 with the explanation head;
4. run the int8 model over the held-out boards with ``edgecam run --tiles`` in a subprocess with
   TensorFlow blocked — each board explained as tiles and stitched into one heatmap;
5. validate: edge vs full Grad-CAM on held-out crops (Pearson, with the pointing game against the
   crops' boxes), and the pointing game and energy in box of the device's board maps against the
   generator's boxes;
6. layer visualization, saliency and Grad-CAM of a few boards (host, tiled and stitched the same
   way), beside the device's map;
7. an index page.

``WOOD_QUICK`` shrinks every size for the tests.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from firmware_host._io import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from firmware_host.errors import EdgecamError

__all__ = ["WoodDemoConfig", "WoodDemoResult", "run_wood_demo", "WOOD_DEFAULT", "WOOD_QUICK", "board_pointing"]

BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
#: Host explainers drawn for a few boards (the talk's three).
FIGURE_METHODS = ("layer_visualization", "saliency", "gradcam")


@dataclass(frozen=True)
class WoodDemoConfig:
    """Sizes of one wood demo run."""

    n_boards: int = 140
    n_device_boards: int = 24
    board: int = 256
    crop: int = 64
    crops_per_board: int = 8
    holdout_crops_per_board: int = 4
    epochs: int = 14
    batch_size: int = 16
    # The random crops are the augmentation; the rotation/zoom layers would cost CPU time.
    augment: bool = False
    calibration: int = 64
    tile_stride: int = 32
    figure_boards: int = 3
    min_pearson_int8: float = 0.95


WOOD_DEFAULT = WoodDemoConfig()
WOOD_QUICK = WoodDemoConfig(n_boards=16, n_device_boards=4, board=96, crop=48, crops_per_board=4,
                            holdout_crops_per_board=2, epochs=1, batch_size=16, calibration=8, tile_stride=24,
                            figure_boards=1, min_pearson_int8=0.0)


@dataclass(frozen=True)
class WoodDemoResult:
    """What the demo produced and measured (everything also in ``summary.json``)."""

    out_dir: Path
    index_html: Path
    summary: Dict[str, Any] = field(repr=False)
    seconds: float = 0.0


class _Clock:
    """Announces numbered steps and times them."""

    def __init__(self, echo: Callable[[str], None], total: int) -> None:
        self.echo, self.total, self.seconds = echo, total, {}  # type: ignore[var-annotated]

    def start(self, name: str, text: str) -> None:
        self.echo(f"[{len(self.seconds) + 1}/{self.total}] {text}")
        self.seconds[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        self.seconds[name] = round(time.perf_counter() - self.seconds[name], 1)


def run_wood_demo(out_dir="edgecam-demo-wood", config: WoodDemoConfig = WOOD_DEFAULT, seed: int = 0,
                  progress: bool = True, echo: Callable[[str], None] = print) -> WoodDemoResult:
    """Run the wood story and return where everything is (see the module docstring).

    Args:
        out_dir: output folder (created).
        config: sizes; :data:`WOOD_DEFAULT` or :data:`WOOD_QUICK`.
        seed: every random choice derives from it.
        progress: progress bars.
        echo: where step messages go.
    """
    out = ensure_writable_dir(out_dir)
    start = time.perf_counter()
    load_before = _load_average()
    clock = _Clock(echo, total=7)
    c = config
    tiles = f"{c.crop}:{c.tile_stride}"

    clock.start("data", f"Rendering {c.n_boards} + {c.n_device_boards} wood boards ({c.board} px) with small "
                        "defects and their boxes")
    data, boards, flat, holdout = _make_data(out, c, seed, progress)
    clock.stop("data")

    clock.start("train", f"Training the small CNN on {c.crop}-px crops ({c.crops_per_board} per board, "
                         f"{c.epochs} epochs), held-out boards")
    from toolkit import train as trainer
    from toolkit.datasets.crops import load_crops

    crops = load_crops(data, c.crop, per_image=c.crops_per_board, seed=seed)
    trained = trainer.train(crops, out / "train", epochs=c.epochs, batch_size=c.batch_size, seed=seed,
                            progress=progress, augment=c.augment)
    clock.stop("train")
    echo(f"      held-out crop accuracy {trained.accuracy:.3f} ({trained.n_test} crops of unseen boards)")

    clock.start("convert", "Converting to LiteRT with the explanation head: float32 and int8")
    models, checks = _convert(trained, data, out, c, seed, echo)
    clock.stop("convert")

    clock.start("run", f"Running the int8 model over {c.n_device_boards} boards as {tiles} tiles with "
                       "`edgecam run --tiles` (device path, no TensorFlow)")
    run_summary = _device_run(models["int8"], flat, out, tiles, echo)
    clock.stop("run")

    clock.start("validate", "Validating: edge vs full Grad-CAM on held-out crops; pointing game of the "
                            "device's board maps against the boxes")
    validations = _validate(trained, models, holdout, out, c, progress)
    pointing = board_pointing(out / "run.jsonl", flat, boards, _tiled(models["int8"], tiles))
    atomic_write_text(out / "pointing.json", json.dumps(pointing, indent=1) + "\n")
    clock.stop("validate")
    _echo_numbers(validations, pointing, echo)

    clock.start("figures", "Layer visualization, saliency and Grad-CAM of a few boards (tiled on the host)")
    figures = _figures(trained, models["int8"], boards, out, c)
    clock.stop("figures")

    clock.start("index", "Writing the index page")
    summary = {
        "seed": seed, "config": dict(c.__dict__), "tiles": tiles,
        "crop_accuracy": trained.accuracy, "n_test_crops": trained.n_test, "train_seconds": trained.seconds,
        "self_check": checks, "run": run_summary,
        "validation": {tag: {"summary": str(v.summary_path), "report": str(v.report_path), "passed": v.passed,
                             "pearson_median": v.summary["pearson"]["median"],
                             "top1_agreement": v.summary["top1_agreement"], "boxes": v.summary.get("boxes")}
                       for tag, v in validations.items()},
        "boards": pointing["summary"],
        "figures": [str(f.relative_to(out)) for f in figures],
        "seconds": {k: v for k, v in clock.seconds.items() if k != "index"},
        "load_average": {"before": load_before, "after": _load_average()},
        "cpus": os.cpu_count(),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    index = _write_index(out, summary, trained)
    clock.stop("index")
    total = time.perf_counter() - start
    echo(f"Done in {total:.0f} s. Open {index}")
    return WoodDemoResult(out_dir=out, index_html=index, summary=summary, seconds=total)


def _load_average() -> List[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - platforms without getloadavg
        return []


def _make_data(out: Path, c: WoodDemoConfig, seed: int, progress: bool):
    """Training boards; held-out boards (a class-folder dataset and a flat copy for `edgecam run`);
    held-out crops of those boards with their boxes (for `validate`)."""
    from toolkit.datasets.crops import load_crops, write_crops
    from toolkit.datasets.wood import generate_wood_dataset

    data = generate_wood_dataset(out / "data", c.n_boards, size=c.board, seed=seed, progress=progress)
    boards = generate_wood_dataset(out / "boards", c.n_device_boards, size=c.board, seed=seed + 1000,
                                   progress=progress)
    flat = out / "boards_flat"
    if flat.exists():
        shutil.rmtree(flat)
    flat.mkdir()
    for path in sorted(boards.glob("*/*.png")):
        shutil.copyfile(path, flat / f"{path.parent.name}__{path.name}")
    holdout = out / "holdout_crops"
    if holdout.exists():
        shutil.rmtree(holdout)
    write_crops(holdout, load_crops(boards, c.crop, per_image=c.holdout_crops_per_board, seed=seed + 1))
    return data, boards, flat, holdout


def _convert(trained, data: Path, out: Path, c: WoodDemoConfig, seed: int, echo):
    """float32 and int8 LiteRT models; calibration from crops of the training boards."""
    from converters import convert
    from toolkit.datasets.crops import load_crops

    crops = load_crops(data, c.crop, per_image=2, seed=seed + 2)
    # Round-robin over classes, so the calibration sees every defect.
    by_class = [list(np.flatnonzero(crops.y == k)) for k in range(len(crops.class_names))]
    picked: List[int] = []
    while len(picked) < c.calibration and any(by_class):
        for group in by_class:
            if group and len(picked) < c.calibration:
                picked.append(int(group.pop(0)))
    calib = [crops.x[i] for i in picked]
    models, checks = {}, {}
    for quant, name in (("none", "wood_float32.tflite"), ("int8", "wood_int8.tflite")):
        result = convert(trained.model_path, out / name, quantize=quant, calibration=calib,
                         labels=trained.labels_path)
        models[quant] = result.path
        checks[quant] = result.self_check.as_dict()
        echo(f"      {name}: {result.metadata.cam_mode} CAM, {result.size_bytes / 1024:.0f} KiB, self-check "
             f"Pearson {result.self_check.pearson_median:.4f}")
    return models, checks


def _device_run(model: Path, flat: Path, out: Path, tiles: str, echo) -> Dict[str, Any]:
    """``edgecam run --tiles`` over the board folder in a fresh interpreter without TensorFlow."""
    (out / "run.jsonl").unlink(missing_ok=True)  # a rerun starts a fresh log
    args = ["run", str(model), "--source", str(flat), "--tiles", tiles, "--log", str(out / "run.jsonl"),
            "--save-frames", "1", "--frame-format", "png", "--out-video", str(out / "boards_explained.avi"),
            "--json"]
    code = BLOCK_TF + f"from toolkit.cli import main; main({args!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgecamError(f"`edgecam run --tiles` on the device path failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    echo(f"      device run: {summary.get('frames', '?')} boards, latency p50 "
         f"{summary.get('latency_p50_ms', 0):.1f} ms per board (all tiles), TensorFlow blocked")
    return summary


def board_pointing(log: Path, flat: Path, boards: Path, edge=None, tolerance: float = 15.0) -> Dict[str, Any]:
    """Pointing game and energy in box of the edge model's board maps against the generator's boxes.

    Two sets of maps per defect board, both stitched from int8 tiles by ``firmware_host``:

    * ``shown`` — what the tiled ``edgecam run`` logged: the map of the class it showed (a board
      it called ``sound`` is scored with the ``sound`` map, usually a miss);
    * ``truth`` — the map of the board's true class, as the pointing game is defined (Zhang et
      al. 2018 score the ground-truth category's map): ``edge`` (a
      :class:`~firmware_host.tiles.TiledModel`) explains the board for that class.

    Frame ``i`` of the log is the ``i``-th image of ``flat`` (a folder source reads its files in
    ``firmware_host.imageio.list_images`` order); ``flat`` names are ``<class>__<file>`` copies of
    ``boards/<class>/<file>``, whose boxes are in ``boards/boxes.json``. Maps are resized to the
    board with ``firmware_host.cam.heatmap``.
    """
    from firmware_host import cam as _cam
    from firmware_host.imageio import list_images, read_image
    from firmware_host.telemetry import TelemetryRecord, read_records
    from toolkit import metrics as M
    from toolkit.datasets.boxes import read_boxes

    files = list_images(flat, recursive=False)
    boxes = read_boxes(boards / "boxes.json")
    rows = []
    for record in read_records(log):
        if not isinstance(record, TelemetryRecord) or not 0 <= record.frame < len(files):
            continue
        rel = files[record.frame].name.replace("__", "/", 1)
        truth, label = boxes.get(rel, ()), rel.split("/", 1)[0]
        row = {"board": rel, "class": label, "predicted": record.label, "correct": record.label == label}
        if truth:
            board = read_image(files[record.frame], rgb=True)
            maps = {"shown": np.asarray(record.cam, np.float32)}
            if edge is not None and label in edge.classes:
                maps["truth"] = edge.explain(board, class_index=edge.classes.index(label)).cam
            for kind, raw in maps.items():
                scores = M.box_scores(_cam.heatmap(raw, board.shape[:2]), [b.box for b in truth], tolerance)
                row.update({f"pointing_{kind}": scores.pointing, f"energy_in_box_{kind}": scores.energy,
                            "box_area": scores.area})
        rows.append(row)
    return {"summary": _pointing_summary(rows, tolerance), "boards": rows}


def _pointing_summary(rows: List[Dict[str, Any]], tolerance: float) -> Dict[str, Any]:
    from toolkit import metrics as M

    defect = [r for r in rows if "box_area" in r]
    out: Dict[str, Any] = {
        "boards": len(rows),
        "board_accuracy": float(np.mean([r["correct"] for r in rows])) if rows else None,
        "defect_boards": len(defect),
        "tolerance_px": tolerance,
        "box_area": M.summarize([r["box_area"] for r in defect]),
    }
    for kind, suffix in (("truth", ""), ("shown", "_shown")):
        scored = [r for r in defect if f"pointing_{kind}" in r]
        out[f"pointing_game{suffix}"] = float(np.mean([r[f"pointing_{kind}"] for r in scored])) if scored else None
        out[f"energy_in_box{suffix}"] = M.summarize([r[f"energy_in_box_{kind}"] for r in scored])
    return out


def _tiled(model: Path, tiles: str):
    from firmware_host import ExplainableModel
    from firmware_host.tiles import TiledModel, parse_tiles

    return TiledModel(ExplainableModel(model), parse_tiles(tiles))


def _validate(trained, models, holdout: Path, out: Path, c: WoodDemoConfig, progress: bool):
    from toolkit.validate import validate

    results = {}
    for quant, tag, threshold in (("none", "float32", None), ("int8", "int8", c.min_pearson_int8)):
        results[tag] = validate(trained.model_path, models[quant], holdout, out / f"validate_{tag}",
                                min_pearson=threshold, faithfulness=False, progress=progress)
    return results


def _echo_numbers(validations, pointing, echo) -> None:
    for tag, res in validations.items():
        boxes = res.summary.get("boxes") or {}
        pg = (boxes.get("pointing_game") or {}).get("edge")
        echo(f"      {tag} on held-out crops: Pearson median {res.summary['pearson']['median']:.4f}, top-1 "
             f"agreement {res.summary['top1_agreement']:.3f}, pointing game (edge) "
             f"{'n/a' if pg is None else f'{pg:.3f}'} → {res.verdict}")
    s = pointing["summary"]
    echo(f"      device boards: accuracy {s['board_accuracy']:.3f}; on {s['defect_boards']} defect boards the "
         f"pointing game of the int8 tiled maps is {_num(s['pointing_game'])} for the true class "
         f"({_num(s['pointing_game_shown'])} for the class shown), energy in box median "
         f"{_num(s['energy_in_box']['median'])} (box area {_num(s['box_area']['median'], '.4f')})")


def _num(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _host_board_maps(model, board: np.ndarray, spec, class_index: int) -> Dict[str, np.ndarray]:
    """Each figure method's map of the board: tiles explained on the host, stitched like the device's."""
    from firmware_host import cam as _cam
    from firmware_host.tiles import cut_tiles, stitch
    from toolkit.explain import explain_full

    tiles, origins = cut_tiles(board, spec)
    x = np.stack(tiles).astype(np.float32)
    maps = {}
    for method in FIGURE_METHODS:
        raw = explain_full(model, x, method=method, class_index=class_index, upsample=False).maps
        maps[method] = _cam.heatmap(stitch(list(raw), origins, spec.size, board.shape[:2]), board.shape[:2])
    return maps


def _figures(trained, int8: Path, boards: Path, out: Path, c: WoodDemoConfig) -> List[Path]:
    """One figure per board: the board and its box, three host maps, the int8 tiled map."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from converters.loading import load_keras_model
    from firmware_host import ExplainableModel
    from firmware_host import cam as _cam
    from firmware_host.imageio import read_image
    from firmware_host.tiles import TiledModel, parse_tiles
    from toolkit.datasets.boxes import read_boxes

    spec = parse_tiles(f"{c.crop}:{c.tile_stride}")
    keras_model = load_keras_model(trained.model_path)
    edge = TiledModel(ExplainableModel(int8), spec)
    boxes = read_boxes(boards / "boxes.json")
    # One board per defect class first (then more of them), so each kind of defect is shown.
    defect = sorted((rel for rel, b in boxes.items() if b), key=lambda r: (r.split("/")[0], r))
    firsts = {rel.split("/")[0]: rel for rel in reversed(defect)}
    chosen = (sorted(firsts.values()) + [r for r in defect if r not in firsts.values()])[: c.figure_boards]
    folder = out / "figures"
    folder.mkdir(exist_ok=True)
    written = []
    for k, rel in enumerate(chosen):
        board = read_image(boards / rel, rgb=True)
        exp = edge.explain(board)
        maps = _host_board_maps(keras_model, board, spec, exp.class_index)
        maps["edge int8 (device)"] = exp.heatmap(board.shape[:2])
        fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3.0 * (len(maps) + 1), 3.7), dpi=90)
        try:
            axes[0].imshow(board)
            for b in boxes[rel]:
                x0, y0, x1, y1 = b.box
                axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
            axes[0].set_title(f"{rel}\n(box: {boxes[rel][0].label})", fontsize=8)
            for ax, (name, heat) in zip(axes[1:], maps.items()):
                ax.imshow(_cam.overlay(board, heat))
                ax.set_title(f"{name.replace('_', ' ')}\nclass {exp.label}", fontsize=8)
            for ax in axes:
                ax.axis("off")
            fig.tight_layout()
            import io

            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
        finally:
            plt.close(fig)
        written.append(atomic_write_bytes(folder / f"board_{k}.png", buffer.getvalue()))
    return written


def _write_index(out: Path, s: Dict[str, Any], trained) -> Path:
    def rel(path) -> str:
        return html.escape(str(Path(path).resolve().relative_to(out.resolve())))

    def num(v, fmt=".3f"):
        return "n/a" if v is None else format(v, fmt)

    rows = "".join(
        f"<tr><td>{html.escape(tag)}</td><td>{num(v['pearson_median'], '.4f')}</td><td>{num(v['top1_agreement'])}"
        f"</td><td>{num(((v.get('boxes') or {}).get('pointing_game') or {}).get('edge'))}</td>"
        f"<td>{'PASS' if v['passed'] else 'FAIL'}</td><td><a href='{rel(v['report'])}'>report</a></td></tr>"
        for tag, v in s["validation"].items())
    b = s["boards"]
    figs = "".join(f'<p><img src="{html.escape(f)}" alt="{html.escape(f)}"></p>' for f in s["figures"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgecam demo: wood</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.45}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}img{{max-width:100%}}</style>
</head><body>
<h1>edgecam demo: defects on wood boards, explained on the device</h1>
<p>Seed {s['seed']}. Timings (s): {html.escape(json.dumps(s['seconds']))}. Load average before/after:
{html.escape(json.dumps(s['load_average']))} on {s['cpus']} CPUs.</p>
<h2>1. Boards and crops</h2>
<p>Training boards: <a href="data/dataset.json">data/dataset.json</a>, boxes <a href="data/boxes.json">data/boxes.json</a>.
Held-out crop accuracy <b>{s['crop_accuracy']:.3f}</b> on {s['n_test_crops']} crops of boards the model never saw
({s['train_seconds']:.0f} s of training). Model: <a href="{rel(trained.model_path)}">model.keras</a>.</p>
<img src="{rel(trained.confusion_png)}" alt="confusion matrix" width="420">
<h2>2. Export</h2>
<p><a href="wood_float32.tflite">wood_float32.tflite</a>, <a href="wood_int8.tflite">wood_int8.tflite</a>.</p>
<h2>3. Whole boards on the device (tiles {html.escape(s['tiles'])})</h2>
<p><a href="run.jsonl">telemetry</a>, <a href="boards_explained.avi">annotated boards</a>:
{b['boards']} boards, board accuracy {num(b['board_accuracy'])}. On {b['defect_boards']} defect boards, the int8
tiled maps: <b>pointing game {num(b['pointing_game'])}</b> for the true class ({num(b['pointing_game_shown'])}
for the class the device showed), energy in box median {num(b['energy_in_box']['median'])}
(box area median {num(b['box_area']['median'], '.4f')}: the chance level). Per board: <a href="pointing.json">pointing.json</a>.</p>
<h2>4. Edge vs full Grad-CAM on held-out crops</h2>
<table><tr><th>edge model</th><th>Pearson median</th><th>top-1 agreement</th><th>pointing game (edge)</th>
<th>verdict</th><th></th></tr>{rows}</table>
<h2>5. Layer visualization, saliency, Grad-CAM (host, tiled) and the device's map</h2>
{figs}
<p>Everything as JSON: <a href="summary.json">summary.json</a>.</p>
</body></html>
"""
    return atomic_write_text(out / "index.html", page)
