"""The training recipe: model shape the converter relies on, splits, metrics, a tiny real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from firmware_host.errors import InputError

keras = pytest.importorskip("keras")

from toolkit import train as T  # noqa: E402
from toolkit.datasets import fog  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("fogdata")
    return fog.generate_dataset(out, 24, size=(32, 32), seed=5, progress=False)


def test_small_model_head_is_gap_dropout_dense_after_rescaling():
    model = T.build_model(4, 48)
    assert model.input_shape == (None, 48, 48, 3) and model.output_shape == (None, 4)
    rescale = model.layers[1]
    assert isinstance(rescale, keras.layers.Rescaling) and rescale.scale == pytest.approx(1 / 255)
    tail = [type(layer).__name__ for layer in model.layers[-4:]]
    assert tail == ["Conv2D", "GlobalAveragePooling2D", "Dropout", "Dense"]
    assert model.layers[-4].name == T.LAST_CONV_NAME
    assert model.layers[-1].get_config()["activation"] == "softmax"
    assert not any("Random" in type(layer).__name__ for layer in model.layers)
    probs = model.predict(np.full((2, 48, 48, 3), 128.0, np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_mobilenetv2_option_builds_without_downloading():
    model = T.build_model(3, 32, arch="mobilenetv2")
    names = [type(layer).__name__ for layer in model.layers]
    assert names[1] == "Rescaling" and names[-3:] == ["GlobalAveragePooling2D", "Dropout", "Dense"]
    assert model.output_shape == (None, 3)


def test_build_model_errors():
    with pytest.raises(InputError, match="arch must be one of small, mobilenetv2"):
        T.build_model(4, 64, arch="resnet")
    with pytest.raises(InputError, match="at least 32 px"):
        T.build_model(4, 16)


def test_augmentation_matches_the_talks_image_data_generator():
    aug = T.build_augmentation(0)
    rotation, flip, zoom = aug.layers
    assert rotation.get_config()["factor"] in ((-20 / 360, 20 / 360), 20 / 360)
    assert rotation.get_config()["fill_mode"] == "reflect"
    assert flip.get_config()["mode"] == "horizontal_and_vertical"
    assert zoom.get_config()["height_factor"] == (-0.1, 0.1) == zoom.get_config()["width_factor"]
    assert zoom.get_config()["fill_mode"] == "reflect"
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    y = np.asarray(aug(x, training=True))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
    assert not np.allclose(y, x)


def test_stratified_split_and_folds():
    y = np.repeat(np.arange(3), [10, 20, 30])
    train_idx, test_idx = T.stratified_split(y, 0.2, seed=1)
    assert np.intersect1d(train_idx, test_idx).size == 0 and len(train_idx) + len(test_idx) == 60
    assert np.bincount(y[test_idx]).tolist() == [2, 4, 6]
    folds = T.stratified_folds(y, 5, seed=1)
    for k in range(5):
        assert np.bincount(y[folds == k], minlength=3).tolist() == [2, 4, 6]
    with pytest.raises(InputError, match="at least 11 images per class"):
        T.stratified_folds(y, 11)


def test_confusion_matrix_and_report_against_hand_computed():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 1])
    cm = T.confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    report = T.classification_report(cm, ["a", "b", "c"])
    assert report[0].precision == 1.0 and report[0].recall == pytest.approx(2 / 3)
    assert report[1].precision == pytest.approx(0.5) and report[1].recall == 1.0
    assert report[1].f1 == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert report[2].precision == 0.0 and report[2].support == 1


def test_tiny_training_run_writes_a_loadable_model(tiny_dataset, tmp_path):
    result = T.train(tiny_dataset, tmp_path / "run", epochs=1, batch_size=8, seed=0, progress=False)
    assert 0.0 <= result.accuracy <= 1.0
    assert result.class_names == fog.CLASS_NAMES and result.input_size == (32, 32)
    assert result.confusion.shape == (4, 4) and result.confusion.sum() == result.n_test
    assert result.accuracy == pytest.approx(np.trace(result.confusion) / result.n_test)
    model = keras.saving.load_model(result.model_path)
    x, _, _ = fog.load_folder_dataset(tiny_dataset, 32)
    direct = model.predict(x[:3].astype(np.float32), verbose=0)
    assert direct.shape == (3, 4)
    with Image.open(result.confusion_png) as png:
        png.load()
        assert png.format == "PNG" and png.size[0] > 100
    assert result.labels_path.read_text().split() == list(fog.CLASS_NAMES)
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["accuracy"] == result.accuracy and metrics["confusion"] == result.confusion.tolist()
    assert not list((tmp_path / "run").glob(".*"))  # atomic saves leave no temp files


def test_train_rejects_bad_data(tmp_path):
    with pytest.raises(InputError, match=r"x must be \(N, H, W, 3\)"):
        T.train((np.zeros((3, 32, 32)), np.zeros(3), ["a", "b"]), tmp_path, progress=False)
    with pytest.raises(InputError, match="Labels must be in"):
        T.train((np.zeros((3, 32, 32, 3)), np.array([0, 1, 5]), ["a", "b"]), tmp_path, progress=False)


def test_cli_train_with_kfold(tiny_dataset, tmp_path):
    from toolkit.cli import cli

    result = CliRunner().invoke(cli, ["train", str(tiny_dataset), "--out", str(tmp_path), "--epochs", "1",
                                      "--kfold", "2", "--quiet", "--no-augment"])
    assert result.exit_code == 0, result.output
    assert "2-fold out-of-fold accuracy" in result.output and "per fold:" in result.output
    metrics = json.loads((tmp_path / "training.json").read_text())
    assert len(metrics["fold_accuracies"]) == 2
    confusion = np.array(metrics["confusion"])
    assert confusion.sum() == 24  # every image predicted once, out of fold
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / 24)
    assert metrics["accuracy"] == pytest.approx(np.mean(metrics["fold_accuracies"]))
    assert (tmp_path / "model.keras").is_file()


def test_importing_the_recipe_does_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import toolkit.train, toolkit.cli.train\n"
        "from toolkit.train import build_model\n"
        "try:\n"
        "    build_model(4, 64)\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "MissingDependencyError" in done.stdout and "pip install 'edgecam[host]'" in done.stdout
