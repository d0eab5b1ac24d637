"""Extract a bundle tarball without letting it write anywhere but the destination.

Every member is checked *before* anything is written, so a hostile archive leaves no trace:

* names must be relative, free of ``..`` components, NUL bytes and backslashes, and all lie
  under one top-level directory (a directory, never a link or file; ``edgecam deploy`` also
  requires it to be named ``edgecam-<bundle id>``);
* only regular files, directories and links are allowed (no devices, FIFOs);
* a symbolic link must resolve inside the bundle, and not to itself, to the top directory or
  into a loop of links, and no member may lie beneath one; a hard link must name an earlier
  regular file;
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
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Pattern, Union

from firmware_host.errors import DeployError

__all__ = ["BUNDLE_TOP", "check_members", "safe_extract"]

MAX_MEMBERS = 100_000
# The top directory of a bundle written by `edgecam bundle`: edgecam-<12 hex digits of its id>.
BUNDLE_TOP = re.compile(r"edgecam-[0-9a-f]{12}")
# Links followed before a chain counts as a loop (Linux's own limit, MAXSYMLINKS, is 40).
MAX_LINK_HOPS = 40


def _reject(archive: str, name: str, rule: str) -> DeployError:
    return DeployError(
        f"Refusing to extract '{archive}': member {name!r} {rule}. The bundle is corrupt or was "
        "crafted; rebuild it with `edgecam bundle`."
    )


def _normal(name: str) -> str:
    return posixpath.normpath(name.rstrip("/")) if name not in ("", ".") else "."


def check_members(archive: str, members: List[tarfile.TarInfo], top_pattern: Optional[Pattern[str]] = None) -> str:
    """Check every member of a bundle archive; return its single top-level directory name.

    Args:
        archive: the archive's name, for messages.
        members: its members, in archive order.
        top_pattern: when given, the top directory's name must match it in full
            (:data:`BUNDLE_TOP` for bundles).

    Raises:
        DeployError: naming the first offending member and the rule it breaks.
    """
    if not members:
        raise DeployError(f"'{archive}' is an empty archive. Rebuild the bundle with `edgecam bundle`.")
    if len(members) > MAX_MEMBERS:
        raise DeployError(f"'{archive}' has {len(members)} members (limit {MAX_MEMBERS}); refusing it.")
    tops = set()
    seen: Dict[str, tarfile.TarInfo] = {}
    links: Dict[str, str] = {}  # symbolic link member → what it resolves to, lexically
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
        top = norm.split("/")[0]
        tops.add(top)
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise _reject(archive, name, "is a device, FIFO or other special file")
        parts = norm.split("/")
        under = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in links), None)
        if under is not None:
            raise _reject(archive, name, f"lies beneath the link {under!r} (it would be written through it)")
        if norm == top and not member.isdir():
            raise _reject(archive, name, "is the top-level member but not a directory (a bundle's top is edgecam-<id>/)")
        if member.issym() or member.islnk():
            target = member.linkname
            if not target or target.startswith("/") or "\x00" in target:
                raise _reject(archive, name, f"is a link to an absolute or empty path {target!r}")
            if member.issym():
                resolved = _normal(posixpath.join(posixpath.dirname(norm), target))
            else:  # hard-link targets are archive member names
                resolved = _normal(target)
                if resolved not in seen or not seen[resolved].isfile():
                    raise _reject(archive, name, f"is a hard link to {target!r}, not an earlier member that is a regular file")
            if resolved == ".." or resolved.startswith("../") or resolved.split("/")[0] != top:
                raise _reject(archive, name, f"is a link pointing outside the bundle ({target!r})")
            if resolved == norm:
                raise _reject(archive, name, f"is a link to itself ({target!r})")
            if resolved == top:
                raise _reject(archive, name, f"is a link to the bundle's top directory ({target!r})")
            if member.issym():
                links[norm] = resolved
        seen[norm] = member
    if len(tops) != 1:
        raise DeployError(
            f"'{archive}' must hold exactly one top-level directory; found {sorted(tops)[:5]}. "
            "Rebuild the bundle with `edgecam bundle`."
        )
    top = tops.pop()
    if top_pattern is not None and not top_pattern.fullmatch(top):
        raise DeployError(
            f"'{archive}': the top-level directory is {top!r}, not edgecam-<bundle id> as `edgecam "
            "bundle` writes it. Rebuild the bundle with `edgecam bundle`."
        )
    ancestors = {"/".join(parts[:i]) for parts in (name.split("/") for name in seen) for i in range(1, len(parts))}
    for start in links:
        if start in ancestors:
            raise _reject(archive, start, "is a link with members beneath it (they would be written through it)")
        _follow(archive, start, links)
    return top


def _follow(archive: str, start: str, links: Dict[str, str]) -> None:
    # Follow a chain of links through the archive (a → b → … → a is a loop).
    path, visited = start, {start}
    for _ in range(MAX_LINK_HOPS):
        nxt = _through_links(links[path], links)
        if nxt not in links:
            return
        if nxt in visited:
            raise _reject(archive, start, f"is part of a loop of links ({' -> '.join(sorted(visited)[:4])})")
        visited.add(nxt)
        path = nxt
    raise _reject(archive, start, f"starts a chain of more than {MAX_LINK_HOPS} links")


def _through_links(path: str, links: Dict[str, str]) -> str:
    # Replace a leading directory that is itself a link by its target (one level, lexically).
    parts = path.split("/")
    for i in range(len(parts) - 1, 0, -1):
        head = "/".join(parts[:i])
        if head in links:
            return _normal("/".join([links[head]] + parts[i:]))
    return path


def _chain_symlinks_inside(root: Path) -> None:
    # A link may point at another link; after extraction every link must still land inside.
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                try:
                    real = path.resolve(strict=True)
                except (OSError, RuntimeError) as exc:  # a loop, or a link to nothing
                    why = "it points at nothing" if isinstance(exc, FileNotFoundError) else "a loop of links"
                    raise DeployError(
                        f"Refusing bundle: link '{path.relative_to(root)}' does not resolve ({why}). "
                        "Rebuild the bundle with `edgecam bundle`."
                    ) from None
                if real == real_root or real_root not in real.parents:
                    raise DeployError(
                        f"Refusing bundle: link '{path.relative_to(root)}' resolves to its top or outside it "
                        f"(to '{real}'). Rebuild the bundle with `edgecam bundle`."
                    )


def safe_extract(archive: Union[str, Path], dest: Union[str, Path], top_pattern: Optional[Pattern[str]] = None) -> Path:
    """Extract a bundle archive into ``dest`` and return the extracted top-level directory.

    Args:
        archive: a ``.tar.gz`` (or plain ``.tar``) bundle.
        dest: an existing directory; the bundle lands in ``dest/<top>``, which must not exist.
        top_pattern: the name the top directory must have (:data:`BUNDLE_TOP` for bundles).

    Raises:
        DeployError: unreadable archive, unsafe member, or ``dest/<top>`` already exists.
    """
    archive = str(archive)
    dest = Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            top = check_members(archive, members, top_pattern)
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
