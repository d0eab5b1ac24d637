"""The fleet report (``toolkit.fleet.report``): content, ordering, escaping, bounds, and Chromium.

The fleet output folder is written here by hand, per /work/coord/fleet-contract.md
(``fleet_summary.json`` + ``per_frame.parquet`` + ``worst/*.npz``), so these tests do not
depend on the fleet engines.
"""

from __future__ import annotations

import html
import json
import re
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_host.errors import InputError
from tests._chromium import CHROMIUM
from tests.test_report import load_in_chromium
from toolkit.fleet import report as fleet_report
from toolkit.fleet.report import load_summary, render_fleet_report, write_report

pq = pytest.importorskip("pyarrow.parquet")
import pyarrow as pa  # noqa: E402

CLASSES = ["no fog", "light fog", "moderate fog", "dense fog"]
SHA_A = "a" * 64
SHA_B = "b" * 64
DAY0 = datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp()
EVIL = '<script>alert("x")</script>&veh'
CHANGE_T = DAY0 + 12 * 3600  # the "update" vehicle switches from model A to B at 12:00 on day 0


def _times(days=2, start_h=8, end_h=16, every_s=600):
    return np.concatenate([np.arange(DAY0 + d * 86400 + start_h * 3600, DAY0 + d * 86400 + end_h * 3600, every_s)
                           for d in range(days)]).astype(np.float64)


def _vehicle(name, pearson, status="pass", failures=(), models=(SHA_A,), changes=(), timeline=()):
    p = np.asarray(pearson)
    return {
        "vehicle": name, "status": status, "failures": list(failures), "frames": int(p.size) + 5,
        "validated": int(p.size), "pearson_median": float(np.median(p)), "pearson_p05": float(np.percentile(p, 5)),
        "top1": 0.95, "class_histogram": {"no fog": 10, "dense fog": 3}, "skipped": {"sampled_out": 5},
        "models": list(models), "model_changes": list(changes),
        "days": [{"day": "2026-11-30", "model": models[0], "plan": "int8", "frames": 10, "validated": 10,
                  "pearson_median": float(np.median(p)), "pearson_p05": float(np.percentile(p, 5)), "top1": 0.9,
                  "class_histogram": {}, "skipped": {}},
                 {"day": "2026-12-01", "model": models[-1], "plan": "int8", "frames": 10, "validated": 10,
                  "pearson_median": float(np.median(p)) - 0.01, "pearson_p05": 0.5, "top1": 0.9,
                  "class_histogram": {}, "skipped": {}}],
        "timeline": [list(row) for row in timeline],
    }


