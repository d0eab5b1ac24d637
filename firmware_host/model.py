"""ExplainableModel: load an edgecam model, preprocess, invoke, dequantize, pick the class, CAM.

One inference call returns the class probabilities and the class activation map. No
TensorFlow: only the interpreter, numpy and OpenCV.
"""

from __future__ import annotations

import hashlib
import logging

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import cam as _cam
from .backends import Backend, TensorInfo, dequantize_output, open_backend, quantize_input
from .errors import ConversionError, InputError, MetadataError
from .formats import ModelFile, container, read_model_file
from .metadata import EdgecamMetadata
from .preprocess import check_image, preprocess

log = logging.getLogger("edgecam")

__all__ = ["ExplainableModel", "Explanation", "open_model", "check_model_agrees"]

ModelSource = Union[str, Path, bytes, ModelFile]


def open_model(model: ModelSource, num_threads: Optional[int] = None,
               providers: Optional[Sequence[str]] = None) -> Tuple[Backend, EdgecamMetadata]:
    """Read a converted model once; return its interpreter backend and its checked metadata.

    The file's bytes feed both the metadata reader (:mod:`firmware_host.formats`) and the
    interpreter (:mod:`firmware_host.backends`). Whichever names a damaged file best goes
    first (the container's ``RUNTIME_CHECKS_FIRST``): a ``.tflite``'s metadata reader, which
    says when a file is not a flatbuffer; onnxruntime for a ``.onnx``, which checks the protobuf. Then every field of the metadata that
    describes a tensor is checked against the model (:func:`check_model_agrees`).

    Args:
        model: the ``.tflite``/``.onnx`` path, or its bytes (e.g. a conversion in memory).
        num_threads, providers: as for :class:`ExplainableModel`.

    Raises:
        ModelFileError, MetadataError, MissingDependencyError.
    """
    file = read_model_file(model)
    fmt = container(file.format)
    if fmt.RUNTIME_CHECKS_FIRST:
        backend = open_backend(file, num_threads=num_threads, providers=providers)
        metadata = fmt.read_metadata(file.data, file.where)
    else:
        metadata = fmt.read_metadata(file.data, file.where)
        backend = open_backend(file, num_threads=num_threads, providers=providers)
    check_model_agrees(metadata, backend, file.where)
    return backend, metadata


def _dims_differ(found: Tuple[int, ...], expected: Tuple[int, ...]) -> bool:
    """A tensor's shape against the expected one; -1 (dynamic) matches anything."""
    return len(found) != len(expected) or any(f not in (-1, e) for f, e in zip(found, expected))


def check_model_agrees(meta: EdgecamMetadata, backend: Backend, where: str = "the model") -> None:
    """Check what the metadata says about the model's tensors against the model itself.

    The metadata's checksum only proves it was not damaged by accident; a file whose metadata
    claims a 3000×3000 input for a 24×24 model, more classes than ``probabilities`` has, or
    outputs the model lacks is refused here rather than run.

    Raises:
        MetadataError: naming the field, what the metadata says and what the model has.
    """
    def refuse(what: str) -> None:
        raise MetadataError(
            f"{where}: the metadata does not match the model: {what}. The metadata was edited or "
            "belongs to another model; convert the model again."
        )

    if "image" not in meta.inputs:
        refuse(f"it names no 'image' input (inputs {dict(meta.inputs)})")
    if set(meta.inputs.values()) != set(backend.inputs):
        refuse(f"metadata inputs {sorted(meta.inputs.values())}, model inputs {sorted(backend.inputs)}")
    if (meta.cam_output == "selected") != ("class_index" in meta.inputs):
        refuse(f"cam_output {meta.cam_output!r} with inputs {sorted(meta.inputs)} (a 'class_index' input "
               "goes with cam_output 'selected' only)")
    missing = {role: name for role, name in meta.outputs.items() if name not in backend.outputs}
    if missing:
        refuse(f"outputs {missing} are not among the model's outputs {sorted(backend.outputs)}")
    cam_role = "cams" if meta.cam_output == "all" else "cam"
    for role in ("probabilities", cam_role):
        if role not in meta.outputs:
            refuse(f"cam_output {meta.cam_output!r} needs output role {role!r}; roles are {sorted(meta.outputs)}")
    pre, (h, w, c), k = meta.preprocessing, meta.feature_map_shape, meta.num_classes
    image: TensorInfo = backend.inputs[meta.inputs["image"]]
    if _dims_differ(image.shape[1:], (pre.height, pre.width, pre.channels)) or len(image.shape) != 4:
        refuse(f"preprocessing says {pre.height}x{pre.width}x{pre.channels} ({pre.color}), the model's "
               f"input {image.name!r} is {list(image.shape)}")
    expected = {"probabilities": (k,), "logits": (k,), "feature_maps": (h, w, c),
                "cams": (h, w, k), "cam": (h, w)}
    for role, shape in expected.items():
        if role in meta.outputs:
            info = backend.outputs[meta.outputs[role]]
            if _dims_differ(info.shape[1:], shape):
                refuse(f"output {role!r} should be (batch, {', '.join(map(str, shape))}) for {k} classes and "
                       f"feature maps {h}x{w}x{c}, the model's is {list(info.shape)}")


