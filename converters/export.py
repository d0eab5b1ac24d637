"""Build the explainable multi-output model, convert it to LiteRT and/or ONNX, check it, write it.

``convert(model, "out.tflite")`` (or ``"out.onnx"``, or ``format="both"``) is the Python API
behind ``edgecam convert``. It runs as named stages:

1. :func:`plan_export` → :class:`ExportPlan`: load the Keras model (``safe_mode`` on), find the
   explanation layer, split off the softmax, read the preprocessing and classes, analyse the
   head and choose the CAM mode (:func:`choose_cam_mode`), load the images;
2. :func:`build_endpoint` → :class:`Endpoint`: ``serving_default(image[, class_index]) →
   {probabilities, logits, feature_maps, cam | cams}``;
3. per container (:data:`CONTAINERS`): convert the endpoint with each precision plan asked for
   (:mod:`converters.quant`; ``quantize="auto"`` tries them all), embed the metadata and check the
   bytes in memory against the float model's own Grad-CAM on held-out images — the *gate*: a
   model that misses its bounds is refused, naming the plan that would pass;
4. :func:`write`: every file is written once, atomically, only after every check passed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host import imageio
from firmware_host._io import atomic_write_bytes, ensure_writable_dir
from firmware_host._version import __version__
from firmware_host.errors import ConversionError, FidelityError, InputError, UnsupportedHeadError
from firmware_host.metadata import EdgecamMetadata, Preprocessing, embed_onnx_metadata, embed_tflite_metadata
from firmware_host.preprocess import check_image, preprocess

from .head import HeadAnalysis, analyze_head
from .litert_export import FLOAT_SCOPE, litert_bytes, saved_model
from .quant import (AUTO_TARGETS, GATES, default_targets, LITERT_PLANS, Fidelity, PlanFigures, Reference, Targets, choose,
                    format_table, interleaved_latency, measure_fidelity, split_held_out)
from .heads import gradient_cam, linear_cams
from .layers import ModelSplit, head_chain, split_model
from .loading import file_sha256, load_keras_model, require_host, with_input_size
from .reference import feature_gradients

__all__ = [
    "convert",
    "ConversionResult",
    "SelfCheck",
    "Endpoint",
    "Container",
    "CONTAINERS",
    "FORMATS",
    "QUANTIZATIONS",
    "THRESHOLDS",
    "ConvertOptions",
    "ExportPlan",
    "plan_export",
    "build_endpoint",
    "choose_cam_mode",
    "check_container",
    "write",
    "load_images",
    "read_labels",
]

log = logging.getLogger("edgecam.convert")

QUANTIZATIONS = LITERT_PLANS + ("auto",)
# Self-check bounds per plan (docs/convert.md, "The gate"): below them nothing is written.
THRESHOLDS = {name: {"pearson": t.pearson_median, "p05": t.pearson_p05, "top1": t.top1} for name, t in GATES.items()}
ALL_CLASSES_LIMIT = 32
IMAGE_SUFFIXES = imageio.IMAGE_SUFFIXES  # one list, firmware_host/imageio.py


@dataclass(frozen=True)
class SelfCheck:
    """Agreement of the exported model with the float model's own Grad-CAM (GradientTape).

    Pearson is computed per image between the edge map and the reference map (both ReLU'd, at
    feature-map resolution) for the class the Keras model predicts, on images held out from
    calibration when there are enough of them (``source`` says which).
    """

    images: int
    source: str
    top1_agreement: float
    pearson_median: float
    pearson_min: float
    prob_max_abs_diff: float
    threshold_pearson: float
    threshold_top1: float
    pearson_p05: float = 1.0
    threshold_p05: float = 0.0
    p05_by_class: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, fid: Fidelity, targets: Targets, source: str) -> "SelfCheck":
        return cls(fid.images, source, fid.top1, fid.pearson_median, fid.pearson_min, fid.prob_max_abs_diff,
                   targets.pearson_median, targets.top1, fid.pearson_p05, targets.pearson_p05,
                   dict(fid.p05_by_class))

    @property
    def passed(self) -> bool:
        return (self.pearson_median >= self.threshold_pearson and self.top1_agreement >= self.threshold_top1
                and self.pearson_p05 >= self.threshold_p05)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "images": self.images,
            "source": self.source,
            "top1_agreement": round(self.top1_agreement, 6),
            "pearson_median": round(self.pearson_median, 6),
            "pearson_p05": round(self.pearson_p05, 6),
            "pearson_min": round(self.pearson_min, 6),
            "p05_by_class": {k: round(v, 6) for k, v in self.p05_by_class.items()},
            "prob_max_abs_diff": round(self.prob_max_abs_diff, 6),
            "threshold_pearson": self.threshold_pearson,
            "threshold_p05": self.threshold_p05,
            "threshold_top1": self.threshold_top1,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class ConversionResult:
    """What ``convert`` produced.

    ``others`` holds the results of the other containers written by the same call
    (``format="both"``: the ONNX result beside the LiteRT one).
    """

    path: Path
    metadata: EdgecamMetadata
    reason: str
    self_check: Optional[SelfCheck]
    baseline_path: Optional[Path]
    size_bytes: int
    format: str = "tflite"
    others: Tuple["ConversionResult", ...] = ()
    plans: Tuple[PlanFigures, ...] = ()

    @property
    def all(self) -> Tuple["ConversionResult", ...]:
        """This result and ``others``."""
        return (self, *self.others)


@dataclass(frozen=True)
class Endpoint:
    """The serving function every container exports.

    Attributes:
        fn: ``fn(image[, class_index]) → {output name: tensor}``.
        signature: the ``tf.TensorSpec`` of each argument (named ``image``, ``class_index``).
        track: Keras objects whose variables ``fn`` uses.
        inputs: role → input name.
        outputs: output names, in the order documented for the role.
    """

    fn: Callable
    signature: Sequence[Any]
    track: Sequence[Any]
    inputs: Mapping[str, str]
    outputs: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Container:
    """One model file format: how an :class:`Endpoint` becomes bytes and carries the metadata.

    Attributes:
        name: ``tflite`` or ``onnx``.
        suffix: the file suffix.
        plans: the precision plans it supports, cheapest (nominally) first.
        export: ``export(endpoint, plans, representative, float_head, island_layers)`` yields
            ``(plan, bytes or ConversionError)`` for each plan.
        embed: ``embed(content, metadata) → bytes``.
        versions: tool versions to record in ``metadata.converter``.
        require: imports its tools up front (raises ``MissingDependencyError``).
    """

    name: str
    suffix: str
    plans: Tuple[str, ...]
    export: Callable[..., Iterator[Tuple[str, Union[bytes, ConversionError]]]]
    embed: Callable[[bytes, EdgecamMetadata], bytes]
    versions: Callable[[], Dict[str, str]] = field(default=lambda: {})
    require: Callable[[], Any] = field(default=lambda: None)

    @property
    def quantizations(self) -> Tuple[str, ...]:
        """The ``quantize`` values it accepts: its plans, and ``auto``."""
        return self.plans + ("auto",)


# -- inputs ----------------------------------------------------------------------------------
def load_images(directory: Union[str, Path], limit: Optional[int] = None) -> Tuple[List[np.ndarray], int]:
    """RGB uint8 images from a folder (recursively, sorted); unreadable files skipped and counted.

    Raises:
        InputError: the folder is missing or holds no readable image.
    """
    from firmware_host.imageio import read_image, scan_images

    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"Image folder '{root}' does not exist or is not a directory.")
    listing = scan_images(root, recursive=True)
    files = listing.images
    every = files + listing.others + listing.special
    images, skipped = [], len(every) - len(files)  # files that are not images count as skipped
    for file in files:
        if limit is not None and len(images) >= limit:
            break
        image = read_image(file, rgb=True)
        if image is None:
            skipped += 1
            continue
        images.append(image)
    if not images:
        raise InputError(
            f"Image folder '{root}' has no readable image ({len(every)} files, {len(files)} with an "
            f"image suffix, {skipped} skipped). Put images ({', '.join(IMAGE_SUFFIXES)}) in it."
        )
    return images, skipped


def _sample_images(pre: Preprocessing, n: int = 8, seed: int = 0) -> List[np.ndarray]:
    """Smooth random images (low-res noise upscaled) standing in for calibration data."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
        out.append(cv2.resize(small, (pre.width, pre.height), interpolation=cv2.INTER_CUBIC))
    return out


