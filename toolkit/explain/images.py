"""Explain image files with one or all methods: overlay PNGs and a side-by-side figure per image.

The Python function behind ``edgecam explain``. Images are read as RGB uint8, preprocessed
exactly as the converter records it (``converters.export.detect_preprocessing`` +
``firmware_host.preprocess``), explained in batches of ``batch_size``, and written as

* ``OUT/<name>.<method>.png`` — the heatmap over the original image (``firmware_host.cam.overlay``),
* ``OUT/<name>.methods.png`` — the original and every method side by side (matplotlib),
* ``OUT/explain.json`` — per image: class, probability, maps written, IG completeness error.

Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host import cam as _cam
from firmware_host._io import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from firmware_host.errors import InputError, OutputError
from firmware_host.imageio import IMAGE_SUFFIXES, list_images, read_image

__all__ = ["ExplainedImage", "ExplainRun", "explain_images", "collect_images"]

log = logging.getLogger("edgecam.explain")


@dataclass(frozen=True)
class ExplainedImage:
    """One image's result.

    Attributes:
        source: the image file.
        class_index: class explained (predicted unless given).
        probability: the model's probability of that class.
        overlays: method name → overlay PNG written.
        figure: the side-by-side PNG.
        info: per-method extras (e.g. ``integrated_gradients.completeness_error``).
    """

    source: Path
    class_index: int
    probability: float
    overlays: Dict[str, Path]
    figure: Optional[Path]
    info: Dict[str, float]


@dataclass(frozen=True)
class ExplainRun:
    """What ``explain_images`` wrote."""

    methods: Tuple[str, ...]
    images: Tuple[ExplainedImage, ...]
    skipped: Tuple[Path, ...]
    preprocessing: str
    summary: Path


def collect_images(inputs: Sequence[Union[str, Path]]) -> List[Path]:
    """Image files from files and folders (folders recursively, sorted), duplicates removed.

    Raises:
        InputError: a path does not exist, or nothing image-like was found.
    """
    files: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += list_images(path, recursive=True)
        elif path.is_file():
            files.append(path)
        elif path.exists():  # a FIFO, socket or device: opening it could block for ever
            log.warning("Skipped '%s': not a regular file (FIFO, socket or device).", path)
        else:
            raise InputError(f"Image path '{path}' does not exist. Pass image files or folders.")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise InputError(
            f"No image files found in {', '.join(map(str, inputs))}. Supported: {', '.join(IMAGE_SUFFIXES)}."
        )
    return unique


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OutputError("OpenCV could not encode a PNG.")
    return data.tobytes()


def _stems(paths: Sequence[Path]) -> List[str]:
    """Output name per image: the file stem, made unique when two folders share a name."""
    seen: Dict[str, int] = {}
    out = []
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def _slug(method: str) -> str:
    return method.replace("+", "p")


def _figure(image: np.ndarray, overlays: Dict[str, np.ndarray], title: str) -> bytes:
    """The original next to every method's overlay, as PNG bytes (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = [("input", image)] + list(overlays.items())
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.8 * rows), dpi=100)
    for i, (name, picture) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(picture)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _method_options(method: str, pre, steps: int, samples: int, baseline: str) -> Dict[str, Any]:
    from firmware_host.preprocess import preprocess

    if method == "integrated_gradients":
        if baseline == "black":
            black = np.zeros((pre.height, pre.width, 3), np.uint8)
            return {"steps": steps, "baseline": preprocess(black, pre)}
        return {"steps": steps, "baseline": baseline}
    if method == "smoothgrad":
        return {"samples": samples}
    return {}


