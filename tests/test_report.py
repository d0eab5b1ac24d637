"""The HTML report: self-contained, and it renders in a real headless Chromium.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (fds 3/4,
NUL-separated JSON): no port, no websocket library, nothing on the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from firmware_host import cam
from firmware_host.errors import InputError
from toolkit.report import ReportCase, render_report, write_report

from tests._chromium import CHROMIUM, Chromium, Page


def load_in_chromium(path: Path, tmp_path: Path) -> dict:
    """Open ``path`` in headless Chromium; return errors, requested URLs and <img> states."""
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        page = Page(browser)
        page.navigate(path.resolve().as_uri())
        images = page.evaluate(
            "JSON.stringify(Array.from(document.images).map("
            "i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight})))")
        title = page.evaluate("document.title")
    finally:
        browser.close()
    return {"errors": page.errors(), "urls": page.urls(), "images": json.loads(images), "title": title}


# -- fixtures ----------------------------------------------------------------------------------
def _case(name, group, shift, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    full = np.zeros((7, 7), np.float32)
    full[2:5, 2:5] = 1.0
    edge = np.roll(full, shift, axis=1) + 0.1 * rng.random((7, 7)).astype(np.float32)
    return ReportCase(
        name=name, image=image, edge_heat=cam.heatmap(edge), full_heat=cam.heatmap(full),
        metrics={"pearson": 0.5, "ssim": 0.4, "iou_top20": 0.3}, caption="keras: fog 0.91 · edge: fog 0.88",
        group=group,
    )


@pytest.fixture
def report_inputs():
    rng = np.random.default_rng(0)
    records = [
        {
            "image": f"img{i}.png", "pearson": float(p), "spearman": float(p) - 0.02,
            "ssim": float(p) * 0.9, "iou_top10": 0.5, "iou_top20": 0.6, "emd": 0.3,
            "deletion_auc_edge": float(d), "deletion_auc_full": float(d) + 0.01,
            "insertion_auc_edge": 0.7, "insertion_auc_full": 0.72,
        }
        for i, (p, d) in enumerate(zip(rng.uniform(0.6, 1.0, 40), rng.uniform(0.1, 0.3, 40)))
    ]
    summary = {
        "images": 40, "top1_agreement": 0.975, "method": "gradcam", "target_layer": "conv2d_1",
        "pearson": {"n": 40, "median": 0.8, "p05": 0.62, "min": 0.6, "mean": 0.8, "max": 1.0, "p95": 0.98},
        "input_resolution": {"pearson": {"n": 40, "median": 0.85, "p05": 0.7, "min": 0.65, "mean": 0.84, "max": 1.0, "p95": 0.99}},
        "checks": [{"name": "pearson.median", "value": 0.8, "threshold": 0.9, "passed": False},
                   {"name": "top1_agreement", "value": 0.975, "threshold": 0.95, "passed": True}],
        "passed": False, "verdict": "FAIL",
    }
    cases = [_case("worst<1>.png", "worst", 3, 1), _case("best.png", "best", 0, 2)]
    return summary, records, cases


# -- tests -------------------------------------------------------------------------------------
def test_report_is_self_contained(report_inputs, tmp_path):
    summary, records, cases = report_inputs
    path = write_report(tmp_path / "report.html", summary, records, cases)
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert not re.search(r"(src|href)\s*=\s*\"(?!data:image/png;base64,)", text)
    assert "http://" not in text and "https://" not in text
    # 2 cases × 4 panels + histograms + scatters, all embedded PNGs.
    assert text.count('src="data:image/png;base64,') == 10
    assert "FAIL" in text and "pearson.median" in text
    assert "worst&lt;1&gt;.png" in text  # names are escaped


def test_banner_states_pass_and_no_gate(report_inputs):
    summary, records, _ = report_inputs
    passed = dict(summary, passed=True, checks=[dict(c, passed=True) for c in summary["checks"]])
    assert 'class="banner pass"' in render_report(passed, records)
    assert 'class="banner none"' in render_report(dict(summary, checks=[]), [])


def test_case_rejects_mismatched_maps():
    with pytest.raises(InputError, match=r"same shape. Got \(7, 7\) and \(4, 4\)"):
        ReportCase("x", np.zeros((8, 8, 3), np.uint8), np.zeros((7, 7)), np.zeros((4, 4)))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report_inputs, tmp_path):
    summary, records, cases = report_inputs
    path = write_report(tmp_path / "report.html", summary, records, cases)
    page = load_in_chromium(path, tmp_path)
    assert page["errors"] == []
    assert page["title"].startswith("edgecam validation")
    assert len(page["images"]) == 10
    assert all(img["complete"] and img["w"] > 0 and img["h"] > 0 for img in page["images"])
    # Only the file itself is fetched (data: URIs are not network requests).
    assert all(u.startswith("file://") or u.startswith("data:") for u in page["urls"])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_chromium_check_catches_a_broken_page(tmp_path):
    # The harness must be able to fail: a missing image and a script error are both reported.
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="missing.png"><script>undefined_fn()</script></body></html>')
    page = load_in_chromium(bad, tmp_path)
    methods = {e["method"] for e in page["errors"]}
    assert "Runtime.exceptionThrown" in methods
    assert page["images"][0]["w"] == 0


def test_facts_table_shows_flat_fields_once(report_inputs):
    summary, records, _ = report_inputs
    page = render_report(dict(summary, skipped={"unreadable": 3}, input_size=[32, 32]), records)
    assert "unreadable: 3" in page and "32 × 32" in page
    # Statistics appear in the metrics table only (one row per block), not as a fact line.
    assert "n: 40" not in page and page.count(">pearson<") == 1
