"""Fleet data: ``edgecam run --vehicle-id`` and the run header, and the synthetic fleet generator."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._run_helpers import frame_pattern, write_video
from firmware_host import ExplainableModel
from firmware_host.errors import InputError
from firmware_host.options import RunOptions
from firmware_host.runner import run
from firmware_host.sinks import RunContext, TelemetryLog, read_jsonl
from firmware_host.telemetry import (
    HEADER_SCHEMA, BadRecord, RunHeader, TelemetryRecord, check_vehicle_id, read_header, read_records,
)

DATA = Path(__file__).parent / "data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model(tiny_fog_model):
    return ExplainableModel(tiny_fog_model)


@pytest.fixture
def headed_log(tmp_path, model):
    """A run of 6 frames on vehicle van-07, every 2nd frame saved (a headed log)."""
    video = write_video(tmp_path / "drive.avi", 6, size=(40, 48))
    log = tmp_path / "van-07" / "run.jsonl"
    summary = run(model, video, log=log, save_frames=2, frame_format="png", vehicle_id="van-07")
    assert summary.frames == 6
    return log


# -- --vehicle-id and the run header ---------------------------------------------------------------


def test_run_writes_a_header_and_tags_every_record(headed_log, tiny_fog_model):
    lines = [json.loads(line) for line in headed_log.read_text().splitlines()]
    header, records = lines[0], lines[1:]
    source_sha = _sha256(DATA / "tiny_fog.keras")  # what the converter stored as metadata.source
    assert header["header"] == HEADER_SCHEMA == "edgecam.run/1"
    assert header["vehicle"] == "van-07"
    assert header["model_sha256"] == _sha256(tiny_fog_model)
    assert header["source_model_sha256"] == source_sha
    assert header["model_name"] == "tiny_fog.tflite" and header["plan"] == "none"
    assert abs(header["started"] - records[0]["timestamp"]) < 60
    assert len(records) == 6
    assert all(r["vehicle"] == "van-07" and r["model"] == source_sha for r in records)
    assert [r["frame"] for r in records if "frame_path" in r] == [0, 2, 4]


def test_readers_skip_and_expose_the_header(headed_log, tiny_fog_model):
    items = list(read_records(headed_log))
    assert len(items) == 6 and all(isinstance(r, TelemetryRecord) for r in items)  # not a BadRecord
    assert {r.vehicle for r in items} == {"van-07"} and {r.model for r in items} == {_sha256(DATA / "tiny_fog.keras")}
    first, *rest = read_records(headed_log, headers=True)
    assert isinstance(first, RunHeader) and first.line == 1 and len(rest) == 6
    header = read_header(headed_log)
    assert header == first and header.model == header.source_model_sha256
    assert header.model_sha256 == _sha256(tiny_fog_model)
    records = read_jsonl(headed_log)
    assert len(records) == 6 and records.header == header and not records.truncated
    assert RunHeader.from_dict(json.loads(header.to_json()), 1) == header  # round trip


def test_old_logs_without_header_read_as_before(tmp_path, model):
    log = TelemetryLog(tmp_path / "old.jsonl")  # no RunContext header: the format before this change
    exp = model.explain(frame_pattern(0, (32, 32)))
    log.write(frame=0, timestamp=1.0, explanation=exp)
    log.close()
    assert read_header(tmp_path / "old.jsonl") is None
    (rec,) = read_records(tmp_path / "old.jsonl")
    assert rec.vehicle is None and rec.model is None and "vehicle" not in rec.to_dict()
    assert read_jsonl(tmp_path / "old.jsonl").header is None


def test_every_rotated_segment_starts_with_the_header(tmp_path, model):
    header = RunHeader(vehicle="bus_12", model_sha256="a" * 64, source_model_sha256=None, started=5.0)
    log = TelemetryLog(tmp_path / "run.jsonl", save_frames=1, max_mb=1)
    log.open(RunContext(classes=model.classes, header=header))
    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)  # ~30 KB frames
    exp = model.explain(noise[..., ::-1].copy())
    for i in range(40):
        log.write(frame=i, timestamp=float(i), explanation=exp, image_bgr=noise)
    log.close()
    segments = sorted(tmp_path.glob("run*.jsonl"))
    assert len(segments) >= 2
    for segment in segments:
        assert read_header(segment) == RunHeader(vehicle="bus_12", model_sha256="a" * 64, started=5.0, line=1)
        assert all(r.vehicle == "bus_12" and r.model == "a" * 64 for r in read_records(segment))


def test_a_run_without_frames_leaves_an_empty_log(tmp_path, model):
    """The header comes with the first record: an empty log still means "no telemetry" to the
    deploy health check (install.sh's fresh_telemetry tests for a non-empty file)."""
    log = TelemetryLog(tmp_path / "run.jsonl")
    log.open(RunContext(classes=model.classes, header=RunHeader(vehicle="van-07", started=1.0)))
    log.sync()
    assert (tmp_path / "run.jsonl").stat().st_size == 0
    log.write(frame=0, timestamp=2.0, explanation=model.explain(frame_pattern(0, (32, 32))))
    log.close()
    first, second = (tmp_path / "run.jsonl").read_text().splitlines()
    assert json.loads(first)["header"] == HEADER_SCHEMA and json.loads(second)["vehicle"] == "van-07"


def test_a_broken_header_is_an_invalid_line_not_a_crash(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"header": "edgecam.run/1", "vehicle": 7}\n')
    (bad,) = read_records(path)
    assert isinstance(bad, BadRecord) and bad.reason == "invalid" and "vehicle" in bad.detail
    assert read_header(path) is None
    with pytest.raises(InputError, match="line 1 is a broken run header"):
        read_jsonl(path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["vehicle", "model_sha256", "source_model_sha256", "model_name", "plan",
                                        "started", "frame", "cam"]), _json, max_size=6),
       st.sampled_from(["edgecam.run/1", "edgecam.run/9", "edgecam.run/", "other/1"]), st.booleans())