def explain_images(model, inputs: Sequence[Union[str, Path]], out: Union[str, Path],
                   methods: Union[str, Sequence[str]] = "gradcam", target_layer: Optional[str] = None,
                   class_index: Optional[int] = None, batch_size: int = 16, target: str = "logit",
                   color: Optional[str] = None, input_scale=None, input_offset=None, mean=None, std=None,
                   steps: int = 64, samples: int = 16, baseline: str = "black",
                   figure: bool = True, progress: bool = True, safe_mode: bool = True) -> ExplainRun:
    """Explain image files and write overlays, figures and a JSON summary to ``out``.

    Args:
        model: a Keras model or the path of a ``.keras``/``.h5`` file (loaded with ``safe_mode``).
        inputs: image files and/or folders.
        out: output folder (created; checked writable before any work).
        methods: a method name, a list of names, or ``"all"`` (every method that applies).
        target_layer, class_index, batch_size, target: as in :func:`toolkit.explain.explain`.
        color, input_scale, input_offset, mean, std: the model's preprocessing (detected when
            omitted, see ``converters.export.detect_preprocessing``).
        steps: integrated-gradients steps. samples: SmoothGrad samples.
        baseline: integrated-gradients baseline: ``black`` (a black image through the
            preprocessing), ``zeros`` or ``blur``.
        figure: write the side-by-side figure per image.
        progress: show a progress bar (tqdm, on stderr).
        safe_mode: Keras safe_mode when loading a model file.

    Returns:
        :class:`ExplainRun`.

    Raises:
        InputError, LayerError, ModelFileError, OutputError: with the cause and the fix.
    """
    from tqdm import tqdm

    from converters.export import detect_preprocessing
    from converters.loading import load_keras_model
    from firmware_host.preprocess import check_image, preprocess

    from . import explain_full

    out_dir = ensure_writable_dir(out)
    if isinstance(model, (str, Path)):
        model = load_keras_model(model, safe_mode=safe_mode)
    names = _method_names(model, methods)
    files = collect_images(inputs)
    pre, how = detect_preprocessing(model, color=color, input_scale=input_scale, input_offset=input_offset,
                                    mean=mean, std=std)
    log.info("Preprocessing %s", how)
    options = {m: _method_options(m, pre, steps, samples, baseline) for m in names}
    stems = _stems(files)
    results: List[ExplainedImage] = []
    skipped: List[Path] = []
    bar = tqdm(total=len(files), unit="img", desc="explain", disable=not progress)
    try:
        for start in range(0, len(files), batch_size):
            chunk = list(zip(files[start : start + batch_size], stems[start : start + batch_size]))
            loaded = [(f, s, read_image(f, rgb=True)) for f, s in chunk]
            skipped += [f for f, _, img in loaded if img is None]
            loaded = [(f, s, img) for f, s, img in loaded if img is not None]
            if loaded:
                x = np.stack([preprocess(check_image(img, str(f)), pre) for f, _, img in loaded])
                maps = {
                    m: explain_full(model, x, m, target_layer, class_index, True, batch_size, target, **options[m])
                    for m in names
                }
                results += [_write_one(out_dir, f, s, img, maps, i, figure) for i, (f, s, img) in enumerate(loaded)]
            bar.update(len(chunk))
    finally:
        bar.close()
    if not results:
        raise InputError(f"None of the {len(files)} image files could be read ({', '.join(map(str, skipped[:3]))}…).")
    for path in skipped:
        log.warning("Skipped '%s': not a readable image.", path)
    summary = atomic_write_text(out_dir / "explain.json", json.dumps({
        "methods": names,
        "preprocessing": how,
        "target": target,
        "target_layer": target_layer,
        "images": [_record(r) for r in results],
        "skipped": [str(p) for p in skipped],
    }, indent=2))
    return ExplainRun(tuple(names), tuple(results), tuple(skipped), how, summary)


def _method_names(model, methods: Union[str, Sequence[str]]) -> List[str]:
    """``methods`` as a list of registry names (``"all"``: every method that applies to ``model``).

    Raises:
        InputError: a name that is not in ``METHODS``.
    """
    from . import METHODS, methods_for

    if methods == "all":
        return methods_for(model)
    names = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise InputError(f"Unknown method(s) {unknown}. Choose from: all, {', '.join(METHODS)}.")
    return names


def _write_one(out_dir: Path, source: Path, stem: str, image: np.ndarray, results: Dict[str, Any],
               i: int, figure: bool) -> ExplainedImage:
    first = next(iter(results.values()))
    cls = int(first.class_index[i])
    prob = float(first.probabilities[i, cls])
    overlays, pictures, info = {}, {}, {}
    for method, res in results.items():
        picture = _cam.overlay(image, res.maps[i])
        path = out_dir / f"{stem}.{_slug(method)}.png"
        atomic_write_bytes(path, _png(picture))
        overlays[method], pictures[method] = path, picture
        for key, values in res.info.items():
            info[f"{method}.{key}"] = float(values[i])
    fig_path = None
    if figure:
        fig_path = out_dir / f"{stem}.methods.png"
        atomic_write_bytes(fig_path, _figure(image, pictures, f"{source.name}: class {cls} (p={prob:.3f})"))
    return ExplainedImage(source, cls, prob, overlays, fig_path, info)


def _record(r: ExplainedImage) -> Dict[str, Any]:
    return {
        "source": str(r.source),
        "class_index": r.class_index,
        "probability": r.probability,
        "overlays": {m: p.name for m, p in r.overlays.items()},
        "figure": r.figure.name if r.figure else None,
        "info": r.info,
    }
