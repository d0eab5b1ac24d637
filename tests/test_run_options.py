"""``RunOptions``: one definition of ``edgecam run``'s options, bounds on every number, hostile
option values and run.toml files, the Sink protocol and the frame path's colour conversions."""

from __future__ import annotations

import ast
import math
import os
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._run_helpers import ROOT, write_video
from firmware_host import ExplainableModel
from firmware_host.errors import InputError
from firmware_host.options import CLI_OPTIONS, OPTIONS, RunOptions, markdown_table
from firmware_host.runconfig import RUN_KEYS, dumps_run_config, load_run_config, parse_run_config
from firmware_host.runner import run
from firmware_host.sinks import FrameResult, RunContext, Sink

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
NUMERIC = [o for o in OPTIONS if o.kind in ("int", "float")]


@pytest.fixture(scope="module")
def model(tiny_fog_model):
    return ExplainableModel(tiny_fog_model)


# -- one source of truth ---------------------------------------------------------------------------


def test_docs_table_is_generated_from_run_options():
    text = (ROOT / "docs" / "run.md").read_text(encoding="utf-8")
    start = text.index("<!-- options-table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /options-table -->")
    assert text[start:end] == markdown_table(), "regenerate with firmware_host.options.markdown_table()"


def test_cli_toml_and_python_share_names_and_defaults():
    from toolkit.cli.run import run_cmd

    params = {p.name: p for p in run_cmd.params}
    assert [o.name for o in CLI_OPTIONS] == [n for n in params if n not in ("config", "model")]
    defaults = RunOptions()
    for option in OPTIONS:
        assert getattr(defaults, option.name) == option.default  # the dataclass default is the spec's
        assert params[option.name].opts[0] == option.flag
        assert params[option.name].help == option.described
        if option.toml:
            assert RUN_KEYS[option.name] == option.toml_types
    assert set(RUN_KEYS) == {"model", "source"} | {o.name for o in OPTIONS if o.toml}
    # No rename maps: run.toml keys are RunOptions fields, click parameters and run() keywords.
    assert set(RUN_KEYS) - {"model", "source"} <= set(RunOptions.__dataclass_fields__)


def test_every_number_has_finite_bounds():
    for option in NUMERIC:
        assert option.low is not None and option.high is not None
        assert math.isfinite(option.low) and math.isfinite(option.high), option.name


# -- hostile values --------------------------------------------------------------------------------


hostile_numbers = (
    st.integers(-(10**30), 10**30) | st.floats(allow_nan=True, allow_infinity=True) | st.booleans()
    | st.text(max_size=12) | st.sampled_from(["10^20", "1e400", "nan", "-inf", "9" * 5000, "0x10", " 3 "])
)


def _inside(option, value) -> bool:
    low_ok = value > option.low if option.low_open else value >= option.low
    high_ok = value < option.high if option.high_open else value <= option.high
    return low_ok and high_ok and math.isfinite(value)


@FUZZ
@given(st.sampled_from(NUMERIC), hostile_numbers)
def test_numeric_options_accept_in_range_values_only(option, value):
    try:
        options = RunOptions(**{option.name: value})
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and option.flag in message and option.bounds() in message
        return
    got = getattr(options, option.name)
    assert type(got) is (int if option.kind == "int" else float)
    assert _inside(option, got)


hysteresis_text = st.builds(
    lambda m, f, sep: f"{m}{sep}{f}",
    st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["nan", "inf", "-0", "x"]),
    st.integers(-5, 10**25) | st.sampled_from(["nan", "1.5", "", "9" * 5000]),
    st.sampled_from([":", "::", ""]),
)


@FUZZ
@given(hysteresis_text)
def test_hysteresis_is_finite_and_bounded(text):
    try:
        margin, frames = RunOptions(hysteresis=text).hysteresis
    except InputError as exc:
        assert "--hysteresis" in str(exc) and "\n" not in str(exc)
        return
    assert 0.0 <= margin <= 1.0 and 1 <= frames <= 1_000_000