def test_hostile_headers_never_crash_the_readers(tmp_path_factory, fields, schema, cut):
    """A header line with any field values: a RunHeader with string fields, or one invalid line."""
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    text = json.dumps({"header": schema, **fields}) + "\n"
    path.write_text(text[: len(text) // 2] if cut else text)
    items = list(read_records(path, headers=True))
    assert len(items) == 1
    (item,) = items
    if isinstance(item, RunHeader):
        assert schema.startswith("edgecam.run/") and not cut
        assert all(v is None or isinstance(v, str) for v in (item.vehicle, item.model_sha256, item.model_name))
        assert item.started is None or np.isfinite(item.started)
        assert read_header(path) == item and list(read_records(path)) == []
    else:
        assert isinstance(item, BadRecord) and read_header(path) is None


@pytest.mark.parametrize("good", ["van-07", "bus_12", "fleet:0042", "A", "x" * 64, "v1.2"])
def test_vehicle_ids_accepted(good):
    assert RunOptions(vehicle_id=good).vehicle_id == good == check_vehicle_id(good)


@pytest.mark.parametrize("bad", ["", " van", "van 07", "x" * 65, "-van", "../etc", "van/07", "vän", "a\nb", 7])
def test_vehicle_ids_refused_with_the_rule(bad):
    with pytest.raises(InputError, match=r"--vehicle-id ID must be 1 to 64 ASCII letters.*Got: "):
        RunOptions(vehicle_id=bad)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_vehicle_id_rule_matches_an_independent_check(text):
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
    expected = 1 <= len(text) <= 64 and set(text) <= allowed and text[0].isascii() and text[0].isalnum()
    try:
        check_vehicle_id(text)
        ok = True
    except InputError:
        ok = False
    assert ok == expected


def test_cli_vehicle_id(tmp_path, tiny_fog_model):
    from click.testing import CliRunner

    from toolkit.cli import cli

    video = write_video(tmp_path / "v.avi", 3, size=(32, 32))
    bad = CliRunner().invoke(cli, ["run", str(tiny_fog_model), "--source", str(video), "--vehicle-id", "a b"])
    assert bad.exit_code == 2 and "--vehicle-id ID must be 1 to 64" in bad.output
    ok = CliRunner().invoke(cli, ["run", str(tiny_fog_model), "--source", str(video), "--vehicle-id", "car-3",
                                  "--log", str(tmp_path / "r.jsonl"), "--json"])
    assert ok.exit_code == 0, ok.output
    assert read_header(tmp_path / "r.jsonl").vehicle == "car-3"


def test_validate_from_log_is_unchanged_by_the_header(headed_log, tmp_path):
    """The same log with and without its header line gives the same validation figures."""
    pytest.importorskip("tensorflow")
    from toolkit.validate import validate_log

    bare = headed_log.with_name("bare.jsonl")
    lines = headed_log.read_text().splitlines(keepends=True)
    bare.write_text("".join(lines[1:]))  # frame paths are relative to the same folder
    out = {}
    for name, log in (("headed", headed_log), ("bare", bare)):
        result = validate_log(DATA / "tiny_fog.keras", DATA / "tiny_fog.tflite", log, tmp_path / name,
                              faithfulness=False, progress=False)
        out[name] = result.summary
    headed, plain = out["headed"], out["bare"]
    assert headed["images"] == plain["images"] == 3
    assert headed["skipped"] == plain["skipped"] and headed["skipped"].get("malformed", 0) == 0
    assert headed["pearson"] == plain["pearson"] and headed["top1_agreement"] == plain["top1_agreement"]
    assert re.fullmatch(r"[0-9a-f]{64}", read_header(headed_log).source_model_sha256)


# -- the synthetic fleet ---------------------------------------------------------------------------

synth = pytest.importorskip("toolkit.fleet.synth")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The acceptance fleet: 6 vehicles × 2 days × 2 drives (model B made and converted once)."""
    pytest.importorskip("tensorflow")
    return synth.synthesize_fleet(tmp_path_factory.mktemp("fleet"), DATA / "tiny_fog.keras", seed=3)


def _headers(fleet):
    return {run.log: read_header(run.log) for run in fleet.runs}


def test_fleet_layout_headers_and_clock(fleet):
    spec = synth.FleetSpec(seed=3)
    assert len(fleet.runs) == 6 * 2 * 2 and fleet.seconds > 0
    assert sorted(p.name for p in fleet.logs_dir.iterdir()) == list(spec.vehicle_ids) == [f"veh-0{i}" for i in range(1, 7)]
    day1 = 1772409600.0  # 2026-03-02T00:00Z, computed independently
    for run_, header in _headers(fleet).items():
        vehicle = run_.parent.name
        records = [r for r in read_records(run_) if isinstance(r, TelemetryRecord)]
        assert header.vehicle == vehicle and all(r.vehicle == vehicle for r in records)
        stamps = np.array([r.timestamp for r in records])
        assert header.started == stamps[0]
        assert np.allclose(np.diff(stamps)[np.diff([r.frame for r in records]) == 1], 60.0)
        hours = (stamps - day1) % 86400 / 3600
        assert (hours >= 6).all() and (hours <= 20).all()
        assert set(((stamps - day1) // 86400).astype(int)) <= {0, 1}
    by_day = {(r.vehicle, r.day) for r in fleet.runs}
    assert by_day == {(v, d) for v in spec.vehicle_ids for d in ("2026-03-02", "2026-03-03")}
    truth = json.loads(fleet.truth.read_text())
    assert [r["log"] for r in truth["runs"]] == [r.log.relative_to(fleet.out_dir).as_posix() for r in fleet.runs]


def test_one_vehicle_switches_model_mid_way(fleet):
    sha_a, sha_b = _sha256(DATA / "tiny_fog.keras"), _sha256(fleet.keras["b"])
    assert sha_a != sha_b and fleet.sha256 == {"a": sha_a, "b": sha_b}
    assert ExplainableModel(fleet.edge["b"]).metadata.source["sha256"] == sha_b  # B was converted from B
    models = {}
    for run_, header in sorted(_headers(fleet).items(), key=lambda kv: kv[1].started):
        models.setdefault(header.vehicle, []).append(header.source_model_sha256)
        assert {r.model for r in read_records(run_) if isinstance(r, TelemetryRecord)} == {header.source_model_sha256}
    assert fleet.changing_vehicle == "veh-01" and models.pop("veh-01") == [sha_a, sha_a, sha_b, sha_b]
    assert all(seq == [sha_a] * 4 for seq in models.values())
    first_b = min(r.started for r in fleet.runs if r.model == "b")
    assert fleet.model_change_at == first_b


def test_injected_faults_are_where_the_truth_says(fleet):
    from firmware_host.imageio import read_image

    kinds = {f.kind: f for f in fleet.faults}
    assert set(kinds) == set(synth.FAULT_KINDS)
    assert not {f.log.parent.name for f in fleet.faults} & {fleet.changing_vehicle, fleet.degraded_vehicle}
    for kind in ("malformed", "invalid", "truncated"):
        fault = kinds[kind]
        bad = [r for r in read_records(fault.log) if isinstance(r, BadRecord)]
        assert [b.line for b in bad] == [fault.line]
        assert bad[0].reason == ("invalid" if kind == "invalid" else "malformed")
        assert bad[0].last == (kind == "truncated")
    assert read_jsonl(kinds["truncated"].log).truncated
    frame = kinds["unreadable_frame"].frame
    assert frame.is_file() and read_image(frame) is None
    healthy = [run_.log for run_ in fleet.runs if run_.log not in {f.log for f in fleet.faults}]
    assert all(not any(isinstance(r, BadRecord) for r in read_records(log)) for log in healthy)


def test_degraded_camera_maps_drift_from_full_gradcam(fleet, tmp_path):
    """Validated per log with `edgecam validate --from-log`: the degraded vehicle drifts, the others do not."""
    from toolkit.validate import validate_log

    def median(run_):
        res = validate_log(fleet.keras[run_.model], fleet.edge[run_.model], run_.log, tmp_path / run_.log.stem,
                           faithfulness=False, progress=False)
        return res.summary["pearson"]["median"]

    degraded = [r for r in fleet.runs if r.vehicle == fleet.degraded_vehicle == "veh-06"]
    assert [r.severity for r in degraded] == sorted(r.severity for r in degraded) and degraded[0].severity > 0
    assert median(degraded[-1]) < 0.97 < 0.995 < median(degraded[0])
    healthy = next(r for r in fleet.runs if r.vehicle == "veh-03")
    assert healthy.severity == 0 and median(healthy) > 0.995


def test_degrade_frame():
    rng = np.random.default_rng(0)
    image = frame_pattern(3, (40, 48))
    before = image.copy()
    assert np.array_equal(synth.degrade_frame(image, 0.0, rng), image)
    dim = synth.degrade_frame(image, 1.0, rng)
    np.testing.assert_array_equal(image, before)  # the input is not modified
    assert dim.dtype == np.uint8 and dim.shape == image.shape
    assert dim.mean() == pytest.approx(image.mean() * 0.07, abs=2.0)


def test_generation_is_deterministic_and_the_cli_writes_it(fleet, tmp_path):
    from click.testing import CliRunner

    from toolkit.cli.fleet_synth import synth_cmd

    args = ["--model", str(DATA / "tiny_fog.keras"), "--model-b", str(fleet.keras["b"]), "--vehicles", "2",
            "--days", "1", "--frames", "6", "--seed", "5"]
    outs = []
    for name in ("one", "two"):
        result = CliRunner().invoke(synth_cmd, [*args, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert "degraded camera: veh-02" in result.output and "edgecam fleet validate" in result.output
        outs.append(json.loads((tmp_path / name / "fleet.json").read_text()))
    # Saved frames sit in a folder named after the wall-clock segment start, and latencies are
    # measured: the only differences.
    def same(item):
        if isinstance(item, TelemetryRecord):
            return {**item.to_dict(), "frame_path": Path(item.frame_path).name if item.frame_path else None,
                    "latency_ms": None}
        return {k: Path(v).name if k == "frame" else v for k, v in item.items()} if isinstance(item, dict) else item.line

    assert outs[0]["runs"] == outs[1]["runs"] and list(map(same, outs[0]["faults"])) == list(map(same, outs[1]["faults"]))
    for run_ in outs[0]["runs"]:
        a, b = (read_records(tmp_path / name / run_["log"]) for name in ("one", "two"))
        assert list(map(same, a)) == list(map(same, b))


@pytest.mark.parametrize("bad, match", [
    (dict(vehicles=0), r"FleetSpec.vehicles must be in \[1, 1000\]"),
    (dict(frames=1), r"FleetSpec.frames must be"),
    (dict(first_day="March"), r"first_day must be a date YYYY-MM-DD"),
    (dict(frames=400, drives_per_day=4), r"does not fit in 210 min"),
])
def test_fleet_spec_is_checked(bad, match):
    with pytest.raises(InputError, match=match):
        synth.FleetSpec(**bad)


# -- acceptance: edgecam fleet validate on the generated fleet -------------------------------------


@pytest.mark.slow  # about 40 s of full Grad-CAM on 2 busy cores, after the fleet fixture
def test_fleet_validate_flags_the_degraded_camera_and_the_model_change(fleet, tmp_path):
    api = pytest.importorskip("toolkit.fleet.api", reason="needs fleet validation (toolkit.fleet.api)")
    from toolkit.validate import validate_log

    result = api.fleet_validate([fleet.logs_dir], [fleet.keras["a"], fleet.keras["b"]], tmp_path / "report",
                                [fleet.edge["a"], fleet.edge["b"]], min_p05=0.99, progress=False)
    summary = result.summary
    assert not result.passed and summary["verdict"]["failing_vehicles"] == [fleet.degraded_vehicle] == ["veh-06"]
    vehicles = {v["vehicle"]: v for v in summary["vehicles"]}
    assert summary["vehicles"][0]["vehicle"] == "veh-06"  # worst first
    changes = vehicles[fleet.changing_vehicle]["model_changes"]
    assert [(c["from"], c["to"]) for c in changes] == [(fleet.sha256["a"], fleet.sha256["b"])]
    assert changes[0]["t"] == pytest.approx(fleet.model_change_at, abs=1.0)
    assert all(not v["model_changes"] for name, v in vehicles.items() if name != fleet.changing_vehicle)
    # The injected faults are counted, not fatal.
    skipped = summary["totals"]["skipped"]
    assert skipped["malformed"] == 2 and skipped["invalid"] == 1 and skipped["unreadable"] == 1
    # Per log, the same figures as `edgecam validate --from-log`.
    logs = {Path(entry["log"]).resolve(): entry for entry in summary["logs"]}
    faulty = {f.log for f in fleet.faults}
    for run_ in (fleet.runs[-1], next(r for r in fleet.runs if r.model == "b"),
                 next(r for r in fleet.runs if r.log in faulty)):
        one = validate_log(fleet.keras[run_.model], fleet.edge[run_.model], run_.log, tmp_path / run_.log.stem,
                           faithfulness=False, progress=False).summary
        entry = logs[run_.log.resolve()]
        assert entry["validated"] == one["images"]
        assert entry["pearson_median"] == pytest.approx(one["pearson"]["median"], abs=1e-4)


# -- edgecam demo --fleet ----------------------------------------------------------------------------


def test_demo_fleet_step_writes_a_fleet_and_its_report(fleet, tmp_path):
    import shutil

    out = tmp_path / "fleet"
    (out / "models").mkdir(parents=True)
    for suffix in (".keras", ".tflite"):  # model B of the fixture, reused as an earlier run's (no conversion)
        shutil.copy(fleet.keras["b"].with_suffix(suffix), out / "models" / f"tiny_fog_b{suffix}")
    messages = []
    spec = synth.FleetSpec(vehicles=3, days=1, drives_per_day=2, frames=6)
    info = synth.demo_fleet(out, DATA / "tiny_fog.keras", DATA / "tiny_fog.tflite", spec=spec, echo=messages.append)
    assert info["runs"] == 6 and info["degraded_vehicle"] == "veh-03" and info["changing_vehicle"] == "veh-01"
    assert len(list((out / "logs").rglob("*.jsonl"))) == 6
    if importlib.util.find_spec("toolkit.fleet.api") is None:
        pytest.skip("fleet validation has not landed")
    assert Path(info["report"]).is_file() and info["failing_vehicles"] == ["veh-03"] and info["passed"] is False
    assert any("failing vehicles veh-03" in m for m in messages)


@pytest.mark.slow  # the quick demo (training, two conversions) plus the fleet: minutes on 2 busy cores
def test_quick_demo_with_fleet_links_the_fleet_report(tmp_path):
    from toolkit.demo import QUICK, run_demo

    messages = []
    result = run_demo(tmp_path / "demo", config=QUICK, progress=False, echo=messages.append, fleet=True)
    assert [m for m in messages if m.startswith("[")][-2].startswith("[7/8] A fleet of 4 vehicles")
    fleet = result.summary["fleet"]
    assert fleet["runs"] == 16 and json.loads((tmp_path / "demo" / "summary.json").read_text())["fleet"] == fleet
    page = result.index_html.read_text()
    assert "fleet/fleet.json" in page and (not fleet.get("report") or "fleet/report/" in page)