def _first_layers(model):
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if hasattr(layer, "layers") and getattr(layer, "layers", None):
            yield from _first_layers(layer)
        else:
            yield layer
        return


def detect_preprocessing(model, color=None, input_scale=None, input_offset=None, mean=None, std=None,
                         input_size=None) -> Tuple[Preprocessing, str]:
    """The preprocessing to record, and a sentence on where it came from."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise ConversionError(
            f"Model input has shape {shape}; edgecam converts image classifiers with an "
            "(N, H, W, C) input."
        )
    _, h, w, c = shape
    for flag, value in (("--input-scale", input_scale), ("--input-offset", input_offset), ("--mean", mean),
                        ("--std", std)):
        values = None if value is None else np.atleast_1d(np.asarray(value, dtype=np.float64))
        if values is not None and (not np.all(np.isfinite(values)) or (flag in ("--input-scale", "--std") and np.any(values == 0))):
            raise InputError(
                f"{flag} must be finite{' and non-zero' if flag in ('--input-scale', '--std') else ''} "
                f"numbers. Got: {values.tolist()}. Give the model's real preprocessing, e.g. "
                "--input-scale 0.0078431 --input-offset -1 for inputs in [-1, 1]."
            )
    if input_size is not None:
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if h is None or w is None:
        raise ConversionError(
            f"Model input has no fixed size {shape}. Pass --input-size H W (input_size=(H, W))."
        )
    if c not in (1, 3):
        raise ConversionError(f"Model input has {c} channels; edgecam handles 1 (gray) or 3.")
    if color is None:
        color = "gray" if c == 1 else "rgb"
    if (color == "gray") != (c == 1):
        raise ConversionError(f"--color {color} does not fit a model input with {c} channel(s).")
    if input_scale is not None or input_offset is not None:
        scale = np.atleast_1d(1.0 if input_scale is None else input_scale)
        offset = np.atleast_1d(0.0 if input_offset is None else input_offset)
        return Preprocessing(int(h), int(w), color, tuple(scale), tuple(offset)), "given (scale/offset)"
    if mean is not None or std is not None:
        pre = Preprocessing.from_mean_std(int(h), int(w), 0.0 if mean is None else mean,
                                          1.0 if std is None else std, color)
        return pre, "given (mean/std)"
    first = next(_first_layers(model), None)
    if first is not None and type(first).__name__ in ("Rescaling", "Normalization"):
        return (
            Preprocessing(int(h), int(w), color, (1.0,), (0.0,)),
            f"detected: the model starts with {type(first).__name__} layer {first.name!r}, so "
            "raw 0-255 pixels are fed",
        )
    log.warning(
        "No preprocessing given and none detected (no leading Rescaling/Normalization layer): "
        "assuming pixels/255. Pass --input-scale/--input-offset (or --mean/--std) if the model "
        "expects something else."
    )
    return Preprocessing(int(h), int(w), color, (1.0 / 255.0,), (0.0,)), "assumed pixels/255"


def read_labels(labels, num_classes: int, binary: bool) -> Tuple[str, ...]:
    """The class names of a model with ``num_classes`` outputs, one per class index.

    Args:
        labels: ``None`` (``class_0`` … or, for one sigmoid output, ``negative``/``positive``),
            a text file with one name per line, or a sequence of names.
        num_classes: how many names the model needs.
        binary: the model has a single sigmoid output (two classes).

    Raises:
        InputError: the file cannot be read, or the number of names is wrong.
    """
    if labels is None:
        if binary:
            return ("negative", "positive")
        return tuple(f"class_{i}" for i in range(num_classes))
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise InputError(f"Cannot read labels file '{path}': {exc.strerror}.") from exc
        where = f"labels file '{path}'"
    else:
        names, where = [str(v) for v in labels], "labels"
    if len(names) != num_classes:
        raise InputError(
            f"{where} has {len(names)} names but the model has {num_classes} classes"
            + (" (a single sigmoid output is two classes: negative, positive)" if binary else "")
            + ". Give one name per line, in class-index order."
        )
    return tuple(names)


_read_labels = read_labels  # the old private name, for code written before it was public


# -- the exported graph ----------------------------------------------------------------------
def _activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Probabilities from logits, as the exported graph computes them."""
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _approximate_weights(split: ModelSplit, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Channel weights averaged over images: ``α_kc = mean_images mean_ij ∂z_c/∂A_ijk``."""
    k = split.num_logits
    total = np.zeros((split.target.shape[2], k), np.float64)
    for c in range(k):
        for start in range(0, len(x), batch_size):
            _, _, grads, _ = feature_gradients(split.grad_model, x[start : start + batch_size], c)
            total[:, c] += grads.mean(axis=(1, 2)).sum(axis=0)
    return (total / len(x)).astype(np.float32)


def _serve_fn(split: ModelSplit, analysis: Optional[HeadAnalysis], weights, cam_output: str, method: str):
    import tensorflow as tf

    grad_model = split.grad_model
    act = split.activation

    def outputs(image, class_index=None):
        A, logits = grad_model(image, training=False)
        probs = tf.sigmoid(logits) if act == "sigmoid" else tf.nn.softmax(logits)
        out = {"probabilities": probs, "logits": logits, "feature_maps": A}
        if cam_output == "selected":
            with tf.name_scope(FLOAT_SCOPE):
                head = gradient_cam(A, analysis.steps, class_index, split.num_logits, method)
            out["cam"] = head["cam"]
            if "alpha" in head and os.environ.get("EDGECAM_DEBUG_ALPHA"):
                out["alpha"] = head["alpha"]
        else:
            with tf.name_scope(FLOAT_SCOPE):  # float32 in the int8-mixed plan
                out.update(linear_cams(A, logits, weights, cam_output))
        return out

    return outputs


def _export_tflite(endpoint: Endpoint, plans: Sequence[str], representative, float_head: bool = False,
                   island_layers: Sequence[str] = ()) -> Iterator[Tuple[str, Union[bytes, ConversionError]]]:
    with saved_model(endpoint) as saved_dir:  # written once, converted once per plan
        for plan in plans:
            try:
                yield plan, litert_bytes(saved_dir, plan, representative, float_head, island_layers)
            except ConversionError as exc:
                yield plan, exc


def _export_onnx(endpoint: Endpoint, plans: Sequence[str], representative, float_head: bool = False,
                 island_layers: Sequence[str] = ()) -> Iterator[Tuple[str, Union[bytes, ConversionError]]]:
    from .onnx_export import export_onnx

    for plan in plans:
        try:
            # Every CAM head (linear ones too) stays float in QDQ: ONNX outputs are float, so the
            # runtime cannot recombine dequantized feature maps with the float class weights itself.
            yield plan, export_onnx(endpoint, plan, representative, True, float_scope=FLOAT_SCOPE)
        except ConversionError as exc:
            yield plan, exc


def _onnx_versions() -> Dict[str, str]:
    from .onnx_export import tool_versions

    return tool_versions()


def _onnx_require():
    from .onnx_export import require_onnx_tools

    return require_onnx_tools()


CONTAINERS: Dict[str, Container] = {
    "tflite": Container("tflite", ".tflite", LITERT_PLANS, _export_tflite, embed_tflite_metadata),
    "onnx": Container("onnx", ".onnx", ("int8", "float16", "none"), _export_onnx, embed_onnx_metadata,
                      versions=_onnx_versions, require=_onnx_require),
}
FORMATS = ("tflite", "onnx", "both")


def _outputs_for(output: Path, format: Optional[str]) -> List[Tuple[Container, Path]]:
    """The (container, path) pairs to write, from ``output`` and ``format``.

    ``format=None`` follows the suffix; ``both`` writes ``<stem>.tflite`` and ``<stem>.onnx``,
    the stem being ``output`` without a ``.tflite``/``.onnx`` suffix.
    """
    by_suffix = {c.suffix: c for c in CONTAINERS.values()}
    suffix = output.suffix.lower()
    if format is None:
        if suffix not in by_suffix:
            raise InputError(
                f"The output must end with '.tflite' (LiteRT) or '.onnx' (ONNX), or pass "
                f"format='both' with a stem. Got: '{output}'"
            )
        return [(by_suffix[suffix], output)]
    if format not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}. Got: {format!r}")
    if format == "both":
        stem = output.with_suffix("") if suffix in by_suffix else output
        return [(c, stem.with_name(stem.name + c.suffix)) for c in CONTAINERS.values()]
    container = CONTAINERS[format]
    if suffix != container.suffix:
        raise InputError(
            f"format {format!r} writes a {container.suffix} file: the output must end with "
            f"'{container.suffix}'. Got: '{output}'"
        )
    return [(container, output)]


# -- stage 1: the plan -----------------------------------------------------------------------
@dataclass(frozen=True)
class ConvertOptions:
    """Every option of :func:`convert` (documented there), validated once in :meth:`check`."""

    quantize: str = "none"
    calibration: Union[str, Path, Sequence[np.ndarray], None] = None
    labels: Any = None
    target_layer: Optional[str] = None
    color: Optional[str] = None
    input_scale: Any = None
    input_offset: Any = None
    mean: Any = None
    std: Any = None
    input_size: Any = None
    cam_output: str = "auto"
    cam_method: str = "gradcam"
    approximate: bool = False
    safe_mode: bool = True
    self_check: bool = True
    emit_baseline: bool = False
    max_calibration: int = 200
    format: Optional[str] = None
    targets: Optional[Targets] = None
    allow_low_fidelity: bool = False
    cost: str = "measured"

    def check(self, containers: Sequence[Container]) -> None:
        """Refuse bad combinations before any slow work (raises ``InputError``)."""
        if self.quantize not in QUANTIZATIONS:
            raise InputError(f"quantize must be one of {QUANTIZATIONS}. Got: {self.quantize!r}")
        for container in containers:
            if self.quantize not in container.quantizations:
                raise InputError(
                    f"{container.name} export supports quantize {container.quantizations}. Got: "
                    f"{self.quantize!r}. (ONNX has no 'dynamic' or '16x8' mode TensorRT can run; use "
                    "int8 with calibration images.)"
                )
        if self.cam_output not in ("auto", "all", "predicted"):
            raise InputError(f"cam_output must be auto, all or predicted. Got: {self.cam_output!r}")
        if self.cam_method not in ("gradcam", "hirescam"):
            raise InputError(f"cam_method must be gradcam or hirescam. Got: {self.cam_method!r}")
        if self.cost not in ("measured", "nominal"):
            raise InputError(f"cost must be measured or nominal. Got: {self.cost!r}")
        if self.quantize in ("int8", "int8-mixed", "16x8", "auto") and self.calibration is None:
            raise InputError(
                f"{self.quantize} quantization needs calibration images: pass --calibration DIR (a folder "
                "of representative images; ~200 is plenty, a quarter is held out to check fidelity)."
            )
        if self.quantize == "auto" and not self.self_check:
            raise InputError("--quantize auto chooses by measured fidelity: it cannot run with --no-self-check.")


@dataclass(frozen=True)
class ExportPlan:
    """Everything the later stages need, decided once (stage 1 of :func:`convert`).

    Attributes:
        options: the validated options.
        model: the loaded Keras model (input size fixed).
        split: explanation layer, logits model, activation (:func:`~converters.layers.split_model`).
        analysis: the head analysis, or ``None`` in approximate mode.
        mode, reason: the CAM mode and why it was chosen.
        cam_output: resolved: ``all``, ``predicted`` or ``selected``.
        method: ``gradcam`` or ``hirescam``.
        weights: class weights baked into the head (linear/flatten/approximate), else ``None``.
        preprocessing, preprocessing_note, classes, source: recorded in the metadata.
        images, x: RGB uint8 images and their preprocessed batch.
        image_source: where the images came from (printed with the self-check).
        calibrate, held_out: indices into ``images`` (:func:`~converters.quant.split_held_out`).
        outputs: ``(container, path)`` pairs to write.
    """

    options: ConvertOptions
    model: Any
    split: ModelSplit
    analysis: Optional[HeadAnalysis]
    mode: str
    reason: str
    cam_output: str
    method: str
    weights: Optional[np.ndarray]
    preprocessing: Preprocessing
    preprocessing_note: str
    classes: Tuple[str, ...]
    source: Mapping[str, Any]
    images: List[np.ndarray]
    x: np.ndarray
    image_source: str
    calibrate: np.ndarray
    held_out: np.ndarray
    outputs: Tuple[Tuple[Container, Path], ...]

    @property
    def check_source(self) -> str:
        same = len(self.held_out) == len(self.images)
        return (f"{len(self.held_out)} of {self.image_source}" + (" (too few to hold any out)" if same else
                " held out from calibration"))


def choose_cam_mode(analysis: Optional[HeadAnalysis], num_logits: int, cam_output: str,
                    cam_method: str) -> Tuple[str, str, str]:
    """``(mode, resolved cam_output, method)`` for a head analysis (``None``: approximate).

    A gradient head emits the map of the class selected at run time; linear, flatten and
    approximate heads emit every class's map up to :data:`ALL_CLASSES_LIMIT` classes
    (``auto``), else the predicted class's. HiResCAM applies to flatten and gradient heads only.
    """
    mode = "approximate" if analysis is None else analysis.mode
    if mode == "gradient":
        resolved = "selected"
    elif cam_output != "auto":
        resolved = cam_output
    else:
        resolved = "all" if num_logits <= ALL_CLASSES_LIMIT else "predicted"
    method = cam_method if mode in ("flatten", "gradient") else "gradcam"
    return mode, resolved, method


def _analyse_head(model, split: ModelSplit, approximate: bool) -> Tuple[Optional[HeadAnalysis], str]:
    try:
        analysis = analyze_head(head_chain(model, split.target), split.target.shape, split.num_logits,
                                split.activation, split.binary)
        return analysis, analysis.reason
    except UnsupportedHeadError as exc:
        if not approximate:
            raise UnsupportedHeadError(
                f"{exc} edgecam refuses rather than export an inexact CAM. Pass --approximate to "
                "use class weights averaged from gradients over the calibration images "
                "(marked approximate), or choose another --target-layer."
            ) from exc
        return None, f"approximate: {exc}"


def _load_plan_images(options: ConvertOptions, pre: Preprocessing) -> Tuple[List[np.ndarray], str]:
    calibration = options.calibration
    if calibration is None:
        return _sample_images(pre), "random smooth sample images"
    if isinstance(calibration, (str, Path)):
        images, skipped = load_images(calibration, limit=options.max_calibration)
        return images, f"{len(images)} calibration images from '{calibration}'" + (
            f" ({skipped} unreadable or non-image files skipped)" if skipped else "")
    images = [check_image(img, f"calibration image {i}") for i, img in enumerate(calibration)]
    return images, f"{len(images)} calibration images"


def _load_model(model, safe_mode: bool):
    if isinstance(model, (str, Path)):
        return load_keras_model(model, safe_mode=safe_mode), {"name": Path(model).name, "sha256": file_sha256(model)}
    return model, {"name": getattr(model, "name", "model"), "sha256": None}


def plan_export(model, output: Union[str, Path], options: ConvertOptions) -> ExportPlan:
    """Stage 1: load, split, analyse and decide everything, before any slow conversion."""
    output = Path(output)
    outputs = tuple(_outputs_for(output, options.format))
    options.check([c for c, _ in outputs])
    for container, _ in outputs:
        container.require()
    if not output.parent.exists():
        raise InputError(f"Output folder '{output.parent}' does not exist. Create it first.")
    ensure_writable_dir(output.parent)  # before the (slow) conversion, not after

    model, source = _load_model(model, options.safe_mode)
    model = with_input_size(model, options.input_size)
    split = split_model(model, options.target_layer)
    pre, pre_note = detect_preprocessing(model, options.color, options.input_scale, options.input_offset,
                                         options.mean, options.std, options.input_size)
    classes = read_labels(options.labels, split.num_logits, split.binary)
    images, image_source = _load_plan_images(options, pre)
    x = np.stack([preprocess(img, pre) for img in images]).astype(np.float32)
    calibrate, held_out = split_held_out(len(images))

    analysis, reason = _analyse_head(model, split, options.approximate)
    mode, resolved, method = choose_cam_mode(analysis, split.num_logits, options.cam_output, options.cam_method)
    weights = None
    if mode == "approximate":
        reason = f"{reason} Weights averaged from gradients over {image_source}."
        if options.calibration is None:
            log.warning("Approximate weights from random sample images; pass --calibration for real ones.")
        weights = _approximate_weights(split, x[calibrate])
    elif mode != "gradient":
        weights = analysis.jacobian if (mode == "flatten" and method == "hirescam") else analysis.alpha
    return ExportPlan(options, model, split, analysis, mode, reason, resolved, method, weights, pre, pre_note,
                      classes, source, images, x, image_source, calibrate, held_out, outputs)


# -- stage 2: the graph ----------------------------------------------------------------------
def build_endpoint(plan: ExportPlan) -> Endpoint:
    """Stage 2: the serving function every container exports."""
    import tensorflow as tf

    pre = plan.preprocessing
    image_spec = tf.TensorSpec([None, pre.height, pre.width, pre.channels], tf.float32, name="image")
    serve = _serve_fn(plan.split, plan.analysis, plan.weights, plan.cam_output, plan.method)
    cam_key = "cams" if plan.cam_output == "all" else "cam"
    outputs = ("probabilities", "logits", "feature_maps", cam_key)
    if plan.cam_output == "selected":
        return Endpoint(
            lambda image, class_index: serve(image, class_index),
            [image_spec, tf.TensorSpec([None], tf.int32, name="class_index")],
            [plan.split.grad_model], {"image": "image", "class_index": "class_index"}, outputs,
        )
    return Endpoint(lambda image: serve(image), [image_spec], [plan.split.grad_model], {"image": "image"}, outputs)


def _plain_endpoint(plan: ExportPlan) -> Endpoint:
    import tensorflow as tf

    pre = plan.preprocessing
    spec = tf.TensorSpec([None, pre.height, pre.width, pre.channels], tf.float32, name="image")
    model = plan.model
    return Endpoint(lambda image: {"probabilities": model(image, training=False)}, [spec], [model],
                    {"image": "image"}, ("probabilities",))


def _representative(plan: ExportPlan, endpoint: Endpoint) -> List[Dict[str, np.ndarray]]:
    """Calibration feeds (LiteRT's representative dataset and ONNX's reader), held-out images excluded."""
    extra = {"class_index": np.array([-1], np.int32)} if "class_index" in endpoint.inputs else {}
    return [{"image": plan.x[i : i + 1], **extra} for i in plan.calibrate]


def base_metadata(plan: ExportPlan, endpoint: Endpoint) -> EdgecamMetadata:
    """The metadata every plan's file carries (quantization, self-check and precision added later)."""
    import keras
    import tensorflow as tf

    h, w, c = plan.split.target.shape
    cam_key = endpoint.outputs[-1]
    return EdgecamMetadata(
        classes=plan.classes,
        preprocessing=plan.preprocessing,
        target_layer=plan.split.target.path,
        feature_map_shape=(h, w, c),
        cam_mode=plan.mode,
        cam_method=plan.method,
        cam_output=plan.cam_output,
        activation=plan.split.activation,
        inputs=dict(endpoint.inputs),
        outputs={"probabilities": "probabilities", "logits": "logits", "feature_maps": "feature_maps", cam_key: cam_key},
        quantization=plan.options.quantize,
        class_weights=plan.weights,
        source=plan.source,
        converter={"edgecam": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                   "preprocessing": plan.preprocessing_note, "reason": plan.reason},
    )


# -- stage 3: convert and check in memory ----------------------------------------------------
def float_reference(plan: ExportPlan, batch: int = 32) -> Reference:
    """The float model's own maps on the held-out images: GradientTape, independent of the export.

    Grad-CAM ``Σ_k mean_ij(∂y^c/∂A^k) A^k`` (Selvaraju et al. 2017, Eq. 1-2), HiResCAM
    ``Σ_k (∂y^c/∂A^k ⊙ A^k)`` (Draelos & Carin 2020), or for approximate heads the baked weights
    applied to the Keras feature maps — what the float head means, so the gate measures precision
    only.
    """
    x = plan.x[plan.held_out]
    maps, classes, logits = [], [], []
    for start in range(0, len(x), batch):
        A, lg, grads, chosen = feature_gradients(plan.split.grad_model, x[start : start + batch], None)
        if plan.mode == "approximate":
            w = np.asarray(plan.weights)[:, chosen]  # (C, n)
            maps.append(np.einsum("nhwc,cn->nhw", A, w))
        elif plan.method == "hirescam":
            maps.append(np.sum(A * grads, axis=-1))
        else:
            maps.append(np.sum(A * grads.mean(axis=(1, 2), keepdims=True), axis=-1))
        classes.append(chosen)
        logits.append(lg)
    maps_arr, logits_arr = np.concatenate(maps).astype(np.float32), np.concatenate(logits)
    if not (np.all(np.isfinite(logits_arr)) and np.all(np.isfinite(maps_arr))):
        bad = int(np.nonzero(~np.isfinite(logits_arr).all(axis=-1) | ~np.isfinite(maps_arr).all(axis=(1, 2)))[0][0])
        raise ConversionError(
            f"The Keras model gives non-finite logits or Grad-CAM (NaN/inf) on {plan.image_source}, image "
            f"{int(plan.held_out[bad])}: its weights hold NaN/inf or it overflows. Fix or retrain the model, "
            "and check the preprocessing (--input-scale/--input-offset) before converting."
        )
    return Reference(maps_arr, np.concatenate(classes), _activate(logits_arr, plan.split.activation), plan.classes)


@dataclass
class _Candidate:
    """One plan's bytes (metadata embedded) and, once loaded, its model and figures."""

    plan: str
    raw: bytes
    content: bytes
    model: Any = None
    fidelity: Optional[Fidelity] = None


def _load_candidate(cand: _Candidate):
    """An ExplainableModel of the candidate's bytes, in memory (``Interpreter(model_content=…)``)."""
    from firmware_host.model import ExplainableModel

    cand.model = ExplainableModel(cand.content)
    return cand.model


def _latency_runner(model) -> Callable[[], None]:
    feed = model.input_feed(model.preprocess([np.full((8, 8, 3), 128, np.uint8)]))
    return lambda: model.backend.run(feed)


class _Checker:
    """Stage 3 for one container: convert plans, embed metadata, measure, gate — all in memory."""

    def __init__(self, plan: ExportPlan, container: Container, path: Path, endpoint: Endpoint,
                 metadata: EdgecamMetadata, reference: Optional[Reference]) -> None:
        self.plan, self.container, self.path = plan, container, path
        self.endpoint, self.reference = endpoint, reference
        self.metadata = replace(metadata, converter={**metadata.converter, "format": container.name,
                                                     **container.versions()})
        self.representative = _representative(plan, endpoint) if len(plan.calibrate) else None
        self.held_images = [plan.images[i] for i in plan.held_out]

    def candidates(self, plans: Sequence[str]) -> Iterator[Union[_Candidate, Tuple[str, ConversionError]]]:
        float_head = self.plan.cam_output == "selected"
        island = _island_layers(self.plan.model, self.plan.split)
        for name, raw in self.container.export(self.endpoint, plans, self.representative, float_head, island):
            if isinstance(raw, ConversionError):
                yield name, raw
                continue
            cand = _Candidate(name, raw, self.container.embed(raw, replace(self.metadata, quantization=name)))
            if self.reference is not None:
                try:
                    model = _load_candidate(cand)
                    cand.fidelity = measure_fidelity(model.explain_batch, self.held_images, self.reference)
                except Exception as exc:  # noqa: BLE001 - the interpreter raises RuntimeError/ValueError
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    yield name, ConversionError(f"the {name} model does not run in {self.container.name}: {first}")
                    continue
            yield cand

    def targets_for(self, plan_name: str) -> Targets:
        opts = self.plan.options
        if opts.targets is not None:
            return opts.targets
        return AUTO_TARGETS if opts.quantize == "auto" else default_targets(plan_name)


_PRODUCERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Dense")


def _island_layers(model, split: ModelSplit, limit: int = 6) -> Tuple[str, ...]:
    """The float island of ``int8-mixed``: the explanation layer, its producers, and the head.

    The map is ``Σ α_k A^k``: quantizing ``A`` itself is what flattens it when one outlier
    channel sets the tensor's int8 range, so the island starts at the chain that computes ``A``
    from the previous (int8) activation — e.g. MobileNetV3's ``Conv_1 → Conv_1/BatchNorm →
    activation``, walked back through single-input layers to the last conv. The classifier head
    after it (pooling, dense layers) is a few thousand multiply-adds and decides the class, so
    it stays float too.
    """
    try:
        head = [layer.name for layer in head_chain(model, split.target)]
    except UnsupportedHeadError:
        head = []
    names, layer = list(head), split.target.layer
    for _ in range(limit):
        names.append(layer.name)
        if type(layer).__name__ in _PRODUCERS:
            break
        try:
            history = getattr(layer.input, "_keras_history", None)
        except (AttributeError, ValueError):  # several inputs or inbound nodes: stop here
            break
        if history is None or type(history[0]).__name__ == "InputLayer":
            break
        layer = history[0]
    return tuple(names)


def _figures(cand: _Candidate, targets: Targets) -> PlanFigures:
    return PlanFigures(cand.plan, cand.fidelity, not targets.missed(cand.fidelity), size_bytes=len(cand.raw))


def _search(checker: _Checker) -> Tuple[_Candidate, Tuple[PlanFigures, ...]]:
    """``quantize="auto"``: every plan converted and measured; the cheapest passing one is chosen."""
    targets = checker.targets_for("auto")
    cands: Dict[str, _Candidate] = {}
    rows: List[PlanFigures] = []
    for item in checker.candidates(checker.container.plans):
        if isinstance(item, tuple):
            rows.append(PlanFigures(item[0], error=str(item[1])))
            continue
        cands[item.plan] = item
        rows.append(_figures(item, targets))
        log.info("plan %s: %s", item.plan, item.fidelity.as_dict())
    timed = interleaved_latency({name: _latency_runner(c.model) for name, c in cands.items()})
    base = timed.get("int8") or timed.get("none") or next(iter(timed.values()), None)
    rows = [replace(r, latency_ms=timed.get(r.plan), latency_ratio=(timed[r.plan] / base) if r.plan in timed else None)
            for r in rows]
    best = choose(rows, checker.plan.options.cost)
    if best is None:
        raise FidelityError(
            f"No precision plan meets the fidelity targets for '{checker.path}' (p05 ≥ {targets.pearson_p05}, "
            f"top-1 ≥ {targets.top1}), not even float32: {format_table(rows, targets).splitlines()[-1].strip()}. "
            "Nothing was written. Check the calibration images and lower --min-p05/--min-top1 only if you "
            "accept maps that disagree with the float model."
        )
    return cands[best.plan], tuple(rows)


def _suggest(checker: _Checker, failed: str, targets: Targets) -> str:
    """The first more precise plan that meets ``targets``, as a phrase for the gate's message."""
    order = checker.container.plans
    for item in checker.candidates(order[order.index(failed) + 1 :]):
        if isinstance(item, _Candidate) and not targets.missed(item.fidelity):
            f = item.fidelity
            return (f"--quantize {item.plan} passes (p05 {f.pearson_p05:.4f}, top-1 {f.top1:.3f}); "
                    "--quantize auto picks the cheapest plan that passes")
    return "no other plan passes either; check the calibration images and the model"


def _gate(checker: _Checker, cand: _Candidate) -> Tuple[PlanFigures, bool]:
    """An explicitly chosen plan: pass, or refuse naming the plan that would (unless allowed)."""
    targets = checker.targets_for(cand.plan)
    missed = targets.missed(cand.fidelity)
    if not missed:
        return _figures(cand, targets), False
    if not checker.plan.options.allow_low_fidelity:
        raise FidelityError(
            f"The {cand.plan} model misses its fidelity bounds on {checker.plan.check_source}: "
            f"{'; '.join(missed)}. Nothing was written to '{checker.path}'. "
            f"{_suggest(checker, cand.plan, targets)}; or pass --allow-low-fidelity to write it anyway "
            "(marked low-fidelity in its metadata)."
        )
    log.warning("Writing %s although it misses its fidelity bounds (%s): --allow-low-fidelity. The device "
                "will warn at start.", checker.path.name, "; ".join(missed))
    return _figures(cand, targets), True


def check_container(checker: _Checker) -> Tuple[_Candidate, EdgecamMetadata, Optional[SelfCheck], Tuple[PlanFigures, ...]]:
    """Convert with the asked plan(s), measure, gate, and return the final bytes' parts (nothing written)."""
    opts = checker.plan.options
    low = False
    if opts.quantize == "auto":
        cand, rows = _search(checker)
    else:
        item = list(checker.candidates((opts.quantize,)))[0]  # runs the generator to its end: cleanup
        if isinstance(item, tuple):
            raise item[1]
        cand, rows = item, ()
        if cand.fidelity is not None:
            row, low = _gate(checker, cand)
            rows = (row,)
    check = None
    meta = replace(checker.metadata, quantization=cand.plan)
    if cand.fidelity is not None:
        check = SelfCheck.of(cand.fidelity, checker.targets_for(cand.plan), checker.plan.check_source)
        targets = checker.targets_for(cand.plan)
        meta = replace(meta, self_check=check.as_dict(), precision={
            "plan": cand.plan, "requested": opts.quantize, "cost": opts.cost,
            "targets": asdict(targets), "tried": [r.as_dict() for r in rows], "low_fidelity": low,
        })
    return cand, meta, check, rows


# -- stage 4: write --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Artefact:
    container: Container
    path: Path
    content: bytes
    metadata: EdgecamMetadata
    check: Optional[SelfCheck]
    rows: Tuple[PlanFigures, ...]
    baseline: Optional[bytes] = None


def write(artefacts: Sequence[_Artefact], reason: str) -> ConversionResult:
    """Stage 4: write every checked file once, atomically (and the plain baselines)."""
    results = []
    for art in artefacts:
        atomic_write_bytes(art.path, art.content)
        baseline = None
        if art.baseline is not None:
            baseline = art.path.with_name(art.path.stem + ".plain" + art.container.suffix)
            atomic_write_bytes(baseline, art.baseline)
        results.append(ConversionResult(path=art.path, metadata=art.metadata, reason=reason, self_check=art.check,
                                        baseline_path=baseline, size_bytes=len(art.content),
                                        format=art.container.name, plans=art.rows))
    return replace(results[0], others=tuple(results[1:]))


def _baseline_bytes(plan: ExportPlan, container: Container, quantize: str) -> bytes:
    rep = [{"image": plan.x[i : i + 1]} for i in plan.calibrate]
    name, raw = next(container.export(_plain_endpoint(plan), (quantize,), rep))
    if isinstance(raw, ConversionError):
        raise raw
    return raw


# -- the API ---------------------------------------------------------------------------------
def convert(model, output: Union[str, Path], **options: Any) -> ConversionResult:
    """Export a Keras CNN classifier to LiteRT and/or ONNX with an explanation head.

    Args:
        model: a ``keras.Model`` or the path of a ``.keras``/``.h5`` file or SavedModel dir.
        output: the ``.tflite`` or ``.onnx`` to write (atomically); with ``format="both"``, the
            stem of both files (``out/m.tflite``, ``out/m.onnx`` or ``out/m`` all write
            ``out/m.tflite`` and ``out/m.onnx``).
        quantize: a precision plan — ``none`` (float32), ``float16``, ``dynamic``, ``16x8``,
            ``int8-mixed`` or ``int8`` (LiteRT; ONNX: ``none``, ``float16``, ``int8`` QDQ) — or
            ``auto``: every plan is converted and measured, and the cheapest that meets
            ``targets`` is written (:mod:`converters.quant`). int8, int8-mixed, 16x8 and auto
            need ``calibration``.
        calibration: a folder of images or a list of RGB uint8 images. A quarter is held out
            (from 16 images on) to measure fidelity; the rest calibrates.
        targets: :class:`~converters.quant.Targets` the written model must meet against the float
            model's own maps; default: ``auto``: p05 ≥ 0.98 and top-1 ≥ 0.99; an explicit plan:
            its bounds in :data:`~converters.quant.GATES`.
        allow_low_fidelity: write a model that misses its bounds anyway, marked as such in the
            metadata (the device warns at start). Without it such a model is refused: nothing
            is written and the error names the plan that would pass.
        cost: how ``auto`` ranks passing plans: ``measured`` (interpreter latency on this machine)
            or ``nominal`` (the documented order, cheapest on an ARM CPU first).
        labels: class names, or a file with one per line.
        target_layer: explanation layer (``outer/inner``); default: the last spatial layer.
        color, input_scale, input_offset, mean, std, input_size: preprocessing to record
            (``x = pixel·scale + offset``); detected from a leading Rescaling/Normalization.
        cam_output: ``auto`` (all classes when K ≤ 32, else the predicted class), ``all`` or
            ``predicted``; non-linear heads always emit the selected class.
        cam_method: ``gradcam`` or ``hirescam`` (exact for Flatten heads and gradient heads).
        approximate: for heads the analyser cannot make exact, average gradient weights over
            the calibration images (recorded as ``cam_mode: approximate``).
        safe_mode: Keras safe_mode when loading a file.
        self_check: measure the export against the float model's Grad-CAM, gate it and record
            the result (``False`` skips both).
        emit_baseline: also write ``<output stem>.plain.tflite`` (``.plain.onnx``) without the
            explanation head (same plan), for ``edgecam bench --baseline``.
        max_calibration: read at most this many calibration images.
        format: ``tflite``, ``onnx`` or ``both``; ``None`` follows the output's suffix.

    Returns:
        :class:`ConversionResult` (for ``both``: the LiteRT result, the ONNX one in ``others``);
        ``plans`` holds the table of plans tried.

    Raises:
        FidelityError: the model misses its bounds (nothing written); ModelFileError, LayerError,
        UnsupportedHeadError, ConversionError, InputError, MissingDependencyError.
    """
    if isinstance(model, (str, Path)) and str(model).lower().endswith(".onnx"):  # no TensorFlow needed
        from .onnx_in import convert_onnx

        return convert_onnx(model, output, **options)
    require_host()
    unknown = set(options) - set(ConvertOptions.__dataclass_fields__)
    if unknown:
        raise InputError(f"convert() got unknown options {sorted(unknown)}. Known: "
                         f"{', '.join(ConvertOptions.__dataclass_fields__)}.")
    plan = plan_export(model, output, ConvertOptions(**options))
    endpoint = build_endpoint(plan)
    metadata = base_metadata(plan, endpoint)
    reference = float_reference(plan) if plan.options.self_check else None
    artefacts = []
    for container, path in plan.outputs:
        log.info("Exporting %s head (%s) at %s to %s, quantization %s", plan.mode, plan.cam_output,
                 plan.split.target.path, container.name, plan.options.quantize)
        cand, meta, check, rows = check_container(_Checker(plan, container, path, endpoint, metadata, reference))
        baseline = _baseline_bytes(plan, container, cand.plan) if plan.options.emit_baseline else None
        artefacts.append(_Artefact(container, path, container.embed(cand.raw, meta), meta, check, rows, baseline))
    return write(artefacts, plan.reason)


def _signature():
    """``convert(model, output, *, <every ConvertOptions field with its default>)``, for help() and IDEs."""
    import dataclasses
    import inspect

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("output", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(f.name, keyword, default=f.default) for f in dataclasses.fields(ConvertOptions)]
    return inspect.Signature(params, return_annotation="ConversionResult")


convert.__signature__ = _signature()  # the options are written once, in ConvertOptions

