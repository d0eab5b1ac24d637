"""The edgecam metadata schema, and its reader/writer inside LiteRT (.tflite) and ONNX models.

The metadata travels inside the model file, in the flatbuffer's ``metadata`` vector (the same
place the TFLite Support library puts its own), as two named buffers:

* ``edgecam`` — UTF-8 JSON: ``{"edgecam": {...fields...}, "sha256": <sha256 of the canonical
  JSON of the fields>}``;
* ``edgecam.weights`` — the class-weight array as raw little-endian float32, when the CAM mode
  uses one; its shape and sha256 are recorded in the JSON.

Reading needs no TensorFlow and no flatbuffers package: :func:`read_tflite_metadata` walks the
few flatbuffer tables it needs with ``struct``, bounds-checking every offset, so a corrupt file
raises :class:`~firmware_host.errors.ModelFileError` / :class:`MetadataError`, never garbage.
Writing (host side) uses the schema classes shipped with ``ai-edge-litert``.

In an ONNX model the same two entries are ``metadata_props`` (string key → string value):
``edgecam`` holds the same JSON text, ``edgecam.weights`` the same bytes in base64 (RFC 4648).
They are read through onnxruntime (``InferenceSession.get_modelmeta().custom_metadata_map``),
so the device needs no ``onnx`` package; the checksums and version checks are the same.
:func:`read_metadata` picks the container from the file.

The schema is documented field by field in ``docs/metadata.md``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from .errors import MetadataError, MissingDependencyError, ModelFileError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_NAME",
    "WEIGHTS_NAME",
    "Preprocessing",
    "EdgecamMetadata",
    "read_metadata",
    "read_tflite_metadata",
    "embed_tflite_metadata",
    "read_tflite_buffers",
    "read_onnx_metadata",
    "embed_onnx_metadata",
]

FORMAT_VERSION = "1.0"
METADATA_NAME = "edgecam"
WEIGHTS_NAME = "edgecam.weights"

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
        try:
            payload = json.loads(bytes(buffers[METADATA_NAME]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MetadataError(
                f"{where}: the edgecam metadata is not valid UTF-8 JSON ({exc}). "
                "The file is corrupt; convert the model again."
            ) from exc
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
        version = str(fields.get("format_version", ""))
        major = version.split(".")[0]
        if major != FORMAT_VERSION.split(".")[0]:
            raise MetadataError(
                f"{where}: edgecam metadata format {version!r} is not supported by this edgecam "
                f"(reads {FORMAT_VERSION.split('.')[0]}.x). Upgrade edgecam on this device "
                "(pip install -U edgecam) or convert with a matching edgecam."
            )
        try:
            weights = None
            spec = fields.get("class_weights")
            if spec is not None:
                raw = buffers.get(spec["buffer"])
                if raw is None:
                    raise MetadataError(
                        f"{where}: metadata names class-weight buffer {spec['buffer']!r}, which "
                        "is missing. Convert the model again."
                    )
                if hashlib.sha256(bytes(raw)).hexdigest() != spec["sha256"]:
                    raise MetadataError(
                        f"{where}: the class-weight buffer fails its sha256 check. The file is "
                        "corrupt; convert the model again."
                    )
                shape = tuple(int(v) for v in spec["shape"])
                weights = np.frombuffer(bytes(raw), dtype="<f4").reshape(shape)
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
                format_version=version,
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


# -- flatbuffer reading (no TensorFlow, no flatbuffers package) -------------------------------
# Field indices of the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2


class _FlatbufferReader:
    """Bounds-checked access to the handful of flatbuffer tables we need."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = memoryview(data)
        self.where = where

    def _fail(self, what: str) -> "ModelFileError":
        return ModelFileError(
            f"{self.where} is not a valid LiteRT flatbuffer ({what}). The file is truncated or "
            "corrupt; copy or convert it again."
        )

    def u32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > len(self.data):
            raise self._fail(f"offset {pos} out of range")
        return struct.unpack_from("<I", self.data, pos)[0]

    def i32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > len(self.data):
            raise self._fail(f"offset {pos} out of range")
        return struct.unpack_from("<i", self.data, pos)[0]

    def u16(self, pos: int) -> int:
        if pos < 0 or pos + 2 > len(self.data):
            raise self._fail(f"offset {pos} out of range")
        return struct.unpack_from("<H", self.data, pos)[0]

    def u64(self, pos: int) -> int:
        if pos < 0 or pos + 8 > len(self.data):
            raise self._fail(f"offset {pos} out of range")
        return struct.unpack_from("<Q", self.data, pos)[0]

    def field_pos(self, table: int, index: int) -> Optional[int]:
        vtable = table - self.i32(table)
        vt_size = self.u16(vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        rel = self.u16(vtable + slot)
        return table + rel if rel else None

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, pos: int) -> Tuple[int, int]:
        start = self.indirect(pos)
        length = self.u32(start)
        if start + 4 + length > len(self.data) + 1 and length > len(self.data):
            raise self._fail(f"vector length {length} exceeds the file")
        return start + 4, length

    def table_vector(self, table: int, index: int):
        pos = self.field_pos(table, index)
        if pos is None:
            return []
        start, length = self.vector(pos)
        if start + 4 * length > len(self.data):
            raise self._fail(f"vector of {length} tables exceeds the file")
        return [self.indirect(start + 4 * i) for i in range(length)]

    def string(self, table: int, index: int) -> str:
        pos = self.field_pos(table, index)
        if pos is None:
            return ""
        start, length = self.vector(pos)
        if start + length > len(self.data):
            raise self._fail("string exceeds the file")
        return bytes(self.data[start : start + length]).decode("utf-8", errors="replace")

    def bytes_vector(self, table: int, index: int) -> bytes:
        pos = self.field_pos(table, index)
        if pos is None:
            return b""
        start, length = self.vector(pos)
        if start + length > len(self.data):
            raise self._fail("buffer exceeds the file")
        return bytes(self.data[start : start + length])


