"""``MANIFEST.sha256``: the checksum list of a deploy bundle, in ``sha256sum -c`` format.

Lives on the device side because ``edgecam doctor`` checks an installed release with it; the host's
``edgecam bundle`` writes it with the same code.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Dict, List, Union

from .errors import DeployError

__all__ = ["MANIFEST", "sha256_file", "write_manifest", "read_manifest", "verify_manifest", "bundle_id"]

MANIFEST = "MANIFEST.sha256"
# Paths stay within this character set: install.sh checks the same pattern with grep.
_LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9._+-][A-Za-z0-9._/+-]*)")


def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> List[str]:
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(name for name in names if name != MANIFEST)


def write_manifest(root: Union[str, Path]) -> Dict[str, str]:
    """Write ``root/MANIFEST.sha256`` for every file under ``root``; return ``{path: sha256}``."""
    root = Path(root)
    files = {name: sha256_file(root / name) for name in _files(root)}
    (root / MANIFEST).write_text("".join(f"{d}  {n}\n" for n, d in files.items()), encoding="utf-8")
    return files


def bundle_id(root: Union[str, Path]) -> str:
    """12 hex digits of the manifest's own sha256: the release name (install.sh computes the same)."""
    return sha256_file(Path(root) / MANIFEST)[:12]


def read_manifest(root: Union[str, Path]) -> Dict[str, str]:
    """Parse ``root/MANIFEST.sha256`` into ``{path: sha256}``.

    Raises:
        DeployError: missing manifest, or a malformed or unsafe (absolute, ``..``) line.
    """
    root = Path(root)
    try:
        lines = (root / MANIFEST).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DeployError(f"'{root}' has no readable {MANIFEST}: not an edgecam bundle.") from exc
    listed: Dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        m = _LINE.fullmatch(line)
        if not m or ".." in m.group(2).split("/"):
            raise DeployError(f"{MANIFEST} line {number} of '{root}' is malformed or unsafe: {line[:120]!r}.")
        listed[m.group(2)] = m.group(1)
    return listed


def verify_manifest(root: Union[str, Path], strict: bool = True) -> Dict[str, str]:
    """Check a bundle directory against its manifest, as install.sh does.

    Args:
        root: an extracted bundle, or (``strict=False``) an installed release.
        strict: also refuse unlisted files and symbolic links (an extracted bundle has neither;
            an installed release adds ``venv/`` and ``.complete``).

    Returns:
        ``{path: sha256}`` of the verified files.

    Raises:
        DeployError: a changed or missing file; with ``strict``, an unlisted file or a link.
    """
    root = Path(root)
    listed = read_manifest(root)
    if strict:
        links = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink()]
        if links:
            raise DeployError(f"'{root}' contains symbolic links ({links[:3]}); a bundle never does.")
        extra = sorted(set(_files(root)) - set(listed))
        if extra:
            raise DeployError(
                f"'{root}' holds files its manifest does not list: {extra[:5]}. The bundle was "
                "modified; rebuild it with `edgecam bundle`."
            )
    missing = sorted(name for name in listed if not (root / name).is_file())
    if missing:
        raise DeployError(f"'{root}' lacks files its manifest lists: {missing[:5]}. Copy the bundle again.")
    changed = [name for name, digest in listed.items() if sha256_file(root / name) != digest]
    if not strict and changed[:1] == ["run.toml"] == changed[-1:]:
        from .plans import vouched_run_toml  # the device's plan choice rewrote it (doctor --choose-plan)

        if vouched_run_toml(root, listed["run.toml"], sha256_file(root / "run.toml")):
            changed = []
    if changed:
        raise DeployError(
            f"Checksum mismatch in '{root}' for {changed[:5]}: the bundle was modified or damaged. "
            "Rebuild it with `edgecam bundle` or copy it again."
        )
    return listed