@dataclass(frozen=True)
class Explanation:
    """One image's prediction and class activation map.

    Attributes:
        probabilities: ``(K,)`` float32 class probabilities.
        class_index: the class explained by ``cam`` (the prediction unless one was asked for).
        predicted_index: argmax of ``probabilities``.
        label: name of ``class_index``.
        cam: ``(h, w)`` float32 at feature-map resolution for ``class_index``; ReLU applied, not
            normalised.
        latency_ms: wall time of the interpreter call (shared by a batch).
        approximate: True when the model's CAM head is approximate (``--approximate``).
    """

    probabilities: np.ndarray
    class_index: int
    predicted_index: int
    label: str
    cam: np.ndarray
    latency_ms: float = 0.0
    approximate: bool = False
    classes: Tuple[str, ...] = field(default=(), repr=False)

    @property
    def confidence(self) -> float:
        """Probability of ``class_index``."""
        return float(self.probabilities[self.class_index])

    def heatmap(self, size=None) -> np.ndarray:
        """``cam`` normalised to [0, 1] and resized to ``size`` ``(height, width)`` (or kept)."""
        return _cam.heatmap(self.cam, size)

    def overlay(self, image: np.ndarray, alpha: float = 0.45) -> np.ndarray:
        """RGB uint8 ``image`` (any size) with the heatmap blended over it."""
        img = check_image(image)
        return _cam.overlay(img, self.heatmap(img.shape[:2]), alpha=alpha)

    def peak(self) -> Tuple[int, int]:
        """``(row, col)`` of the CAM maximum in feature-map cells."""
        return _cam.peak(self.cam)


