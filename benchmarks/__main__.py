"""Run every benchmark of the project and rewrite docs/benchmarks.md: ``python -m benchmarks``.

A benchmark is a module ``benchmarks/NAME.py`` (not starting with ``_``) that defines
``main(argv)``; it measures, prints, and replaces its own section of ``docs/benchmarks.md``
through :func:`benchmarks._report.write_section`. This runner finds them without importing them
(some import TensorFlow), runs each in its own process one after the other — so one's memory,
threads and imports never disturb another's numbers — and then rewrites the document's header:
the machine and package versions, the date, and a table of what ran, with its command, time and
status. Sections (and table rows) of benchmarks that did not run this time are kept as they were.

Options:
    --only NAME   run only these (repeatable); ``--list`` shows the names.
    --quick       a short version: ``--quick`` for modules whose parser has it, else the
                  module's ``QUICK_ARGS`` list when it defines one, else the full run.
    --no-write    passed to every module; docs/benchmarks.md is left untouched.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ._report import DOC, HEADER, machine, table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Benchmark:
    """A benchmark module found in ``benchmarks/``.

    Attributes:
        name: module name (``soak`` for ``benchmarks/soak.py``).
        has_quick / has_no_write: its parser takes ``--quick`` / ``--no-write``.
        quick_args: its ``QUICK_ARGS`` (a literal list of strings), if any.
    """

    name: str
    has_quick: bool
    has_no_write: bool
    quick_args: Optional[List[str]]

    def argv(self, quick: bool, no_write: bool) -> List[str]:
        args: List[str] = []
        if quick:
            if self.has_quick:
                args.append("--quick")
            elif self.quick_args is not None:
                args.extend(self.quick_args)
        if no_write and self.has_no_write:
            args.append("--no-write")
        return args


def discover(directory: Path = HERE) -> List[Benchmark]:
    """Benchmark modules of ``directory``, by name, read with :mod:`ast` (never imported)."""
    found = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        source = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(source, filename=str(path))
        except SyntaxError:
            continue
        if not any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            continue
        quick_args = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "QUICK_ARGS" for t in node.targets):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue
                if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                    quick_args = list(value)
        found.append(Benchmark(
            name=path.stem,
            has_quick=re.search(r"""["']--quick["']""", source) is not None,
            has_no_write=re.search(r"""["']--no-write["']""", source) is not None,
            quick_args=quick_args,
        ))
    return found


def render_header(rows: Sequence[dict], when: str) -> str:
    """The top of docs/benchmarks.md: what this document is, the machine, the last run."""
    lines = [
        HEADER.rstrip(),
        "",
        f"Machine and versions: {machine()}",
        "",
        f"Last `python -m benchmarks` run: {when}.",
        "",
        table(list(rows)),
        "",
    ]
    return "\n".join(lines)


def previous_rows(doc: Path = DOC) -> List[dict]:
    """The run table of ``doc``'s current header (benchmarks run by an earlier invocation)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    head = text.split("<!-- BEGIN ", 1)[0]
    rows = []
    for line in head.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] not in ("benchmark",) and not set(cells[0]) <= set("-"):
            rows.append(dict(zip(("benchmark", "command", "time", "status"), cells)))
    return rows


def rewrite_header(header: str, doc: Path = DOC) -> Path:
    """Replace everything before the first section of ``doc`` by ``header``."""
    from firmware_host._io import atomic_write_text

    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    start = text.find("<!-- BEGIN ")
    body = text[start:] if start >= 0 else ""
    atomic_write_text(doc, header.rstrip() + "\n\n" + body)
    return doc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true", help="short versions where a benchmark has one")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    benchmarks = discover()
    names = [b.name for b in benchmarks]
    if args.list:
        for b in benchmarks:
            quick = "--quick" if b.has_quick else (" ".join(b.quick_args) if b.quick_args is not None else "no quick version")
            print(f"{b.name:16s} quick: {quick}")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from: {', '.join(names)}")
        benchmarks = [b for b in benchmarks if b.name in args.only]

    rows = []
    failed = 0
    for bench in benchmarks:
        extra = bench.argv(args.quick, args.no_write)
        command = " ".join(["python -m benchmarks." + bench.name, *extra])
        print(f"== {command}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{bench.name}", *extra], cwd=ROOT)
        seconds = time.perf_counter() - start
        failed += code != 0
        note = "" if not args.quick or bench.has_quick or bench.quick_args is not None else " (no quick version: full run)"
        rows.append({
            "benchmark": bench.name,
            "command": f"`{command}`",
            "time": f"{seconds:.0f} s",
            "status": ("ok" if code == 0 else f"FAILED (exit {code})") + note,
        })
    print(table(rows))
    if not args.no_write and rows:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        ran = {row["benchmark"] for row in rows}
        # Benchmarks not run this time (--only) keep their row, marked as from an earlier run.
        kept = [
            {**row, "status": row["status"] if "earlier run" in row["status"] else row["status"] + " (earlier run)"}
            for row in previous_rows() if row["benchmark"] not in ran
        ]
        rewrite_header(render_header(sorted(rows + kept, key=lambda r: r["benchmark"]), when))
        print(f"rewrote {DOC}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
