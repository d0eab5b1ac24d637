"""The edgecam metadata schema: what travels inside a converted model, parsed and checked.

The metadata travels inside the model file as two named entries (the containers, and how each
stores them, are in :mod:`firmware_host.formats`):

* ``edgecam`` — UTF-8 JSON: ``{"edgecam": {...fields...}, "sha256": <sha256 of the canonical
  JSON of the fields>}``;
* ``edgecam.weights`` — the class-weight array as raw little-endian float32, when the CAM mode
  uses one; its shape and sha256 are recorded in the JSON.

The checksum only proves the metadata was not damaged by accident (an attacker recomputes it),
so :meth:`EdgecamMetadata.from_buffers` also refuses, with one :class:`MetadataError` line each:
JSON over :data:`MAX_JSON_BYTES`, text that is not UTF-8, nesting deeper than
:data:`MAX_JSON_DEPTH`, non-finite numbers (``1e400``, ``NaN``), integers of more than
:data:`MAX_INT_DIGITS` digits, and any field of the wrong type or out of range. What the
metadata says about the model's tensors is checked against the model itself when it is opened
(:func:`firmware_host.model.open_model`).

The schema is documented field by field in ``docs/metadata.md``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from .errors import MetadataError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_NAME",
    "WEIGHTS_NAME",
    "Preprocessing",
    "EdgecamMetadata",
    "check_fields",
    "is_edgecam_entry",
    "collect_entry",
    "parse_json",
]

FORMAT_VERSION = "1.0"
METADATA_NAME = "edgecam"
WEIGHTS_NAME = "edgecam.weights"

MAX_JSON_BYTES = 4 << 20
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 20
MAX_CLASSES = 100_000
MAX_SIDE = 65_535
_MAX_TEXT = 4096

CAM_MODES = ("linear", "flatten", "gradient", "approximate")
CAM_OUTPUTS = ("all", "predicted", "selected")
COLORS = ("rgb", "bgr", "gray")


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 image becomes the model's input tensor.

    ``x = resize(image, (height, width)) * scale + offset`` per channel, in the channel order
    ``color``. ``scale``/``offset`` hold one value (all channels) or one per channel.
    """

    height: int
    width: int
    color: str = "rgb"
    scale: Tuple[float, ...] = (1.0 / 255.0,)
    offset: Tuple[float, ...] = (0.0,)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise MetadataError(f"Preprocessing color must be one of {COLORS}. Got: {self.color!r}")
        channels = 1 if self.color == "gray" else 3
        for name in ("scale", "offset"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) not in (1, channels):
                raise MetadataError(
                    f"Preprocessing {name} needs 1 or {channels} values for color "
                    f"{self.color!r}. Got: {value}"
                )
            if not all(np.isfinite(value)) or (name == "scale" and 0.0 in value):
                raise MetadataError(
                    f"Preprocessing {name} must be finite{' and non-zero' if name == 'scale' else ''}. "
                    f"Got: {value}. Check --input-scale/--input-offset (or --std, which must not be 0)."
                )
            object.__setattr__(self, name, value)
        if int(self.height) < 1 or int(self.width) < 1:
            raise MetadataError(
                f"Preprocessing size must be positive. Got: {self.height}x{self.width}."
            )

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @classmethod
    def from_mean_std(cls, height: int, width: int, mean, std, color: str = "rgb") -> "Preprocessing":
        """``x = (pixel - mean) / std`` expressed as scale/offset."""
        mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if not np.all(np.isfinite(std)) or np.any(std == 0):
            raise MetadataError(f"Preprocessing std must be finite and non-zero. Got: {tuple(std)}.")
        return cls(height, width, color, tuple(1.0 / std), tuple(-mean / std))


