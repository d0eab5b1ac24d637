"""``edgecam explain``: real files written, opened again by OpenCV; a nested saved model."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from toolkit.cli import cli  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A transfer-learning-shaped model (nested backbone, Rescaling, fused softmax), saved."""
    import cv2
    import keras

    root = tmp_path_factory.mktemp("explain_cli")
    keras.utils.set_random_seed(0)
    b_in = keras.Input((24, 24, 3))
    b = keras.layers.Rescaling(1.0 / 255.0)(b_in)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(b)
    b = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="top")(b)
    b = keras.layers.ReLU(6.0, name="top_relu")(b)
    backbone = keras.Model(b_in, b, name="backbone")
    inp = keras.Input((24, 24, 3))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(backbone(inp)))
    path = root / "model.keras"
    keras.Model(inp, out).save(path)
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.jpg", "sub/a.png"):
        cv2.imwrite(str(images / name), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    (images / "broken.png").write_bytes(b"not a png")
    return path, images


def test_explain_all_methods_writes_overlays_and_figures(saved, tmp_path):
    import cv2

    from toolkit.explain import METHODS

    model, images = saved
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", str(model), str(images), "-m", "all", "--out", str(out),
                                      "--steps", "8", "--samples", "2", "--batch-size", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert "3 image(s) × 12 method(s)" in result.output and "(1 skipped)" in result.output
    summary = json.loads((out / "explain.json").read_text())
    assert summary["methods"] == [m for m in METHODS if m != "attention_rollout"]
    assert [os.path.basename(r["source"]) for r in summary["images"]] == ["a.png", "b.jpg", "a.png"]
    for record in summary["images"]:
        assert record["info"]["integrated_gradients.completeness_error"] >= 0
        for name in record["overlays"].values():
            png = cv2.imread(str(out / name))
            assert png is not None and png.shape == (30, 40, 3)  # at the original image size
        fig = cv2.imread(str(out / record["figure"]))
        assert fig is not None and fig.shape[1] > fig.shape[0]
    assert (out / "a.gradcampp.png").exists() and (out / "a_2.methods.png").exists()


def test_explain_one_method_and_layer(saved, tmp_path):
    model, images = saved
    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["explain", str(model), str(images / "a.png"), "--method", "gradcam",
                                      "--method", "saliency", "--target-layer", "backbone/top",
                                      "--class-index", "2", "--mean", "127.5", "--std", "127.5", "--no-figure",
                                      "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "a.png: class 2" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.gradcam.png", "a.saliency.png", "explain.json"]
    assert json.loads((out / "explain.json").read_text())["preprocessing"] == "given (mean/std)"


def test_explain_errors_are_one_line(saved, tmp_path):
    model, images = saved
    result = CliRunner().invoke(cli, ["explain", str(model), str(images), "--target-layer", "nope",
                                      "--out", str(tmp_path / "x"), "-q"])
    assert result.exit_code == 1
    assert "Error: No layer named 'nope'" in result.output and "backbone/top" in result.output
    assert "Traceback" not in result.output
    bad = CliRunner().invoke(cli, ["explain", str(model), str(images), "-m", "gradcam4", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "gradcam++" in bad.output
