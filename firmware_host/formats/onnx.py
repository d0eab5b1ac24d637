"""The ONNX (.onnx) container: edgecam metadata in the model's ``metadata_props``.

Two entries (string key → string value): ``edgecam`` holds the same JSON text as in a
``.tflite``, ``edgecam.weights`` the same float32 bytes in base64 (RFC 4648).

Reading walks the protobuf's top-level fields with a small varint reader: no ``onnx`` package
and no onnxruntime session are needed, the large ``graph`` field is skipped by its length, and
a length that runs past the end of the file is reported as truncation. Keys and values are
bytes here, so a value that is not UTF-8 is a clean :class:`MetadataError`. Writing (host side)
uses the ``onnx`` package.
"""

from __future__ import annotations

import base64
import binascii
from typing import Dict, Iterator, Tuple

from ..errors import MetadataError, MissingDependencyError, ModelFileError
from ..metadata import WEIGHTS_NAME, EdgecamMetadata, collect_entry, is_edgecam_entry

__all__ = ["NAME", "SUFFIX", "MAX_METADATA_ENTRIES", "sniff", "read_props", "read_metadata", "embed_metadata"]

NAME = "onnx"
SUFFIX = ".onnx"
RUNTIME_CHECKS_FIRST = True  # open_model: onnxruntime checks the protobuf best
MAX_METADATA_ENTRIES = 1024
_METADATA_PROPS = 14  # ModelProto.metadata_props (onnx/onnx.proto)
_KEY, _VALUE = 1, 2  # StringStringEntryProto


def sniff(head: bytes) -> bool:
    """True when ``head`` starts like a ModelProto: field 1 (``ir_version``) as a varint, byte ``0x08``."""
    return head[:1] == b"\x08"


class _Truncated(Exception):
    pass


def _varint(data, pos: int, end: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Truncated(pos)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data, start: int, end: int) -> Iterator[Tuple[int, int, int, int]]:
    """``(field number, wire type, start, end)`` of each field in ``data[start:end]``."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(data, pos, end)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:  # groups (3, 4) are not used by onnx.proto; 6 and 7 do not exist
            raise ValueError(f"wire type {wire} of field {number} at byte {pos}")
        if after > end:
            raise _Truncated(after)
        yield number, wire, pos, after
        pos = after


def read_props(data: bytes, where: str = "the model buffer") -> Dict[str, bytes]:
    """The ``metadata_props`` of an ONNX model's bytes: key → value bytes (only edgecam's copied).

    Raises:
        ModelFileError: not an ONNX protobuf, truncated, or more than
            :data:`MAX_METADATA_ENTRIES` entries.
        MetadataError: a key that is not UTF-8, or an edgecam entry that appears twice.
    """
    view = memoryview(data)
    out: Dict[str, bytes] = {}
    count = 0
    try:
        for number, wire, start, end in _fields(view, 0, len(view)):
            if number != _METADATA_PROPS or wire != 2:
                continue
            count += 1
            if count > MAX_METADATA_ENTRIES:
                raise ModelFileError(
                    f"{where} has more than {MAX_METADATA_ENTRIES} metadata_props entries; converters "
                    "write a handful. The file is corrupt or hostile."
                )
            key, value = b"", (0, 0)
            for sub, sub_wire, s, e in _fields(view, start, end):
                if sub == _KEY and sub_wire == 2:
                    key = bytes(view[s : min(e, s + 256)])
                elif sub == _VALUE and sub_wire == 2:
                    value = (s, e)
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MetadataError(f"{where}: a metadata_props key is not UTF-8 ({exc}). The file is corrupt.") from exc
            collect_entry(out, name, lambda: bytes(view[value[0] : value[1]]), where, "metadata_props")
    except _Truncated as exc:
        raise ModelFileError(
            f"{where} is truncated: a field runs to byte {exc.args[0]:,} but the file has {len(view):,} "
            "bytes. Copy the file again (if the copy was complete, the file is corrupt: convert the model again)."
        ) from None
    except ValueError as exc:
        raise ModelFileError(f"{where} is not a valid ONNX protobuf ({exc}). Pass a .onnx written by `edgecam convert`.") from None
    return out


def _weights(value: bytes, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MetadataError(
            f"{where}: the metadata entry {WEIGHTS_NAME!r} is not valid base64 ({exc}). The file is corrupt; "
            "convert the model again."
        ) from exc


def read_metadata(data: bytes, where: str = "the model buffer") -> EdgecamMetadata:
    """Read and verify the edgecam metadata of an ONNX model's bytes (no onnx, no onnxruntime).

    Raises:
        ModelFileError: not an ONNX protobuf, or truncated.
        MetadataError: no edgecam metadata, or it is corrupt/unsupported.
    """
    props = read_props(data, where)
    if WEIGHTS_NAME in props:
        props[WEIGHTS_NAME] = _weights(props[WEIGHTS_NAME], where)
    return EdgecamMetadata.from_buffers(props, where=where)


def embed_metadata(model_content: bytes, metadata: EdgecamMetadata) -> bytes:
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
    kept = [(p.key, p.value) for p in model.metadata_props if not is_edgecam_entry(p.key)]
    del model.metadata_props[:]
    for key, value in kept + sorted(metadata.to_props().items()):
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()
