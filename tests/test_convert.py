"""Conversion of every head kind, float32 and int8, against an independent GradientTape Grad-CAM."""

import numpy as np
import pytest

from firmware_host import ExplainableModel
from firmware_host.compare import pearson
from tests import tiny_models
from tests.tiny_models import calib, probe  # noqa: F401 - fixtures

tf = pytest.importorskip("tensorflow")

# Documented bounds (docs/convert.md): exact modes in float32 need Pearson ≥ 0.999 at
# feature-map resolution and 100% top-1 agreement; int8 keeps median Pearson ≥ 0.9.
FLOAT_PEARSON = 0.999
INT8_MEDIAN_PEARSON = 0.9
INT8_MIN_TOP1 = 0.75


def _keras_probs(case, imgs):
    return np.asarray(case.model(np.stack(imgs).astype("float32"), training=False))


@pytest.mark.parametrize("head", sorted(tiny_models.HEADS))
def test_float32_matches_gradient_tape(head, tmp_path, calib, probe):
    from converters import convert

    case = tiny_models.HEADS[head]()
    result = convert(case.model, tmp_path / f"{head}.tflite", calibration=calib)
    meta = result.metadata
    assert meta.cam_mode == case.mode
    assert meta.target_layer == case.target
    assert meta.num_classes == case.classes
    assert result.self_check.passed

    edge = ExplainableModel(result.path)
    exps = edge.explain_batch(probe)
    ref_cam, ref_cls = tiny_models.reference_gradcam(case, probe)
    keras_probs = _keras_probs(case, probe)
    if case.name == "sigmoid_binary":
        keras_probs = np.concatenate([1 - keras_probs, keras_probs], axis=-1)
    for i, exp in enumerate(exps):
        assert exp.predicted_index == int(ref_cls[i])
        assert exp.cam.shape == ref_cam[i].shape
        assert exp.cam.dtype == np.float32 and exp.cam.min() >= 0
        assert pearson(exp.cam, ref_cam[i]) >= FLOAT_PEARSON
        np.testing.assert_allclose(exp.probabilities, keras_probs[i], atol=1e-5)


@pytest.mark.parametrize("head", ["gap_dense", "mlp_relu", "flatten_dense", "sigmoid_binary"])
def test_every_class_can_be_explained(head, tmp_path, calib, probe):
    """explain(image, class_index=c) must give c's Grad-CAM for every class, not only the prediction."""
    from converters import convert

    case = tiny_models.HEADS[head]()
    path = tmp_path / "m.tflite"
    # "predicted" output: other classes come from feature_maps × stored class weights.
    kwargs = {"cam_output": "predicted"} if case.mode != "gradient" else {}
    convert(case.model, path, calibration=calib, self_check=False, **kwargs)
    edge = ExplainableModel(path)
    for c in range(case.classes):
        ref_cam, _ = tiny_models.reference_gradcam(case, probe[:4], class_index=c)
        for i, exp in enumerate(edge.explain_batch(probe[:4], class_index=c)):
            assert exp.class_index == c
            assert pearson(exp.cam, ref_cam[i]) >= FLOAT_PEARSON


@pytest.mark.parametrize("head", sorted(tiny_models.HEADS))
def test_int8(head, tmp_path, calib, probe):
    from converters import convert

    case = tiny_models.HEADS[head]()
    result = convert(case.model, tmp_path / f"{head}_int8.tflite", quantize="int8", calibration=calib)
    edge = ExplainableModel(result.path)
    assert edge.backend.inputs["image"].dtype == np.int8
    assert all(info.dtype == np.int8 for info in edge.backend.outputs.values())
    corr, top1 = tiny_models.agreement(case, edge.explain_batch(probe), probe)
    assert np.median(corr) >= INT8_MEDIAN_PEARSON, corr
    assert top1 >= INT8_MIN_TOP1


def test_hirescam_flatten_is_exact(tmp_path, calib, probe):
    from converters import convert

    case = tiny_models.flatten_dense()
    path = tmp_path / "hires.tflite"
    convert(case.model, path, calibration=calib, cam_method="hirescam")
    edge = ExplainableModel(path)
    assert edge.metadata.cam_method == "hirescam"
    x = tf.constant(np.stack(probe).astype("float32"))
    with tf.GradientTape() as tape:
        A = case.features(x)
        tape.watch(A)
        z = case.logits(A)
        cls = tf.argmax(z, -1)
        score = tf.reduce_sum(z * tf.one_hot(cls, z.shape[-1]), -1)
    hires = np.maximum((tape.gradient(score, A) * A).numpy().sum(-1), 0)  # Draelos & Collins 2020
    for i, exp in enumerate(edge.explain_batch(probe)):
        np.testing.assert_allclose(exp.cam, hires[i], rtol=1e-4, atol=1e-5)


