"""Precision plans, ``--quantize auto`` and the fidelity gate (issue: quantized models that tell the truth).

The reference is independent of the converter: ``tiny_models.reference_gradcam`` (a GradientTape
Grad-CAM written by hand from the same layer objects). The *outlier* model reproduces, on a tiny
network, the mechanism that breaks int8 on trained MobileNets and EfficientNet: one channel of the
explanation layer with a huge range sets the tensor's single int8 scale, so every other channel —
the ones that carry the map — gets less than one int8 step.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests import tiny_models as tm

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PLANS = ("int8", "int8-mixed", "16x8", "dynamic", "float16", "none")


@pytest.fixture(scope="module")
def calib():
    return tm.images(32, seed=1)


def _outlier_case():
    """gap_dense with an outlier channel 0 in ``last`` that the classifier ignores (weight 0)."""
    case = tm.gap_dense()
    last, pred = case.model.get_layer("last"), case.model.get_layer("pred")
    kernel = last.kernel.numpy()
    kernel[..., 0] = np.abs(kernel[..., 0]) * 300.0
    last.kernel.assign(kernel)
    weights = pred.kernel.numpy()
    weights[0, :] = 0.0
    pred.kernel.assign(weights)
    return case


@pytest.fixture(scope="module")
def outlier():
    return _outlier_case()


def _held_out(images):
    from converters.quant import split_held_out

    _, held = split_held_out(len(images))
    return [images[i] for i in held]


@pytest.mark.parametrize("plan", PLANS)
def test_every_plan_converts_runs_and_is_recorded(plan, calib, tmp_path):
    from converters import convert
    from converters.quant import GATES
    from firmware_host import ExplainableModel
    from firmware_host.metadata import read_metadata

    case = tm.gap_dense()
    out = tmp_path / f"m_{plan}.tflite"
    result = convert(case.model, out, quantize=plan, calibration=calib)
    meta = read_metadata(out)
    assert meta.quantization == plan and meta.precision["plan"] == plan and meta.precision["requested"] == plan
    assert meta.precision["targets"]["pearson_p05"] == GATES[plan].pearson_p05
    assert not meta.precision["low_fidelity"] and meta.self_check["passed"]
    # Against the independent reference, not the converter's own numbers.
    probe = tm.images(10, seed=2)
    exps = ExplainableModel(out).explain_batch(probe)
    corr, top1 = tm.agreement(case, exps, probe)
    assert top1 == 1.0 and np.percentile(corr, 5) >= GATES[plan].pearson_p05
    assert result.self_check.images == len(_held_out(calib))


def test_int8_mixed_keeps_the_island_float_and_the_rest_int8(calib, tmp_path):
    from converters import convert
    from firmware_host.backends.litert import load_interpreter_class

    out = tmp_path / "mixed.tflite"
    convert(tm.gap_dense().model, out, quantize="int8-mixed", calibration=calib)
    Interpreter, _, _ = load_interpreter_class()
    details = Interpreter(model_path=str(out)).get_tensor_details()
    by_name = {d["name"]: d["dtype"] for d in details}
    assert by_name["serving_default_image:0"] == np.int8  # int8 input: the backbone is quantized
    feature_maps = [d for d in Interpreter(model_path=str(out)).get_signature_runner().get_output_details().items()
                    if d[0] == "feature_maps"]
    assert feature_maps and feature_maps[0][1]["dtype"] == np.float32  # the map's producer is float


def test_outlier_channel_breaks_int8_and_the_gate_refuses_it(outlier, calib, tmp_path):
    from converters import convert
    from firmware_host.errors import FidelityError

    out = tmp_path / "m.tflite"
    with pytest.raises(FidelityError) as info:
        convert(outlier.model, out, quantize="int8", calibration=calib)
    message = str(info.value)
    assert "\n" not in message
    assert "Pearson p05" in message and "Nothing was written" in message
    assert "--quantize int8-mixed passes" in message  # the next plan that meets the same bounds
    assert "--allow-low-fidelity" in message
    assert list(tmp_path.iterdir()) == []  # nothing under the output name, no temporary left behind


def test_allow_low_fidelity_writes_it_marked(outlier, calib, tmp_path):
    from converters import convert
    from firmware_host.metadata import read_metadata

    out = tmp_path / "low.tflite"
    result = convert(outlier.model, out, quantize="int8", calibration=calib, allow_low_fidelity=True)
    meta = read_metadata(out)
    assert meta.low_fidelity and meta.precision["low_fidelity"] is True
    assert not result.self_check.passed and meta.self_check["passed"] is False
    assert meta.self_check["pearson_p05"] < 0.9


def test_low_fidelity_model_warns_on_the_device(outlier, calib, tmp_path, caplog):
    import cv2

    from converters import convert
    from firmware_host import ExplainableModel
    from firmware_host.doctor import run_doctor
    from toolkit.cli import cli

    out = tmp_path / "low.tflite"
    convert(outlier.model, out, quantize="int8", calibration=calib, allow_low_fidelity=True)
    with caplog.at_level("WARNING", logger="edgecam"):
        ExplainableModel(out)
    assert any("--allow-low-fidelity" in r.getMessage() and "Pearson p05" in r.getMessage() for r in caplog.records)
    fidelity = run_doctor(model=out, repeats=1).get("fidelity")
    assert fidelity.ok is None and "LOW FIDELITY" in fidelity.detail
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "f0.png"), calib[0])
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecam"):
        ran = CliRunner().invoke(cli, ["run", str(out), "--source", str(frames)])
    assert ran.exit_code == 0, ran.output
    assert any("--allow-low-fidelity" in r.getMessage() for r in caplog.records)
    # A model that passed its gate says nothing of the kind.
    good = tmp_path / "good.tflite"
    convert(outlier.model, good, quantize="float16", calibration=calib)
    assert all(check.name != "fidelity" for check in run_doctor(model=good, repeats=1).checks)


def test_auto_picks_the_cheapest_passing_plan_and_records_the_table(outlier, calib, tmp_path):
    from converters import convert
    from converters.quant import AUTO_TARGETS
    from firmware_host import ExplainableModel
    from firmware_host.metadata import read_metadata

    out = tmp_path / "auto.tflite"
    result = convert(outlier.model, out, quantize="auto", calibration=calib)
    rows = {r.plan: r for r in result.plans}
    assert set(rows) == set(PLANS)
    assert not rows["int8"].passed  # the outlier flattens the int8 map
    assert rows["int8-mixed"].passed and rows["none"].passed
    passing = [r for r in result.plans if r.passed]
    chosen = min(passing, key=lambda r: r.latency_ms)
    meta = read_metadata(out)
    assert meta.quantization == chosen.plan == meta.precision["plan"]
    assert rows["int8"].latency_ratio == pytest.approx(1.0)
    assert [r["plan"] for r in meta.precision["tried"]] == list(PLANS)
    # The written file meets the targets against the independent reference.
    held = _held_out(calib)
    corr, top1 = tm.agreement(outlier, ExplainableModel(out).explain_batch(held), held)
    assert np.percentile(corr, 5) >= AUTO_TARGETS.pearson_p05 and top1 >= AUTO_TARGETS.top1


def test_auto_with_nominal_cost_takes_the_first_passing_plan(outlier, calib, tmp_path):
    from converters import convert

    result = convert(outlier.model, tmp_path / "n.tflite", quantize="auto", calibration=calib, cost="nominal")
    assert result.metadata.quantization == "int8-mixed"


def test_auto_needs_calibration_and_the_self_check(tmp_path):
    from converters import convert
    from firmware_host.errors import InputError

    model = tm.gap_dense().model
    with pytest.raises(InputError, match="auto quantization needs calibration images"):
        convert(model, tmp_path / "a.tflite", quantize="auto")
    with pytest.raises(InputError, match="cannot run with --no-self-check"):
        convert(model, tmp_path / "a.tflite", quantize="auto", calibration=tm.images(8), self_check=False)
    assert list(tmp_path.iterdir()) == []


def test_gradient_head_plans_keep_the_head_float(calib, tmp_path):
    from converters import convert

    case = tm.mlp_relu()
    result = convert(case.model, tmp_path / "g.tflite", quantize="auto", calibration=calib, cost="nominal")
    rows = {r.plan: r for r in result.plans}
    assert "not available for an in-graph gradient head" in rows["16x8"].error
    assert rows["int8"].passed and result.metadata.quantization == "int8"


def test_cli_gate_auto_table_and_inspect(outlier, calib, tmp_path):
    import cv2

    from toolkit.cli import cli as main

    model_path = tmp_path / "outlier.keras"
    outlier.model.save(model_path)
    images = tmp_path / "calib"
    images.mkdir()
    for i, img in enumerate(calib):
        cv2.imwrite(str(images / f"c{i:02d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    runner = CliRunner()
    out = tmp_path / "out"
    out.mkdir()

    refused = runner.invoke(main, ["convert", str(model_path), "-o", str(out / "m.tflite"), "--quantize", "int8",
                                   "--calibration", str(images)])
    assert refused.exit_code != 0 and "misses its fidelity bounds" in refused.output
    assert "Traceback" not in refused.output and list(out.iterdir()) == []

    auto = runner.invoke(main, ["convert", str(model_path), "-o", str(out / "m.tflite"), "--quantize", "auto",
                                "--calibration", str(images), "--plan-cost", "nominal"])
    assert auto.exit_code == 0, auto.output
    assert "int8-mixed" in auto.output and "← chosen" in auto.output and "misses: Pearson p05" in auto.output

    shown = runner.invoke(main, ["inspect", str(out / "m.tflite")])
    assert shown.exit_code == 0 and "plan int8-mixed (asked: auto" in shown.output and "← chosen" in shown.output
    raw = json.loads(runner.invoke(main, ["inspect", "--json", str(out / "m.tflite")]).output)
    assert raw["precision"]["plan"] == "int8-mixed" and len(raw["precision"]["tried"]) == len(PLANS)

    # Targets given on the command line replace the plan's gate, and are recorded.
    lax = runner.invoke(main, ["convert", str(model_path), "-o", str(out / "lax.tflite"), "--quantize", "int8",
                               "--calibration", str(images), "--min-p05", "-1", "--min-median", "-1",
                               "--min-top1", "0"])
    assert lax.exit_code == 0, lax.output
    raw = json.loads(runner.invoke(main, ["inspect", "--json", str(out / "lax.tflite")]).output)
    assert raw["precision"]["targets"]["pearson_p05"] == -1.0 and raw["precision"]["low_fidelity"] is False


def test_held_out_split_is_disjoint_and_quarter_sized():
    from converters.quant import split_held_out

    cal, held = split_held_out(200)
    assert len(held) == 50 and not set(cal) & set(held) and len(cal) + len(held) == 200
    cal, held = split_held_out(16)
    assert list(cal) == list(held) == list(range(16))  # too few to hold any out


def test_targets_are_validated():
    from converters.quant import Targets
    from firmware_host.errors import InputError

    for bad in (float("nan"), 2.0, "0.9"):
        with pytest.raises(InputError, match="Fidelity target"):
            Targets(pearson_p05=bad)


class _Analysis:
    def __init__(self, mode):
        self.mode = mode


@pytest.mark.parametrize("mode, classes, asked, method, expected", [
    ("linear", 4, "auto", "hirescam", ("linear", "all", "gradcam")),       # HiResCAM only for flatten/gradient
    ("linear", 33, "auto", "gradcam", ("linear", "predicted", "gradcam")),  # over 32 classes: the predicted map
    ("linear", 4, "predicted", "gradcam", ("linear", "predicted", "gradcam")),
    ("flatten", 1000, "all", "hirescam", ("flatten", "all", "hirescam")),
    ("gradient", 4, "all", "hirescam", ("gradient", "selected", "hirescam")),  # a gradient head selects at run time
    (None, 4, "auto", "hirescam", ("approximate", "all", "gradcam")),
])
def test_choose_cam_mode(mode, classes, asked, method, expected):
    from converters.export import ALL_CLASSES_LIMIT, choose_cam_mode

    assert ALL_CLASSES_LIMIT == 32
    analysis = None if mode is None else _Analysis(mode)
    assert choose_cam_mode(analysis, classes, asked, method) == expected


def test_int8_gate_refuses_by_the_tail_alone():
    """Issue 19: a model whose median and top-1 pass the int8 gate is still refused by its p05.

    The p05 is issue 19's plain-int8 MobileNetV3-Small (0.848); the median and top-1 are set to pass.
    The trained model of this repository's sweep has p05 0.965 and passes (docs/convert.md); the
    outlier-channel tests above show a refused model written with --allow-low-fidelity.
    """
    from dataclasses import replace

    from converters.quant import GATES, Fidelity

    fid = Fidelity(150, pearson_median=0.95, pearson_p05=0.848, pearson_min=0.41, top1=0.96, prob_max_abs_diff=0.05)
    assert GATES["int8"].missed(fid) == ["Pearson p05 0.8480 < 0.9"]
    assert GATES["int8"].missed(replace(fid, pearson_p05=0.965)) == []
