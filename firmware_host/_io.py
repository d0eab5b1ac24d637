"""Atomic file output: temp file in the same directory, fsync, rename.

A process killed at any point leaves either the old file or the complete new one under the
final name, never a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator, Tuple, Union

from .errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", durable: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it onto ``path``.

    Args:
        path: final file name.
        mode: ``"wb"`` or ``"w"``.
        durable: fsync the file and its directory. ``False`` keeps the all-or-nothing rename
            (safe against a killed process, not against power loss) and skips the ~10 ms of
            fsyncs, for bulk outputs such as thousands of dataset images.

    Raises:
        OutputError: the directory is missing or not writable.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports mode 'wb' or 'w'. Got: {mode!r}")
    final = Path(path)
    fd, tmp = _temp_beside(final, ".part")
    kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        _commit(tmp, final, durable)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: PathLike, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that take a file *name* (``model.save``,
    ``cv2.VideoWriter``, ``fig.savefig``); on success it is fsync'd and renamed onto ``path``.

    The temporary name is hidden (``.NAME.XXXX.SUFFIX``) and keeps ``path``'s suffix, since such
    writers choose the format from it. On an exception it is deleted and ``path`` is untouched.

    Args:
        path: final file name.
        durable: as in :func:`atomic_open`.

    Raises:
        OutputError: the directory is not writable, or the rename failed.
    """
    final = Path(path)
    fd, tmp = _temp_beside(final, final.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _commit(tmp, final, durable)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _temp_beside(final: Path, suffix: str):
    """``mkstemp`` in ``final``'s directory, with the mode a plain ``open()`` would give."""
    directory = final.parent if str(final.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=directory)
    except OSError as exc:
        raise OutputError(
            f"Cannot write '{final}': {exc.strerror}. Choose a writable output directory."
        ) from exc
    # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def _commit(tmp: str, final: Path, durable: bool) -> None:
    os.replace(tmp, final)
    if durable:
        _fsync_dir(final.parent if str(final.parent) else Path("."))


def atomic_write_bytes(path: PathLike, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically and return the path (``durable``: see atomic_open)."""
    try:
        with atomic_open(path, "wb", durable=durable) as handle:
            handle.write(data)
    except OSError as exc:
        raise OutputError(f"Writing '{path}' failed: {exc}. Check free space and permissions.") from exc
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: PathLike, dst: PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return Path(dst)


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_writable_dir(path: PathLike, min_free_bytes: int = 16 << 20) -> Path:
    """Create ``path`` if needed and check, before any work starts, that it can take output.

    Raises:
        OutputError: naming the directory, what was found, and how to fix it.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create output directory '{directory}': {exc.strerror or exc}"
            f"{' (a part of the path is a file)' if isinstance(exc, (FileExistsError, NotADirectoryError)) else ''}. "
            "Choose a writable output location."
        ) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(
            f"Output directory '{directory}' is not writable (read-only or no permission). "
            "Choose a writable output location."
        )
    free = shutil.disk_usage(directory).free
    if free < min_free_bytes:
        raise OutputError(
            f"Output directory '{directory}' has {free / 2**20:.1f} MiB free; at least "
            f"{min_free_bytes / 2**20:.0f} MiB is needed. Free some space or choose another output location."
        )
    return directory


class NotRegularFileError(OSError):
    """A path names a FIFO, socket, device or folder where a regular file is read."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


@contextlib.contextmanager
def open_regular(path: PathLike) -> Iterator[Tuple[IO[bytes], int]]:
    """Open a regular file for reading; yield ``(binary handle, size in bytes)``.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor:
    a FIFO, socket or device is refused without waiting for a writer (a plain ``open`` of a
    FIFO blocks for ever), and nothing can swap the file between the check and the read.

    Raises:
        NotRegularFileError: the path is not a regular file (``strerror`` says what it is).
        OSError: the file cannot be opened (``FileNotFoundError``, ``PermissionError``, …).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(os.fspath(path), flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(errno.EINVAL, _kind(info.st_mode), os.fspath(path))
        handle = os.fdopen(fd, "rb")
        fd = -1
    finally:
        if fd >= 0:
            os.close(fd)
    with handle:
        yield handle, info.st_size
