"""Build the explainable multi-output model, convert it to LiteRT and/or ONNX, embed metadata, self-check.

``convert(model, "out.tflite")`` (or ``"out.onnx"``, or ``format="both"``) is the Python API
behind ``edgecam convert``:

1. load the Keras model (``safe_mode`` on), find the explanation layer, split off the softmax;
2. analyse the head and choose the most exact CAM mode (linear / flatten / gradient), or
   average gradient weights over calibration images with ``approximate=True``;
3. build ``serving_default(image[, class_index]) → {probabilities, logits, feature_maps,
   cam | cams}`` (an :class:`Endpoint`) and the metadata, once;
4. per container (:data:`CONTAINERS`): convert the endpoint — LiteRT with builtin ops only (a
   Flex op cannot run on the device), ONNX through tf2onnx (:mod:`converters.onnx_export`) —
   embed the metadata and write the file atomically;
5. self-check: run each file through ``firmware_host`` and compare it with a GradientTape
   Grad-CAM of the Keras model.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_host import cam as _cam
from firmware_host import imageio
from firmware_host._io import atomic_write_bytes, ensure_writable_dir
from firmware_host._version import __version__
from firmware_host.compare import pearson
from firmware_host.errors import ConversionError, InputError, UnsupportedHeadError
from firmware_host.metadata import EdgecamMetadata, Preprocessing, embed_onnx_metadata, embed_tflite_metadata
from firmware_host.preprocess import check_image, preprocess

from .head import HeadAnalysis, analyze_head
from .heads import gradient_cam, linear_cams
from .layers import ModelSplit, head_chain, split_model
from .loading import file_sha256, load_keras_model, require_host, with_input_size
from .reference import feature_gradients, gradcam_reference

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
    "load_images",
]

log = logging.getLogger("edgecam.convert")

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# Self-check thresholds (docs/convert.md): below them the converter warns.
THRESHOLDS = {
    "none": {"pearson": 0.999, "top1": 1.0},
    "float16": {"pearson": 0.99, "top1": 0.95},
    "dynamic": {"pearson": 0.95, "top1": 0.9},
    "int8": {"pearson": 0.9, "top1": 0.85},
}
ALL_CLASSES_LIMIT = 32
# Ops under this name scope stay float32 in int8 models (see _quantize_int8).
FLOAT_SCOPE = "edgecam_float_head"
IMAGE_SUFFIXES = imageio.IMAGE_SUFFIXES  # one list, firmware_host/imageio.py


@dataclass(frozen=True)
class SelfCheck:
    """Agreement of the exported model with a GradientTape Grad-CAM of the Keras model.

    Pearson is computed per image between the edge map and the reference map (both ReLU'd, at
    feature-map resolution) for the class the Keras model predicts.
    """

    images: int
    source: str
    top1_agreement: float
    pearson_median: float
    pearson_min: float
    prob_max_abs_diff: float
    threshold_pearson: float
    threshold_top1: float

    @property
    def passed(self) -> bool:
        return self.pearson_median >= self.threshold_pearson and self.top1_agreement >= self.threshold_top1

    def as_dict(self) -> Dict[str, Any]:
        return {
            "images": self.images,
            "source": self.source,
            "top1_agreement": round(self.top1_agreement, 6),
            "pearson_median": round(self.pearson_median, 6),
            "pearson_min": round(self.pearson_min, 6),
            "prob_max_abs_diff": round(self.prob_max_abs_diff, 6),
            "threshold_pearson": self.threshold_pearson,
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
        quantizations: the ``quantize`` values it supports.
        export: ``export(endpoint, quantize, representative, float_head) → bytes``.
        embed: ``embed(content, metadata) → bytes``.
        versions: tool versions to record in ``metadata.converter``.
        require: imports its tools up front (raises ``MissingDependencyError``).
    """

    name: str
    suffix: str
    quantizations: Tuple[str, ...]
    export: Callable[..., bytes]
    embed: Callable[[bytes, EdgecamMetadata], bytes]
    versions: Callable[[], Dict[str, str]] = field(default=lambda: {})
    require: Callable[[], Any] = field(default=lambda: None)


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