@dataclass(frozen=True)
class EdgecamMetadata:
    """Everything the device needs to preprocess, run and explain an exported model.

    Attributes:
        classes: class names, one per output class (a sigmoid binary head has two).
        preprocessing: see :class:`Preprocessing`.
        target_layer: the explanation layer (``outer/inner`` for nested models).
        feature_map_shape: ``(h, w, channels)`` of the explanation layer.
        cam_mode: ``linear`` (GAP→affine head), ``flatten`` (Flatten→affine head),
            ``gradient`` (exact in-graph gradient of a non-linear head) or ``approximate``.
        cam_method: ``gradcam`` or ``hirescam`` (flatten heads).
        cam_output: ``all`` (output ``cams`` holds every class's map), ``predicted``
            (output ``cam`` is the predicted class's map) or ``selected`` (output ``cam`` is the
            map of the class given in input ``class_index``; -1 selects the prediction).
        activation: final activation split off the head: ``softmax``, ``sigmoid`` or ``linear``.
        inputs / outputs: role → signature tensor name.
        quantization: ``none``, ``float16``, ``dynamic`` or ``int8``.
        class_weights: Grad-CAM channel weights ``(channels, classes)`` for linear and
            approximate modes, ``(h, w, channels, classes)`` for HiResCAM on flatten heads; the map
            of class c is ``sum_k w[k, c] * A[..., k]`` (elementwise for HiResCAM).
        source: ``{"name", "sha256"}`` of the converted Keras model.
        converter: versions of edgecam, TensorFlow and Keras used.
        self_check: agreement measured at conversion time, or ``None``.
        precision: the precision plan (``converters.quant``): ``{"plan", "targets", "tried":
            [{plan, pearson_median, pearson_p05, pearson_min, top1, latency_ratio, passed,
            ...}], "low_fidelity"}``, or ``None`` for files written before plans existed.
    """

    classes: Tuple[str, ...]
    preprocessing: Preprocessing
    target_layer: str
    feature_map_shape: Tuple[int, int, int]
    cam_mode: str
    cam_method: str = "gradcam"
    cam_output: str = "predicted"
    activation: str = "softmax"
    inputs: Mapping[str, str] = field(default_factory=lambda: {"image": "image"})
    outputs: Mapping[str, str] = field(default_factory=dict)
    quantization: str = "none"
    class_weights: Optional[np.ndarray] = field(default=None, compare=False)
    source: Mapping[str, Any] = field(default_factory=dict)
    converter: Mapping[str, Any] = field(default_factory=dict)
    self_check: Optional[Mapping[str, Any]] = None
    precision: Optional[Mapping[str, Any]] = None
    format_version: str = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "feature_map_shape", tuple(int(v) for v in self.feature_map_shape))
        if self.cam_mode not in CAM_MODES:
            raise MetadataError(f"cam_mode must be one of {CAM_MODES}. Got: {self.cam_mode!r}")
        if self.cam_output not in CAM_OUTPUTS:
            raise MetadataError(f"cam_output must be one of {CAM_OUTPUTS}. Got: {self.cam_output!r}")
        if self.class_weights is not None:
            weights = np.ascontiguousarray(self.class_weights, dtype=np.float32)
            weights.setflags(write=False)
            object.__setattr__(self, "class_weights", weights)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def approximate(self) -> bool:
        return self.cam_mode == "approximate"

    @property
    def low_fidelity(self) -> bool:
        """Written with ``--allow-low-fidelity`` although its self-check missed the bounds."""
        return bool(self.precision and self.precision.get("low_fidelity"))

    # -- serialisation -------------------------------------------------------------------
    def to_json_dict(self) -> Dict[str, Any]:
        """The JSON fields (without the weight array, which travels as its own buffer)."""
        out = {
            "format_version": self.format_version,
            "classes": list(self.classes),
            "preprocessing": dataclasses.asdict(self.preprocessing),
            "target_layer": self.target_layer,
            "feature_map_shape": list(self.feature_map_shape),
            "cam_mode": self.cam_mode,
            "cam_method": self.cam_method,
            "cam_output": self.cam_output,
            "activation": self.activation,
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "quantization": self.quantization,
            "source": dict(self.source),
            "converter": dict(self.converter),
            "self_check": None if self.self_check is None else dict(self.self_check),
            "class_weights": None,
        }
        if self.precision is not None:  # absent in files written before precision plans
            out["precision"] = dict(self.precision)
        out["preprocessing"]["scale"] = list(self.preprocessing.scale)
        out["preprocessing"]["offset"] = list(self.preprocessing.offset)
        if self.class_weights is not None:
            out["class_weights"] = {
                "buffer": WEIGHTS_NAME,
                "dtype": "float32",
                "shape": list(self.class_weights.shape),
                "sha256": hashlib.sha256(self.class_weights.astype("<f4").tobytes()).hexdigest(),
            }
        return out

    def to_buffers(self) -> Dict[str, bytes]:
        """Named metadata buffers to embed: ``edgecam`` (JSON) and maybe ``edgecam.weights``."""
        fields = self.to_json_dict()
        canonical = _canonical(fields)
        payload = {"edgecam": fields, "sha256": hashlib.sha256(canonical).hexdigest()}
        buffers = {METADATA_NAME: json.dumps(payload, indent=1, sort_keys=True).encode("utf-8")}
        if self.class_weights is not None:
            buffers[WEIGHTS_NAME] = self.class_weights.astype("<f4").tobytes()
        return buffers

    def to_props(self) -> Dict[str, str]:
        """The buffers as ONNX ``metadata_props`` strings: JSON as is, binary blobs in base64."""
        return {
            name: blob.decode("utf-8") if name == METADATA_NAME else base64.b64encode(blob).decode("ascii")
            for name, blob in self.to_buffers().items()
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str = "the model") -> "EdgecamMetadata":
        """Parse and verify ONNX ``metadata_props`` written by :meth:`to_props`.

        Raises:
            MetadataError: as :meth:`from_buffers`, or a weight entry that is not base64.
        """
        buffers: Dict[str, bytes] = {}
        for name, value in props.items():
            if name == METADATA_NAME:
                buffers[name] = value.encode("utf-8")
            elif name == WEIGHTS_NAME:
                try:
                    buffers[name] = base64.b64decode(value.encode("ascii"), validate=True)
                except (binascii.Error, UnicodeEncodeError) as exc:
                    raise MetadataError(
                        f"{where}: the metadata entry {name!r} is not valid base64 ({exc}). The "
                        "file is corrupt; convert the model again."
                    ) from exc
            else:
                buffers[name] = b""  # other producers' entries: listed in errors, never parsed
        return cls.from_buffers(buffers, where=where)

    @classmethod
    def from_buffers(cls, buffers: Mapping[str, bytes], where: str = "the model") -> "EdgecamMetadata":
        """Parse and verify the buffers written by :meth:`to_buffers`.

        Raises:
            MetadataError: absent, not JSON, checksum mismatch, newer major version, bad fields.
        """
        if METADATA_NAME not in buffers:
            found = ", ".join(sorted(buffers)) or "none"
            raise MetadataError(
                f"{where} has no edgecam metadata (metadata buffers found: {found}). "
                "Convert the Keras model with `edgecam convert` to get an explainable .tflite/.onnx."
            )
        fields = _verified_fields(buffers[METADATA_NAME], where)
        check_fields(fields, where)
        try:
            weights = _class_weights(fields.get("class_weights"), buffers, where)
            pre = dict(fields["preprocessing"])
            pre["scale"] = tuple(pre["scale"])
            pre["offset"] = tuple(pre["offset"])
            return cls(
                classes=tuple(fields["classes"]),
                preprocessing=Preprocessing(**pre),
                target_layer=str(fields["target_layer"]),
                feature_map_shape=tuple(fields["feature_map_shape"]),
                cam_mode=str(fields["cam_mode"]),
                cam_method=str(fields.get("cam_method", "gradcam")),
                cam_output=str(fields.get("cam_output", "predicted")),
                activation=str(fields.get("activation", "softmax")),
                inputs=dict(fields.get("inputs", {"image": "image"})),
                outputs=dict(fields.get("outputs", {})),
                quantization=str(fields.get("quantization", "none")),
                class_weights=weights,
                source=dict(fields.get("source") or {}),
                converter=dict(fields.get("converter") or {}),
                self_check=fields.get("self_check"),
                precision=fields.get("precision"),
                format_version=fields["format_version"],
            )
        except MetadataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MetadataError(
                f"{where}: the edgecam metadata has a missing or malformed field ({exc!r}). "
                "Convert the model again with this edgecam version."
            ) from exc


