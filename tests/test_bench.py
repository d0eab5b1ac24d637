"""``edgecam bench``: the numbers it reports are consistent with the samples it took."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests._run_helpers import TF_BLOCKED_CLI, python, subprocess_env
from firmware_host.bench import BenchResult, LatencyStats, PlainModel, bench
from firmware_host.errors import InputError, ModelFileError


@pytest.fixture(scope="module")
def model_path(tiny_fog_model):
    return tiny_fog_model


def test_latency_stats_are_percentiles_of_the_samples():
    s = LatencyStats.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.p50_ms, s.mean_ms, s.fps) == (3.0, 22.0, 1000.0 / 3.0)
    assert s.p95_ms == pytest.approx(np.percentile([1, 2, 3, 4, 100], 95))


def test_bench_with_baseline(model_path):
    # The explained model itself, run through the bare interpreter, stands in for a baseline:
    # the plain path ignores the edgecam metadata, so the ratio must come out near 1.
    result = bench(model_path, baseline=model_path, runs=30, warmup=2)
    assert isinstance(result, BenchResult) and result.runs == 30
    assert result.overhead_ratio == pytest.approx(result.invoke.p50_ms / result.baseline_invoke.p50_ms)
    assert 0 < result.invoke.p50_ms <= result.invoke.p95_ms
    assert result.explain.p50_ms >= result.invoke.p50_ms  # explain() contains the invoke
    assert result.peak_rss_mb > 10
    assert "overhead ratio explained/plain" in result.format()


def test_plain_model_runs_without_metadata_and_checks_shape(model_path, tmp_path):
    plain = PlainModel(model_path)
    x = plain.prepare(np.zeros((1,) + plain.input_shape[1:], np.float32))
    assert plain.invoke(x) > 0
    with pytest.raises(InputError, match="Use the baseline written for the same model"):
        plain.prepare(np.zeros((1, 3, 3, 3), np.float32))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="LiteRT cannot load"):
        PlainModel(bad)


def test_bench_cli_with_tensorflow_blocked(model_path):
    proc = subprocess.run(
        [python(), "-c", TF_BLOCKED_CLI, "bench", str(model_path), "--baseline", str(model_path),
         "--runs", "10", "--warmup", "1", "--threads", "1", "--json"],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "LEAKED: []" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["runs"] == 10 and out["threads"] == 1 and out["overhead_ratio"] > 0
    assert set(out["invoke"]) == {"p50_ms", "p95_ms", "mean_ms", "fps"}