def _load_bytes(model: Union[str, Path, bytes, bytearray, memoryview], limit: int = -1) -> Tuple[bytes, str]:
    """The model's bytes (the first ``limit`` only, if given) and how to name it in errors."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)[: None if limit < 0 else limit], "the model buffer"
    path = Path(model)
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit)
    except FileNotFoundError as exc:
        raise ModelFileError(f"Model file '{path}' does not exist. Check the path.") from exc
    except IsADirectoryError as exc:
        raise ModelFileError(
            f"'{path}' is a directory, not a model file. Pass the converted .tflite or .onnx file."
        ) from exc
    except OSError as exc:
        raise ModelFileError(f"Cannot read model file '{path}': {exc.strerror}.") from exc
    return data, f"'{path}'"


def read_tflite_buffers(model: Union[str, Path, bytes]) -> Dict[str, bytes]:
    """Return every named metadata buffer of a .tflite file (name → bytes).

    Raises:
        ModelFileError: the data is not a LiteRT flatbuffer, or is truncated.
    """
    data, where = _load_bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        head = data[4:8] if len(data) >= 8 else data[:8]
        raise ModelFileError(
            f"{where} is not a LiteRT/TFLite model: expected file identifier b'TFL3' at byte 4, "
            f"found {head!r} ({len(data)} bytes). Pass a .tflite produced by `edgecam convert`."
        )
    reader = _FlatbufferReader(data, where)
    root = reader.indirect(0)
    buffers = reader.table_vector(root, _MODEL_BUFFERS)
    out: Dict[str, bytes] = {}
    for meta in reader.table_vector(root, _MODEL_METADATA):
        name = reader.string(meta, _METADATA_NAME)
        pos = reader.field_pos(meta, _METADATA_BUFFER)
        index = reader.u32(pos) if pos is not None else 0
        if index >= len(buffers):
            raise reader._fail(f"metadata {name!r} points at buffer {index} of {len(buffers)}")
        buf = buffers[index]
        blob = reader.bytes_vector(buf, _BUFFER_DATA)
        if not blob:
            # Models over 2 GB keep buffer data after the flatbuffer (offset/size fields).
            off_pos = reader.field_pos(buf, _BUFFER_OFFSET)
            size_pos = reader.field_pos(buf, _BUFFER_SIZE)
            if off_pos is not None and size_pos is not None:
                offset, size = reader.u64(off_pos), reader.u64(size_pos)
                if offset > 1:
                    if offset + size > len(data):
                        raise reader._fail(f"metadata {name!r} buffer exceeds the file")
                    blob = bytes(data[offset : offset + size])
        out[name] = blob
    return out


def read_tflite_metadata(model: Union[str, Path, bytes]) -> EdgecamMetadata:
    """Read and verify the edgecam metadata of a .tflite file, without TensorFlow.

    Raises:
        ModelFileError: not a LiteRT flatbuffer.
        MetadataError: no edgecam metadata, or it is corrupt/unsupported.
    """
    _, where = (None, "the model buffer") if isinstance(model, (bytes, bytearray)) else (None, f"'{model}'")
    return EdgecamMetadata.from_buffers(read_tflite_buffers(model), where=where)


def read_onnx_metadata(model: Union[str, Path]) -> EdgecamMetadata:
    """Read and verify the edgecam metadata of a .onnx file, through onnxruntime.

    Raises:
        MissingDependencyError: onnxruntime is not installed (``pip install 'edgecam[onnx]'``).
        ModelFileError: the file cannot be loaded.
        MetadataError: no edgecam metadata, or it is corrupt/unsupported.
    """
    from .backends.onnx import read_custom_metadata

    return EdgecamMetadata.from_props(read_custom_metadata(model), where=f"'{model}'")


def read_metadata(model: Union[str, Path]) -> EdgecamMetadata:
    """Read and verify the edgecam metadata of a .tflite or .onnx file (chosen from the file).

    Raises:
        ModelFileError, MetadataError, MissingDependencyError (onnxruntime for a .onnx).
    """
    from .backends import detect_format

    if detect_format(model) == "onnx":
        return read_onnx_metadata(model)
    return read_tflite_metadata(model)


def embed_onnx_metadata(model_content: bytes, metadata: EdgecamMetadata) -> bytes:
    """Return the serialized ONNX ``model_content`` with ``metadata`` in its ``metadata_props``.

    Earlier edgecam entries are replaced; other entries are kept. Host side: needs ``onnx``.
    """
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependencyError(
            "Embedding edgecam metadata in an ONNX model needs the 'onnx' package. Install the "
            "host extra: pip install 'edgecam[host,onnx]'"
        ) from exc
    model = onnx.load_from_string(model_content)
    kept = [(p.key, p.value) for p in model.metadata_props if not _is_edgecam(p.key)]
    del model.metadata_props[:]
    for key, value in kept + sorted(metadata.to_props().items()):
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def embed_tflite_metadata(model_content: bytes, metadata: EdgecamMetadata) -> bytes:
    """Return ``model_content`` with ``metadata`` embedded (replacing any earlier edgecam entry).

    Uses the flatbuffer schema classes shipped with ``ai-edge-litert`` (host side).
    """
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependencyError(
            "Embedding edgecam metadata needs the 'flatbuffers' and 'ai-edge-litert' packages. "
            "Install them with: pip install ai-edge-litert"
        ) from exc
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(model_content), 0))
    if model.metadata is None:
        model.metadata = []
    if model.buffers is None:
        model.buffers = []
    model.metadata = [m for m in model.metadata if not _is_edgecam(m.name)]
    for name, blob in metadata.to_buffers().items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(blob, dtype=np.uint8)
        model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(model_content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _is_edgecam(name) -> bool:
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    return name in (METADATA_NAME, WEIGHTS_NAME)
