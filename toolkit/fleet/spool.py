"""``per_frame.parquet`` rows, streamed to disk as they are scored instead of held in memory.

A :class:`RowSpool` appends the scalar columns of validated frames to a parquet file in row groups
of a few thousand rows; :func:`write_per_frame` copies the rows of the logs a summary covers from
one or more spools (this run's and the resume cache's) into ``per_frame.parquet``, one row group
at a time. Memory stays one row group, whatever the number of frames.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Set, Union

from firmware_host._io import atomic_path

__all__ = ["ROW_COLUMNS", "RowSpool", "arrow_schema", "spool_sources", "write_per_frame"]

#: The scalar columns kept per validated frame (``per_frame.parquet``), in order.
ROW_COLUMNS = ("vehicle", "run", "log", "log_sha256", "day", "model", "plan", "frame", "line", "timestamp",
               "frame_path", "recorded_class", "edge_class", "host_class", "host_probability", "pearson",
               "top1_agree", "status")
_INTS = {"frame": "int64", "line": "int64", "recorded_class": "int32", "edge_class": "int32", "host_class": "int32"}
_FLOATS = ("timestamp", "host_probability", "pearson")


def arrow_schema():
    """The pyarrow schema of ``per_frame.parquet``."""
    import pyarrow as pa

    def kind(name: str):
        if name in _INTS:
            return getattr(pa, _INTS[name])()
        if name in _FLOATS:
            return pa.float64()
        return pa.bool_() if name == "top1_agree" else pa.string()

    return pa.schema([(name, kind(name)) for name in ROW_COLUMNS])


def _cell(name: str, value: Any) -> Any:
    if name in _INTS:
        return int(value)
    if name in _FLOATS:
        return float(value)
    return bool(value) if name == "top1_agree" else str(value)


class RowSpool:
    """Append-only parquet file of per-frame rows, complete (renamed into place) only when closed.

    Args:
        path: the file; written as ``<path>.partial`` until :meth:`close`.
        group_rows: rows per parquet row group (what is held in memory).
    """

    def __init__(self, path: Union[str, Path], group_rows: int = 4096) -> None:
        self.path = Path(path)
        self.group_rows = int(group_rows)
        self.rows = 0
        self._buffer: Dict[str, list] = {name: [] for name in ROW_COLUMNS}
        self._writer = None

    @property
    def name(self) -> str:
        return self.path.name

    def write(self, row: Mapping[str, Any]) -> None:
        for name in ROW_COLUMNS:
            self._buffer[name].append(_cell(name, row[name]))
        self.rows += 1
        if len(self._buffer["pearson"]) >= self.group_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffer["pearson"]:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = arrow_schema()
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.path) + ".partial", schema)
        self._writer.write_table(pa.table(self._buffer, schema=schema))
        self._buffer = {name: [] for name in ROW_COLUMNS}

    def close(self) -> None:
        """Write what is buffered and move the file into place (no file when no row was written). Idempotent."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(str(self.path) + ".partial", self.path)


def write_per_frame(path: Union[str, Path], sources: Mapping[Path, Set[str]]) -> Path:
    """``per_frame.parquet`` from spools: ``{spool file: logs whose rows it holds for this summary}``.

    Rows come in spool order, row group by row group (sort by vehicle, log, line to compare runs).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = arrow_schema()
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(str(tmp), schema) as writer:
            for spool, logs in sorted(sources.items()):
                wanted = pa.array(sorted(logs), type=pa.string())
                for batch in pq.ParquetFile(spool).iter_batches(columns=list(ROW_COLUMNS)):
                    table = pa.Table.from_batches([batch]).cast(schema)
                    writer.write_table(table.filter(pc.is_in(table.column("log"), value_set=wanted)))
    return Path(path)


def spool_sources(parts: Iterable[Any], folder: Path) -> Dict[Path, Set[str]]:
    """``{spool file: logs}`` of parts (each part names the spool its rows went to, if any)."""
    out: Dict[Path, Set[str]] = {}
    for part in parts:
        if part.spool:
            out.setdefault(folder / part.spool, set()).add(part.log)
    return out