@pytest.mark.parametrize("args, flag", [
    (["--threads", "10^20"], "--threads"),
    (["--threads", "100000000000000000000"], "--threads"),
    (["--log-max-mb", "inf"], "--log-max-mb"),
    (["--hysteresis", "nan:1"], "--hysteresis"),
    (["--hysteresis", "0.1:99999999999"], "--hysteresis"),
    (["--smooth", "nan"], "--smooth"),
    (["--video-fps", "1e400"], "--video-fps"),
    (["--snapshot-every", "-1"], "--snapshot-every"),
    (["--max-frames", "0"], "--max-frames"),
    (["--preview", "70000"], "--preview"),
    (["--frame-format", "gif"], "--frame-format"),
])
def test_cli_refuses_out_of_range_values_in_one_line(tmp_path, tiny_fog_model, args, flag):
    from toolkit.cli import cli

    result = CliRunner().invoke(cli, ["run", str(tiny_fog_model), "--source", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and f"'{flag}'" in error[0] and "Traceback" not in result.output


def test_run_refuses_unknown_keywords_and_bad_values_before_any_work(tmp_path, model):
    video = write_video(tmp_path / "in.avi", 2)
    with pytest.raises(TypeError, match="Unknown run option.*num_threads"):
        run(model, video, num_threads=2)
    with pytest.raises(InputError, match=r"--threads N must be in \[1, 256\]"):
        run(model, video, threads=10**20)
    with pytest.raises(InputError, match="--log PATH.jsonl must be a file path .*not a regular file"):
        run(model, video, log=tmp_path)
    assert RunOptions.build(RunOptions(smooth=0.5), {"max_frames": 3}) == RunOptions(smooth=0.5, max_frames=3)


# -- hostile run.toml ------------------------------------------------------------------------------


def test_run_toml_that_is_not_utf8_deep_huge_or_out_of_range(tmp_path):
    cases = {
        "latin1.toml": '[run]\nsource = "café"\n'.encode("latin-1"),
        "deep.toml": b"[run]\nsource = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        "huge.toml": b"[run]\n" + b"#" * (2 << 20) + b"\n",
        "digits.toml": b"[run]\nthreads = " + b"9" * 5000 + b"\n",
        "threads.toml": b"[run]\nthreads = 100000000000000000000\n",
        "inf.toml": b"[run]\nlog_max_mb = inf\n",
        "nan.toml": b'[run]\nhysteresis = "nan:1"\n',
    }
    expected = {
        "latin1.toml": "not UTF-8", "deep.toml": "nested too deeply", "huge.toml": "larger than",
        "digits.toml": "not valid TOML", "threads.toml": r"\[run\] threads must be in \[1, 256\]",
        "inf.toml": r"\[run\] log_max_mb must be in \[1, ", "nan.toml": r"\[run\] hysteresis: --hysteresis needs",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=expected[name]) as info:
            load_run_config(tmp_path / name)
        assert "\n" not in str(info.value) and len(str(info.value)) < 400, name


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_run_toml_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "run.toml")
    with pytest.raises(InputError, match="Cannot read run config"):
        load_run_config(tmp_path / "run.toml")


toml_scalars = (st.integers(-(10**25), 10**25) | st.floats(allow_nan=False, allow_infinity=False)
                | st.booleans() | st.text(max_size=10))


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(RUN_KEYS) + ["bogus", "out-video"]), toml_scalars, max_size=6))
def test_any_run_toml_table_loads_checked_or_fails_in_one_line(tmp_path_factory, table):
    try:
        text = dumps_run_config(table)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    path = tmp_path_factory.mktemp("cfg") / "run.toml"
    path.write_text(text, encoding="utf-8")
    loaded = load_run_config(path)
    fields = {k: v for k, v in loaded.items() if k not in ("model", "source")}
    RunOptions(**fields)  # what run.toml accepts, RunOptions accepts


@FUZZ
@given(st.binary(max_size=300))
def test_run_toml_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "run.toml"
    path.write_bytes(b"[run]\n" + data)
    try:
        load_run_config(path)
    except InputError as exc:
        assert "\n" not in str(exc)


def test_parse_run_config_reports_bounds_with_the_key():
    with pytest.raises(InputError, match=r"'x.toml': \[run\] smooth must be in \[0, 1\)"):
        parse_run_config("[run]\nsmooth = 1.5\n", "x.toml")