def _canonical(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _verified_fields(raw: bytes, where: str) -> Dict[str, Any]:
    """The ``edgecam`` fields of the JSON entry, after the checksum and version checks."""
    payload = parse_json(raw, where)
    if not isinstance(payload, dict) or not isinstance(payload.get("edgecam"), dict):
        raise MetadataError(
            f"{where}: the edgecam metadata has no 'edgecam' object. The file is corrupt; "
            "convert the model again."
        )
    fields = payload["edgecam"]
    digest = hashlib.sha256(_canonical(fields)).hexdigest()
    if payload.get("sha256") != digest:
        raise MetadataError(
            f"{where}: the edgecam metadata checksum does not match (stored "
            f"{str(payload.get('sha256'))[:12]}…, computed {digest[:12]}…). The metadata was "
            "edited or damaged; convert the model again."
        )
    version = fields.get("format_version", "")
    if not isinstance(version, str) or len(version) > 32:
        _bad(where, "format_version", "a version string such as '1.0'", version)
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise MetadataError(
            f"{where}: edgecam metadata format {version!r} is not supported by this edgecam "
            f"(reads {FORMAT_VERSION.split('.')[0]}.x). Upgrade edgecam on this device "
            "(pip install -U edgecam) or convert with a matching edgecam."
        )
    return fields


def _class_weights(spec: Optional[Mapping[str, Any]], buffers: Mapping[str, bytes], where: str) -> Optional[np.ndarray]:
    """The class-weight array named by ``spec`` (already type-checked), verified, or ``None``."""
    if spec is None:
        return None
    raw = buffers.get(spec["buffer"])
    if raw is None:
        raise MetadataError(
            f"{where}: metadata names class-weight buffer {spec['buffer']!r}, which is missing. "
            "Convert the model again."
        )
    if hashlib.sha256(bytes(raw)).hexdigest() != spec["sha256"]:
        raise MetadataError(
            f"{where}: the class-weight buffer fails its sha256 check. The file is corrupt; convert "
            "the model again."
        )
    shape = tuple(int(v) for v in spec["shape"])
    if 4 * math.prod(shape) != len(raw):
        raise MetadataError(
            f"{where}: the class-weight buffer holds {len(raw)} bytes, not the {4 * math.prod(shape)} "
            f"of float32 shape {shape}. Convert the model again."
        )
    return np.frombuffer(raw, dtype="<f4").reshape(shape)



# -- hostile JSON ------------------------------------------------------------------------------
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_depth(raw: bytes) -> int:
    """The deepest ``[``/``{`` nesting of JSON text (strings removed first), without recursing."""
    skeleton = np.frombuffer(_STRINGS.sub(b'""', raw), dtype=np.uint8)
    opens = (skeleton == ord("[")) | (skeleton == ord("{"))
    closes = (skeleton == ord("]")) | (skeleton == ord("}"))
    step = opens.astype(np.int64) - closes.astype(np.int64)
    return int(np.cumsum(step).max()) if step.size else 0


def _refuse_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is not finite in float64")
    return value


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def parse_json(raw, where: str = "the model") -> Any:
    """Parse metadata JSON that may be hostile: bounded size and depth, finite numbers only.

    Raises:
        MetadataError: over :data:`MAX_JSON_BYTES`, not UTF-8, deeper than
            :data:`MAX_JSON_DEPTH`, not JSON, a non-finite number (``1e400``, ``NaN``) or an
            integer of more than :data:`MAX_INT_DIGITS` digits. One line, never a
            RecursionError/OverflowError/UnicodeDecodeError.
    """
    raw = bytes(raw)
    fix = "The file is corrupt or was edited; convert the model again."
    if len(raw) > MAX_JSON_BYTES:
        raise MetadataError(
            f"{where}: the edgecam metadata is {len(raw):,} bytes, over the {MAX_JSON_BYTES:,} a model's "
            f"metadata can need. {fix}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{where}: the edgecam metadata is not UTF-8 text ({exc.reason} at byte {exc.start}). {fix}") from None
    depth = _json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise MetadataError(
            f"{where}: the edgecam metadata nests {depth} levels deep (at most {MAX_JSON_DEPTH}). {fix}"
        )
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_small_int)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise MetadataError(f"{where}: the edgecam metadata is not valid JSON ({str(exc)[:200]}). {fix}") from None


