"""Model containers: a model file is read once; one module per format reads and embeds the metadata.

* :func:`read_model_file` reads a ``.tflite``/``.onnx`` (or takes bytes already in memory) once,
  as a :class:`ModelFile`: the bytes, the detected format and how errors name it. The
  interpreter backends (:mod:`firmware_host.backends`) and the metadata readers below all work
  on those bytes, so nothing opens the file twice.
* :mod:`.tflite` — the LiteRT flatbuffer: a ``struct`` reader (no TensorFlow, no flatbuffers
  package) and the writer (``ai-edge-litert``'s schema classes, host side).
* :mod:`.onnx` — the ONNX protobuf: a reader of ``metadata_props`` that walks the protobuf's
  top-level fields (no ``onnx`` package, no session) and the writer (``onnx``, host side).

Each container module offers the same four names: ``NAME``, ``SUFFIX``,
``read_metadata(data, where) → EdgecamMetadata`` and
``embed_metadata(content, metadata) → bytes``; :data:`CONTAINERS` lists them. Adding a format is
one module here, one entry in :data:`CONTAINERS` and its backend in :mod:`firmware_host.backends`
(see docs/architecture.md).

Dependencies point one way: ``backends → formats → metadata``; nothing here imports a backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .._io import NotRegularFileError, open_regular
from ..errors import ModelFileError
from . import onnx, tflite

__all__ = [
    "CONTAINERS",
    "FORMATS",
    "ModelFile",
    "container",
    "detect_format",
    "read_model_file",
    "read_metadata",
    "read_onnx_metadata",
    "read_tflite_buffers",
    "read_tflite_metadata",
]

CONTAINERS = {"tflite": tflite, "onnx": onnx}
FORMATS = tuple(CONTAINERS)

ModelSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


@dataclass(frozen=True)
class ModelFile:
    """A model's bytes, read once.

    Attributes:
        data: the whole file.
        format: ``tflite`` or ``onnx``.
        where: how messages name it: ``'path/model.tflite'`` (quoted) or ``the model buffer``.
        path: the file, or ``None`` for bytes given in memory.
    """

    data: bytes = field(repr=False)
    format: str
    where: str
    path: Optional[Path] = None


def _read(model: ModelSource, limit: int = -1) -> tuple:
    """``(bytes, where, suffix)``; the first ``limit`` bytes only when ``limit >= 0``."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        return (data if limit < 0 else data[:limit]), "the model buffer", ""
    path = Path(model)
    try:
        with open_regular(path) as (handle, _):
            data = handle.read(limit)
    except FileNotFoundError as exc:
        raise ModelFileError(f"Model file '{path}' does not exist. Check the path.") from exc
    except NotRegularFileError as exc:
        raise ModelFileError(
            f"'{path}' is {exc.strerror}, not a model file. Pass the converted .tflite or .onnx file."
        ) from exc
    except IsADirectoryError as exc:  # pragma: no cover - open_regular reports folders itself
        raise ModelFileError(f"'{path}' is a directory, not a model file.") from exc
    except OSError as exc:
        raise ModelFileError(f"Cannot read model file '{path}': {exc.strerror or exc}.") from exc
    return data, f"'{path}'", path.suffix.lower()


def _sniff(head: bytes, suffix: str, where: str) -> str:
    """The format from the first bytes where they are decisive, else from the suffix."""
    if tflite.sniff(head) or suffix == tflite.SUFFIX:
        return tflite.NAME
    if suffix == onnx.SUFFIX or onnx.sniff(head):
        return onnx.NAME
    raise ModelFileError(
        f"{where} is neither a LiteRT model (no 'TFL3' at byte 4) nor an ONNX model (suffix "
        f"{suffix or '(none)'!r}, starts with {head[:4]!r}). Pass a .tflite or .onnx written by "
        "`edgecam convert`."
    )


def detect_format(model: ModelSource) -> str:
    """``"tflite"`` or ``"onnx"``, from the file's magic where it is decisive, else its suffix.

    A LiteRT flatbuffer carries ``TFL3`` at byte 4 whatever its name. ONNX files are plain
    protobuf with no magic, so ``.onnx`` decides; an unknown suffix falls back to the protobuf
    tag of ``ModelProto.ir_version`` (field 1, varint: byte ``0x08``). Reads 8 bytes.

    Raises:
        ModelFileError: missing file, or neither format.
    """
    head, where, suffix = _read(model, limit=8)
    return _sniff(head, suffix, where)


def read_model_file(model: Union[ModelSource, ModelFile]) -> ModelFile:
    """Read a model file once (or wrap bytes already in memory) and detect its format.

    Raises:
        ModelFileError: missing, not a regular file, unreadable, or neither format.
    """
    if isinstance(model, ModelFile):
        return model
    data, where, suffix = _read(model)
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else Path(model)
    return ModelFile(data=data, format=_sniff(data[:8], suffix, where), where=where, path=path)


def container(name: str):
    """The container module for format ``name`` (``tflite`` or ``onnx``)."""
    try:
        return CONTAINERS[name]
    except KeyError:
        raise ModelFileError(f"Unknown model format {name!r}; edgecam reads {', '.join(FORMATS)}.") from None


def read_metadata(model: Union[ModelSource, ModelFile]):
    """Read and verify the edgecam metadata of a .tflite or .onnx file (chosen from the file).

    The metadata alone: :func:`firmware_host.model.open_model` also checks it against the model.

    Raises:
        ModelFileError, MetadataError.
    """
    file = read_model_file(model)
    return container(file.format).read_metadata(file.data, file.where)


# -- one container forced (a path or bytes); firmware_host.metadata re-exports these names ----
def read_tflite_buffers(model: ModelSource):
    """The named metadata entries of a .tflite (see :func:`.tflite.read_buffers`)."""
    data, where, _ = _read(model)
    return tflite.read_buffers(data, where)


def read_tflite_metadata(model: ModelSource):
    """The checked edgecam metadata of a .tflite, whatever its name."""
    data, where, _ = _read(model)
    return tflite.read_metadata(data, where)


def read_onnx_metadata(model: ModelSource):
    """The checked edgecam metadata of a .onnx, whatever its name."""
    data, where, _ = _read(model)
    return onnx.read_metadata(data, where)
