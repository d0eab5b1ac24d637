"""``edgecam fleet validate``: many vehicles' logs, per-log agreement with ``validate --from-log``.

The fleet is written by the run loop's own telemetry sink (and one vehicle by ``run()`` itself)
with the committed tiny fog model: three healthy vehicles, one whose logged CAMs are noise (a
"degraded" device), one whose logs name a model nobody passed, a corrupt and a truncated line, an
unreadable saved frame and a run header. The references are ``edgecam validate --from-log`` run
log by log, a GradientTape Grad-CAM written here, and counts computed from what the test wrote.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from firmware_host import telemetry
from firmware_host.errors import InputError, MissingDependencyError

DATA = Path(__file__).parent / "data"
KERAS, EDGE = DATA / "tiny_fog.keras", DATA / "tiny_fog.tflite"
DAY1, DAY2 = 1764547200.0, 1764633600.0  # 2025-12-01 and 2025-12-02, 00:00 UTC
SHA = hashlib.sha256(KERAS.read_bytes()).hexdigest()
OTHER = "ab" * 32  # a model nobody passes with --keras


def _image(rng, size=32):
    img = rng.integers(0, 60, (size + 8, size + 4, 3), dtype=np.uint8)
    r, c = rng.integers(0, size - 10, 2)
    img[r: r + 10, c: c + 10, rng.integers(0, 3)] = 250
    return img


def _write_log(path: Path, seed: int, start: float, frames: int = 6, save_every: int = 1, header=None,
               noise_cams: bool = False) -> Path:
    """A run log written by the run loop's telemetry sink (optionally with its CAMs replaced by noise)."""
    from firmware_host import ExplainableModel
    from firmware_host.sinks import TelemetryLog

    edge = ExplainableModel(EDGE)
    rng = np.random.default_rng(seed)
    log = TelemetryLog(path, save_frames=save_every, frame_format="png")
    for i in range(frames):
        rgb = _image(rng)
        log.write(frame=i, timestamp=start + 60.0 * i, explanation=edge.explain(rgb), image_bgr=rgb[..., ::-1].copy())
    log.close()
    lines = [line for line in path.read_text().splitlines() if not line.startswith('{"header"')]
    if noise_cams:
        records = [json.loads(line) for line in lines]
        for rec in records:
            rec["cam"] = rng.random(np.shape(rec["cam"])).round(4).tolist()
        lines = [json.dumps(rec) for rec in records]
    if header is not None:
        lines = [json.dumps({"header": "edgecam.run/1", **header})] + lines
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The fleet's logs, and what the test knows about them."""
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("fleet")
    logs = {
        "van-1/d1.jsonl": _write_log(root / "van-1" / "d1.jsonl", 1, DAY1, header={
            "vehicle": None, "model_sha256": "00" * 32, "source_model_sha256": SHA, "plan": "none"}),
        "van-1/d2.jsonl": _write_log(root / "van-1" / "d2.jsonl", 2, DAY2, save_every=2),
        "van-2/d1.jsonl": _write_log(root / "van-2" / "d1.jsonl", 3, DAY1),
        "van-3/d1.jsonl": _write_log(root / "van-3" / "d1.jsonl", 4, DAY1, frames=3,
                                     header={"model_sha256": OTHER, "source_model_sha256": OTHER}),
        "van-4/d1.jsonl": _write_log(root / "van-4" / "d1.jsonl", 5, DAY1, noise_cams=True),
    }
    with open(logs["van-2/d1.jsonl"], "a") as handle:  # a corrupt line, then a line cut by a power loss
        handle.write("{not json\n" + '{"frame": 9, "class_index": 1, "probabilities": [0.1,')
    frame = sorted((root / "van-2").rglob("*.png"))[2]
    frame.write_bytes(b"not an image")  # an unreadable saved frame
    return root, logs


@pytest.fixture(scope="module")
def result(fleet, tmp_path_factory):
    from toolkit.fleet import fleet_validate

    root, _ = fleet
    out = tmp_path_factory.mktemp("out")
    return fleet_validate([root], [KERAS], out, edges=[EDGE], min_pearson=0.9, progress=False)