# -- field types -------------------------------------------------------------------------------
def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _bad(where: str, name: str, expected: str, value: Any):
    raise MetadataError(
        f"{where}: metadata field {name!r} must be {expected}; found {_show(value)}. The file is "
        "corrupt or was edited; convert the model again."
    )


def _is_int(value: Any, lo: int = 1, hi: int = MAX_SIDE) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_text(value: Any, limit: int = _MAX_TEXT) -> bool:
    return isinstance(value, str) and len(value) <= limit


def _check_optional(fields: Mapping[str, Any], where: str) -> None:
    for name in ("cam_method", "cam_output", "activation", "quantization", "target_layer"):
        if name in fields and not _is_text(fields[name]):
            _bad(where, name, "a string", fields[name])
    for name in ("inputs", "outputs"):
        value = fields.get(name, {})
        if not (isinstance(value, dict) and len(value) <= 32
                and all(_is_text(k, 256) and _is_text(v, 256) for k, v in value.items())):
            _bad(where, name, "an object of role → tensor name strings", value)
    for name in ("source", "converter", "precision"):
        if fields.get(name) is not None and not isinstance(fields[name], dict):
            _bad(where, name, "an object or null", fields[name])
    check = fields.get("self_check")
    if check is not None:
        if not (isinstance(check, dict)
                and all(_is_number(check.get(k)) for k in ("top1_agreement", "pearson_median"))
                and isinstance(check.get("passed"), bool)
                and all(_flat_or_numbers(k, v) for k, v in check.items())):
            _bad(where, "self_check", "null or an object with numbers top1_agreement, pearson_median and a "
                 "boolean passed (flat: numbers, strings, booleans; p05_by_class: class → number)", check)


