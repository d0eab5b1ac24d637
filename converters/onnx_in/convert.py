"""``convert("model.onnx", "out.onnx")``: an ONNX classifier (e.g. from PyTorch) → explained ONNX.

No TensorFlow: the ``onnx`` package edits the graph, onnxruntime runs the self-check.

1. load and check the model (opset ≥ 13, one image input, external data present);
2. find the explanation tensor and the head (:mod:`.graph`), choose the CAM mode (:mod:`.analysis`);
3. write the head and edgecam's named inputs/outputs into the graph (:mod:`.build`), check it
   with ``onnx.checker`` and strict shape inference, optionally quantize it (:mod:`.quantize`);
4. embed the metadata, write atomically, self-check against a numpy Grad-CAM of the original graph.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from firmware_host._io import atomic_write_bytes, ensure_writable_dir
from firmware_host._version import __version__
from firmware_host.errors import ConversionError, InputError, MissingDependencyError, UnsupportedHeadError
from firmware_host.metadata import EdgecamMetadata, Preprocessing, embed_onnx_metadata
from firmware_host.preprocess import check_image, preprocess

from .analysis import Analysis, analyze
from .build import build_explained, build_plain, name_nodes, rename_reserved
from .check import ReferenceRun, reference, self_check
from .graph import ImageInput, Tables, dynamic_batch, find_head, fix_input_size, image_input, load_onnx

__all__ = ["convert_onnx", "Options", "preprocessing_for", "QUANTIZATIONS", "TORCHVISION_MEAN", "TORCHVISION_STD"]

log = logging.getLogger("edgecam.convert")

QUANTIZATIONS = ("none", "int8")
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
ALL_CLASSES_LIMIT = 32
PREPROCESSING_FLAGS = ("color", "input_scale", "input_offset", "mean", "std")
# convert() options of the Keras path with no meaning here: Keras safe_mode, and the precision
# planner's targets/cost/low-fidelity switch (an ONNX input is quantized int8 QDQ or not at all).
KERAS_ONLY = ("safe_mode", "targets", "allow_low_fidelity", "cost")


def _require_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError(
            f"Converting an ONNX model needs the onnx package ({exc}). Install it: pip install "
            "'edgecam[onnx]'"
        ) from exc
    from firmware_host.backends.onnx import load_onnxruntime

    return onnx, load_onnxruntime()


def preprocessing_for(image: ImageInput, color=None, input_scale=None, input_offset=None, mean=None,
                      std=None):
    """The preprocessing to record, and where it came from.

    ``mean``/``std`` follow torchvision: on the 0–1 scale (``x = (pixel/255 - mean)/std``) when
    every value is ≤ 1, else in pixel units as for Keras models. Default: torchvision's ImageNet
    normalisation, RGB.
    """
    color = color or ("gray" if image.channels == 1 else "rgb")
    if (color == "gray") != (image.channels == 1):
        raise InputError(f"--color {color} does not fit a model input with {image.channels} channel(s).")
    for flag, value in (("--input-scale", input_scale), ("--input-offset", input_offset), ("--mean", mean), ("--std", std)):
        values = None if value is None else np.atleast_1d(np.asarray(value, np.float64))
        if values is not None and (not np.all(np.isfinite(values)) or (flag in ("--input-scale", "--std") and np.any(values == 0))):
            raise InputError(f"{flag} must be finite{' and non-zero' if flag in ('--input-scale', '--std') else ''} numbers. Got: {values.tolist()}.")
    h, w = image.height, image.width
    if input_scale is not None or input_offset is not None:
        scale = tuple(np.atleast_1d(1.0 if input_scale is None else input_scale))
        offset = tuple(np.atleast_1d(0.0 if input_offset is None else input_offset))
        return Preprocessing(h, w, color, scale, offset), "given (scale/offset)"
    note = "given (mean/std"
    if mean is None and std is None:
        mean, std, note = TORCHVISION_MEAN, TORCHVISION_STD, "torchvision ImageNet default (mean/std"
        if color == "gray":
            mean, std = (float(np.mean(mean)),), (float(np.mean(std)),)
    mean = np.atleast_1d(np.asarray(0.0 if mean is None else mean, np.float64))
    std = np.atleast_1d(np.asarray(1.0 if std is None else std, np.float64))
    if np.all(mean <= 1.0) and np.all(std <= 1.0):
        mean, std, note = mean * 255.0, std * 255.0, note + " on the 0-1 scale)"
    else:
        note += " in pixel units)"
    return Preprocessing.from_mean_std(h, w, mean, std, color), note


def _images(calibration, pre: Preprocessing, limit: int):
    from ..export import load_images

    if calibration is None:
        rng = np.random.default_rng(0)
        import cv2

        # Smooth random scenes: blocky noise, bilinearly enlarged.
        images = [cv2.resize(rng.integers(0, 256, (5, 5, pre.channels), np.uint8), (pre.width, pre.height))
                  for _ in range(8)]
        return images, "random smooth sample images"
    if isinstance(calibration, (str, Path)):
        images, skipped = load_images(calibration, limit=limit)
        return images, f"{len(images)} calibration images from '{calibration}'" + (
            f" ({skipped} unreadable or non-image files skipped)" if skipped else "")
    return [check_image(img, f"calibration image {i}") for i, img in enumerate(calibration)], \
        f"{len(calibration)} calibration images"


def _labels(labels, k: int):
    from ..export import read_labels  # the same label rules as the Keras path

    return read_labels(labels, k, False)


def _check_options(output: Path, opts: "Options") -> None:
    suffix = output.suffix.lower()
    wanted = {"onnx": ".onnx", "tflite": ".tflite"}
    if opts.format not in (None, "onnx", "tflite", "both") or (
            opts.format in wanted and suffix != wanted[opts.format]) or (opts.format is None and suffix not in (".onnx", ".tflite")):
        raise InputError(
            f"The output must end with '.onnx' (ONNX) or '.tflite' (LiteRT, through onnx2tf), matching "
            f"format {opts.format!r}, or pass format='both' with a stem. Got: '{output}'"
        )
    allowed = {"quantize": (opts.quantize, QUANTIZATIONS), "cam_output": (opts.cam_output, ("auto", "all", "predicted")),
               "cam_method": (opts.cam_method, ("gradcam", "hirescam"))}
    for option, (value, choices) in allowed.items():
        if value not in choices:
            raise InputError(f"For an ONNX input, {option} must be one of {choices}. Got: {value!r}")
    if opts.quantize == "int8" and opts.calibration is None:
        raise InputError("int8 quantization needs calibration images: pass --calibration DIR.")
    if not output.parent.is_dir():
        raise InputError(f"Output folder '{output.parent}' does not exist. Create it first.")
    ensure_writable_dir(output.parent)


def _plan(analysis: Analysis, k: int, cam_output: str, cam_method: str):
    """``(cam_output, method, weights)`` for the chosen mode."""
    if analysis.mode == "gradient":
        return "selected", cam_method, None
    resolved = cam_output if cam_output != "auto" else ("all" if k <= ALL_CLASSES_LIMIT else "predicted")
    if analysis.mode == "flatten" and cam_method == "hirescam":
        return resolved, "hirescam", analysis.jacobian
    return resolved, "gradcam", analysis.alpha


def _checked(model) -> bytes:
    import onnx

    model.producer_name = "edgecam"
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # ValidationError / InferenceError
        raise ConversionError(f"The explained ONNX graph is invalid: {str(exc).strip().splitlines()[0]}") from exc
    return model.SerializeToString()


@dataclass(frozen=True)
class Options:
    """The options of ``converters.convert`` that apply to an ONNX input (see :func:`convert_onnx`)."""

    quantize: str = "none"
    calibration: Any = None
    labels: Any = None
    target: Optional[str] = None
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    input_size: Any = None
    cam_output: str = "auto"
    cam_method: str = "gradcam"
    approximate: bool = False
    self_check: bool = True
    emit_baseline: bool = False
    max_calibration: int = 200
    format: Optional[str] = None

    @classmethod
    def from_kwargs(cls, target_layer=None, target_tensor=None, **kwargs) -> "Options":
        """From ``convert``'s keyword arguments; the Keras-only ones (:data:`KERAS_ONLY`) are ignored."""
        for name in KERAS_ONLY:
            kwargs.pop(name, None)
        pre = {k: kwargs.pop(k) for k in PREPROCESSING_FLAGS if k in kwargs}
        unknown = sorted(set(kwargs) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"Unknown convert option(s) for an ONNX input: {', '.join(unknown)}.")
        return cls(target=target_tensor or target_layer, preprocessing=pre, **kwargs)