def _write_npz(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    full = np.zeros((7, 7), np.float32)
    full[2:5, 2:5] = 1.0
    np.savez(path, image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
             edge=np.roll(full, 3, axis=1) + 0.1 * rng.random((7, 7)).astype(np.float32), full=full)


def make_fleet(out: Path, parquet: bool = True) -> dict:
    """A 3-vehicle fleet output folder: degraded (fails), update (model change), EVIL name (passes)."""
    t = _times()
    rng = np.random.default_rng(0)
    morning = t % 86400 < 12 * 3600
    timeline = [(float(x), 0 if m else 3, SHA_A) for x, m in zip(t, morning)]
    frames = {
        "degraded": (t, np.clip(0.9 - 0.5 * (t - t[0]) / (t[-1] - t[0]) + 0.02 * rng.standard_normal(t.size), -1, 1),
                     np.full(t.size, SHA_A, object)),
        "update": (t, 0.97 + 0.01 * rng.random(t.size), np.where(t < CHANGE_T, SHA_A, SHA_B).astype(object)),
        EVIL: (t, 0.98 + 0.01 * rng.random(t.size), np.full(t.size, SHA_A, object)),
    }
    vehicles = [  # deliberately not worst-first: the report orders them
        _vehicle(EVIL, frames[EVIL][1], timeline=timeline),
        _vehicle("update", frames["update"][1], models=(SHA_A, SHA_B),
                 changes=[{"t": CHANGE_T, "from": SHA_A, "to": SHA_B}],
                 timeline=[(x, c, SHA_A if x < CHANGE_T else SHA_B) for x, c, _ in timeline]),
        _vehicle("degraded", frames["degraded"][1], status="fail", failures=["pearson p05 0.41 < 0.90"],
                 timeline=timeline),
    ]
    (out / "worst").mkdir(parents=True)
    for i in range(3):
        _write_npz(out / "worst" / f"{i}.npz", i)
    (out / "worst" / "3.npz").write_bytes(b"not a zip")
    with np.load(out / "worst" / "2.npz") as data:  # fleet validate keeps no image for an unreadable frame
        np.savez(out / "worst" / "2.npz", edge=data["edge"], full=data["full"])
    worst = [{"vehicle": "degraded", "day": "2026-12-01", "log": "logs/degraded/run1.jsonl", "frame": 40 + i,
              "pearson": 0.1 * i, "recorded_class": 3, "host_class": 3, "edge_class": 0, "model": SHA_A,
              "file": f"worst/{i}.npz"}
             for i in range(4)]
    worst.append(dict(worst[0], file="../outside.npz", frame=99))
    summary = {
        "schema": "edgecam.fleet_summary/1", "engine": "local", "created": "2026-12-01T18:00:00Z",
        "options": {"sample": 50, "min_pearson": 0.9, "min_top1": 0.8, "method": "gradcam"},
        "class_names": CLASSES,
        "models": {SHA_A: {"keras": "models/v1.keras", "name": "fog-v1"}, SHA_B: {"keras": "models/v2.keras", "name": "fog-v2"}},
        "totals": {"logs": 6, "records": 600, "frames": 560, "validated": 290,
                   "skipped": {"malformed": 3, "invalid": 4, "no_model": 17, "unreadable": 2, "weird": 1}},
        "vehicles": vehicles,
        "logs": [{"log": f"logs/{v['vehicle']}/run1.jsonl", "vehicle": v["vehicle"], "run": "run1", "sha256": "c" * 64,
                  "model": SHA_A, "records": 100, "validated": 48, "pearson_median": v["pearson_median"],
                  "pearson_p05": v["pearson_p05"], "top1": 0.95, "skipped": {"malformed": 1, "unreadable": 0}} for v in vehicles],
        "worst_frames": worst,
        "verdict": {"pass": False, "failing_vehicles": ["degraded"], "thresholds": {"min_pearson": 0.9, "min_top1": 0.8}},
    }
    (out / "fleet_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    if parquet:
        cols = {"vehicle": [], "timestamp": [], "pearson": [], "model": []}
        for name, (ts, ps, ms) in frames.items():
            cols["vehicle"] += [name] * ts.size
            cols["timestamp"] += ts.tolist()
            cols["pearson"] += ps.tolist()
            cols["model"] += ms.tolist()
        cols["frame"] = list(range(len(cols["vehicle"])))
        pq.write_table(pa.table(cols), out / "per_frame.parquet")
    return summary


def _section(page: str, name: str) -> str:
    """The HTML of one vehicle's section (from its heading to the next section)."""
    start = page.index(f"<h3>{html.escape(name)} ")
    return page[start:page.index("</section>", start)]


def _circles(svg: str) -> dict:
    """cx of every dot, per fill colour group of the fidelity chart."""
    return {colour: [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', body)]
            for colour, body in re.findall(r'<g fill="(#[0-9a-f]{6})">(.*?)</g>', svg)}


def _assert_self_contained(text: str) -> None:
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:image/png;base64,|#)""", text)
    assert not re.search(r"https?://", text)


# -- content ---------------------------------------------------------------------------------------
def test_report_orders_flags_and_charts_the_fleet(tmp_path):
    make_fleet(tmp_path)
    path = write_report(tmp_path)
    assert path == tmp_path / "fleet_report.html"
    page = path.read_text(encoding="utf-8")
    _assert_self_contained(page)
    # Worst first, in the table and the sections: the failing vehicle, then by Pearson p05.
    order = [page.index(f"<h3>{html.escape(n)} ") for n in ("degraded", "update", EVIL)]
    assert order == sorted(order)
    assert re.search(r'class="banner fail"><strong>FAIL: 1 of 3 vehicles', page)
    assert "degraded: pearson p05 0.41 &lt; 0.90" in page
    # The model change: one line in the updated vehicle's fidelity chart and one in its strip, none elsewhere.
    update = _section(page, "update")
    assert update.count('class="model-change"') == 2
    assert all('class="model-change"' not in _section(page, n) for n in ("degraded", EVIL))
    # ... and it sits between the last frame of model A and the first of model B.
    fidelity = update[update.index('class="chart fidelity"'):update.index("</svg>")]
    line_x = float(re.search(r'class="model-change" x1="([\d.]+)"', fidelity).group(1))
    dots = _circles(fidelity)
    assert len(dots) == 2
    a, b = sorted(dots.values(), key=min)
    assert max(a) < line_x <= min(b)  # the change is stamped with the first record of model B
    # The threshold line is drawn at --min-pearson.
    assert '<title>--min-pearson 0.900</title>' in fidelity
    # Totals: every skip reason found, the four an operator asks about even at 0, unknown ones by key.
    for label, n in (("corrupt or truncated records", 3), ("records with invalid fields", 4),
                     ("records with no matching --keras model", 17), ("frames whose image could not be read", 2),
                     ("frames left out by --sample", 0), ("weird", 1)):
        assert f'skipped: {label}</th><td>{n}</td>' in page
    # Zero counts are left out of the per-log cells.
    assert '<td class="k">malformed: 1</td></tr>' in page


def test_class_strip_follows_the_timeline(tmp_path):
    make_fleet(tmp_path)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    strip = _section(page, "degraded").split('class="chart strip"')[1]
    # Two days of 08:00–12:00 "no fog" then 12:00–16:00 "dense fog": four runs, in this order.
    titles = re.findall(r"<rect [^>]*><title>([^<]*)</title>", strip)
    assert [t.split(" 1")[0] for t in titles] == ["no fog", "dense fog", "no fog", "dense fog"]
    assert titles[0].endswith("11-30 08:00–12:00")
    assert 'fill="#fde725"' in strip and 'fill="#440154"' in strip  # first and last class colours


def test_worst_frames_use_the_validation_panels_and_skip_bad_files(tmp_path):
    make_fleet(tmp_path)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    # Three readable npz files × (frame, edge, full, |difference|); no other images.
    assert page.count('src="data:image/png;base64,') == 12
    for panel in ("original", "edge map", "full Grad-CAM", "|difference|"):
        assert page.count(f"<figcaption>{html.escape(panel)}") == 3
    assert "recorded dense fog · host dense fog · edge no fog · model aaaaaaaaaaaa" in page
    assert page.count("frame image not available") == 1
    assert 'href="#wf0"' in _section(page, "degraded") and 'id="wf0"' in page
    assert page.count('<a href="#v0">↑ degraded</a>') == 3  # each worst frame links back to its vehicle
    # The damaged file and the path outside the folder are named, never fatal, never read.
    assert "worst frame worst/3.npz: not shown (not a readable .npz with image, edge and full" in page
    assert "worst frame ../outside.npz: not shown (the path leaves the output folder)" in page


def test_without_parquet_fidelity_is_per_day(tmp_path):
    make_fleet(tmp_path, parquet=False)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    update = _section(page, "update")
    assert "median per day (per_frame.parquet not available)" in update
    dots = _circles(update)
    assert sorted(len(v) for v in dots.values()) == [1, 1]  # day 0 on model A, day 1 on model B
    assert update.count('class="model-change"') == 2


def test_vehicle_names_are_escaped(tmp_path):
    make_fleet(tmp_path)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert EVIL not in page and "<script" not in page
    assert html.escape(EVIL) in page


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.h3, self.tags, self._in = [], set(), False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self._in = tag == "h3" or self._in

    def handle_endtag(self, tag):
        self._in = False if tag == "h3" else self._in

    def handle_data(self, data):
        if self._in:
            self.h3.append(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=40), failure=st.text(max_size=40))
def test_any_vehicle_name_is_text_not_markup(name, failure):
    summary = {"schema": fleet_report.SCHEMA, "class_names": CLASSES, "vehicles": [
        _vehicle(name, [0.5, 0.6], status="fail", failures=[failure],
                 timeline=[(DAY0, 1, SHA_A), (DAY0 + 60, 2, SHA_A)])],
        "verdict": {"pass": False, "thresholds": {"min_pearson": 0.9}}}
    page = render_fleet_report(summary)
    parser = _Text()
    parser.feed(page)
    # Only the report's own elements exist, and the heading reads the name back verbatim.
    assert parser.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "div", "strong",
                           "ul", "li", "table", "tr", "th", "td", "a", "span", "section", "p", "i", "svg",
                           "rect", "line", "text", "title", "circle", "g"}
    assert "".join(parser.h3).startswith(name + " ")


# -- bounds and errors -----------------------------------------------------------------------------
def test_report_size_is_bounded_for_a_large_fleet(tmp_path):
    summary = make_fleet(tmp_path, parquet=False)
    t = np.arange(DAY0, DAY0 + 2000 * 30, 30, dtype=np.float64)  # 2000 records, class flips every record
    many = [_vehicle(f"veh{i:03d}", [0.9, 0.95], timeline=[(x, k % 4, SHA_A) for k, x in enumerate(t)])
            for i in range(150)]
    summary["vehicles"] += many
    summary["worst_frames"] = [dict(summary["worst_frames"][0], frame=i) for i in range(60)]
    (tmp_path / "fleet_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    n = 150 * 2000
    pq.write_table(pa.table({"vehicle": [f"veh{i // 2000:03d}" for i in range(n)], "timestamp": np.tile(t, 150),
                             "pearson": np.random.default_rng(1).random(n), "model": [SHA_A] * n}),
                   tmp_path / "per_frame.parquet")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert page.count('<section class="vehicle"') == fleet_report.MAX_VEHICLE_SECTIONS
    assert page.count('src="data:image/png;base64,') == 4 * fleet_report.MAX_WORST
    fidelity = _section(page, "veh000").split('class="chart fidelity"')[1].split("</svg>")[0]
    assert fidelity.count("<circle") <= fleet_report.MAX_POINTS
    strip = _section(page, "veh000").split('class="chart strip"')[1]
    assert strip.count("<rect") <= fleet_report.MAX_SEGMENTS
    assert "44 more worst frames are listed in fleet_summary.json." in page
    assert len(page.encode()) < 8_000_000


def test_summary_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"fleet_summary.json: no fleet summary. Run `edgecam fleet validate"):
        write_report(tmp_path)
    (tmp_path / "fleet_summary.json").write_text('{"schema": "other/2"}')
    with pytest.raises(InputError, match=r"schema 'other/2', expected 'edgecam.fleet_summary/1'"):
        load_summary(tmp_path / "fleet_summary.json")
    (tmp_path / "fleet_summary.json").write_text("{")
    with pytest.raises(InputError, match="not a readable JSON fleet summary"):
        write_report(tmp_path)


def test_damaged_parquet_falls_back_to_days(tmp_path):
    make_fleet(tmp_path)
    (tmp_path / "per_frame.parquet").write_bytes(b"PAR1 broken")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "per_frame.parquet could not be read" in page
    assert "median per day" in _section(page, "update")


def test_no_gate_and_pass_banners(tmp_path):
    summary = make_fleet(tmp_path)
    no_gate = dict(summary, verdict={"pass": True, "failing_vehicles": [], "thresholds": {"min_pearson": None}})
    assert 'class="banner none"' in render_fleet_report(no_gate)
    passing = dict(summary, vehicles=[dict(v, status="pass", failures=[]) for v in summary["vehicles"]],
                   verdict=dict(summary["verdict"], failing_vehicles=[], **{"pass": True}))
    assert 'class="banner pass"><strong>PASS: every vehicle meets min_pearson ≥ 0.900, min_top1 ≥ 0.800' in \
        render_fleet_report(passing)


# -- a real browser --------------------------------------------------------------------------------
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_fleet_report_renders_in_headless_chromium(tmp_path):
    out = tmp_path / "fleet"
    make_fleet(out)
    path = write_report(out)
    page = load_in_chromium(path, tmp_path)
    assert page["errors"] == []
    assert page["title"] == "edgecam fleet validation"
    assert len(page["images"]) == 12
    assert all(img["complete"] and img["w"] > 0 and img["h"] > 0 for img in page["images"])
    assert all(u.startswith("file://") or u.startswith("data:") for u in page["urls"])


def test_verdict_and_missing_figures_put_a_vehicle_first():
    def v(name, p05, status="pass"):
        return {"vehicle": name, "status": status, "pearson_p05": p05, "top1": 0.9, "failures": []}

    summary = {"schema": fleet_report.SCHEMA, "vehicles": [v("good", 0.99), v("low", 0.5), v("none", None),
                                                           v("named", 0.98)],
               "verdict": {"pass": False, "failing_vehicles": ["named"], "thresholds": {"min_pearson": 0.9}}}
    page = render_fleet_report(summary)
    table = page[page.index("Vehicles, worst first"):]
    order = [table.index(f'">{n}</a>') for n in ("named", "none", "low", "good")]
    assert order == sorted(order)
    assert re.search(r'named</a></td><td class="k"><span class="tag fail">FAIL', table)


def test_parquet_row_groups_and_nulls_are_grouped_per_vehicle(tmp_path):
    n = 1000
    vehicles = [f"v{i // 300}" for i in range(n)]
    models = [None if i % 7 == 0 else f"m{i // 500}" for i in range(n)]
    pq.write_table(pa.table({"vehicle": vehicles, "timestamp": np.arange(n, dtype=float), "pearson": np.arange(n) / n,
                             "model": models}), tmp_path / "p.parquet", row_group_size=128)
    points, notes = fleet_report.read_frame_points(tmp_path / "p.parquet")
    assert notes == [] and sorted(points) == ["v0", "v1", "v2", "v3"]
    for name, got in points.items():
        rows = [i for i in range(n) if vehicles[i] == name]
        np.testing.assert_array_equal(got.t, np.array(rows, float))
        np.testing.assert_allclose(got.pearson, np.array(rows) / n)
        assert got.model.tolist() == [models[i] or "" for i in rows]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_PATHS = [("engine",), ("options",), ("class_names",), ("models",), ("totals",), ("totals", "skipped"), ("vehicles",),
          ("vehicles", 0), ("vehicles", 0, "timeline"), ("vehicles", 0, "timeline", 0), ("vehicles", 1, "model_changes"),
          ("vehicles", 1, "model_changes", 0), ("vehicles", 0, "days"), ("vehicles", 0, "days", 0),
          ("vehicles", 0, "models"), ("vehicles", 0, "pearson_p05"), ("vehicles", 0, "failures"), ("logs",),
          ("logs", 0), ("verdict",), ("verdict", "thresholds"), ("worst_frames",), ("worst_frames", 0)]


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet")
    return out, make_fleet(out, parquet=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(where=st.sampled_from(_PATHS), value=_JSON)
def test_a_hand_edited_summary_never_crashes_the_report(shared_fleet, where, value):
    out, original = shared_fleet
    summary = json.loads(json.dumps(original))
    target = summary
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    worst, notes = fleet_report.load_worst_frames(out, summary)
    _assert_self_contained(render_fleet_report(summary, None, worst, notes))


def test_without_pyarrow_the_report_says_so_and_charts_days(tmp_path, monkeypatch):
    make_fleet(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import raises ImportError
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "per_frame.parquet not read (pyarrow is not installed): fidelity is shown per day." in page
    assert "median per day" in _section(page, "degraded")


def test_binning_matches_a_per_bin_reference():
    rng = np.random.default_rng(0)
    t, y = np.sort(rng.random(5000) * 1000), rng.random(5000)
    tb, yb = fleet_report._binned(t, y, 50)
    edges = np.linspace(t.min(), t.max(), 51)
    ref = []
    for i in range(50):
        inside = (t >= edges[i]) & ((t < edges[i + 1]) if i < 49 else (t <= edges[i + 1]))
        if inside.any():
            ref.append((t[inside].mean(), np.median(y[inside])))
    np.testing.assert_allclose(np.c_[tb, yb], np.array(ref), rtol=1e-12)
    # The class strip's bins take the most frequent class; what is not a class counts as unknown (-1).
    runs = fleet_report._coarse_runs(np.arange(10.0), np.array([0, 0, 0, 1, 1, 1, 1, 2, np.nan, 1e30]), 3)
    assert runs == [(0.0, 3.0, 0), (3.0, 6.0, 1), (6.0, 9.0, -1)]


def test_a_vehicle_without_rows_in_the_parquet_has_no_chart_not_a_day_fallback(tmp_path):
    summary = make_fleet(tmp_path)
    summary["vehicles"].append(_vehicle("nothing-validated", [0.5], timeline=[(DAY0, 1, SHA_A)]))
    summary["vehicles"][-1].update(validated=0, pearson_median=None, pearson_p05=None, days=[])
    (tmp_path / "fleet_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    section = _section(page, "nothing-validated")
    assert "No validated frames to chart." in section and "per day" not in section
    assert 'class="chart strip"' in section  # its records' classes are still drawn
    assert "Fidelity: 96 validated frames" in _section(page, "update")


# -- with the real pipeline ------------------------------------------------------------------------
def test_a_real_fleet_run_draws_its_model_change(tmp_path):
    """``fleet_validate`` on run logs written by the run loop's telemetry sink; a vehicle switches model."""
    pytest.importorskip("tensorflow")
    import hashlib
    import zipfile

    from tests import test_fleet as tf_fleet
    from toolkit.fleet import fleet_validate

    v2 = tmp_path / "tiny_fog_v2.keras"  # the same network in other bytes: a second model version
    with zipfile.ZipFile(tf_fleet.KERAS) as src, zipfile.ZipFile(v2, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.comment = b"v2"
    sha2 = hashlib.sha256(v2.read_bytes()).hexdigest()

    def header(sha):
        return {"vehicle": None, "model_sha256": sha, "source_model_sha256": sha, "plan": "none"}

    root = tmp_path / "logs"
    for seed, (vehicle, day, start, sha) in enumerate((("van-up", "d1", tf_fleet.DAY1, tf_fleet.SHA),
                                                       ("van-up", "d2", tf_fleet.DAY2, sha2),
                                                       ("van-ok", "d1", tf_fleet.DAY1, tf_fleet.SHA))):
        (root / vehicle).mkdir(parents=True, exist_ok=True)
        tf_fleet._write_log(root / vehicle / f"{day}.jsonl", seed, start, frames=4, header=header(sha))
    result = fleet_validate([root], [tf_fleet.KERAS, v2], tmp_path / "out", edges=[tf_fleet.EDGE], progress=False)
    assert result.report_path == tmp_path / "out" / "fleet_report.html"
    page = result.report_path.read_text(encoding="utf-8")
    _assert_self_contained(page)
    assert _section(page, "van-up").count('class="model-change"') == 2
    assert 'class="model-change"' not in _section(page, "van-ok")
    assert f"model {tf_fleet.SHA} → {sha2} at 12-02 00:00 UTC" in _section(page, "van-up")
    shown = min(len(result.summary["worst_frames"]), fleet_report.MAX_WORST)
    assert page.count('src="data:image/png;base64,') == 4 * shown > 0


def test_pearson_axis_is_shared_by_healthy_vehicles_and_widened_for_drift(tmp_path):
    make_fleet(tmp_path)
    page = write_report(tmp_path).read_text(encoding="utf-8")

    def y_labels(name):
        svg = _section(page, name).split('class="chart fidelity"')[1].split("</svg>")[0]
        return [float(v) for v in re.findall(r'text-anchor="end" fill="#555">(-?[\d.]+)</text>', svg)]

    assert y_labels("update") == y_labels(EVIL) == [1.0, 0.95, 0.9, 0.85, 0.8]
    degraded = y_labels("degraded")  # its frames fall to ~0.4: the axis reaches below them
    assert degraded[0] == 1.0 and degraded[-1] <= 0.4


def test_implausible_clocks_are_counted_not_drawn(tmp_path):
    summary = make_fleet(tmp_path, parquet=False)
    t = _times(days=1)
    bad = np.r_[t, 5.0, 60.0, 4e9 + 9e8]  # a clock reset to 1970 twice, and one from 2127
    pq.write_table(pa.table({"vehicle": ["update"] * bad.size, "timestamp": bad,
                             "pearson": np.full(bad.size, 0.97), "model": [SHA_A] * bad.size}),
                   tmp_path / "per_frame.parquet")
    summary["vehicles"][1]["timeline"] += [[5.0, 1, SHA_A], [None, 1, SHA_A]]
    summary["vehicles"][0]["timeline"] = [[None, 0, SHA_A]]
    (tmp_path / "fleet_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    update = _section(page, "update")
    assert f"{t.size} validated frames; 3 without a plausible timestamp (2000–2100) are not drawn" in update
    # The axis spans the two plausible days only (a 1970 point would stretch it over 56 years).
    days = re.findall(r'fill="#555">(\d\d-\d\d) \d\d:\d\d</text>', update)
    assert set(days) == {"11-30", "12-01"}
    assert update.split('class="chart fidelity"')[1].count("<circle") == t.size
    assert "No timestamps in these records: no charts over time." in _section(page, EVIL)
