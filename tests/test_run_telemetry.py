"""The run log's one record type and its one tolerant reader (``firmware_host.telemetry``)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._run_helpers import FakeExplanation
from firmware_host.errors import InputError
from firmware_host.sinks import TelemetryLog, read_jsonl
from firmware_host.telemetry import (
    MAX_LINE_CHARS,
    BadRecord,
    LogLine,
    TelemetryRecord,
    read_objects,
    read_records,
)

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
anyfloat = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def explanations(draw):
    k = draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    probs = np.asarray(draw(st.lists(anyfloat, min_size=k, max_size=k)), np.float32)
    cmap = np.asarray(draw(st.lists(anyfloat, min_size=h * w, max_size=h * w)), np.float32).reshape(h, w)
    ci = draw(st.integers(0, k - 1))
    return FakeExplanation(probs, ci, draw(st.integers(0, k - 1)), f"c{ci}", cmap)


@FUZZ
@given(explanations(), st.integers(0, 2**40), finite, st.booleans(), st.booleans())
def test_written_record_reads_back_identically(tmp_path_factory, exp, frame, ts, shown, smooth):
    """Writer → file → reader is the identity on the record, NaN/inf written as null."""
    record = TelemetryRecord.from_explanation(
        exp, frame=frame, timestamp=abs(ts), shown_index=exp.class_index if shown else None,
        shown_label="x" if shown else None,
        smoothed_probabilities=np.nan_to_num(exp.probabilities) if smooth else None,
    )
    line = record.to_json()
    assert "NaN" not in line and "Infinity" not in line and "\n" not in line
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    path.write_text(line + "\n")
    (back,) = list(read_records(path))
    assert isinstance(back, TelemetryRecord) and back.line == 1
    assert back.to_dict() == record.to_dict() and back.to_json() == line
    # Independent reference for the logged values: the JSON itself.
    raw = json.loads(line)
    expected = [None if not math.isfinite(v) else round(v, 6) for v in exp.probabilities.astype(float).tolist()]
    assert raw["probabilities"] == expected
    assert list(raw)[:10] == ["timestamp", "frame", "class_index", "label", "predicted_index",
                              "confidence", "probabilities", "latency_ms", "cam", "peak"]


def test_record_values_are_rounded_as_documented():
    exp = FakeExplanation(np.array([0.1234567, 0.8765433], np.float32), 1, 1, "b",
                          np.array([[1.23456e-5, 2.0], [np.inf, 0.0]], np.float32))
    d = TelemetryRecord.from_explanation(exp, frame=3, timestamp=1.23456789, shown_index=1,
                                         shown_label="b").to_dict()
    assert d["probabilities"] == [0.123457, 0.876543] and d["timestamp"] == 1.234568
    assert d["cam"] == [[1.235e-05, 2.0], [None, 0.0]] and d["peak"] == [1, 0]
    assert d["confidence"] == 0.876543 and d["latency_ms"] == 1.5
    assert (d["shown_index"], d["shown_label"]) == (1, "b") and "frame_path" not in d


GOOD = {"frame": 0, "frame_path": "f.png", "cam": [[1.0]], "probabilities": [0.2, 0.8], "class_index": 1}


def write_lines(path, lines, end="\n"):
    path.write_text("\n".join(lines) + end)
    return path


def test_hostile_lines_become_bad_records_not_crashes(tmp_path):
    """The cases validate's fuzzer found (1e400, 10**400, deep nesting) plus wrong types."""
    path = write_lines(tmp_path / "run.jsonl", [
        json.dumps(GOOD),
        json.dumps(GOOD).replace('"class_index": 1', '"class_index": 1e400'),
        json.dumps({**GOOD, "probabilities": [10**400, 0.0]}),
        "[" * 100_000 + "]" * 100_000,
        "1" * 5000,                                       # past Python's int-string limit
        json.dumps([GOOD]),
        json.dumps({**GOOD, "class_index": True}),
        json.dumps({**GOOD, "class_index": 2}),
        json.dumps({**GOOD, "cam": [[1.0], [1.0, 2.0]]}),
        json.dumps({**GOOD, "cam": "x"}),
        "",
        json.dumps({**GOOD, "frame": 7, "extra_key": {"a": 1}}),
        json.dumps(GOOD)[:20],                            # cut by a power loss
    ], end="")
    items = list(read_records(path))
    reasons = [(i.line, i.reason, i.last) if isinstance(i, BadRecord) else (i.line, "ok", False) for i in items]
    assert reasons == [
        (1, "ok", False), (2, "invalid", False), (3, "invalid", False), (4, "malformed", False),
        (5, "malformed", False), (6, "not_object", False), (7, "invalid", False), (8, "invalid", False),
        (9, "invalid", False), (10, "invalid", False), (12, "ok", False), (13, "malformed", True),
    ]
    assert items[-2].frame == 7 and items[-2].extra == {"extra_key": {"a": 1}}
    assert "class_index" in items[1].detail and "ragged" in items[8].detail