def convert_onnx(model: Union[str, Path], output: Union[str, Path], **options):
    """Add edgecam's explanation head to an ONNX image classifier (e.g. from ``torch.onnx.export``).

    Args:
        model: the ``.onnx`` file (opset ≥ 13, one NCHW or NHWC image input).
        output: the ``.onnx`` or ``.tflite`` to write (atomically; the stem with ``format="both"``).
        **options: those of ``converters.convert``: ``quantize`` (``none`` or ``int8``: QDQ with
            the head in float32, needs ``calibration``), ``calibration`` (a folder or a list of
            RGB uint8 images: int8 and the self-check), ``labels``, ``target_tensor`` (or
            ``target_layer``: the explanation tensor; default the input of the head's spatial
            collapse; a wrong name lists the candidates), ``color``/``input_scale``/
            ``input_offset``/``mean``/``std`` (default torchvision's ImageNet mean/std, RGB; see
            :func:`preprocessing_for`), ``input_size``, ``cam_output``, ``cam_method``,
            ``self_check``, ``emit_baseline``, ``max_calibration``, ``format`` (``onnx``, ``tflite``
            through onnx2tf, or ``both``; see :mod:`.tflite`).
            ``approximate``: for a head that cannot be made exact, class weights averaged from
            finite-difference gradients over the images (:mod:`.approximate`).

    Returns:
        ``converters.export.ConversionResult``.

    Raises:
        ModelFileError, ConversionError, LayerError, UnsupportedHeadError, InputError,
        MissingDependencyError.
    """
    onnx, ort = _require_onnx()
    opts = Options.from_kwargs(**options)
    output = Path(output)
    _check_options(output, opts)
    original, image, tables, source = _load(model, opts.input_size)
    head, analysis, grads = _analyse(original, tables, opts)
    pre, pre_note = preprocessing_for(image, **opts.preprocessing)
    images, image_source = _images(opts.calibration, pre, opts.max_calibration)
    x = np.stack([preprocess(img, pre) for img in images]).astype(np.float32)
    run = ReferenceRun(original, head, image)
    if grads is not None:
        reason = f"approximate: {analysis} Weights averaged from finite-difference gradients over {image_source}."
        analysis = Analysis("approximate", reason, grads.averaged(run.run(x)[head.target]))
    resolved, method, weights = _plan(analysis, head.num_logits, opts.cam_output, opts.cam_method)

    cam_key = "cams" if resolved == "all" else "cam"
    metadata = EdgecamMetadata(
        classes=_labels(opts.labels, head.num_logits),
        preprocessing=pre,
        target_layer=head.target,
        feature_map_shape=head.feature_shape,
        cam_mode=analysis.mode,
        cam_method=method,
        cam_output=resolved,
        activation=head.activation,
        outputs={r: r for r in ("probabilities", "logits", "feature_maps", cam_key)},
        quantization=opts.quantize,
        class_weights=weights,
        source=source,
        converter={
            "edgecam": __version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
            "opset": str(tables.opset), "source_layout": image.layout, "preprocessing": pre_note,
            "reason": analysis.reason,
        },
    )
    expected = _reference(run, head, tables, x, method, grads) if opts.self_check else None
    results = []
    targets = _targets(output, opts.format)
    for fmt, path in targets:
        if fmt == "tflite":
            try:
                content, plain, meta = _litert_models(original, head, image, analysis, weights, resolved, opts, x,
                                                      metadata)
            except ConversionError as exc:
                log.warning("No LiteRT output for %s: %s. Writing ONNX instead (run it with onnxruntime).",
                            path.name, exc)
                if any(f == "onnx" for f, _ in targets):
                    continue
                fmt, path = "onnx", path.with_suffix(".onnx")
        if fmt == "onnx":
            content, plain, meta = _onnx_models(original, tables, image, head, analysis, weights, resolved,
                                                method, opts, x, metadata)
        results.append(_write(fmt, path, content, plain, meta, expected, head, image, images, image_source))
    return replace(results[0], others=tuple(results[1:]))


