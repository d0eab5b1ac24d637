"""Extract a bundle tarball without letting it write anywhere but the destination.

Every member is checked *before* anything is written, so a hostile archive leaves no trace:

* names must be relative, free of ``..`` components, NUL bytes and backslashes, and all lie
  under one top-level directory;
* only regular files, directories and links are allowed (no devices, FIFOs);
* a symbolic link must resolve inside the bundle; a hard link must name an earlier member;
* modes are masked to ``0o755``/``0o644`` (no set-uid, set-gid or sticky bits), owners ignored.

On Python ≥ 3.11.4/3.12 the archive is then extracted with ``tarfile``'s own ``filter="data"``
as a second, independent line of defence; the extraction goes to a temporary directory that is
renamed into place only when complete.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import List, Union

from firmware_host.errors import DeployError

__all__ = ["check_members", "safe_extract"]

MAX_MEMBERS = 100_000


def _reject(archive: str, name: str, rule: str) -> DeployError:
    return DeployError(
        f"Refusing to extract '{archive}': member {name!r} {rule}. The bundle is corrupt or was "
        "crafted; rebuild it with `edgecam bundle`."
    )


def _normal(name: str) -> str:
    return posixpath.normpath(name.rstrip("/")) if name not in ("", ".") else "."


def check_members(archive: str, members: List[tarfile.TarInfo]) -> str:
    """Check every member of a bundle archive; return its single top-level directory name.

    Raises:
        DeployError: naming the first offending member and the rule it breaks.
    """
    if not members:
        raise DeployError(f"'{archive}' is an empty archive. Rebuild the bundle with `edgecam bundle`.")
    if len(members) > MAX_MEMBERS:
        raise DeployError(f"'{archive}' has {len(members)} members (limit {MAX_MEMBERS}); refusing it.")
    tops = set()
    seen = set()
    for member in members:
        name = member.name
        if "\x00" in name or "\\" in name:
            raise _reject(archive, name, "contains a NUL byte or backslash")
        if name.startswith("/") or posixpath.isabs(name):
            raise _reject(archive, name, "is an absolute path")
        if ".." in name.split("/"):
            raise _reject(archive, name, "contains '..' (path traversal)")
        norm = _normal(name)
        if norm == ".":
            raise _reject(archive, name, "names the archive root itself")
        tops.add(norm.split("/")[0])
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise _reject(archive, name, "is a device, FIFO or other special file")
        if member.issym() or member.islnk():
            target = member.linkname
            if not target or target.startswith("/") or "\x00" in target:
                raise _reject(archive, name, f"is a link to an absolute or empty path {target!r}")
            if member.issym():
                resolved = _normal(posixpath.join(posixpath.dirname(norm), target))
            else:  # hard-link targets are archive member names
                resolved = _normal(target)
                if resolved not in seen:
                    raise _reject(archive, name, f"is a hard link to {target!r}, not an earlier member")
            top = norm.split("/")[0]
            if resolved == ".." or resolved.startswith("../") or resolved.split("/")[0] != top:
                raise _reject(archive, name, f"is a link pointing outside the bundle ({target!r})")
        seen.add(norm)
    if len(tops) != 1:
        raise DeployError(
            f"'{archive}' must hold exactly one top-level directory; found {sorted(tops)[:5]}. "
            "Rebuild the bundle with `edgecam bundle`."
        )
    return tops.pop()


def _chain_symlinks_inside(root: Path) -> None:
    # A link may point at another link; after extraction every link must still land inside.
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                real = path.resolve()
                if real != real_root and real_root not in real.parents:
                    raise DeployError(
                        f"Refusing bundle: link '{path.relative_to(root)}' resolves outside it "
                        f"(to '{real}'). Rebuild the bundle with `edgecam bundle`."
                    )


def safe_extract(archive: Union[str, Path], dest: Union[str, Path]) -> Path:
    """Extract a bundle archive into ``dest`` and return the extracted top-level directory.

    Args:
        archive: a ``.tar.gz`` (or plain ``.tar``) bundle.
        dest: an existing directory; the bundle lands in ``dest/<top>``, which must not exist.

    Raises:
        DeployError: unreadable archive, unsafe member, or ``dest/<top>`` already exists.
    """
    archive = str(archive)
    dest = Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            top = check_members(archive, members)
            final = dest / top
            if final.exists():
                raise DeployError(f"'{final}' already exists; extract into an empty directory.")
            staging = Path(tempfile.mkdtemp(prefix=f".{top}.", suffix=".partial", dir=dest))
            try:
                for member in members:
                    member.mode = 0o755 if (member.isdir() or member.mode & 0o100) else 0o644
                    member.uid = member.gid = 0
                    member.uname = member.gname = ""
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4: our checks above are the defence
                    tar.extractall(staging, members=members)
                _chain_symlinks_inside(staging / top)
                os.replace(staging / top, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DeployError(
            f"Cannot extract '{archive}': {exc}. The file is truncated or not a bundle; rebuild it "
            "with `edgecam bundle`."
        ) from exc
    return final