def test_checks_against_the_model_and_finiteness(tmp_path):
    path = write_lines(tmp_path / "run.jsonl", [
        json.dumps(GOOD), json.dumps({**GOOD, "probabilities": [None, 1.0]}), json.dumps({**GOOD, "cam": [[1, 2]]}),
    ])
    assert [isinstance(r, TelemetryRecord) for r in read_records(path)] == [True, True, True]
    strict = list(read_records(path, num_classes=2, cam_shape=(1, 1), require_finite=True))
    assert [getattr(r, "reason", "ok") for r in strict] == ["ok", "invalid", "invalid"]
    assert [r.reason for r in read_records(path, num_classes=3)] == ["invalid"] * 3


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=16,
)
record_like = st.fixed_dictionaries({}, optional={
    key: json_values | st.lists(st.lists(st.floats() | st.integers() | st.none(), max_size=4), max_size=4)
    for key in ("frame", "class_index", "predicted_index", "probabilities", "cam", "timestamp", "peak",
                "frame_path", "confidence", "latency_ms", "shown_index", "smoothed_probabilities")
})


@FUZZ
@given(st.lists(record_like | json_values, max_size=5), st.integers(0, 200), st.booleans(),
       st.binary(max_size=64))
def test_reader_never_raises_on_content(tmp_path_factory, values, cut, deep, garbage):
    lines = [json.dumps(v) for v in values] + [garbage.decode("latin-1").replace("\n", " ")]
    if deep:
        lines.append("[" * 50_000 + "]" * 50_000)
    text = "\n".join(lines) + "\n"
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    path.write_text(text[: max(0, len(text) - cut)], encoding="utf-8", errors="replace")
    with open(path, encoding="utf-8", errors="replace") as fh:  # universal newlines, as the reader
        nonblank = sum(1 for line in fh.read().split("\n") if line.strip())
    items = list(read_records(path))
    assert len(items) == nonblank  # one result per line, none lost, none crashed
    for item in items:
        if isinstance(item, TelemetryRecord):
            assert item.cam.ndim == 2 and item.probabilities.ndim == 1
            assert 0 <= item.class_index < item.probabilities.size
            assert 0 <= item.predicted_index < item.probabilities.size
            assert TelemetryRecord.from_dict(json.loads(item.to_json())).to_dict() == item.to_dict()
        else:
            assert item.reason in ("malformed", "not_object", "invalid") and item.detail


def test_over_long_line_is_skipped_and_reading_goes_on(tmp_path, monkeypatch):
    import firmware_host.telemetry as telemetry

    monkeypatch.setattr(telemetry, "MAX_LINE_CHARS", 128)
    path = write_lines(tmp_path / "run.jsonl", [json.dumps({**GOOD, "pad": "x" * 400}), json.dumps(GOOD)])
    items = list(read_records(path))
    assert isinstance(items[0], BadRecord) and "longer than 128" in items[0].detail
    assert isinstance(items[1], TelemetryRecord) and items[1].line == 2
    assert MAX_LINE_CHARS >= 1 << 20


def test_frame_file_stays_inside_the_log_folder(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "a.png").write_bytes(b"x")
    (tmp_path / "frames" / "out").symlink_to("/etc")
    rec = TelemetryRecord.from_dict(GOOD)
    assert rec.with_frame_path("frames/a.png").frame_file(tmp_path) == tmp_path / "frames" / "a.png"
    for bad in ("/etc/passwd", "../x.png", "frames/../../x.png", "frames/out/passwd", "", "a\x00b"):
        assert rec.with_frame_path(bad).frame_file(tmp_path) is None, bad


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_directory_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "run.jsonl")
    with pytest.raises(InputError, match="Cannot read log .*not a regular file"):
        list(read_records(tmp_path / "run.jsonl"))
    with pytest.raises(InputError, match="Cannot read log"):
        read_jsonl(tmp_path)
    with pytest.raises(InputError, match="Cannot read log"):
        list(read_objects(tmp_path / "missing.jsonl"))


def test_telemetry_log_writes_records_the_reader_returns(tmp_path):
    log = TelemetryLog(tmp_path / "run.jsonl", save_frames=2, frame_format="png")
    exps = [FakeExplanation(np.array([0.25, 0.75], np.float32), 1, 1, "b", np.eye(2, dtype=np.float32) * i)
            for i in range(3)]
    written = [log.write_record(TelemetryRecord.from_explanation(e, frame=i, timestamp=float(i)),
                                np.full((4, 4, 3), i, np.uint8)) for i, e in enumerate(exps)]
    log.close()
    back = [r for r in read_records(tmp_path / "run.jsonl") if isinstance(r, TelemetryRecord)]
    assert [r.to_dict() for r in back] == [w.to_dict() for w in written]
    assert [r.frame_file(tmp_path) is not None for r in back] == [True, False, True]
    assert all(r.frame_file(tmp_path).is_file() for r in back if r.frame_path)
    assert [item.value["frame"] for item in read_objects(tmp_path / "run.jsonl") if isinstance(item, LogLine)] == [0, 1, 2]