def _vehicle(summary, name):
    return next(v for v in summary["vehicles"] if v["vehicle"] == name)


def test_counts_and_skips_are_reported_not_fatal(fleet, result):
    s = result.summary
    assert {v["vehicle"] for v in s["vehicles"]} == {"van-1", "van-2", "van-3", "van-4"}
    t = s["totals"]
    assert t["logs"] == 5 and t["frames"] == 6 + 6 + 6 + 3 + 6
    assert t["skipped"]["malformed"] == 2 and t["skipped"]["unreadable"] == 1
    assert t["skipped"]["no_model"] == 3 and t["skipped"]["no_frame_path"] == 3
    assert t["validated"] == 6 + 3 + 5 + 6
    assert _vehicle(s, "van-3")["validated"] == 0 and _vehicle(s, "van-3")["skipped"]["no_model"] == 3
    v1 = _vehicle(s, "van-1")
    assert [d["day"] for d in v1["days"]] == ["2025-12-01", "2025-12-02"]
    assert v1["days"][0]["plan"] == "none" and v1["models"] == [SHA]
    assert sum(v1["class_histogram"].values()) == 12 and set(v1["class_histogram"]) <= set(s["class_names"])
    assert len(v1["timeline"]) == 12 and v1["timeline"][0][0] == DAY1
    assert (result.out_dir / "per_frame.parquet").is_file() and (result.out_dir / "fleet_summary.json").is_file()
    if result.report_path is not None:  # toolkit.fleet.report
        html = result.report_path.read_text()
        assert "van-4" in html and "<script src=" not in html


def test_the_gate_names_the_degraded_vehicle(result):
    s = result.summary
    assert not result.passed
    assert s["verdict"]["failing_vehicles"] == ["van-3", "van-4"]  # van-3: nothing validated
    assert s["vehicles"][0]["vehicle"] in ("van-3", "van-4")
    assert _vehicle(s, "van-4")["failures"][0].startswith("pearson median")
    assert _vehicle(s, "van-1")["status"] == "pass" and _vehicle(s, "van-1")["pearson_median"] > 0.999


def test_each_log_matches_validate_from_log(fleet, result, tmp_path):
    from toolkit.validate import validate_log

    root, logs = fleet
    entries = {Path(e["log"]).relative_to(root.resolve()).as_posix(): e for e in result.summary["logs"]}
    for name, path in logs.items():
        if name.startswith("van-3"):
            continue  # its model was not passed: validate --from-log would compare the wrong model
        ref = validate_log(KERAS, EDGE, path, tmp_path / name, faithfulness=False, progress=False).summary
        mine = entries[name]
        assert mine["validated"] == ref["images"], name
        assert mine["pearson_median"] == pytest.approx(ref["pearson"]["median"], abs=1e-9), name
        assert mine["pearson_p05"] == pytest.approx(ref["pearson"]["p05"], abs=1e-9), name
        assert mine["top1"] == pytest.approx(ref["top1_agreement"], abs=1e-12), name
        for reason in ("malformed", "invalid", "no_frame_path", "unreadable"):  # the header is not a record
            assert mine["skipped"][reason] == ref["skipped"].get(reason, 0), (name, reason)


