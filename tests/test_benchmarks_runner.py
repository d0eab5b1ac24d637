"""``python -m benchmarks``: discovery, option pass-through and the header rewrite.

No benchmark is run here (they are on demand only): fake modules in ``tmp_path`` stand in.
"""

import subprocess
import sys

from benchmarks.__main__ import discover, previous_rows, render_header, rewrite_header
from tests._run_helpers import ROOT, subprocess_env


def test_discovers_modules_with_main_and_their_options(tmp_path):
    (tmp_path / "_private.py").write_text("def main(argv=None): return 0\n")
    (tmp_path / "helper.py").write_text("def other(): pass\n")
    (tmp_path / "a_bench.py").write_text(
        "import argparse\n"
        "def main(argv=None):\n"
        "    p = argparse.ArgumentParser(); p.add_argument('--quick'); p.add_argument('--no-write')\n"
    )
    (tmp_path / "b_bench.py").write_text("QUICK_ARGS = ['--runs', '3']\ndef main(argv=None):\n    return 0\n")
    (tmp_path / "c_bench.py").write_text("def main(argv=None):\n    return 0\n")
    (tmp_path / "broken.py").write_text("def main(:\n")
    found = {b.name: b for b in discover(tmp_path)}
    assert sorted(found) == ["a_bench", "b_bench", "c_bench"]
    assert found["a_bench"].argv(quick=True, no_write=True) == ["--quick", "--no-write"]
    assert found["b_bench"].argv(quick=True, no_write=True) == ["--runs", "3"]  # no --no-write
    assert found["c_bench"].argv(quick=True, no_write=False) == []
    assert found["a_bench"].argv(quick=False, no_write=False) == []


def test_the_project_benchmarks_are_found():
    names = {b.name for b in discover()}
    assert {"run_bench", "soak"} <= names


def test_header_rewrite_keeps_every_section(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# old header\nstale text\n\n<!-- BEGIN a -->\nA\n<!-- END a -->\n\n<!-- BEGIN b -->\nB\n<!-- END b -->\n")
    rows = [{"benchmark": "a", "command": "`python -m benchmarks.a`", "time": "3 s", "status": "ok"}]
    rewrite_header(render_header(rows, "2026-01-01 00:00 UTC"), doc)
    text = doc.read_text()
    assert "stale text" not in text and text.startswith("# Benchmarks")
    assert "Machine and versions:" in text and "numpy" in text
    assert "| a | `python -m benchmarks.a` | 3 s | ok |" in text
    assert text.index("| a |") < text.index("<!-- BEGIN a -->") < text.index("<!-- BEGIN b -->")
    assert "A\n<!-- END a -->" in text and "B\n<!-- END b -->" in text
    assert previous_rows(doc) == rows


def test_unknown_only_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "nope"], cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown benchmark(s) nope" in proc.stderr
