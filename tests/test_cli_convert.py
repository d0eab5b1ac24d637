"""`edgecam convert` / `inspect` through the command line: outputs, flags and one-line errors."""

import json

import pytest
from click.testing import CliRunner

from firmware_host import ExplainableModel
from tests import tiny_models
from toolkit.cli import cli

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    nested = tiny_models.nested_backbone().model
    nested.save(root / "nested.keras")
    import cv2

    calib = root / "calib"
    calib.mkdir()
    for i, img in enumerate(tiny_models.images(8, seed=3)):
        cv2.imwrite(str(calib / f"{i}.png"), img[..., ::-1])
    (calib / "notes.txt").write_text("not an image")
    (root / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    return root


def test_convert_cli_with_preprocessing_flags(saved_models, tmp_path):
    out = tmp_path / "m.tflite"
    result = CliRunner().invoke(cli, [
        "convert", str(saved_models / "nested.keras"), "-o", str(out),
        "--input-scale", "1.0", "--input-offset", "0.0", "--color", "rgb",
        "--labels", str(saved_models / "labels.txt"), "--calibration", str(saved_models / "calib"),
        "--emit-baseline",
    ])
    assert result.exit_code == 0, result.output
    assert "target layer   backbone/b_relu" in result.output
    assert "self-check     ok" in result.output
    model = ExplainableModel(out)
    assert model.classes == ("a", "b", "c", "d", "e")
    assert (tmp_path / "m.plain.tflite").exists()
    shown = CliRunner().invoke(cli, ["inspect", str(out), "--json"])
    assert shown.exit_code == 0
    meta = json.loads(shown.output)
    assert meta["cam_mode"] == "linear" and meta["self_check"]["passed"] is True


def test_convert_int8_cli(saved_models, tmp_path):
    out = tmp_path / "q.tflite"
    result = CliRunner().invoke(cli, [
        "convert", str(saved_models / "nested.keras"), "-o", str(out), "--quantize", "int8",
        "--calibration", str(saved_models / "calib"),
    ])
    assert result.exit_code == 0, result.output
    assert ExplainableModel(out).metadata.quantization == "int8"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-layer", "nope"], "Error: No layer named 'nope' in the model. Pass --target-layer with one of the candidates"),
        (["--quantize", "int8"], "Error: int8 quantization needs calibration images"),
    ],
)
def test_convert_cli_errors_are_one_line(saved_models, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["convert", str(saved_models / "nested.keras"), "-o", str(tmp_path / "m.tflite"), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_not_a_keras_file(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    result = CliRunner().invoke(cli, ["convert", str(bad), "-o", str(tmp_path / "m.tflite")])
    assert result.exit_code == 1
    assert "is not a readable Keras .keras model" in result.output