# -- frame folders with FIFOs ----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_in_a_frame_folder_is_skipped_with_a_warning(tmp_path, model, caplog):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((24, 24, 3), 40 * i, np.uint8))
    os.mkfifo(folder / "001b.jpg")
    out = {}
    worker = threading.Thread(target=lambda: out.update(s=run(model, folder)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the run hangs on the FIFO"
    assert out["s"].frames == 3 and out["s"].stop_reason == "end"
    assert any("001b.jpg" in r.getMessage() and "not a regular file" in r.getMessage() for r in caplog.records)


# -- the Sink protocol and the frame path ------------------------------------------------------------


class RecordingSink:
    name = "recorder"

    def __init__(self, fail_at=None):
        self.events, self.fail_at = [], fail_at

    def open(self, context: RunContext):
        self.events.append(("open", context.classes, context.source_fps))
        return "memory"

    def on_frame(self, result: FrameResult):
        assert result.annotated is result.annotated  # drawn once, then cached
        assert result.annotated.shape == result.image.shape and result.label == result.explanation.label
        self.events.append(("frame", result.frame))
        if result.frame == self.fail_at:
            raise InputError("sink failed")

    def close(self):
        self.events.append(("close",))


def test_custom_sink_sees_open_every_frame_and_close(tmp_path, model):
    video = write_video(tmp_path / "in.avi", 5)
    sink = RecordingSink()
    assert isinstance(sink, Sink)
    summary = run(model, video, sinks=[sink], log=tmp_path / "log.jsonl")
    assert sink.events[0] == ("open", model.classes, pytest.approx(10.0))
    assert sink.events[1:] == [("frame", i) for i in range(5)] + [("close",)]
    assert summary.outputs == {"log": str(tmp_path / "log.jsonl"), "recorder": "memory"}


def test_a_failing_sink_stops_the_run_and_everything_is_closed(tmp_path, model):
    from firmware_host.sinks import read_jsonl

    video = write_video(tmp_path / "in.avi", 6)
    sink = RecordingSink(fail_at=2)
    with pytest.raises(InputError, match="sink failed") as info:
        run(model, video, sinks=[sink], log=tmp_path / "log.jsonl")
    assert sink.events[-1] == ("close",) and info.value.summary.frames == 2
    assert [r["frame"] for r in read_jsonl(tmp_path / "log.jsonl")] == [0, 1, 2]  # fsync'd, closed


def test_one_colour_conversion_and_one_image_check_per_explained_frame(tmp_path, tiny_fog_model, monkeypatch):
    import cv2

    import firmware_host.model as model_module
    import firmware_host.preprocess as preprocess_module

    model = ExplainableModel(tiny_fog_model)
    counts = {"cvt": 0, "check": 0, "explain": 0}
    real_cvt, real_check, real_explain = cv2.cvtColor, preprocess_module.check_image, model.explain

    def cvt(*args, **kwargs):
        counts["cvt"] += 1
        return real_cvt(*args, **kwargs)

    def check(*args, **kwargs):
        counts["check"] += 1
        return real_check(*args, **kwargs)

    def explain(*args, **kwargs):
        counts["explain"] += 1
        return real_explain(*args, **kwargs)

    monkeypatch.setattr(cv2, "cvtColor", cvt)
    monkeypatch.setattr(model_module, "check_image", check)
    monkeypatch.setattr(preprocess_module, "check_image", check)
    monkeypatch.setattr(model, "explain", explain)
    summary = run(model, write_video(tmp_path / "in.avi", 8), out_video=tmp_path / "o.avi",
                  snapshots=tmp_path / "snaps", log=tmp_path / "l.jsonl")
    assert summary.frames == 8
    assert counts["cvt"] == 8  # BGR→RGB once per frame; the annotated frame is drawn in BGR
    assert counts["check"] == counts["explain"] >= 8  # a frame whose shown class changes is explained twice


# -- size of the run path -----------------------------------------------------------------------------


RUN_FILES = ["firmware_host/runner.py", "firmware_host/sinks.py", "firmware_host/runconfig.py",
             "firmware_host/temporal.py", "firmware_host/telemetry.py", "firmware_host/options.py",
             "firmware_host/sources.py", "toolkit/cli/run.py", "toolkit/cli/_runconfig.py"]


def test_no_function_of_the_run_path_is_over_80_lines():
    long = []
    for rel in RUN_FILES:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{rel}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def test_build_takes_a_mapping_such_as_a_run_toml_table():
    table = parse_run_config('[run]\nsource = "0"\nsmooth = 0.5\nthreads = 2\nhysteresis = "0.1:3"\n')
    table.pop("source")
    options = RunOptions.build(table, {"threads": 1})
    assert (options.smooth, options.threads, options.hysteresis) == (0.5, 1, (0.1, 3))
    with pytest.raises(TypeError, match="bogus"):
        RunOptions.build({"bogus": 1})
