"""The LiteRT (.tflite) container: edgecam metadata in the flatbuffer's ``metadata`` vector.

Two named entries, the place the TFLite Support library puts its own:

* ``edgecam`` — UTF-8 JSON (see :mod:`firmware_host.metadata`);
* ``edgecam.weights`` — the class-weight array as raw little-endian float32.

Reading needs no TensorFlow and no flatbuffers package: :class:`FlatbufferReader` walks the few
tables it needs with ``struct``, bounds-checking every offset. Only the buffers of the edgecam
entries are copied; other producers' entries are listed by name, and a file with more than
:data:`MAX_METADATA_ENTRIES` entries is refused (a hand-made file whose thousands of entries
all name one large buffer once made the reader copy it thousands of times). Every buffer's
extent is checked against the file's length, so a truncated file is reported as truncated
even when its metadata, near the start, survived.

Writing (host side) uses the schema classes shipped with ``ai-edge-litert``.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import MissingDependencyError, ModelFileError
from ..metadata import EdgecamMetadata, collect_entry, is_edgecam_entry

__all__ = ["NAME", "SUFFIX", "MAX_METADATA_ENTRIES", "FlatbufferReader", "sniff", "read_buffers",
           "read_metadata", "embed_metadata", "embed_buffers"]

NAME = "tflite"
SUFFIX = ".tflite"
RUNTIME_CHECKS_FIRST = False  # open_model: this metadata reader names a non-flatbuffer best
MAX_METADATA_ENTRIES = 1024
_MAX_NAME_BYTES = 256

# Field indices of the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2


def sniff(head: bytes) -> bool:
    """True when ``head`` (the first 8 bytes) carries the flatbuffer identifier ``TFL3``."""
    return head[4:8] == b"TFL3"


class FlatbufferReader:
    """Bounds-checked access to the handful of flatbuffer tables we need (no copies)."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = memoryview(data)
        self.where = where

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(
            f"{self.where} is not a valid LiteRT flatbuffer ({what}). The file is truncated or "
            "corrupt; copy or convert it again."
        )

    def _unpack(self, fmt: str, pos: int) -> int:
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.data):
            raise self.fail(f"offset {pos} out of range")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos)

    def i32(self, pos: int) -> int:
        return self._unpack("<i", pos)

    def u16(self, pos: int) -> int:
        return self._unpack("<H", pos)

    def u64(self, pos: int) -> int:
        return self._unpack("<Q", pos)

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
        """``(start, length)`` of the vector referenced at ``pos``."""
        start = self.indirect(pos)
        return start + 4, self.u32(start)

    def table_vector(self, table: int, index: int) -> List[int]:
        pos = self.field_pos(table, index)
        if pos is None:
            return []
        start, length = self.vector(pos)
        if start + 4 * length > len(self.data):
            raise self.fail(f"vector of {length} tables exceeds the file")
        return [self.indirect(start + 4 * i) for i in range(length)]

    def span(self, table: int, index: int) -> Tuple[int, int]:
        """``(start, end)`` of a byte vector or string field; ``(0, 0)`` when absent."""
        pos = self.field_pos(table, index)
        if pos is None:
            return 0, 0
        start, length = self.vector(pos)
        if start + length > len(self.data):
            raise _truncated(self.where, start + length, len(self.data))
        return start, start + length

    def string(self, table: int, index: int, limit: int = _MAX_NAME_BYTES) -> str:
        start, end = self.span(table, index)
        return bytes(self.data[start : min(end, start + limit)]).decode("utf-8", errors="replace")


def _truncated(where: str, needed: int, size: int) -> ModelFileError:
    return ModelFileError(
        f"{where} is truncated: a buffer runs to byte {needed:,} but the file has {size:,} bytes. "
        "Copy the file again (if the copy was complete, the file is corrupt: convert the model again)."
    )


