"""The HTML report: self-contained, and it renders in a real headless Chromium.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (fds 3/4,
NUL-separated JSON): no port, no websocket library, nothing on the network.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_host import cam
from firmware_host.errors import InputError
from toolkit.report import ReportCase, render_report, write_report

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)


class Chromium:
    """A headless Chromium page driven over the DevTools pipe."""

    def __init__(self, user_data_dir: Path) -> None:
        cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads them on fd 3
        res_r, res_w = os.pipe()  # Chromium writes replies on fd 4; we read them
        # Park the child's ends above the low fds so dup2 onto 3/4 cannot clobber them.
        high_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 50)
        high_w = fcntl.fcntl(res_w, fcntl.F_DUPFD, 50)
        os.close(cmd_r)
        os.close(res_w)

        def child_fds():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}",
                "--remote-debugging-pipe", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=child_fds, pass_fds=(3, 4),
        )
        os.close(high_r)
        os.close(high_w)
        self._out = os.fdopen(cmd_w, "wb", buffering=0)
        self._in = os.fdopen(res_r, "rb", buffering=0)
        self._next_id = 0
        self.events: list = []
        self._replies: "queue.Queue" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._in.read(65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                self._replies.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    self._replies.put(msg)
                else:
                    self.events.append(msg)

    def send(self, method: str, params=None, session=None, timeout: float = 60.0):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._replies.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError("Chromium closed the DevTools pipe: " + self.stderr())
            if reply["id"] == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def wait_event(self, method: str, session: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return ev
            time.sleep(0.05)
        raise TimeoutError(f"no {method} within {timeout}s")

    def stderr(self) -> str:
        return self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._reader.join(timeout=10)  # Chromium exited: its end of the pipe is closed
        if not self._reader.is_alive():
            self._in.close()
        self.proc.stderr.close()


def load_in_chromium(path: Path, tmp_path: Path) -> dict:
    """Open ``path`` in headless Chromium; return errors, requested URLs and <img> states."""
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired", session)
        images = browser.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify(Array.from(document.images).map("
                "i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight})))",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        title = browser.send(
            "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=session
        )["result"]["value"]
        events = [e for e in browser.events if e.get("sessionId") == session]
    finally:
        browser.close()
    errors = [
        e for e in events
        if e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
        or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        or e["method"] == "Network.loadingFailed"
    ]
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    return {"errors": errors, "urls": urls, "images": json.loads(images), "title": title}


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
