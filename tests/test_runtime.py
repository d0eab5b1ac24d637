"""The device runtime: committed tiny model, TensorFlow blocked, metadata integrity, input errors."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from firmware_host import ExplainableModel, cam
from firmware_host.compare import pearson
from firmware_host.errors import InputError, MetadataError, ModelFileError
from firmware_host.metadata import (
    EdgecamMetadata,
    Preprocessing,
    embed_tflite_metadata,
    read_tflite_buffers,
    read_tflite_metadata,
)

ROOT = Path(__file__).resolve().parents[1]
BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "


def _input(data_dir):
    return cv2.imread(str(data_dir / "tiny_fog_input.png"))[..., ::-1].copy()


def test_device_path_runs_with_tensorflow_blocked(tiny_fog_model, data_dir):
    """firmware_host imports and explains with TensorFlow/Keras unimportable, matching Keras."""
    code = BLOCK_TF + textwrap.dedent(
        f"""
        import json, cv2, numpy as np
        import firmware_host
        from firmware_host import ExplainableModel
        model = ExplainableModel({str(tiny_fog_model)!r})
        img = cv2.imread({str(data_dir / 'tiny_fog_input.png')!r})[..., ::-1]
        exps = [model.explain(img, class_index=c) for c in range(4)]
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras') and sys.modules[m] is not None)
        print(json.dumps({{"probs": exps[0].probabilities.tolist(), "cams": [e.cam.tolist() for e in exps], "loaded": loaded}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    expected = np.load(data_dir / "tiny_fog_expected.npz")
    np.testing.assert_allclose(result["probs"], expected["probabilities"], atol=1e-5)
    for c in range(4):
        assert pearson(np.array(result["cams"][c]), expected["gradcam"][c]) >= 0.999


def test_cli_device_commands_with_tensorflow_blocked(tiny_fog_model, data_dir, tmp_path):
    code = BLOCK_TF + (
        "from toolkit.cli import main; "
        f"main(['predict', {str(tiny_fog_model)!r}, {str(data_dir / 'tiny_fog_input.png')!r}, '--out', {str(tmp_path)!r}])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CAM peak" in out.stdout
    overlay = cv2.imread(str(tmp_path / "tiny_fog_input.overlay.png"))
    assert overlay is not None and overlay.shape == (32, 32, 3)
    help_out = subprocess.run([sys.executable, "-c", BLOCK_TF + "from toolkit.cli import main; main(['--help'])"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert help_out.returncode == 0 and "convert" in help_out.stdout


def test_explanation_api(tiny_fog_model, data_dir):
    model = ExplainableModel(tiny_fog_model)
    img = _input(data_dir)
    before = img.copy()
    exp = model.explain(img)
    np.testing.assert_array_equal(img, before)  # inputs are not modified
    assert model.classes == ("dense-fog", "moderate-fog", "light-fog", "no-fog")
    assert exp.label == model.classes[exp.class_index] and exp.class_index == exp.predicted_index
    assert exp.cam.dtype == np.float32 and exp.cam.shape == model.feature_map_size == (16, 16)
    assert exp.cam.min() >= 0.0
    assert abs(float(exp.probabilities.sum()) - 1.0) < 1e-5
    heat = exp.heatmap((64, 48))
    assert heat.shape == (64, 48) and heat.min() == 0.0 and heat.max() == 1.0
    big = cv2.resize(img, (100, 80))
    assert exp.overlay(big).shape == (80, 100, 3)
    # any image size, gray input, PIL input
    assert model.explain(big).cam.shape == (16, 16)
    assert model.explain(img[..., 0]).cam.shape == (16, 16)
    pil = pytest.importorskip("PIL.Image")
    np.testing.assert_allclose(model.explain(pil.fromarray(img)).cam, exp.cam)
    batch = model.explain_batch([img, big], class_index=[0, 3])
    assert [e.class_index for e in batch] == [0, 3]


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((32, 32, 3), np.float32), "must be uint8"),
        (np.zeros((32, 32, 4), np.uint8), "4 channels"),
        (np.zeros((2, 32, 32, 3), np.uint8), r"must be H×W \(gray\) or H×W×3"),
        (np.zeros((32, 32, 2), np.uint8), r"Got shape \(32, 32, 2\)"),
        ([[1, 2]], "numpy array or PIL image"),
    ],
)
def test_bad_images(tiny_fog_model, bad, match):
    with pytest.raises(InputError, match=match):
        ExplainableModel(tiny_fog_model).explain(bad)


def test_bad_class_index(tiny_fog_model, data_dir):
    with pytest.raises(InputError, match="class_index 7 is out of range: the model has 4 classes"):
        ExplainableModel(tiny_fog_model).explain(_input(data_dir), class_index=7)


def _meta(**kw):
    base = dict(
        classes=("a", "b"),
        preprocessing=Preprocessing(8, 8),
        target_layer="conv",
        feature_map_shape=(4, 4, 3),
        cam_mode="linear",
        class_weights=np.arange(6, dtype=np.float32).reshape(3, 2),
    )
    base.update(kw)
    return EdgecamMetadata(**base)


def test_metadata_round_trip(tiny_fog_model):
    content = tiny_fog_model.read_bytes()
    meta = _meta()
    blob = embed_tflite_metadata(content, meta)
    back = read_tflite_metadata(blob)
    assert back == meta
    np.testing.assert_array_equal(back.class_weights, meta.class_weights)
    # re-embedding replaces the entry rather than adding a second one
    again = embed_tflite_metadata(blob, _meta(classes=("x", "y")))
    assert read_tflite_metadata(again).classes == ("x", "y")
    assert sum(name == "edgecam" for name in read_tflite_buffers(again)) == 1


def test_metadata_checksum_and_version(tiny_fog_model, tmp_path):
    buffers = _meta().to_buffers()
    payload = json.loads(buffers["edgecam"])
    payload["edgecam"]["classes"] = ["evil", "b"]
    with pytest.raises(MetadataError, match="checksum does not match"):
        EdgecamMetadata.from_buffers({**buffers, "edgecam": json.dumps(payload).encode()})
    weights = bytearray(buffers["edgecam.weights"])
    weights[0] ^= 0xFF
    with pytest.raises(MetadataError, match="class-weight buffer fails its sha256"):
        EdgecamMetadata.from_buffers({**buffers, "edgecam.weights": bytes(weights)})
    newer = _meta(format_version="2.0").to_buffers()
    with pytest.raises(MetadataError, match=r"format '2.0' is not supported.*Upgrade edgecam"):
        EdgecamMetadata.from_buffers(newer)


def test_model_without_metadata(tmp_path):
    from firmware_host.metadata import _FlatbufferReader  # noqa: F401 - module imports cleanly

    plain = tmp_path / "plain.tflite"
    # strip: rebuild the committed model's bytes without our buffers
    src = Path(__file__).parent / "data" / "tiny_fog.tflite"
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(src.read_bytes()), 0))
    m.metadata = [e for e in m.metadata if e.name not in (b"edgecam", b"edgecam.weights", "edgecam", "edgecam.weights")]
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    plain.write_bytes(bytes(b.Output()))
    with pytest.raises(MetadataError, match=r"has no edgecam metadata.*edgecam convert"):
        ExplainableModel(plain)


def test_corrupt_and_truncated_files(tmp_path, tiny_fog_model):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelFileError, match="not a LiteRT/TFLite model"):
        ExplainableModel(junk)
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tiny_fog_model.read_bytes()[:3000])
    with pytest.raises((ModelFileError, MetadataError)):
        ExplainableModel(cut)
    with pytest.raises(ModelFileError, match="does not exist"):
        ExplainableModel(tmp_path / "missing.tflite")


def test_cam_postprocessing():
    raw = np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32)
    before = raw.copy()
    heat = cam.heatmap(raw)
    np.testing.assert_array_equal(raw, before)
    np.testing.assert_allclose(heat, [[0, 0], [1 / 3, 1]], atol=1e-7)
    assert np.all(cam.normalize(np.full((3, 3), 5.0)) == 0)  # constant map → zeros, no NaN
    up = cam.heatmap(raw, (8, 8))
    assert up.shape == (8, 8) and up.min() == 0 and up.max() == 1
    fm = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    w = np.array([1.0, -2.0, 0.5], np.float32)
    np.testing.assert_allclose(cam.combine(fm, w), (fm * w).sum(-1), rtol=1e-6)
    assert cam.peak(np.array([[0, 1], [5, 2]])) == (1, 0)
    assert cam.heatmap(np.stack([raw, raw * 2]), (4, 4)).shape == (2, 4, 4)