def _buffer_span(reader: FlatbufferReader, buf: int) -> Tuple[int, int]:
    """Where buffer table ``buf``'s bytes are: inline data, or offset/size after the flatbuffer."""
    start, end = reader.span(buf, _BUFFER_DATA)
    if end > start:
        return start, end
    # Models over 2 GB keep buffer data after the flatbuffer (offset/size fields).
    off_pos, size_pos = reader.field_pos(buf, _BUFFER_OFFSET), reader.field_pos(buf, _BUFFER_SIZE)
    if off_pos is not None and size_pos is not None:
        offset, size = reader.u64(off_pos), reader.u64(size_pos)
        if offset > 1:
            if offset + size > len(reader.data):
                raise _truncated(reader.where, offset + size, len(reader.data))
            return offset, offset + size
    return 0, 0


def read_buffers(data: bytes, where: str = "the model buffer") -> Dict[str, bytes]:
    """The named metadata entries of a .tflite: edgecam's with their bytes, others' names → ``b""``.

    Raises:
        ModelFileError: not a LiteRT flatbuffer, truncated, corrupt, or more than
            :data:`MAX_METADATA_ENTRIES` metadata entries.
        MetadataError: an edgecam entry appears twice.
    """
    if len(data) < 8 or not sniff(data[:8]):
        head = data[4:8] if len(data) >= 8 else data[:8]
        raise ModelFileError(
            f"{where} is not a LiteRT/TFLite model: expected file identifier b'TFL3' at byte 4, "
            f"found {bytes(head)!r} ({len(data)} bytes). Pass a .tflite produced by `edgecam convert`."
        )
    reader = FlatbufferReader(data, where)
    root = reader.indirect(0)
    buffers = reader.table_vector(root, _MODEL_BUFFERS)
    spans = [_buffer_span(reader, buf) for buf in buffers]  # also proves the file is complete
    entries = reader.table_vector(root, _MODEL_METADATA)
    if len(entries) > MAX_METADATA_ENTRIES:
        raise ModelFileError(
            f"{where} has {len(entries):,} metadata entries; edgecam reads models with at most "
            f"{MAX_METADATA_ENTRIES} (converters write a handful). The file is corrupt or hostile."
        )
    out: Dict[str, bytes] = {}
    named = 0
    for meta in entries:
        name = reader.string(meta, _METADATA_NAME)
        pos = reader.field_pos(meta, _METADATA_BUFFER)
        index = reader.u32(pos) if pos is not None else 0
        if index >= len(buffers):
            raise reader.fail(f"metadata {name!r} points at buffer {index} of {len(buffers)}")
        named += spans[index][1] - spans[index][0]
        if named > len(data):
            # LiteRT's interpreter copies every metadata entry's buffer: entries sharing one
            # large buffer would cost gigabytes there, though the file is small.
            raise ModelFileError(
                f"{where}'s metadata entries name more bytes of buffers ({named:,} by entry "
                f"{name!r}) than the file holds ({len(data):,}): entries share buffers. The file "
                "is corrupt or hostile; convert the model again."
            )
        start, end = spans[index]
        collect_entry(out, name, lambda: bytes(reader.data[start:end]), where)
    return out


def read_metadata(data: bytes, where: str = "the model buffer") -> EdgecamMetadata:
    """Read and verify the edgecam metadata of a .tflite's bytes, without TensorFlow.

    Raises:
        ModelFileError: not a LiteRT flatbuffer, or truncated.
        MetadataError: no edgecam metadata, or it is corrupt/unsupported.
    """
    return EdgecamMetadata.from_buffers(read_buffers(data, where), where=where)


def embed_metadata(model_content: bytes, metadata: EdgecamMetadata) -> bytes:
    """Return ``model_content`` with ``metadata`` embedded (replacing any earlier edgecam entry).

    Uses the flatbuffer schema classes shipped with ``ai-edge-litert`` (host side).
    """
    return embed_buffers(model_content, metadata.to_buffers())


def embed_buffers(model_content: bytes, buffers: Dict[str, bytes]) -> bytes:
    """Return ``model_content`` with named metadata ``buffers`` (edgecam's entries replaced).

    The raw form of :func:`embed_metadata`: the bytes are stored as given (tests use it to
    embed hostile metadata).
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
    model.metadata = [m for m in model.metadata if not is_edgecam_entry(m.name)]
    for name, blob in buffers.items():
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
