"""Bad inputs (issue 9) for convert / predict / inspect and the runtime, plus loading edge cases.

Each bad input is pinned twice: in the library with ``pytest.raises(match=...)``, and through the
CLI (click's CliRunner): exit code 1, the message on one ``Error:`` line, no traceback.
"""

import json
import logging
import os
import zipfile
from dataclasses import replace

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from firmware_host import ExplainableModel
from firmware_host.errors import (
    ConversionError,
    InputError,
    LayerError,
    MetadataError,
    ModelFileError,
    OutputError,
)
from firmware_host.metadata import embed_tflite_metadata, read_tflite_metadata
from tests import tiny_models
from toolkit.cli import cli

pytest.importorskip("tensorflow")


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_cli_error(result, pattern):
    """Exit code 1 through click (not an uncaught exception), one Error line matching ``pattern``."""
    import re

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # click error, not a crash
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny saved models and folders shared by the tests of this module."""
    import keras

    root = tmp_path_factory.mktemp("bad")
    tiny_models.gap_dense().model.save(root / "good.keras")
    tiny_models.gap_dense().model.save_weights(root / "only.weights.h5")
    with zipfile.ZipFile(root / "notmodel.keras", "w") as archive:
        archive.writestr("readme.txt", "a zip, not a Keras archive")
    (root / "random.keras").write_bytes(os.urandom(256))
    # A Lambda layer carries Python bytecode: refused under safe_mode.
    inp = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3))
    x = keras.layers.Lambda(lambda v: v / 255.0, name="scale")(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="last")(x)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(root / "lambda.keras")
    # An MLP: no spatial layer at all.
    keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    ).save(root / "mlp.keras")
    # A model whose outputs are NaN (its classifier kernel is NaN).
    case = tiny_models.gap_dense()
    dense = case.model.get_layer("pred")
    dense.kernel.assign(np.full(dense.kernel.shape, np.nan, np.float32))
    case.model.save(root / "nan.keras")
    # Folders: empty; only junk; images mixed with junk.
    (root / "empty").mkdir()
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not an image")
    (root / "junk" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    mixed = root / "mixed"
    mixed.mkdir()
    for i, img in enumerate(tiny_models.images(6, seed=3)):
        cv2.imwrite(str(mixed / f"{i}.png"), img[..., ::-1])
    (mixed / "notes.txt").write_text("not an image")
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


# -- models that are not models --------------------------------------------------------------
@pytest.mark.parametrize(
    "name, pattern",
    [
        ("only.weights.h5", r"'.*only\.weights\.h5' is a weights-only file.*model\.save\('model\.keras'\)"),
        ("notmodel.keras", r"is a zip archive but not a Keras model \(no config\.json; it holds readme\.txt\)"),
        ("random.keras", r"is not a readable Keras \.keras model \(not a zip archive"),
        ("lambda.keras", r"contains a Lambda layer .* refuses to load in safe_mode.*--unsafe"),
    ],
)
def test_not_a_loadable_model(files, tmp_path, name, pattern):
    from converters import convert

    with pytest.raises(ModelFileError, match=pattern):
        convert(files / name, tmp_path / "m.tflite")
    assert_cli_error(run_cli("convert", files / name, "-o", tmp_path / "m.tflite"), pattern)
    assert not (tmp_path / "m.tflite").exists()


def test_saved_model_directory_without_keras_layers(files, tmp_path):
    """An inference-only SavedModel (model.export) has no layers to analyse: say so."""
    import keras

    directory = tmp_path / "exported"
    keras.models.load_model(files / "good.keras").export(directory, verbose=False)
    pattern = r"SavedModel '.*exported' has no Keras layer metadata.*model\.save\('model\.keras'\)"
    from converters import convert

    with pytest.raises(ModelFileError, match=pattern):
        convert(directory, tmp_path / "m.tflite")
    assert_cli_error(run_cli("convert", directory, "-o", tmp_path / "m.tflite"), pattern)
    (tmp_path / "plain_dir").mkdir()
    assert_cli_error(run_cli("convert", tmp_path / "plain_dir", "-o", tmp_path / "m.tflite"),
                     r"is not a SavedModel \(no saved_model\.pb\)")


def test_lambda_with_unsafe_converts_and_warns(files, tmp_path, caplog):
    from converters import convert

    with caplog.at_level(logging.WARNING, logger="edgecam.convert"):
        result = convert(files / "lambda.keras", tmp_path / "m.tflite", safe_mode=False,
                         input_scale=[1.0], self_check=False)
    assert "safe_mode is off" in caplog.text and "lambda.keras" in caplog.text
    assert result.metadata.target_layer == "last"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecam.convert"):  # the CLI logs to stderr
        out = run_cli("convert", files / "lambda.keras", "-o", tmp_path / "c.tflite", "--unsafe",
                      "--input-scale", "1", "--no-self-check")
    assert out.exit_code == 0, out.output
    assert "safe_mode is off" in caplog.text


def test_mlp_has_no_spatial_layer(files, tmp_path):
    from converters import convert

    pattern = r"has no spatial layer before its output.*convolutional feature map"
    with pytest.raises(LayerError, match=pattern):
        convert(files / "mlp.keras", tmp_path / "m.tflite")
    assert_cli_error(run_cli("convert", files / "mlp.keras", "-o", tmp_path / "m.tflite"), pattern)


# -- preprocessing flags ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "flag, value, pattern",
    [
        ("--input-scale", "nan", r"--input-scale must be finite and non-zero numbers\. Got: \[nan\]"),
        ("--input-offset", "inf", r"--input-offset must be finite numbers\. Got: \[inf\]"),
        ("--input-scale", "0", r"--input-scale must be finite and non-zero"),
        ("--std", "0", r"--std must be finite and non-zero"),
    ],
)
def test_non_finite_preprocessing(files, tmp_path, flag, value, pattern):
    from converters import convert

    key = flag.lstrip("-").replace("-", "_")
    with pytest.raises(InputError, match=pattern):
        convert(files / "good.keras", tmp_path / "m.tflite", **{key: [float(value)]})
    assert_cli_error(run_cli("convert", files / "good.keras", "-o", tmp_path / "m.tflite", flag, value), pattern)


def test_preprocessing_record_refuses_non_finite():
    from firmware_host.metadata import Preprocessing

    with pytest.raises(MetadataError, match=r"scale must be finite and non-zero\. Got: \(nan,\)"):
        Preprocessing(8, 8, scale=(float("nan"),))
    with pytest.raises(MetadataError, match="std must be finite and non-zero"):
        Preprocessing.from_mean_std(8, 8, mean=[0.5], std=[0.0])


# -- NaN model outputs -----------------------------------------------------------------------
def test_nan_model_is_refused_at_conversion_and_at_runtime(files, tmp_path):
    from converters import convert

    pattern = r"non-finite logits or Grad-CAM \(NaN/inf\) on .*image 0"
    with pytest.raises(ConversionError, match=pattern):
        convert(files / "nan.keras", tmp_path / "m.tflite")
    assert_cli_error(run_cli("convert", files / "nan.keras", "-o", tmp_path / "c.tflite"), pattern)
    # Converted without the self-check, the runtime refuses the result instead of returning NaN.
    path = tmp_path / "nocheck.tflite"
    convert(files / "nan.keras", path, self_check=False)
    image = tiny_models.images(1)[0]
    runtime = r"'.*nocheck\.tflite' produced non-finite probabilities \(NaN/inf\) for image 0"
    with pytest.raises(ConversionError, match=runtime):
        ExplainableModel(path).explain(image)
    png = tmp_path / "in.png"
    cv2.imwrite(str(png), image)
    assert_cli_error(run_cli("predict", path, png), runtime)


# -- image folders -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "folder, pattern",
    [
        ("empty", r"Image folder '.*empty' has no readable image \(0 files"),
        ("junk", r"Image folder '.*junk' has no readable image \(2 files, 1 with an image suffix, 2 skipped\)"),
    ],
)
def test_calibration_folder_without_images(files, tmp_path, folder, pattern):
    from converters import convert

    with pytest.raises(InputError, match=pattern):
        convert(files / "good.keras", tmp_path / "m.tflite", calibration=files / folder)
    assert_cli_error(run_cli("convert", files / "good.keras", "-o", tmp_path / "m.tflite", "--quantize", "int8",
                             "--calibration", files / folder), pattern)


def test_junk_in_calibration_folder_is_skipped_and_counted(files, tmp_path):
    from converters.export import load_images

    images, skipped = load_images(files / "mixed")
    assert len(images) == 6 and skipped == 2
    out = run_cli("convert", files / "good.keras", "-o", tmp_path / "m.tflite", "--calibration", files / "mixed")
    assert out.exit_code == 0, out.output
    assert "6 calibration images from" in out.output and "(2 unreadable or non-image files skipped)" in out.output


# -- .tflite files -----------------------------------------------------------------------------
@pytest.fixture()
def tflites(tmp_path, tiny_fog_model):
    content = tiny_fog_model.read_bytes()
    (tmp_path / "junk.tflite").write_bytes(b"hello world, not a model")
    (tmp_path / "cut.tflite").write_bytes(content[: len(content) // 3])
    (tmp_path / "empty.tflite").write_bytes(b"")
    meta = read_tflite_metadata(tiny_fog_model)
    (tmp_path / "newer.tflite").write_bytes(embed_tflite_metadata(content, replace(meta, format_version="9.0")))
    assert content.count(b"dense-fog") == 1  # only in the metadata JSON
    (tmp_path / "tampered.tflite").write_bytes(content.replace(b"dense-fog", b"dense-fox"))
    return tmp_path


@pytest.mark.parametrize(
    "name, error, pattern",
    [
        ("junk.tflite", ModelFileError, r"'.*junk\.tflite' .*not a LiteRT/TFLite model"),
        ("cut.tflite", (ModelFileError, MetadataError), r"'.*cut\.tflite'"),
        ("empty.tflite", ModelFileError, r"'.*empty\.tflite'"),
        ("newer.tflite", MetadataError, r"'.*newer\.tflite'.*format '9\.0' is not supported.*Upgrade edgecam"),
        ("tampered.tflite", MetadataError, r"'.*tampered\.tflite'.*checksum does not match.*convert the model again"),
    ],
)
def test_bad_tflite_files(tflites, data_dir, name, error, pattern):
    with pytest.raises(error, match=pattern):
        ExplainableModel(tflites / name)
    assert_cli_error(run_cli("inspect", tflites / name), pattern)
    assert_cli_error(run_cli("predict", tflites / name, data_dir / "tiny_fog_input.png"), pattern)


def test_tflite_without_edgecam_metadata(tmp_path, files):
    """The plain baseline written by --emit-baseline has no edgecam metadata."""
    from converters import convert

    result = convert(files / "good.keras", tmp_path / "m.tflite", emit_baseline=True, self_check=False)
    pattern = r"'.*m\.plain\.tflite' has no edgecam metadata.*`edgecam convert`"
    with pytest.raises(MetadataError, match=pattern):
        ExplainableModel(result.baseline_path)
    assert_cli_error(run_cli("inspect", result.baseline_path), pattern)


# -- images given to the runtime ---------------------------------------------------------------
@pytest.mark.parametrize(
    "image, pattern",
    [
        (np.zeros((32, 32, 3), np.float32), r"image must be uint8 \(0-255 pixels\)\. Got dtype float32"),
        (np.full((32, 32, 3), np.nan, np.float32), r"image must be uint8 .* Got dtype float32"),
        (np.zeros((32,), np.uint8), r"image must be H×W \(gray\) or H×W×3 \(RGB\)\. Got shape \(32,\)"),
        (np.zeros((32, 32, 2), np.uint8), r"Got shape \(32, 32, 2\)"),
        (np.zeros((32, 32, 4), np.uint8), r"4 channels \(RGBA\).*image\[\.\.\., :3\]"),
        (np.zeros((0, 32, 3), np.uint8), r"image is empty: shape \(0, 32, 3\)"),
    ],
)
def test_bad_images_for_the_runtime(tiny_fog_model, image, pattern):
    with pytest.raises(InputError, match=pattern):
        ExplainableModel(tiny_fog_model).explain(image)


def test_predict_with_files_that_are_not_images(tiny_fog_model, data_dir, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert_cli_error(run_cli("predict", tiny_fog_model, text),
                     r"None of the 1 file\(s\) given is a readable image \(first: '.*notes\.png'\)")
    mixed = run_cli("predict", tiny_fog_model, text, data_dir / "tiny_fog_input.png")
    assert mixed.exit_code == 0, mixed.output
    assert "notes.png: skipped" in mixed.output and "1 of 2 file(s) skipped" in mixed.output


# -- output locations --------------------------------------------------------------------------
def test_output_directory_missing_or_unwritable(files, tmp_path, tiny_fog_model, data_dir):
    from converters import convert

    with pytest.raises(InputError, match=r"Output folder '.*nowhere' does not exist\. Create it first\."):
        convert(files / "good.keras", tmp_path / "nowhere" / "m.tflite")
    assert_cli_error(run_cli("convert", files / "good.keras", "-o", tmp_path / "nowhere" / "m.tflite"),
                     r"Output folder '.*nowhere' does not exist")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert_cli_error(run_cli("predict", tiny_fog_model, data_dir / "tiny_fog_input.png", "--out", blocker / "sub"),
                     r"Cannot create output directory '.*file/sub'")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only dirs")
def test_read_only_output_directory_is_detected_before_the_work(files, tmp_path):
    from converters import convert

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"Output directory '.*locked' is not writable"):
            convert(files / "good.keras", locked / "m.tflite")
        assert_cli_error(run_cli("convert", files / "good.keras", "-o", locked / "m.tflite"), "is not writable")
    finally:
        locked.chmod(0o755)


# -- loading formats and colour ----------------------------------------------------------------
def test_legacy_h5_converts(tmp_path):
    from converters import convert

    case = tiny_models.gap_dense()
    case.model.save(tmp_path / "legacy.h5")
    result = convert(tmp_path / "legacy.h5", tmp_path / "m.tflite", calibration=tiny_models.images(4))
    assert result.metadata.source["name"] == "legacy.h5"
    assert result.metadata.cam_mode == "linear" and result.self_check.passed


def test_gray_model(tmp_path):
    import keras

    from converters import convert
    from firmware_host.compare import pearson

    keras.utils.set_random_seed(3)
    inp = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 1))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="last")(keras.layers.Rescaling(1 / 255)(inp))
    gap, dense = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inp, dense(gap(a)))
    result = convert(model, tmp_path / "gray.tflite", calibration=tiny_models.images(4))
    assert result.metadata.preprocessing.color == "gray" and result.self_check.passed
    edge = ExplainableModel(result.path)
    rgb = tiny_models.images(3, seed=9)
    gray = [cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in rgb]
    for img_rgb, img_gray in zip(rgb, gray):  # RGB input is converted to gray the same way
        np.testing.assert_allclose(edge.explain(img_rgb).cam, edge.explain(img_gray).cam, rtol=1e-5, atol=1e-6)
    import tensorflow as tf

    logits = lambda A: tf.matmul(gap(A), dense.kernel) + dense.bias  # noqa: E731
    case = tiny_models.Case("gray", model, keras.Model(inp, a), logits, "last", 3, "linear")
    ref, _ = tiny_models.reference_gradcam(case, [g[..., None] for g in gray])
    for i, img in enumerate(gray):
        assert pearson(edge.explain(img).cam, ref[i]) >= 0.999


def test_bgr_color_really_swaps_channels(tmp_path):
    """A model that answers 'red' (class 0) or 'blue' (class 1) from its input channels 0 and 2."""
    import keras

    from converters import convert

    inp = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="chan")
    x = conv(inp)
    model = keras.Model(inp, keras.layers.Activation("softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, 0, 0] = kernel[0, 0, 2, 1] = 10.0  # class 0 ← input channel 0, class 1 ← channel 2
    conv.kernel.assign(kernel)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255  # RGB red, as numpy/PIL give images
    out = run_cli("convert", _save(model, tmp_path / "rb.keras"), "-o", tmp_path / "bgr.tflite",
                  "--color", "bgr", "--input-scale", str(1 / 255), "--no-self-check")
    assert out.exit_code == 0, out.output
    bgr_model = ExplainableModel(tmp_path / "bgr.tflite")
    assert bgr_model.metadata.preprocessing.color == "bgr"
    # A BGR model sees the red image's 255 in its channel 2: it must answer class 1.
    assert bgr_model.explain(red).predicted_index == 1
    rgb = convert(model, tmp_path / "rgb.tflite", input_scale=[1 / 255], self_check=False)
    assert ExplainableModel(rgb.path).explain(red).predicted_index == 0


def _save(model, path):
    model.save(path)
    return path


def test_inspect_json_of_a_good_model(tiny_fog_model):
    out = run_cli("inspect", tiny_fog_model, "--json")
    assert out.exit_code == 0 and json.loads(out.output)["classes"][0] == "dense-fog"


def test_model_with_two_inputs_or_any_input_size(tmp_path):
    import keras

    from converters import convert
    from firmware_host.errors import UnsupportedHeadError

    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "two.keras")
    pattern = r"has 2 inputs; edgecam explains single-image classifiers"
    with pytest.raises(UnsupportedHeadError, match=pattern):
        convert(model, tmp_path / "m.tflite")
    assert_cli_error(run_cli("convert", tmp_path / "two.keras", "-o", tmp_path / "m.tflite"), pattern)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(keras.layers.Rescaling(1 / 255)(inp))
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))).save(
        tmp_path / "any.keras")
    assert_cli_error(run_cli("convert", tmp_path / "any.keras", "-o", tmp_path / "m.tflite"),
                     r"Layer 'conv' has an unknown spatial size .* Pass --input-size H W")
    out = run_cli("convert", tmp_path / "any.keras", "-o", tmp_path / "m.tflite", "--input-size", "16", "16")
    assert out.exit_code == 0, out.output
    assert ExplainableModel(tmp_path / "m.tflite").metadata.feature_map_shape == (14, 14, 4)


def test_unwritable_output_directory_simulated(files, tmp_path, monkeypatch):
    """As root every directory is writable, so the permission check is exercised by making
    os.access deny the output folder (the check runs before the conversion starts)."""
    import firmware_host._io as io

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(io.os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    started = []
    monkeypatch.setattr("converters.export.split_model", lambda *a, **k: started.append(1))
    assert_cli_error(run_cli("convert", files / "good.keras", "-o", locked / "m.tflite"),
                     r"Output directory '.*locked' is not writable")
    assert not started  # refused before any work


def test_validate_lambda_refusal_names_an_option_validate_has(files, tiny_fog_model, tmp_path):
    """The safe_mode refusal says "pass --unsafe": `edgecam validate` must have that option."""
    import re

    from toolkit.cli.validate import validate_cmd

    result = run_cli("validate", files / "lambda.keras", tiny_fog_model, "--images", files / "mixed",
                     "--out", tmp_path / "o", "--quiet", "--no-faithfulness")
    assert_cli_error(result, r"contains a Lambda layer .* refuses to load in safe_mode.*--unsafe")
    named = set(re.findall(r"(--[a-z][a-z-]+)", result.output))
    offered = {opt for param in validate_cmd.params for opt in param.opts}
    assert named and named <= offered, (named, offered)
    # With the option, the model loads (and is then judged as a model, not refused as a file).
    trusted = run_cli("validate", files / "lambda.keras", tiny_fog_model, "--images", files / "mixed",
                      "--out", tmp_path / "u", "--quiet", "--no-faithfulness", "--unsafe")
    assert "Lambda" not in trusted.output and "No such option" not in trusted.output
