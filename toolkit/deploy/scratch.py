"""Scratch directories that do not outlive an interrupted ``edgecam bundle`` or ``deploy``.

``tempfile.TemporaryDirectory`` cleans up on a normal exit or an exception, but not after
``kill -9``, a power cut, or SIGTERM (Python's default SIGTERM action ends the process without
unwinding). So:

* :func:`owned_tempdir` writes the owning process id into each scratch directory and, before
  creating a new one, removes the siblings with the same prefix whose owner is gone;
* :func:`sigterm_unwinds` turns SIGTERM into ``SystemExit`` while a command runs, so the
  ``with`` blocks clean up as for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional, Union

__all__ = ["OWNER_FILE", "owned_tempdir", "sweep_stale", "sigterm_unwinds"]

OWNER_FILE = ".edgecam-owner"
# A scratch directory without an owner file (killed between mkdtemp and the write, or made by an
# older edgecam) is removed only when this old: nothing else can still be using it.
UNOWNED_MAX_AGE_S = 24 * 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    except OSError:
        return False
    return True


def sweep_stale(prefix: str, parent: Optional[Union[str, Path]] = None) -> List[Path]:
    """Remove ``parent/prefix*`` directories of this user whose owning process has ended.

    Args:
        prefix: the scratch directories' name prefix (``edgecam-wheel-`` …).
        parent: where they live (default: the system temporary directory).

    Returns:
        The directories removed.
    """
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    removed = []
    try:
        candidates = list(parent.glob(f"{prefix}*"))
    except OSError:
        return removed
    for path in candidates:
        try:
            info = path.lstat()
            if path.is_symlink() or not path.is_dir() or info.st_uid != os.getuid():
                continue
            owner = path / OWNER_FILE
            if owner.is_file():
                text = owner.read_text(encoding="ascii", errors="replace").strip()
                if text.isdigit() and (int(text) == os.getpid() or _alive(int(text))):
                    continue
            elif time.time() - info.st_mtime < UNOWNED_MAX_AGE_S:
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


@contextlib.contextmanager
def owned_tempdir(prefix: str, dir: Optional[Union[str, Path]] = None) -> Iterator[str]:  # noqa: A002
    """``tempfile.TemporaryDirectory(prefix=…, dir=…)`` that first sweeps stale siblings and
    records its owner, so a later run removes it if this process is killed."""
    sweep_stale(prefix, dir)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=dir) as tmp:
        Path(tmp, OWNER_FILE).write_text(f"{os.getpid()}\n", encoding="ascii")
        yield tmp


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit(143)`` (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
