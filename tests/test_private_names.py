"""Private names stay private (issue 14, item 11): no module imports another module's ``_name``.

A helper one module needs from another is public (in the owner's ``__all__`` or at least without
the underscore), or it moves. Private *modules* (``firmware_host/_io.py``, ``toolkit/cli/_common.py``)
are a package's shared internals and are not counted.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("firmware_host", "converters", "toolkit")

# Uses being removed during issue 14 ("file: module._name"). Empty: every one is gone; keep it so.
ALLOWED: Set[str] = set()


def _is_module(package_dir: Path, name: str) -> bool:
    return (package_dir / f"{name}.py").is_file() or (package_dir / name / "__init__.py").is_file()


def _module_dir(path: Path, node: ast.ImportFrom) -> Path:
    if node.level:
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
    else:
        base = ROOT
    return base.joinpath(*(node.module or "").split(".")) if node.module else base


def private_imports() -> List[str]:
    """``"file: module._name"`` for each ``from module import _name`` of a non-module name."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom):
                    continue
                for alias in node.names:
                    name = alias.name
                    private = name.startswith("_") and not name.startswith("__")
                    if private and not _is_module(_module_dir(path, node), name):
                        module = "." * node.level + (node.module or "")
                        found.append(f"{path.relative_to(ROOT).as_posix()}: {module}.{name}")
    return found


def test_no_module_imports_a_private_name_of_another():
    offenders = [item for item in private_imports() if item not in ALLOWED]
    assert not offenders, "Private names imported across modules (make them public or move them):\n  " + \
        "\n  ".join(offenders)


def test_the_scan_finds_a_private_import(tmp_path, monkeypatch):
    pkg = tmp_path / "toolkit"
    pkg.mkdir()
    (pkg / "a.py").write_text("def _helper():\n    pass\n")
    (pkg / "_io.py").write_text("")
    (pkg / "b.py").write_text("from .a import _helper\nfrom . import _io\nfrom .a import public\n")
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "ROOT", tmp_path)
    monkeypatch.setattr(this, "PACKAGES", ("toolkit",))
    assert private_imports() == ["toolkit/b.py: .a._helper"]