def _flat_or_numbers(key: str, value: Any) -> bool:
    """A self-check entry: a scalar, or (``p05_by_class``) an object of class name → number."""
    if key == "p05_by_class":
        return isinstance(value, dict) and len(value) <= 100_000 and all(
            _is_text(k, 256) and _is_number(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, str)) or _is_number(value)


def _check_weights(fields: Mapping[str, Any], where: str) -> None:
    spec = fields.get("class_weights")
    if spec is None:
        return
    ok = (isinstance(spec, dict) and _is_text(spec.get("buffer"), 256) and spec.get("dtype") == "float32"
          and _is_text(spec.get("sha256"), 128) and isinstance(spec.get("shape"), list)
          and len(spec["shape"]) in (2, 4) and all(_is_int(v) for v in spec["shape"]))
    if not ok:
        _bad(where, "class_weights", "null or {buffer, dtype: 'float32', shape: [C, K] or [h, w, C, K], sha256}", spec)
    shape, fmap, k = tuple(spec["shape"]), tuple(fields["feature_map_shape"]), len(fields["classes"])
    expected = (fmap[2], k) if len(shape) == 2 else fmap + (k,)
    if shape != expected:
        _bad(where, "class_weights.shape", f"{list(expected)} (feature map {list(fmap)}, {k} classes)", list(shape))