def _load(model: Union[str, Path], input_size):
    """``(graph, image input, tables, source record)``: the ONNX model ready for the head.

    Reserved names are renamed, every node is named, the image input gets a fixed size and a
    dynamic batch.
    """
    from ..loading import file_sha256

    original = load_onnx(model)
    source = {"name": Path(model).name, "sha256": file_sha256(model)}
    rename_reserved(original)
    name_nodes(original)
    image = image_input(original, input_size)
    fix_input_size(original, image)
    image = dynamic_batch(original, image)
    return original, image, Tables(original), source


def _onnx_models(original, tables: Tables, image: ImageInput, head, analysis: Analysis, weights, resolved: str,
                 method: str, opts: Options, x: np.ndarray, metadata: EdgecamMetadata):
    """``(explained bytes, plain bytes or None, metadata)`` for the ONNX container.

    Each is built on its own copy of ``original``, checked, and quantized as ``opts`` asks.
    """
    explained = type(original)()
    explained.CopyFrom(original)
    inputs = build_explained(explained, tables, image, head, analysis.mode, weights, resolved, method)
    head_nodes = head.node_names
    content = _quantized(_checked(explained), opts.quantize, x, inputs, head_nodes)
    plain = None
    if opts.emit_baseline:
        bare = type(original)()
        bare.CopyFrom(original)
        build_plain(bare, tables, image, head)
        plain = _quantized(_checked(bare), opts.quantize, x, {"image": "image"}, head_nodes)
    return content, plain, replace(metadata, inputs=inputs, converter={**metadata.converter, "format": "onnx"})