def test_per_frame_pearson_matches_an_independent_grad_cam(fleet, result):
    """Each parquet row's Pearson, recomputed from the frame with a GradientTape Grad-CAM (to 1e-3)."""
    import keras
    import pyarrow.parquet as pq
    import tensorflow as tf

    from firmware_host.preprocess import preprocess
    from firmware_host.formats import read_metadata
    from toolkit.validate import read_rgb

    rows = pq.read_table(result.per_frame_path).to_pylist()
    assert len(rows) == result.summary["totals"]["validated"]
    model = keras.models.load_model(KERAS)
    features = keras.Model(model.inputs, model.get_layer("last_conv").output)
    dense = model.get_layer("fog_level")
    pre = read_metadata(EDGE).preprocessing
    records = {}
    for row in rows:
        if row["vehicle"] != "van-1":
            continue
        if row["log"] not in records:
            records[row["log"]] = {r.line: r for r in telemetry.read_records(row["log"])
                                   if isinstance(r, telemetry.TelemetryRecord)}
        rec = records[row["log"]][row["line"]]
        x = preprocess(read_rgb(row["frame_path"]), pre)[None]
        with tf.GradientTape() as tape:
            a = features([x])
            tape.watch(a)
            score = (tf.matmul(tf.reduce_mean(a, axis=(1, 2)), dense.kernel) + dense.bias)[0, rec.class_index]
        grads = tape.gradient(score, a).numpy()[0]  # Grad-CAM, Eq. 1-2 of Selvaraju et al. 2017
        full = np.maximum(np.sum(a.numpy()[0] * grads.mean(axis=(0, 1)), axis=-1), 0)
        assert row["pearson"] == pytest.approx(np.corrcoef(full.ravel(), np.maximum(rec.cam, 0).ravel())[0, 1], abs=1e-3)
        assert row["top1_agree"] == (int(np.argmax(model.predict_on_batch(x)[0])) == rec.predicted_index)


def test_worst_frames_are_the_lowest_pearson_with_their_maps(result):
    import pyarrow.parquet as pq

    worst = result.summary["worst_frames"]
    pearsons = sorted(pq.read_table(result.per_frame_path).column("pearson").to_pylist())
    assert [w["pearson"] for w in worst] == pearsons[: len(worst)] and len(worst) == 12
    first = np.load(result.out_dir / worst[0]["file"])
    assert first["edge"].shape == first["full"].shape == (16, 16) and first["image"].dtype == np.uint8
    assert worst[0]["vehicle"] == "van-4"


def test_a_second_run_reuses_finished_logs(fleet, tmp_path, monkeypatch):
    from toolkit.fleet import api, scoring

    root, logs = fleet
    first = api.fleet_validate([root / "van-1", root / "van-2"], [KERAS], tmp_path, edges=[EDGE], progress=False)
    assert first.reused == 0

    def no_scoring(self, batch):
        raise AssertionError("a cached log was scored again")

    monkeypatch.setattr(scoring.FrameScorer, "__call__", no_scoring)
    second = api.fleet_validate([root / "van-1", root / "van-2"], [KERAS], tmp_path, edges=[EDGE], progress=False)
    assert second.reused == 3
    strip = lambda s: {k: v for k, v in s.items() if k != "created"}  # noqa: E731
    assert strip(second.summary) == strip(first.summary)
    # Other options score again; a changed log is scored again, alone.
    with pytest.raises(AssertionError, match="scored again"):
        api.fleet_validate([root / "van-1"], [KERAS], tmp_path, edges=[EDGE], progress=False, method="hirescam")
    monkeypatch.undo()
    copy = tmp_path / "logs" / "van-2"
    _write_log(copy / "d1.jsonl", 3, DAY1)
    again = api.fleet_validate([root / "van-1", copy], [KERAS], tmp_path, edges=[EDGE], progress=False)
    assert again.reused == 2 and again.summary["totals"]["logs"] == 3
    # A damaged cache entry, or one whose rows are gone, is scored again (not trusted, not fatal).
    entries = sorted((tmp_path / "cache").glob("*.json"))
    entries[0].write_text("{not json")
    for spool in (tmp_path / "cache").glob("rows-*.parquet"):
        spool.unlink()
    last = api.fleet_validate([root / "van-1", copy], [KERAS], tmp_path, edges=[EDGE], progress=False)
    assert last.reused == 0 and strip(last.summary)["totals"] == strip(again.summary)["totals"]


