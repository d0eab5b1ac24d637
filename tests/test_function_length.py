"""No function in firmware_host, converters or toolkit is longer than MAX_LINES lines (issue 14).

Length is counted from the ``def`` line (decorators excluded) to the function's last line, so the
docstring counts: a function whose documentation and code do not fit on a screen is doing too
much. Nested functions are measured on their own (and inside their parent).

Run ``python tests/test_function_length.py`` to list every offender.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("firmware_host", "converters", "toolkit")
MAX_LINES = 80

# Offenders allowed for now, by "path::function". Empty: every function fits; keep it so.
ALLOWED: Set[str] = set()


def long_functions(max_lines: int = MAX_LINES) -> List[Tuple[str, int]]:
    """``[("path::name", lines), …]`` of every function longer than ``max_lines``, longest first."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > max_lines:
                        found.append((f"{path.relative_to(ROOT).as_posix()}::{node.name}", lines))
    return sorted(found, key=lambda item: -item[1])


def test_no_function_is_longer_than_the_limit():
    offenders = [(name, n) for name, n in long_functions() if name not in ALLOWED]
    assert not offenders, "Functions longer than {} lines (split them into named steps):\n{}".format(
        MAX_LINES, "\n".join(f"  {n:4d}  {name}" for name, n in offenders))


def test_the_measure_counts_lines_from_def_to_end():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))  # def line + 80 = 81 lines
    module = ast.parse(f"def long():\n{body}\n\ndef short():\n    return 1\n")
    lengths = {n.name: n.end_lineno - n.lineno + 1 for n in module.body}
    assert lengths == {"long": MAX_LINES + 1, "short": 2}


if __name__ == "__main__":
    for name, n in long_functions():
        print(f"{n:4d}  {name}{'  (allowed for now)' if name in ALLOWED else ''}")