def test_predicted_head_for_many_classes(tmp_path, calib, probe):
    """With many classes only the predicted class's map is emitted; other classes still work."""
    import keras

    keras.utils.set_random_seed(7)
    inp = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last")(x)
    out = keras.layers.Dense(40, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    from converters import convert

    result = convert(model, tmp_path / "many.tflite", calibration=calib)
    assert result.metadata.cam_output == "predicted"
    assert result.metadata.class_weights.shape == (16, 40)
    edge = ExplainableModel(result.path)
    assert "cam" in edge.backend.outputs and "cams" not in edge.backend.outputs
    assert result.self_check.pearson_min >= FLOAT_PEARSON


def test_nonlinear_head_refused_then_approximate(tmp_path, calib):
    """A head layer the analyser cannot make exact is refused; --approximate is marked as such."""
    import keras

    from converters import convert
    from firmware_host.errors import UnsupportedHeadError

    keras.utils.set_random_seed(8)
    inp = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last")(x)
    x = keras.layers.UnitNormalization(name="un")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(UnsupportedHeadError, match=r"'un' \(UnitNormalization\).*--approximate"):
        convert(model, tmp_path / "x.tflite", calibration=calib)
    result = convert(model, tmp_path / "x.tflite", calibration=calib, approximate=True)
    assert result.metadata.cam_mode == "approximate" and result.metadata.approximate
    exp = ExplainableModel(result.path).explain(calib[0])
    assert exp.approximate and exp.cam.shape == (24, 24)


def test_emit_baseline(tmp_path, calib):
    from converters import convert
    from firmware_host.backends.litert import load_interpreter_class

    case = tiny_models.gap_dense()
    result = convert(case.model, tmp_path / "m.tflite", calibration=calib, emit_baseline=True, self_check=False)
    assert result.baseline_path == tmp_path / "m.plain.tflite"
    Interpreter, _, _ = load_interpreter_class()
    runner = Interpreter(model_path=str(result.baseline_path)).get_signature_runner()
    x = np.stack(calib[:2]).astype("float32")
    np.testing.assert_allclose(runner(image=x)["probabilities"], _keras_probs(case, calib[:2]), atol=1e-5)


def test_preprocessing_recorded(tmp_path, calib):
    from converters import convert

    case = tiny_models.gap_dense()
    meta = convert(case.model, tmp_path / "a.tflite", self_check=False).metadata
    assert (meta.preprocessing.scale, meta.preprocessing.offset) == ((1.0,), (0.0,))  # Rescaling detected
    meta = convert(case.model, tmp_path / "b.tflite", self_check=False, color="bgr",
                   input_scale=[0.5], input_offset=[-1.0]).metadata
    assert meta.preprocessing.color == "bgr" and meta.preprocessing.scale == (0.5,)
    meta = convert(case.model, tmp_path / "c.tflite", self_check=False, mean=[1, 2, 3], std=[2, 2, 2]).metadata
    np.testing.assert_allclose(meta.preprocessing.offset, [-0.5, -1.0, -1.5])


def test_int8_needs_calibration(tmp_path):
    from converters import convert
    from firmware_host.errors import InputError

    with pytest.raises(InputError, match="int8 quantization needs calibration images"):
        convert(tiny_models.gap_dense().model, tmp_path / "m.tflite", quantize="int8")


def test_wrong_target_layer_lists_candidates(tmp_path):
    from converters import convert
    from firmware_host.errors import LayerError, UnsupportedHeadError

    case = tiny_models.nested_backbone()
    with pytest.raises(LayerError, match=r"No layer named 'nope'.*backbone/b_relu"):
        convert(case.model, tmp_path / "m.tflite", target_layer="nope")
    with pytest.raises(LayerError, match=r"'pred' is not a spatial layer"):
        convert(case.model, tmp_path / "m.tflite", target_layer="pred")
    # A bare inner name is accepted when unique; BN + ReLU after it make a gradient head.
    result = convert(case.model, tmp_path / "m.tflite", target_layer="b_conv2")
    assert result.metadata.target_layer == "backbone/b_conv2"
    assert result.metadata.cam_mode == "gradient" and result.self_check.pearson_min >= FLOAT_PEARSON
    # A pooling layer between the target and the head cannot be made exact.
    with pytest.raises(UnsupportedHeadError, match=r"'b_pool' \(MaxPooling2D\)"):
        convert(case.model, tmp_path / "m.tflite", target_layer="b_conv1")


def test_mlp_without_spatial_layer_is_refused(tmp_path):
    import keras

    from converters import convert
    from firmware_host.errors import LayerError

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(LayerError, match="no spatial layer"):
        convert(model, tmp_path / "m.tflite")


def test_output_must_be_tflite(tmp_path):
    from converters import convert
    from firmware_host.errors import InputError

    with pytest.raises(InputError, match=r"must end with '.tflite'"):
        convert(tiny_models.gap_dense().model, tmp_path / "m.onnx.bin")