class ExplainableModel:
    """A converted edgecam model (.tflite or .onnx) that explains every prediction.

    Args:
        path: the ``.tflite`` or ``.onnx`` written by ``edgecam convert`` (or its bytes); the
            backend (LiteRT or ONNX Runtime) is chosen from the file, which is read once.
        num_threads: interpreter threads (``None``: the interpreter's default).
        providers: ONNX Runtime execution providers to try, in order (default TensorRT → CUDA
            → CPU, those available); ignored for LiteRT. ``model.backend.provider`` is the one
            in use.

    Raises:
        ModelFileError: missing, corrupt or unloadable file.
        MetadataError: no (valid) edgecam metadata in the file, or metadata that disagrees with
            the model (see :func:`open_model`).
        MissingDependencyError: a .onnx without onnxruntime (``pip install 'edgecam[onnx]'``).

    Example:
        >>> model = ExplainableModel("fog.tflite")
        >>> exp = model.explain(rgb_uint8)
        >>> exp.label, exp.confidence, exp.heatmap((224, 224)).shape
    """

    def __init__(self, path: ModelSource, num_threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None) -> None:
        file = read_model_file(path)
        self.path = file.path or Path("<in-memory model>")
        self.sha256 = hashlib.sha256(file.data).hexdigest()  # which model a run log came from
        self.backend, self.metadata = open_model(file, num_threads=num_threads, providers=providers)
        meta = self.metadata
        if meta.low_fidelity:
            log.warning("%s was written with --allow-low-fidelity: %s. Its maps may not match full Grad-CAM; "
                        "validate it (edgecam validate) before trusting them.", self.path.name, low_fidelity_reason(meta))
        self._image_name = meta.inputs["image"]
        self._class_name = meta.inputs.get("class_index")
        self._out = dict(meta.outputs)
        self._image_info = self.backend.inputs[self._image_name]
        cam_role = "cams" if "cams" in self._out else "cam"
        self._recombine = (
            meta.class_weights is not None
            and meta.cam_output in ("all", "predicted")
            and "feature_maps" in self._out
            and cam_role in self._out
            and self.backend.outputs[self._out[cam_role]].quantization is not None
        )

    # -- properties --------------------------------------------------------------------
    @property
    def classes(self) -> Tuple[str, ...]:
        return self.metadata.classes

    @property
    def input_size(self) -> Tuple[int, int]:
        """``(height, width)`` the model takes."""
        return self.metadata.preprocessing.height, self.metadata.preprocessing.width

    @property
    def feature_map_size(self) -> Tuple[int, int]:
        return tuple(self.metadata.feature_map_shape[:2])  # type: ignore[return-value]

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"ExplainableModel('{self.path}', classes={len(m.classes)}, mode={m.cam_mode}/"
            f"{m.cam_output}, quantization={m.quantization}, backend={self.backend.describe()})"
        )

    # -- inference ---------------------------------------------------------------------
    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Checked uint8 images → the input tensor ``(N, H, W, C)`` in the model's dtype."""
        pre = self.metadata.preprocessing
        if len(images) == 1:  # the per-frame case: no stack copy
            batch = preprocess(check_image(images[0], "image"), pre)[None]
        else:
            batch = np.stack([preprocess(check_image(img, f"image {i}"), pre) for i, img in enumerate(images)])
        return quantize_input(batch, self._image_info)

    def input_feed(self, x: np.ndarray, selected: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """The interpreter's inputs by tensor name for a preprocessed batch ``x``.

        ``selected`` holds one class index per image; ``None`` explains each image's predicted
        class (``-1`` in the graph's ``class_index`` input, where it has one).
        """
        feed = {self._image_name: x}
        if self._class_name is not None:
            n = len(x)
            feed[self._class_name] = np.full((n,), -1, np.int32) if selected is None else selected.astype(np.int32)
        return feed

    def _class_indices(self, class_index, n: int) -> Optional[np.ndarray]:
        if class_index is None:
            return None
        idx = np.atleast_1d(np.asarray(class_index))
        if idx.dtype.kind not in "iu":
            raise InputError(f"class_index must be an int or ints. Got {class_index!r}.")
        if idx.size == 1 and n > 1:
            idx = np.repeat(idx, n)
        if idx.size != n:
            raise InputError(f"class_index has {idx.size} entries for {n} images.")
        k = self.metadata.num_classes
        bad = idx[(idx < 0) | (idx >= k)]
        if bad.size:
            raise InputError(
                f"class_index {int(bad[0])} is out of range: the model has {k} classes "
                f"({', '.join(self.classes[:8])}{'…' if k > 8 else ''})."
            )
        return idx.astype(np.int64)

    def run(self, images: Sequence[np.ndarray], class_index=None, outputs: Optional[Sequence[str]] = None) -> dict:
        """Invoke once on a batch; return dequantized outputs by role plus ``latency_ms``.

        Args:
            images: uint8 images.
            class_index: ``None`` or one int / one int per image.
            outputs: roles to dequantize (default: all); the others are returned raw under
                ``"raw"`` so they can be dequantized later with :meth:`dequantize`.
        """
        x = self.preprocess(images)
        n = len(x)
        selected = self._class_indices(class_index, n)
        feed = self.input_feed(x, selected)
        start = time.perf_counter()
        raw = self.backend.run(feed)
        latency = (time.perf_counter() - start) * 1000.0
        wanted = self._out if outputs is None else {r: self._out[r] for r in outputs if r in self._out}
        result = {role: self.dequantize(role, raw[name]) for role, name in wanted.items()}
        result["raw"] = raw
        result["latency_ms"] = latency
        result["selected"] = selected
        return result

    def dequantize(self, role: str, value: np.ndarray) -> np.ndarray:
        """Real values of output ``role`` (int8 outputs: ``(q - zero_point) · scale``)."""
        return dequantize_output(value, self.backend.outputs[self._out[role]])

    def explain_batch(self, images: Sequence[np.ndarray], class_index=None) -> List[Explanation]:
        """Explain a batch of uint8 images (each gray ``H×W`` or RGB ``H×W×3``, any size).

        Args:
            images: a sequence of images or an ``(N, H, W[, 3])`` uint8 array.
            class_index: ``None`` (explain the prediction), an int, or one int per image.
        """
        if isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.dtype == np.uint8:
            if images.ndim == 3 and self.metadata.preprocessing.color != "gray" and images.shape[-1] == 3:
                raise InputError(
                    f"explain_batch got one (H, W, 3) image of shape {images.shape}; pass a list "
                    "or a (N, H, W, 3) array, or call explain()."
                )
            images = list(images)
        if len(images) == 0:
            raise InputError("explain_batch got an empty batch.")
        meta = self.metadata
        cam_role = "cams" if meta.cam_output == "all" else "cam"
        out = self.run(images, class_index, outputs=("probabilities", "feature_maps" if self._recombine else cam_role))
        probs = out["probabilities"]
        predicted = np.argmax(probs, axis=-1)
        chosen = predicted if out["selected"] is None else out["selected"]
        cams = self._cams(out, predicted, chosen)
        self._check_finite(probs, cams)
        return [
            Explanation(
                probabilities=probs[i],
                class_index=int(chosen[i]),
                predicted_index=int(predicted[i]),
                label=meta.classes[int(chosen[i])],
                cam=cams[i],
                latency_ms=out["latency_ms"],
                approximate=meta.approximate,
                classes=meta.classes,
            )
            for i in range(len(probs))
        ]

    def explain(self, image: np.ndarray, class_index: Optional[int] = None) -> Explanation:
        """Explain one uint8 image: gray ``H×W`` or RGB ``H×W×3`` of any size.

        Args:
            image: the image (OpenCV frames are BGR: convert them with ``frame[..., ::-1]``).
            class_index: class to explain; ``None`` explains the predicted class.

        Returns:
            An :class:`Explanation`.
        """
        return self.explain_batch([image], class_index)[0]  # checked once, in preprocess()

    def _check_finite(self, probs: np.ndarray, cams: np.ndarray) -> None:
        """A NaN/inf output is never returned as a result: it would be silent garbage."""
        bad = ~np.isfinite(probs).all(axis=-1) | ~np.isfinite(cams).all(axis=(1, 2))
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            what = "probabilities" if not np.isfinite(probs[i]).all() else "cam"
            raise ConversionError(
                f"'{self.path}' produced non-finite {what} (NaN/inf) for image {i} of the batch: "
                "the model's weights hold NaN/inf or it overflows. Check the Keras model and "
                "convert it again (edgecam convert refuses models with non-finite outputs)."
            )

    def _cams(self, out: dict, predicted: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """Raw maps of the chosen classes → ReLU'd ``(N, h, w)`` float32."""
        meta = self.metadata
        if self._recombine:
            # Quantized model: the int8 CAM output shares one scale across classes and carries the
            # map's offset, leaving few levels for its spatial variation. The dequantized feature
            # maps times the float class weights stored in the metadata keep that precision
            # (MobileNetV2-64, int8: median Pearson to float Grad-CAM 0.68 → 0.93). Same maths
            # as the graph's head: cam_c = Σ_k w_kc · A^k.
            fmaps = out["feature_maps"]
            raw = np.stack([_cam.combine(fmaps[i], meta.class_weights[..., int(c)]) for i, c in enumerate(chosen)])
        elif meta.cam_output == "all":
            cams = out["cams"]  # (N, h, w, K)
            raw = cams[np.arange(len(chosen)), :, :, chosen]
        elif meta.cam_output == "selected":
            raw = out["cam"]
        else:  # "predicted": the graph's map is right unless another class was asked for
            raw = np.array(out["cam"], dtype=np.float32, copy=True)
            other = np.nonzero(chosen != predicted)[0]
            if other.size:
                if meta.class_weights is None:
                    raise MetadataError(
                        f"'{self.path}' stores no class weights, so only the predicted class can "
                        "be explained. Convert again with this edgecam version."
                    )
                fmaps = self.dequantize("feature_maps", out["raw"][self._out["feature_maps"]])
                for i in other:
                    raw[i] = _cam.combine(fmaps[i], meta.class_weights[..., int(chosen[i])])
        return _cam.relu(raw)


def low_fidelity_reason(meta: EdgecamMetadata) -> str:
    """What the low-fidelity model missed, from its self-check (``edgecam run``/``doctor`` warnings)."""
    check = meta.self_check or {}
    parts = []
    for value, bound, what in (("pearson_p05", "threshold_p05", "Pearson p05"),
                               ("pearson_median", "threshold_pearson", "Pearson median"),
                               ("top1_agreement", "threshold_top1", "top-1 agreement")):
        v, b = check.get(value), check.get(bound)
        if isinstance(v, (int, float)) and isinstance(b, (int, float)) and v < b:
            parts.append(f"{what} {v:.3f} < {b}")
    plan = (meta.precision or {}).get("plan", meta.quantization)
    return f"its {plan} maps missed the conversion bounds ({'; '.join(parts) or 'see edgecam inspect'})"
