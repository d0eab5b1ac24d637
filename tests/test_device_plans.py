"""Issue 19: bundles carry the faithful precision plans, and the device picks the fastest.

The fidelity reference is independent of the converter: ``tiny_models.reference_gradcam`` (a
GradientTape Grad-CAM written by hand). The *outlier* model (tests/test_quant_plans.py) flattens
the int8 map, so its int8 plan really misses the targets and must be left out of the bundle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from click.testing import CliRunner

from tests import tiny_models as tm
from tests.test_quant_plans import _outlier_case

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PLANS = "int8,float16,none"
FAST_INSTALL = ["--python", sys.executable, "--no-deps", "--extra-site", sysconfig.get_paths()["purelib"],
                "--no-systemd", "--no-start"]


def _cli(*args):
    from toolkit.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _device(*args):
    """An edgecam command in a fresh process, as on the device (no TensorFlow imported)."""
    return subprocess.run([sys.executable, "-m", "toolkit", *[str(a) for a in args]], capture_output=True, text=True)


@pytest.fixture(scope="module")
def outlier():
    return _outlier_case()


@pytest.fixture(scope="module")
def calib():
    return tm.images(32, seed=1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, outlier, calib):
    """The outlier model saved as .keras, its calibration folder, and an edgecam wheel."""
    import cv2

    from toolkit.deploy.bundle import build_wheel

    root = tmp_path_factory.mktemp("plans")
    keras_path = root / "fog.keras"
    outlier.model.save(keras_path)
    folder = root / "calib"
    folder.mkdir()
    for i, img in enumerate(calib):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img[..., ::-1])
    return {"root": root, "keras": keras_path, "calib": folder, "wheel": build_wheel(root / "wheel")}


@pytest.fixture(scope="module")
def bundle_dir(workspace):
    """``edgecam bundle fog.keras --plans int8,float16,none --calibration DIR``, extracted."""
    from toolkit.deploy.safetar import BUNDLE_TOP, safe_extract

    out = workspace["root"] / "fog-rpi.tar.gz"
    result = _cli("bundle", workspace["keras"], "--plans", PLANS, "--calibration", workspace["calib"],
                  "--wheel", workspace["wheel"], "-o", out)
    assert result.exit_code == 0, result.output
    workspace["bundle_output"] = result.output
    (workspace["root"] / "x").mkdir()
    return safe_extract(out, workspace["root"] / "x", top_pattern=BUNDLE_TOP)


def _held_out(images):
    from converters.quant import split_held_out

    _, held = split_held_out(len(images))
    return [images[i] for i in held]


def test_bundle_ships_only_the_plans_that_pass_with_their_figures(bundle_dir, workspace, outlier, calib):
    from firmware_host import ExplainableModel
    from firmware_host.manifest import read_manifest, verify_manifest

    listed = verify_manifest(bundle_dir, strict=True)  # plans.json and the models are checksummed
    table = json.loads((bundle_dir / "plans.json").read_text())
    shipped = {row["plan"]: row for row in table["shipped"]}
    left_out = {row["plan"]: row for row in table["left_out"]}
    assert set(shipped) == {"float16", "none"} and set(left_out) == {"int8"}
    assert "plans.json" in listed and set(read_manifest(bundle_dir)) >= {f"models/model.{p}.tflite" for p in shipped}
    assert not (bundle_dir / "models" / "model.int8.tflite").exists()
    assert table["targets"]["pearson_p05"] == 0.98
    assert left_out["int8"]["passed"] is False and left_out["int8"]["pearson_p05"] < 0.98
    assert left_out["int8"]["p05_by_class"] and min(left_out["int8"]["p05_by_class"].values()) < 0.98
    held = _held_out(calib)
    for plan, row in shipped.items():
        assert row["passed"] and row["pearson_p05"] >= 0.98 and row["p05_by_class"]
        # The shipped figures hold against the independent reference, not just the converter's.
        model = ExplainableModel(bundle_dir / row["file"])
        corr, top1 = tm.agreement(outlier, model.explain_batch(held), held)
        assert np.percentile(corr, 5) >= 0.98 and top1 >= 0.99
        assert model.metadata.quantization == plan
    # ...and the int8 plan that was left out really is unfaithful.
    assert "int8" in workspace["bundle_output"] and "misses" in workspace["bundle_output"]
    assert "p05 by class" in workspace["bundle_output"]
    info = json.loads((bundle_dir / "bundle.json").read_text())
    assert info["plans"] == ["float16", "none"] and info["model"] == "models/model.float16.tflite"


def test_choose_plan_picks_the_fastest_and_run_toml_follows(bundle_dir, tmp_path):
    import shutil

    from firmware_host.manifest import verify_manifest
    from firmware_host.runconfig import load_run_config

    release = tmp_path / "rel"
    shutil.copytree(bundle_dir, release)
    result = _device("doctor", "--bundle", release, "--choose-plan", "--repeats", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    choice = json.loads((release / "plan.json").read_text())
    # The table is rounded to 3 decimals, so two plans may tie in it: compare times, not names.
    chosen = next(row for row in choice["table"] if row["plan"] == choice["plan"])
    assert chosen["latency_ms"] == min(row["latency_ms"] for row in choice["table"])
    assert {r["plan"] for r in choice["table"]} == {"float16", "none"}
    assert load_run_config(release / "run.toml")["model"] == str((release / choice["file"]).resolve())
    assert f"chose {choice['plan']}" in result.stdout and choice["file"].split("/")[-1] in result.stdout
    verify_manifest(release, strict=False)  # the rewritten run.toml is vouched for by plan.json
    # doctor without --choose-plan reports the choice made here.
    again = _device("doctor", "--bundle", release, "--repeats", "1")
    assert again.returncode == 0 and "[ ok ] plan" in again.stdout and choice["plan"] in again.stdout
    # Any other edit to run.toml is still a modified release.
    (release / "run.toml").write_text((release / "run.toml").read_text() + "# edited\n")
    from firmware_host.errors import DeployError

    with pytest.raises(DeployError, match="Checksum mismatch"):
        verify_manifest(release, strict=False)


def test_telemetry_records_carry_the_plan(bundle_dir, tmp_path, calib):
    import cv2

    from firmware_host.runner import run
    from firmware_host.telemetry import TelemetryRecord

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, img in enumerate(calib[:3]):
        cv2.imwrite(str(frames / f"{i}.png"), img[..., ::-1])
    log = tmp_path / "t.jsonl"
    run(bundle_dir / "models" / "model.float16.tflite", str(frames), log=str(log))
    lines = [json.loads(x) for x in log.read_text().splitlines()][1:]  # after the run header
    assert len(lines) == 3 and all(x["plan"] == "float16" for x in lines)
    assert TelemetryRecord.from_dict(lines[0]).plan == "float16"
    # Logs written before the field existed still read (plan is optional).
    del lines[0]["plan"]
    assert TelemetryRecord.from_dict(lines[0]).plan is None


def test_bench_plans_prints_the_table_and_writes_nothing(bundle_dir):
    before = sorted(p.name for p in bundle_dir.iterdir())
    result = _cli("bench", "--plans", bundle_dir, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "float16" in result.output and "none" in result.output and "← chosen" in result.output
    assert sorted(p.name for p in bundle_dir.iterdir()) == before


def test_install_runs_the_choice_and_deploy_reports_it(bundle_dir, workspace, tmp_path):
    from firmware_host.runconfig import load_run_config
    from toolkit.deploy.deploy import device_choice

    prefix = tmp_path / "dev"
    proc = subprocess.run(["sh", str(bundle_dir / "install.sh"), "--prefix", str(prefix), *FAST_INSTALL],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    current = prefix / "current"
    choice = json.loads((current / "plan.json").read_text())
    assert load_run_config(current / "run.toml")["model"].endswith(choice["file"])
    assert device_choice(proc.stdout) == (choice["plan"], pytest.approx(choice["latency_ms"], abs=0.01))
    # The installed release still passes doctor's manifest check with the device-written run.toml.
    check = subprocess.run([str(current / "venv" / "bin" / "edgecam"), "doctor", "--bundle", str(current),
                            "--repeats", "1"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "[ ok ] plan" in check.stdout
    # Installing the same bundle again reuses the release (its run.toml was rewritten by the choice).
    again = subprocess.run(["sh", str(bundle_dir / "install.sh"), "--prefix", str(prefix), *FAST_INSTALL],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already installed: reusing it" in again.stdout and device_choice(again.stdout) is not None
    assert not list(current.glob(".manifest*"))
    # A release whose other files changed is not reused, plan.json or not.
    model = current / choice["file"]
    model.write_bytes(model.read_bytes() + b"\0")
    third = subprocess.run(["sh", str(bundle_dir / "install.sh"), "--prefix", str(prefix), *FAST_INSTALL],
                           capture_output=True, text=True)
    assert third.returncode == 0 and "already installed" not in third.stdout, third.stdout + third.stderr


def test_bundle_from_converted_files_judges_their_self_check(outlier, calib, workspace, tmp_path):
    from converters import convert
    from converters.quant import AUTO_TARGETS
    from toolkit.deploy.plans import plans_from_files

    low = tmp_path / "m.int8.tflite"
    good = tmp_path / "m.float16.tflite"
    convert(outlier.model, low, quantize="int8", calibration=calib, allow_low_fidelity=True)
    convert(outlier.model, good, quantize="float16", calibration=calib, targets=AUTO_TARGETS)
    plans = plans_from_files([low, good])
    assert [p.plan for p in plans.shipped] == ["float16"] and [p.plan for p in plans.left_out] == ["int8"]
    assert plans.left_out[0].row["pearson_p05"] < AUTO_TARGETS.pearson_p05
    out = tmp_path / "b.tar.gz"
    result = _cli("bundle", low, good, "--wheel", workspace["wheel"], "-o", out)
    assert result.exit_code == 0, result.output
    # Nothing faithful to ship: refused, nothing written.
    refused = tmp_path / "none.tar.gz"
    result = _cli("bundle", low, "--plans", "auto", "--wheel", workspace["wheel"], "-o", refused)
    assert result.exit_code != 0 and "No precision plan" in result.output and not refused.exists()


def test_the_gate_refuses_plain_int8_on_the_outlier_model_unless_allowed(workspace, tmp_path):
    out = tmp_path / "int8.tflite"
    result = _cli("convert", workspace["keras"], "-o", out, "--quantize", "int8", "--calibration", workspace["calib"])
    assert result.exit_code != 0 and "Pearson p05" in result.output and not out.exists()
    result = _cli("convert", workspace["keras"], "-o", out, "--quantize", "int8", "--calibration", workspace["calib"],
                  "--allow-low-fidelity")
    assert result.exit_code == 0, result.output
    assert out.exists()


@pytest.mark.parametrize("text", ["", "int9", "int8,int8", "auto,int8", " , "])
def test_parse_plans_refuses_unknown_or_repeated_names(text):
    from firmware_host.errors import InputError
    from toolkit.deploy.plans import parse_plans

    with pytest.raises(InputError, match="--plans"):
        parse_plans(text)


def test_parse_plans_keeps_nominal_order():
    from toolkit.deploy.plans import parse_plans

    assert parse_plans("none,int8") == ("int8", "none")
    assert parse_plans("auto") == ("int8", "int8-mixed", "16x8", "dynamic", "float16", "none")


def test_validate_gates_on_the_tail_overall_and_by_class(monkeypatch, tmp_path):
    """``validate --min-p05``: the p05 of the Pearson is checked overall and for every class."""
    import cv2

    from tests import test_validate as tv
    from toolkit import validate as V

    meta = tv._meta()
    made = {"edge": tv.FakeEdge(meta), "host": tv.FakeHost(meta)}
    monkeypatch.setattr(V, "_open", lambda *a, **k: (made["edge"], made["host"]))
    made["edge"].damage = lambda maps: np.roll(maps, 1, axis=2) + 0.05
    rng = np.random.default_rng(3)
    images = tmp_path / "img"
    images.mkdir()
    for i in range(9):
        cv2.imwrite(str(images / f"{i}.png"), tv._image(rng)[..., ::-1])
    result = V.validate("k.keras", "e.tflite", images, tmp_path / "out", min_p05=0.99, faithfulness=False,
                        progress=False)
    rows = tv._rows(tmp_path / "out" / "per_image.csv")
    want = {}
    for row in rows:  # independent: from the per-image Pearson the run wrote
        want.setdefault(row["keras_label"], []).append(float(row["pearson"]))
    by_class = result.summary["pearson_p05_by_class"]
    assert set(by_class) == set(want)
    for label, values in want.items():
        assert by_class[label] == pytest.approx(np.percentile(values, 5), abs=1e-6)
    names = {c["name"]: c for c in result.summary["checks"]}
    assert "pearson.p05" in names and {f"pearson.p05[{k}]" for k in want} <= set(names)
    assert names["pearson.p05"]["value"] == pytest.approx(np.percentile([float(r["pearson"]) for r in rows], 5), abs=1e-6)
    assert not result.passed and "Pearson p05 by class" in result.describe()
    assert result.summary["thresholds"]["min_p05"] == 0.99


@pytest.mark.parametrize("file", ["../run.toml", "/etc/passwd", "models/../../x.tflite", "run.toml",
                                  "models/missing.tflite"])
def test_a_plan_table_naming_a_file_outside_models_is_refused(tmp_path, file):
    from firmware_host.errors import DeployError
    from firmware_host.plans import choose_plan, read_plans

    (tmp_path / "models").mkdir()
    (tmp_path / "run.toml").write_text('[run]\nmodel = "x.tflite"\n')
    (tmp_path / "plans.json").write_text(json.dumps({"shipped": [{"plan": "int8", "file": file}]}))
    with pytest.raises(DeployError, match="not a file under models/"):
        read_plans(tmp_path)
    with pytest.raises(DeployError):
        choose_plan(tmp_path)
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("text", ["", "{", "[]", '{"shipped": []}', '{"shipped": [{"plan": "int8"}]}'])
def test_a_broken_plan_table_is_a_clear_error(tmp_path, text):
    from firmware_host.errors import DeployError
    from firmware_host.plans import read_plans

    (tmp_path / "plans.json").write_text(text)
    with pytest.raises(DeployError, match="plans.json"):
        read_plans(tmp_path)