def _litert_models(original, head, image: ImageInput, analysis: Analysis, weights, resolved: str, opts: Options,
                   x: np.ndarray, metadata: EdgecamMetadata):
    """``(explained bytes, plain bytes or None, metadata)`` for the LiteRT container, through onnx2tf.

    Raises:
        ConversionError: onnx2tf cannot convert this graph (the caller falls back to ONNX).
    """
    from .tflite import tflite_models, tool_versions

    content, plain = tflite_models(original, head, image, analysis.mode, weights, resolved,
                                   opts.quantize, x, opts.emit_baseline)
    meta = replace(metadata, inputs={"image": "image"},
                   converter={**metadata.converter, "format": "tflite", **tool_versions()})
    return content, plain, meta


def _targets(output: Path, format: Optional[str]):
    """``[(format, path)]`` to write: from the suffix, or ``both`` as ``<stem>.onnx`` and ``<stem>.tflite``."""
    suffixes = {".onnx": "onnx", ".tflite": "tflite"}
    if format == "both":
        stem = output.with_suffix("") if output.suffix.lower() in suffixes else output
        return [("onnx", stem.with_name(stem.name + ".onnx")), ("tflite", stem.with_name(stem.name + ".tflite"))]
    return [(format or suffixes[output.suffix.lower()], output)]


def _write(fmt: str, path: Path, content: bytes, plain: Optional[bytes], metadata: EdgecamMetadata, expected,
           head, image, images, image_source):
    """Embed the metadata, write, self-check (stored in the metadata), write the baseline."""
    from firmware_host.metadata import embed_tflite_metadata

    from ..export import ConversionResult

    embed = embed_onnx_metadata if fmt == "onnx" else embed_tflite_metadata
    atomic_write_bytes(path, embed(content, metadata))
    log.info("Exported %s head (%s) at %s to %s", metadata.cam_mode, metadata.cam_output, head.target, path)
    check = None
    if expected is not None:
        check = _run_self_check(path, expected, head, image, images, metadata.quantization, image_source)
        metadata = replace(metadata, self_check=check.as_dict())
        atomic_write_bytes(path, embed(content, metadata))
    baseline = None
    if plain is not None:
        baseline = path.with_name(path.stem + ".plain" + path.suffix)
        atomic_write_bytes(baseline, plain)
    return ConversionResult(path=path, metadata=metadata, reason=metadata.converter["reason"], self_check=check,
                            baseline_path=baseline, size_bytes=os.path.getsize(path), format=fmt)


def _quantized(content: bytes, quantize: str, x: np.ndarray, inputs, head_nodes) -> bytes:
    if quantize != "int8":
        return content
    from .quantize import quantize_int8

    return quantize_int8(content, x, inputs, head_nodes)


def _analyse(model, tables: Tables, opts: Options):
    """``(head, analysis, None)``, or with ``--approximate`` for a head that cannot be made exact,
    ``(head without chain, the refusal's text, HeadGradients)``."""
    try:
        head = find_head(model, tables, opts.target)
        analysis = analyze(head, tables)
    except UnsupportedHeadError as exc:
        if not opts.approximate:
            raise
        from .approximate import HeadGradients, approximate_head

        head = approximate_head(model, tables, opts.target)
        log.warning("Approximate CAM weights for %s: %s", head.target, exc)
        return head, str(exc), HeadGradients(model, head)
    if opts.approximate:
        log.warning("--approximate is not needed: the head (%s) is exact, and exported so.", analysis.mode)
    return head, analysis, None


def _reference(run, head, tables, x, method, grads):
    """The self-check's reference: numpy Grad-CAM of the original graph (finite differences if approximate)."""
    if grads is None:
        return reference(run, head, tables, x, method)
    values = run.run(x)
    logits = np.asarray(values[head.logits], np.float64)
    classes = np.argmax(logits, axis=-1)
    return grads.reference(values[head.target], classes), classes, logits


def _run_self_check(output, expected, head, image, images, quantize, source):
    check = self_check(output, expected, head.activation, images, image.batch, quantize, source)
    if not check.passed:
        log.warning(
            "Self-check below threshold for %s (%s): top-1 agreement %.3f (≥ %.2f), median Pearson "
            "%.4f (≥ %.3f). Validate with `edgecam validate` on real images.",
            output.name, quantize, check.top1_agreement, check.threshold_top1, check.pearson_median,
            check.threshold_pearson,
        )
    return check