def check_fields(fields: Mapping[str, Any], where: str = "the model") -> None:
    """Check every field's type and range (after the checksum); the first problem raises.

    Raises:
        MetadataError: naming the field, what it must be and what was found.
    """
    classes = fields.get("classes")
    if not (isinstance(classes, list) and 1 <= len(classes) <= MAX_CLASSES
            and all(_is_text(c, 1000) for c in classes)):
        _bad(where, "classes", f"a list of 1 to {MAX_CLASSES:,} class-name strings", classes)
    pre = fields.get("preprocessing")
    if not isinstance(pre, dict):
        _bad(where, "preprocessing", "an object", pre)
    for name in ("height", "width"):
        if not _is_int(pre.get(name)):
            _bad(where, f"preprocessing.{name}", f"a whole number of pixels from 1 to {MAX_SIDE}", pre.get(name))
    for name in ("color", "interpolation"):
        if name in pre and not _is_text(pre[name], 32):
            _bad(where, f"preprocessing.{name}", "a string", pre[name])
    for name in ("scale", "offset"):
        value = pre.get(name)
        if not (isinstance(value, list) and 1 <= len(value) <= 4 and all(_is_number(v) for v in value)):
            _bad(where, f"preprocessing.{name}", "a list of 1 to 4 finite numbers", value)
    if not _is_text(fields.get("target_layer")):
        _bad(where, "target_layer", "a layer-name string", fields.get("target_layer"))
    shape = fields.get("feature_map_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)):
        _bad(where, "feature_map_shape", f"[h, w, channels], whole numbers from 1 to {MAX_SIDE}", shape)
    if not _is_text(fields.get("cam_mode"), 32):
        _bad(where, "cam_mode", "a string", fields.get("cam_mode"))
    _check_optional(fields, where)
    _check_weights(fields, where)


def is_edgecam_entry(name) -> bool:
    """True for the names of edgecam's own metadata entries (``edgecam``, ``edgecam.weights``)."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    return name in (METADATA_NAME, WEIGHTS_NAME)


def collect_entry(entries: Dict[str, bytes], name: str, value: Callable[[], bytes], where: str,
                  kind: str = "metadata") -> None:
    """Add one metadata entry a container read to ``entries`` (the rule every container follows).

    Another producer's entry is recorded by name only (named in messages, its bytes never
    copied); an edgecam entry is copied through ``value()`` and may appear once.

    Raises:
        MetadataError: ``name`` is an edgecam entry already in ``entries``.
    """
    if not is_edgecam_entry(name):
        entries.setdefault(name, b"")
        return
    if name in entries:
        raise MetadataError(
            f"{where} has two {name!r} {kind} entries. The file was edited; convert the model again."
        )
    entries[name] = value()


# -- the readers and writers live with their container (firmware_host/formats/) ---------------
# These names stay importable from here for existing code (converters, tests). They resolve
# on first use, so this schema module imports no container module: formats → metadata only.
_MOVED = {
    "read_metadata": ("formats", "read_metadata"),
    "read_tflite_metadata": ("formats", "read_tflite_metadata"),
    "read_tflite_buffers": ("formats", "read_tflite_buffers"),
    "read_onnx_metadata": ("formats", "read_onnx_metadata"),
    "embed_tflite_metadata": ("formats.tflite", "embed_metadata"),
    "embed_onnx_metadata": ("formats.onnx", "embed_metadata"),
    "_FlatbufferReader": ("formats.tflite", "FlatbufferReader"),
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        module, attr = _MOVED[name]
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
