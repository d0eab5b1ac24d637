"""``--engine ray`` (issue 16 item 2): the Ray Data pipeline gives the local engine's fleet summary.

The main test starts a real local Ray instance with 2 CPUs (marker ``ray``; it runs in the
default suite, and skips where Ray Data is not installed) and validates one small generated
fleet with both engines: a few vehicles and days of logs written with the committed tiny fog
model's own edge maps, plus what a real fleet has — a corrupt line, a record cut by a power
loss, a frame that cannot be decoded, a log of a model nobody passed. Both summaries must be
equal up to float rounding, and the skipped records must be counted the same way.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks.fleet_bench import TINY_MODEL, write_synthetic_fleet
from tests._run_helpers import ROOT

EDGE = ROOT / "tests" / "data" / "tiny_fog.tflite"


def _close(a, b, path="$"):
    """Recursive equality with floats compared to 1e-5 (the engines' threads sum in other orders)."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{path}: {a!r} != {b!r}"
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), \
            f"{path}: {a!r} != {b!r}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    """3 vehicles × 2 days, 6 frames a log, and the damage a real fleet's logs have."""
    root = tmp_path_factory.mktemp("fleet")
    logs = write_synthetic_fleet(root, model=TINY_MODEL, vehicles=3, days=2, records_per_log=6, image_size=32,
                                 images_per_log=3, edge=EDGE)
    with open(logs[0], "a", encoding="utf-8") as handle:
        handle.write('{"timestamp": 1780000400.0, "frame": 99, "class_ind\n')  # a corrupt line
    text = logs[1].read_text(encoding="utf-8")
    logs[1].write_text(text[: len(text) - 40], encoding="utf-8")  # the last record cut mid-write
    (root / "van-02" / "frames" / "f001.png").write_bytes(b"not a png")  # an unreadable frame
    stranger = root / "van-09" / "day0.jsonl"  # a model nobody passed with --keras
    shutil.copytree(root / "van-00" / "frames", stranger.parent / "frames")
    stranger.write_text(logs[2].read_text(encoding="utf-8").replace(
        "3a90f40cbcec382577d4a7c1aad6b7565bc3d6e8db4326b4e599053d4de29d23", "f" * 64), encoding="utf-8")
    return root


@pytest.mark.ray
def test_ray_engine_gives_the_local_summary(fleet, tmp_path):
    pytest.importorskip("ray.data")
    import pyarrow.parquet as pq

    from toolkit.fleet import fleet_validate

    runs = {engine: fleet_validate([fleet], [TINY_MODEL], tmp_path / engine, engine=engine, batch_size=4,
                                   progress=False, **({"num_cpus": 2} if engine == "ray" else {}))
            for engine in ("local", "ray")}
    summaries = {e: json.loads((tmp_path / e / "fleet_summary.json").read_text(encoding="utf-8")) for e in runs}
    assert summaries["local"].pop("engine") == "local" and summaries["ray"].pop("engine") == "ray"
    for s in summaries.values():
        s.pop("created")
    _close(summaries["local"], summaries["ray"])
    totals = summaries["local"]["totals"]
    assert totals["logs"] == 7 and totals["validated"] > 20
    assert totals["skipped"]["malformed"] == 2  # the corrupt line and the cut one
    assert totals["skipped"]["unreadable"] > 0 and totals["skipped"]["no_model"] > 0
    # Rows come in the order frames were scored: compare them sorted by log and line.
    tables = {e: pq.read_table(tmp_path / e / "per_frame.parquet").sort_by([("log", "ascending"), ("line", "ascending")])
              .to_pydict() for e in runs}
    assert tables["local"].keys() == tables["ray"].keys() and len(tables["local"]["pearson"]) == totals["validated"]
    _close(tables["local"], tables["ray"])


def test_missing_ray_names_the_extra(monkeypatch):
    from firmware_host.errors import MissingDependencyError
    from toolkit.fleet import engine_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgecam\[fleet\]'"):
        engine_ray.require_ray()


def test_local_cpus_and_a_cluster_address_exclude_each_other():
    pytest.importorskip("ray.data")
    from firmware_host.errors import InputError
    from toolkit.fleet.engine_ray import ray_session

    with pytest.raises(InputError, match="applies to a local Ray instance only"):
        with ray_session("127.0.0.1:6379", 2):
            pass
    with pytest.raises(InputError, match="at least 1"):
        with ray_session(None, 0):
            pass


def test_ray_is_only_in_the_fleet_and_dev_extras():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    mentions_ray = lambda deps: any(d.split("[")[0].split(">")[0].strip() == "ray" for d in deps)  # noqa: E731
    assert not mentions_ray(project["dependencies"]) and not mentions_ray(extras["host"])
    assert mentions_ray(extras["fleet"]) and any("fleet" in d for d in extras["dev"] if d.startswith("edgecam["))


def test_an_edgecam_error_on_a_worker_is_raised_as_itself():
    pytest.importorskip("ray.data")
    from ray.exceptions import RayTaskError

    from firmware_host.errors import InputError
    from toolkit.fleet.engine_ray import _worker_errors

    cause = InputError("Cannot read log 'van-00/day0.jsonl': No such file or directory.")
    with pytest.raises(InputError) as info:
        with _worker_errors():
            raise RayTaskError("_frames_of", "Traceback (most recent call last): ...", cause)
    assert info.value is cause and str(info.value).startswith("Cannot read log")
    with pytest.raises(ValueError, match="not ours"):  # anything else goes through untouched
        with _worker_errors():
            raise ValueError("not ours")