def test_sample_spreads_frames_evenly_per_vehicle_and_day(fleet, tmp_path):
    from toolkit.fleet import fleet_validate

    root, _ = fleet
    res = fleet_validate([root / "van-1", root / "van-4"], [KERAS], tmp_path, edges=[EDGE], sample=2, progress=False)
    import pyarrow.parquet as pq

    rows = pq.read_table(res.per_frame_path).to_pylist()
    picked = {}
    for r in rows:
        picked.setdefault((r["vehicle"], r["day"]), []).append(r["frame"])
    # 6 saved frames on van-1 day 1 and van-4: frames 0 and 3 (k*6//2); 3 on van-1 day 2 (frames 0, 2, 4): 0 and 2.
    assert {k: sorted(v) for k, v in picked.items()} == {
        ("van-1", "2025-12-01"): [0, 3], ("van-1", "2025-12-02"): [0, 2], ("van-4", "2025-12-01"): [0, 3]}
    assert res.summary["totals"]["skipped"]["sampled_out"] == 4 + 1 + 4


def test_cli_exit_code_follows_the_gate(fleet, tmp_path):
    from click.testing import CliRunner

    from toolkit.cli import cli

    root, _ = fleet
    base = ["fleet", "validate", str(root / "van-1"), str(root / "van-4"), "--keras", str(KERAS), "--edge", str(EDGE),
            "--quiet"]
    bad = CliRunner().invoke(cli, base + ["--out", str(tmp_path / "a"), "--min-pearson", "0.9"])
    assert bad.exit_code == 1, bad.output
    assert "FAIL" in bad.output and "van-4" in bad.output
    ok = CliRunner().invoke(cli, ["fleet", "validate", str(root / "van-1"), "--keras", str(KERAS), "--edge",
                                  str(EDGE), "--quiet", "--out", str(tmp_path / "b"), "--min-pearson", "0.9"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("PASS")


def test_scorer_is_rebuilt_from_its_arguments(fleet):
    from toolkit.fleet import build_plan, model_batches
    from toolkit.fleet.scoring import FrameScorer

    root, logs = fleet
    plan = build_plan([logs["van-1/d1.jsonl"]], [KERAS], [EDGE])
    batch = next(model_batches(plan.fleet_log(plan.logs[0]).frames(), 4))
    scorer = FrameScorer(**plan.scorer_kwargs())
    first = scorer(batch)
    clone = pickle.loads(pickle.dumps(scorer))
    assert clone is not scorer and clone._hosts == {}
    again = clone(batch)
    np.testing.assert_allclose(again["pearson"], first["pearson"], atol=1e-6)
    assert list(first["status"]) == ["ok"] * 4 and "edge_cam" in first and first["full_cam"].shape == (4, 16, 16)


def test_aggregation_does_not_depend_on_order(fleet):
    from toolkit.fleet import FleetAggregator, build_plan, model_batches, to_columns
    from toolkit.fleet.scoring import FrameScorer

    root, _ = fleet
    plan = build_plan([root / "van-1", root / "van-4"], [KERAS], [EDGE])
    scorer = FrameScorer(**plan.scorer_kwargs())
    rows, tallies = [], []
    for ref in plan.logs:
        log = plan.fleet_log(ref)
        for batch in model_batches(log.frames(), 32):
            scored = scorer(batch)
            rows += [{k: v[i] for k, v in scored.items()} for i in range(len(scored["status"]))]
        tallies.append(log.tally)
    forward, shuffled = FleetAggregator(5), FleetAggregator(5)
    forward.add_rows(to_columns(rows))
    for tally in tallies:
        forward.add_tally(tally)
    random.Random(3).shuffle(rows)
    for tally in reversed(tallies):
        shuffled.add_tally(tally)
    for i in range(0, len(rows), 3):
        shuffled.add_rows(to_columns(rows[i: i + 3]))
    assert shuffled.summary(plan.class_names, {"min_pearson": 0.5}) == forward.summary(plan.class_names, {"min_pearson": 0.5})
    assert [w["line"] for w in shuffled.worst_frames()] == [w["line"] for w in forward.worst_frames()]


def test_logs_are_found_in_files_folders_and_globs(fleet):
    from toolkit.fleet.logs import discover_logs, vehicle_and_run

    root, logs = fleet
    everything = discover_logs([root])
    assert len(everything) == 5
    assert discover_logs([str(root / "van-1" / "*.jsonl"), logs["van-1/d1.jsonl"]]) == everything[:2]
    assert vehicle_and_run(logs["van-2/d1.jsonl"]) == ("van-2", "d1")
    assert vehicle_and_run(logs["van-2/d1.jsonl"], r"(?P<vehicle>van-\d)/(?P<run>d\d)") == ("van-2", "d1")
    with pytest.raises(InputError, match="does not match"):
        vehicle_and_run(logs["van-2/d1.jsonl"], r"(bus-\d)")
    with pytest.raises(InputError, match="no group"):
        vehicle_and_run(logs["van-2/d1.jsonl"], r"van")
    with pytest.raises(InputError, match="does not exist"):
        discover_logs([root / "nope"])


def test_the_vehicle_field_names_the_vehicle(tmp_path):
    from toolkit.fleet.logs import vehicle_and_run

    log = tmp_path / "logs" / "run.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps({"header": "edgecam.run/1", "vehicle": "bus-12"}) + "\n")
    assert vehicle_and_run(log) == ("bus-12", "run")
    log.write_text(json.dumps({"vehicle": "bus-13", "frame": 0}) + "\n")
    assert vehicle_and_run(log) == ("bus-13", "run")
    assert vehicle_and_run(log, r"(logs)") == ("logs", "run")


def test_ray_engine_without_ray_gives_an_install_hint(fleet, tmp_path, monkeypatch):
    import sys

    from toolkit.fleet import fleet_validate

    root, logs = fleet
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgecam\[fleet\]'"):
        fleet_validate([logs["van-1/d1.jsonl"]], [KERAS], tmp_path, edges=[EDGE], engine="ray", progress=False)


def test_no_model_and_no_log_are_clear_errors(fleet, tmp_path):
    from toolkit.fleet import fleet_validate

    root, _ = fleet
    with pytest.raises(InputError, match="--keras"):
        fleet_validate([root], [], tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No .jsonl run log"):
        fleet_validate([tmp_path / "empty"], [KERAS], tmp_path / "o", edges=[EDGE])


def test_an_interrupted_run_keeps_the_logs_it_finished(fleet, tmp_path, monkeypatch):
    """The cache is written after each chunk of logs: a crash loses the current chunk only."""
    import pyarrow.parquet as pq

    from toolkit.fleet import api, scoring

    root, _ = fleet
    inputs = [root / "van-1", root / "van-2", root / "van-4"]
    monkeypatch.setitem(api.CHECKPOINT_FRAMES, "local", 3)  # a chunk per log here (3+ saved frames each)
    real, calls = scoring.FrameScorer.__call__, []

    def crash_on_the_third_log(self, batch):
        calls.append(str(batch["log"][0]))
        if len(set(calls)) == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(scoring.FrameScorer, "__call__", crash_on_the_third_log)
    with pytest.raises(KeyboardInterrupt):
        api.fleet_validate(inputs, [KERAS], tmp_path, edges=[EDGE], progress=False)
    monkeypatch.setattr(scoring.FrameScorer, "__call__", real)
    resumed = api.fleet_validate(inputs, [KERAS], tmp_path, edges=[EDGE], progress=False)
    assert resumed.reused == 2
    fresh = api.fleet_validate(inputs, [KERAS], tmp_path / "fresh", edges=[EDGE], progress=False, resume=False)
    strip = lambda s: {k: v for k, v in s.items() if k != "created"}  # noqa: E731
    assert strip(resumed.summary) == strip(fresh.summary)
    key = lambda r: (r["log"], r["line"])  # noqa: E731
    rows = sorted(pq.read_table(resumed.per_frame_path).to_pylist(), key=key)
    assert rows == sorted(pq.read_table(fresh.per_frame_path).to_pylist(), key=key)
    assert len(rows) == resumed.summary["totals"]["validated"] == 6 + 3 + 5 + 6


def test_a_model_change_is_found_and_logs_are_matched_by_hash(tmp_path):
    """Two Keras files (the same weights saved twice: two hashes); the second has no --edge."""
    import keras

    from toolkit.fleet import fleet_validate

    second = tmp_path / "tiny_fog_v2.keras"
    keras.models.load_model(KERAS).save(second)
    sha2 = hashlib.sha256(second.read_bytes()).hexdigest()
    assert sha2 != SHA
    van = tmp_path / "logs" / "van-5"
    _write_log(van / "d1.jsonl", 7, DAY1, header={"source_model_sha256": SHA})
    _write_log(van / "d2.jsonl", 8, DAY2, header={"model_sha256": "cd" * 32, "source_model_sha256": sha2})
    _write_log(van / "d0.jsonl", 9, DAY1 - 86400.0)  # no hash, and two models: cannot be matched
    res = fleet_validate([van], [KERAS, second], tmp_path / "out", edges=[EDGE], progress=False)
    v = res.summary["vehicles"][0]
    assert v["model_changes"] == [{"t": DAY2, "from": SHA, "to": sha2}]
    days = {(d["day"], d["model"]): d for d in v["days"]}
    assert set(days) == {("2025-11-30", ""), ("2025-12-01", SHA), ("2025-12-02", sha2)}
    assert days[("2025-11-30", "")]["skipped"]["no_model"] == 6 and days[("2025-11-30", "")]["validated"] == 0
    # Without --edge the preprocessing is detected from the Keras model: the same as the converter chose.
    assert days[("2025-12-01", SHA)]["validated"] == days[("2025-12-02", sha2)]["validated"] == 6
    assert days[("2025-12-02", sha2)]["pearson_median"] > 0.999 and days[("2025-12-02", sha2)]["top1"] == 1.0
    assert res.summary["models"][sha2]["edge"] is None and res.summary["models"][SHA]["edge"] == str(EDGE)
    assert v["models"] == sorted([SHA, sha2])


def test_fleet_help_does_not_import_tensorflow():
    import subprocess

    from tests._run_helpers import TF_BLOCKED_CLI, python, subprocess_env

    proc = subprocess.run([python(), "-c", TF_BLOCKED_CLI, "fleet", "validate", "--help"], capture_output=True,
                          text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--vehicle-from" in proc.stdout and "--sample" in proc.stdout and "--engine" in proc.stdout
    assert "LEAKED: []" in proc.stderr


# -- hostile logs: every line is counted once, nothing raises ------------------------------------
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_FINITE = st.floats(-1e3, 1e3, allow_nan=False)
_RECORD = st.fixed_dictionaries(
    {"class_index": st.integers(-1, 2), "probabilities": st.lists(_FINITE, min_size=1, max_size=3),
     "cam": st.lists(st.lists(_FINITE, min_size=2, max_size=2), min_size=1, max_size=3)},
    optional={"frame_path": st.sampled_from(["f.png", "../up.png", "/etc/passwd", "", "sub/f.png"]),
              "model": st.sampled_from(["a" * 64, "b" * 64, "", 7]),
              "timestamp": st.one_of(_FINITE, st.sampled_from(["2025-12-01T10:00:00Z", "noon", 1e300])),
              "frame": st.integers(-5, 5), "vehicle": st.sampled_from(["van-1", 3])})
_LINE = st.one_of(_RECORD.map(json.dumps), st.text(max_size=30), st.sampled_from(["[1, 2]", "{}", "null", "{\"a\":"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_LINE, max_size=12), sample=st.sampled_from([None, 1, 2]))
def test_hostile_log_lines_are_counted_once_and_never_fatal(tmp_path_factory, lines, sample):
    from firmware_host.metadata import Preprocessing
    from toolkit.fleet import FleetPlan, LogRef
    from toolkit.fleet.models import ModelSpec
    from toolkit.fleet.plan import sample_picks

    folder = tmp_path_factory.mktemp("hostile")
    (folder / "f.png").write_bytes(b"x")
    log = folder / "run.jsonl"
    log.write_text(json.dumps({"header": "edgecam.run/1", "source_model_sha256": "a" * 64}) + "\n"
                   + "\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines) + "\n")
    spec = ModelSpec("a" * 64, "m.keras", "m", Preprocessing(8, 8, "rgb", (1.0,), (0.0,)), ("x", "y"), (2, 2))
    plan = FleetPlan(logs=(), models={spec.sha256: spec})
    ref = LogRef(str(log), "van", "run", "0" * 64, model="a" * 64)
    counts = plan.fleet_log(ref).candidates()
    if sample is not None:
        ref = LogRef(**{**ref.__dict__, "picks": sample_picks([(ref, counts)], sample)[ref.path]})
    reader = plan.fleet_log(ref)
    rows = list(reader.frames())
    tally = reader.tally
    reasons = Counter()
    for (_, _, reason), n in tally.skipped.items():
        reasons[reason] += n
    non_blank = sum(1 for line in log.read_text().split("\n")[1:] if line.strip())
    assert tally.records + reasons["malformed"] + reasons["invalid"] == non_blank
    assert len(rows) + reasons["no_frame_path"] + reasons["no_model"] + reasons["sampled_out"] == tally.records
    assert len(rows) == sum(counts.values()) if sample is None else len(rows) <= sample * len(counts)
    for row in rows:
        assert folder.resolve() in Path(row["frame_path"]).resolve().parents and row["edge_cam"].shape == (2, 2)


def test_every_option_is_one_field_spelled_once(monkeypatch, tmp_path):
    """The CLI options come from FleetOptions: each flag sets its field, the defaults are the fields'."""
    from dataclasses import fields

    from click.testing import CliRunner

    from toolkit.cli import cli
    from toolkit.fleet import api

    seen = []
    monkeypatch.setattr(api, "fleet_validate", lambda logs, keras, out, edges, options: seen.append(options) or 1 / 0)
    log = tmp_path / "a.jsonl"
    log.write_text("")
    base = ["fleet", "validate", str(log), "--keras", str(KERAS), "--out", str(tmp_path / "o")]
    CliRunner().invoke(cli, base)
    assert seen[-1] == api.FleetOptions()
    CliRunner().invoke(cli, base + ["--unsafe", "--quiet", "--no-resume", "--worst", "3", "--sample", "5",
                                    "--engine", "ray", "--min-p05", "0.5", "--vehicle-from", "(x)"])
    assert seen[-1] == api.FleetOptions(safe_mode=False, progress=False, resume=False, k_worst=3, sample=5,
                                        engine="ray", min_p05=0.5, vehicle_from="(x)")
    help_text = CliRunner().invoke(cli, ["fleet", "validate", "--help"]).output
    assert all(f.metadata["flag"] in help_text for f in fields(api.FleetOptions))


def test_a_broken_run_header_is_counted_as_validate_counts_it(tmp_path):
    """A header whose fields have the wrong types is an invalid line for both readers, not silently dropped."""
    from firmware_host.metadata import Preprocessing
    from toolkit.fleet import FleetPlan, LogRef
    from toolkit.fleet.models import ModelSpec
    from toolkit.validate import RunLogReader

    (tmp_path / "f.png").write_bytes(b"x")
    record = {"frame": 0, "class_index": 0, "probabilities": [0.7, 0.3], "cam": [[0, 1], [1, 0]],
              "frame_path": "f.png", "model": "a" * 64}
    log = tmp_path / "run.jsonl"
    log.write_text(json.dumps({"header": "edgecam.run/1", "started": "yesterday"}) + "\n"
                   + json.dumps(record) + "\n")
    spec = ModelSpec("a" * 64, "m.keras", "m", Preprocessing(8, 8, "rgb", (1.0,), (0.0,)), ("x", "y"), (2, 2))
    reader = FleetPlan(logs=(), models={spec.sha256: spec}).fleet_log(LogRef(str(log), "van", "run", "0" * 64))
    rows = list(reader.frames())
    reference = RunLogReader(log, (2, 2), 2)
    assert len(rows) == len(list(reference)) == 1
    skipped = Counter()
    for (_, _, reason), n in reader.tally.skipped.items():
        skipped[reason] += n
    assert skipped["invalid"] == reference.skipped["invalid"] == 1