def _read_labels(labels, num_classes: int, binary: bool) -> Tuple[str, ...]:
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
            out.update(linear_cams(A, logits, weights, cam_output))
        return out

    return outputs


def _quantize_int8_with_float_head(converter) -> bytes:
    """Full-integer quantization that keeps the in-graph gradient head in float32.

    The gradient of a non-linear head multiplies ReLU masks and small gradients; in int8 the
    masks of units near zero flip and the map decorrelates. The head is a few hundred
    multiply-adds, so it stays float: calibrate, then quantize with the head's tensors
    (name scope FLOAT_SCOPE) denylisted — the mechanism behind TF's QuantizationDebugger.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert  # private, used by the debugger

    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # noqa: SLF001 - as QuantizationDebugger does
    calibrated = converter.convert()
    from firmware_host.backends.litert import load_interpreter_class

    Interpreter, _, _ = load_interpreter_class()
    names = [d["name"] for d in Interpreter(model_content=calibrated).get_tensor_details()]
    denylist = sorted({n for n in names if FLOAT_SCOPE in n})
    return tfl_convert.mlir_quantize(
        calibrated,
        fully_quantize=True,
        inference_type=tfl_convert._types_pb2.QUANTIZED_INT8,  # noqa: SLF001
        input_data_type=tf.int8,
        output_data_type=tf.int8,
        denylisted_nodes=denylist,
    )


def _converter_bytes(saved_dir: str, quantize: str, representative: Optional[List[Dict[str, np.ndarray]]],
                     float_head: bool = False):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
    # Builtin ops only: a Flex (SELECT_TF_OPS) op cannot run on the device interpreters.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(representative)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        if quantize == "int8" and float_head:
            return _quantize_int8_with_float_head(converter)
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError/RuntimeError/ValueError
        text = str(exc)
        flex = "Flex" in text or "ops are not supported" in text or "Select TF" in text
        first = next((line.strip() for line in text.splitlines() if "error" in line.lower()), text[:300])
        hint = (
            "The graph needs a TensorFlow (Flex) op, which the device interpreters cannot run; "
            "replace the layer that needs it."
            if flex
            else "See the converter message above."
        )
        raise ConversionError(f"LiteRT conversion ({quantize}) failed: {first} {hint}") from exc


def _export_tflite(endpoint: Endpoint, quantize: str, representative, float_head: bool = False) -> bytes:
    import keras

    with tempfile.TemporaryDirectory(prefix="edgecam-export-") as tmp:
        archive = keras.export.ExportArchive()
        for obj in endpoint.track:
            archive.track(obj)
        archive.add_endpoint("serving_default", endpoint.fn, input_signature=list(endpoint.signature))
        archive.write_out(tmp, verbose=False)
        return _converter_bytes(tmp, quantize, representative, float_head)


def _export_onnx(endpoint: Endpoint, quantize: str, representative, float_head: bool = False) -> bytes:
    from .onnx_export import export_onnx

    return export_onnx(endpoint, quantize, representative, float_head, float_scope=FLOAT_SCOPE)


def _onnx_versions() -> Dict[str, str]:
    from .onnx_export import tool_versions

    return tool_versions()


def _onnx_require():
    from .onnx_export import require_onnx_tools

    return require_onnx_tools()


CONTAINERS: Dict[str, Container] = {
    "tflite": Container("tflite", ".tflite", QUANTIZATIONS, _export_tflite, embed_tflite_metadata),
    "onnx": Container("onnx", ".onnx", ("none", "float16", "int8"), _export_onnx, embed_onnx_metadata,
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


# -- self-check ------------------------------------------------------------------------------
def _self_check(path: Path, split: ModelSplit, images: List[np.ndarray], x: np.ndarray, quantize: str,
                source: str) -> SelfCheck:
    from firmware_host.model import ExplainableModel

    ref_raw, ref_cls, ref_logits = gradcam_reference(split.grad_model, x, return_logits=True)
    if not (np.all(np.isfinite(ref_logits)) and np.all(np.isfinite(ref_raw))):
        bad = int(np.nonzero(~np.isfinite(ref_logits).all(axis=-1) | ~np.isfinite(ref_raw).all(axis=(1, 2)))[0][0])
        raise ConversionError(
            f"The Keras model gives non-finite logits or Grad-CAM (NaN/inf) on {source}, image {bad}: "
            "its weights hold NaN/inf or it overflows. Fix or retrain the model, and check the "
            "preprocessing (--input-scale/--input-offset) before converting."
        )
    ref_probs = _activate(ref_logits, split.activation)
    edge = ExplainableModel(path)
    agree, corr, pdiff = [], [], []
    batch = 16
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        classes = ref_cls[start : start + batch]
        exps = edge.explain_batch(chunk, class_index=classes)
        for i, exp in enumerate(exps):
            probs = ref_probs[start + i]
            # A tie in the Keras scores (e.g. an untrained net) is agreement whichever wins.
            agree.append(float(abs(probs[exp.predicted_index] - probs[classes[i]]) <= 1e-6))
            corr.append(pearson(exp.cam, _cam.relu(ref_raw[start + i])))
            pdiff.append(float(np.abs(exp.probabilities - probs).max()))
    limits = THRESHOLDS[quantize]
    return SelfCheck(
        images=len(images),
        source=source,
        top1_agreement=float(np.mean(agree)),
        pearson_median=float(np.median(corr)),
        pearson_min=float(np.min(corr)),
        prob_max_abs_diff=float(np.max(pdiff)),
        threshold_pearson=limits["pearson"],
        threshold_top1=limits["top1"],
    )


# -- the API ---------------------------------------------------------------------------------
def convert(
    model,
    output: Union[str, Path],
    *,
    quantize: str = "none",
    calibration: Union[str, Path, Sequence[np.ndarray], None] = None,
    labels=None,
    target_layer: Optional[str] = None,
    color: Optional[str] = None,
    input_scale=None,
    input_offset=None,
    mean=None,
    std=None,
    input_size=None,
    cam_output: str = "auto",
    cam_method: str = "gradcam",
    approximate: bool = False,
    safe_mode: bool = True,
    self_check: bool = True,
    emit_baseline: bool = False,
    max_calibration: int = 200,
    format: Optional[str] = None,
) -> ConversionResult:
    """Export a Keras CNN classifier to LiteRT and/or ONNX with an explanation head.

    Args:
        model: a ``keras.Model`` or the path of a ``.keras``/``.h5`` file or SavedModel dir.
        output: the ``.tflite`` or ``.onnx`` to write (atomically); with ``format="both"``, the
            stem of both files (``out/m.tflite``, ``out/m.onnx`` or ``out/m`` all write
            ``out/m.tflite`` and ``out/m.onnx``).
        quantize: ``none``, ``float16``, ``dynamic`` or ``int8`` (LiteRT: int8 input and output;
            ONNX: ``none``, ``float16`` or ``int8`` QDQ with float32 input and output). int8
            needs ``calibration``.
        calibration: a folder of images or a list of RGB uint8 images: int8 calibration,
            approximate weights and the self-check.
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
        self_check: compare the export with a GradientTape Grad-CAM and record the result.
        emit_baseline: also write ``<output stem>.plain.tflite`` (``.plain.onnx``) without the
            explanation head (same quantization), for ``edgecam bench --baseline``.
        format: ``tflite``, ``onnx`` or ``both``; ``None`` follows the output's suffix.

    Returns:
        :class:`ConversionResult` (for ``both``: the LiteRT result, the ONNX one in ``others``).

    Raises:
        ModelFileError, LayerError, UnsupportedHeadError, ConversionError, InputError,
        MissingDependencyError (ONNX without ``edgecam[onnx]``/tf2onnx).
    """
    if isinstance(model, (str, Path)) and str(model).lower().endswith(".onnx"):  # no TensorFlow needed
        options = {k: v for k, v in locals().items() if k not in ("model", "output")}
        from .onnx_in import convert_onnx

        return convert_onnx(model, output, **options)
    tf, keras = require_host()

    output = Path(output)
    targets = _outputs_for(output, format)
    if quantize not in QUANTIZATIONS:
        raise InputError(f"quantize must be one of {QUANTIZATIONS}. Got: {quantize!r}")
    for container, _ in targets:
        if quantize not in container.quantizations:
            raise InputError(
                f"{container.name} export supports quantize {container.quantizations}. Got: "
                f"{quantize!r}. (ONNX has no 'dynamic' mode TensorRT can run; use int8 with "
                "calibration images.)"
            )
        container.require()
    if cam_output not in ("auto", "all", "predicted"):
        raise InputError(f"cam_output must be auto, all or predicted. Got: {cam_output!r}")
    if cam_method not in ("gradcam", "hirescam"):
        raise InputError(f"cam_method must be gradcam or hirescam. Got: {cam_method!r}")
    if quantize == "int8" and calibration is None:
        raise InputError(
            "int8 quantization needs calibration images: pass --calibration DIR (a folder of "
            "representative images, ~100 is plenty)."
        )
    if not output.parent.exists():
        raise InputError(f"Output folder '{output.parent}' does not exist. Create it first.")
    ensure_writable_dir(output.parent)  # before the (slow) conversion, not after

    source: Dict[str, Any] = {}
    if isinstance(model, (str, Path)):
        source = {"name": Path(model).name, "sha256": file_sha256(model)}
        model = load_keras_model(model, safe_mode=safe_mode)
    else:
        source = {"name": getattr(model, "name", "model"), "sha256": None}

    model = with_input_size(model, input_size)
    split = split_model(model, target_layer)
    h, w, c = split.target.shape
    pre, pre_note = detect_preprocessing(model, color, input_scale, input_offset, mean, std, input_size)
    classes = _read_labels(labels, split.num_logits, split.binary)

    # Images for calibration, approximate weights and the self-check.
    if calibration is None:
        images, image_source = _sample_images(pre), "random smooth sample images"
    elif isinstance(calibration, (str, Path)):
        images, skipped = load_images(calibration, limit=max_calibration)
        image_source = f"{len(images)} calibration images from '{calibration}'" + (
            f" ({skipped} unreadable or non-image files skipped)" if skipped else ""
        )
    else:
        images = [check_image(img, f"calibration image {i}") for i, img in enumerate(calibration)]
        image_source = f"{len(images)} calibration images"
    x = np.stack([preprocess(img, pre) for img in images]).astype(np.float32)

    # Head analysis: the most exact mode the head allows.
    analysis: Optional[HeadAnalysis] = None
    weights = None
    try:
        chain = head_chain(model, split.target)
        analysis = analyze_head(chain, split.target.shape, split.num_logits, split.activation, split.binary)
        mode = analysis.mode
        reason = analysis.reason
    except UnsupportedHeadError as exc:
        if not approximate:
            raise UnsupportedHeadError(
                f"{exc} edgecam refuses rather than export an inexact CAM. Pass --approximate to "
                "use class weights averaged from gradients over the calibration images "
                "(marked approximate), or choose another --target-layer."
            ) from exc
        mode = "approximate"
        reason = f"approximate: {exc} Weights averaged from gradients over {image_source}."
        if calibration is None:
            log.warning("Approximate weights from random sample images; pass --calibration for real ones.")

    if mode == "gradient":
        resolved_output = "selected"
    else:
        k = split.num_logits
        resolved_output = cam_output if cam_output != "auto" else ("all" if k <= ALL_CLASSES_LIMIT else "predicted")
        if mode == "approximate":
            weights = _approximate_weights(split, x)
        elif mode == "flatten" and cam_method == "hirescam":
            weights = analysis.jacobian
        else:
            weights = analysis.alpha
    method = cam_method if mode in ("flatten", "gradient") else "gradcam"

    image_spec = tf.TensorSpec([None, pre.height, pre.width, pre.channels], tf.float32, name="image")
    serve = _serve_fn(split, analysis, weights, resolved_output, method)
    cam_key = "cams" if resolved_output == "all" else "cam"
    outputs = ("probabilities", "logits", "feature_maps", cam_key)
    if resolved_output == "selected":
        endpoint = Endpoint(
            lambda image, class_index: serve(image, class_index),
            [image_spec, tf.TensorSpec([None], tf.int32, name="class_index")],
            [split.grad_model], {"image": "image", "class_index": "class_index"}, outputs,
        )
    else:
        endpoint = Endpoint(lambda image: serve(image), [image_spec], [split.grad_model], {"image": "image"}, outputs)
    inputs = dict(endpoint.inputs)
    representative = None
    if quantize == "int8":
        # The same calibration feeds for LiteRT's representative dataset and ONNX's reader.
        representative = [
            {"image": x[i : i + 1], **({"class_index": np.array([-1], np.int32)} if "class_index" in inputs else {})}
            for i in range(len(x))
        ]

    metadata = EdgecamMetadata(
        classes=classes,
        preprocessing=pre,
        target_layer=split.target.path,
        feature_map_shape=(h, w, c),
        cam_mode=mode,
        cam_method=method,
        cam_output=resolved_output,
        activation=split.activation,
        inputs=inputs,
        outputs={"probabilities": "probabilities", "logits": "logits", "feature_maps": "feature_maps", cam_key: cam_key},
        quantization=quantize,
        class_weights=weights,
        source=source,
        converter={
            "edgecam": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "preprocessing": pre_note,
            "reason": reason,
        },
    )
    plain = None
    if emit_baseline:
        plain = Endpoint(lambda image: {"probabilities": model(image, training=False)}, [image_spec], [model],
                         {"image": "image"}, ("probabilities",))

    results = []
    for container, path in targets:
        log.info("Exporting %s head (%s) at %s to %s, quantization %s", mode, resolved_output,
                 split.target.path, container.name, quantize)
        results.append(_write_container(
            container, path, endpoint, metadata, representative,
            check_with=(split, images, x, image_source) if self_check else None,
            plain=plain, reason=reason,
        ))
    return replace(results[0], others=tuple(results[1:]))


def _write_container(container: Container, path: Path, endpoint: Endpoint, metadata: EdgecamMetadata,
                     representative, check_with, plain: Optional[Endpoint], reason: str) -> ConversionResult:
    """Export ``endpoint`` into one container, embed ``metadata``, self-check, write the baseline."""
    quantize = metadata.quantization
    content = container.export(endpoint, quantize, representative, float_head=metadata.cam_output == "selected")
    metadata = replace(metadata, converter={**metadata.converter, "format": container.name, **container.versions()})
    atomic_write_bytes(path, container.embed(content, metadata))

    check = None
    if check_with is not None:
        split, images, x, image_source = check_with
        check = _self_check(path, split, images, x, quantize, image_source)
        metadata = replace(metadata, self_check=check.as_dict())
        atomic_write_bytes(path, container.embed(content, metadata))
        if not check.passed:
            log.warning(
                "Self-check below threshold for %s (%s): top-1 agreement %.3f (≥ %.2f), median "
                "Pearson %.4f (≥ %.3f). The edge heatmaps may not match full Grad-CAM; validate "
                "with `edgecam validate` on real images.",
                path.name, quantize, check.top1_agreement, check.threshold_top1, check.pearson_median,
                check.threshold_pearson,
            )

    baseline = None
    if plain is not None:
        baseline = path.with_name(path.stem + ".plain" + container.suffix)
        rep = None if representative is None else [{"image": r["image"]} for r in representative]
        atomic_write_bytes(baseline, container.export(plain, quantize, rep))

    return ConversionResult(
        path=path,
        metadata=metadata,
        reason=reason,
        self_check=check,
        baseline_path=baseline,
        size_bytes=os.path.getsize(path),
        format=container.name,
    )
