"""Heads of real architectures, rebuilt small by hand (the full sweep is benchmarks/arch_sweep.py).

* MobileNetV3: GAP(keepdims) → 1×1 Conv → hard_swish → Dropout → 1×1 Conv → Flatten → softmax
  (gradient mode; the explanation layer is before the pooling, not the (N, 1, 1, C) tensors);
* MobileNet v1: GAP(keepdims) → Dropout → 1×1 Conv → Reshape → softmax (linear mode);
* EfficientNet: Rescaling → Normalization at the input (preprocessing detected), swish;
* a Normalization layer in the head (folded as an affine step);
* every activation's derivative rule against GradientTape, without converting.

References are GradientTape Grad-CAMs written here from the same layer objects.
"""

import numpy as np
import pytest

from firmware_host import ExplainableModel
from firmware_host.compare import pearson
from tests import tiny_models

tf = pytest.importorskip("tensorflow")

SIZE = tiny_models.SIZE


def _keras():
    import keras

    return keras


def _trunk(inp, activation="relu", channels=12):
    layers = _keras().layers
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
    x = layers.Conv2D(8, 3, padding="same", activation=activation, name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name="conv2")(x)
    bn = layers.BatchNormalization(name="bn")
    x = bn(x)
    tiny_models._randomize_bn(bn, np.random.default_rng(0))
    return x


def _check_float(case, result, probe):
    assert result.metadata.target_layer == case.target
    assert result.metadata.cam_mode == case.mode
    edge = ExplainableModel(result.path)
    ref, cls = tiny_models.reference_gradcam(case, probe)
    for i, exp in enumerate(edge.explain_batch(probe)):
        assert exp.predicted_index == int(cls[i])
        assert pearson(exp.cam, ref[i]) >= 0.999
    return edge


def mobilenet_v3_head(seed=11):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    a = layers.Activation("hard_swish", name="last")(_trunk(inp))
    gap = layers.GlobalAveragePooling2D(keepdims=True, name="gap")
    conv2 = layers.Conv2D(16, 1, use_bias=True, name="conv_2")
    act = layers.Activation("hard_swish", name="head_act")
    logits = layers.Conv2D(4, 1, name="logits")
    flat = layers.Flatten(name="flat")
    x = flat(logits(layers.Dropout(0.2)(act(conv2(gap(a))))))
    model = keras.Model(inp, layers.Activation("softmax", name="predictions")(x))
    tiny_models._sharpen(conv2, 4.0)
    tiny_models._sharpen(logits, 6.0)
    features = keras.Model(inp, a)
    return tiny_models.Case("mobilenet_v3", model, features, lambda A: flat(logits(act(conv2(gap(A))))),
                            "last", 4, "gradient")


def mobilenet_v1_head(seed=12):
    keras = _keras()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    a = layers.ReLU(6.0, name="last")(_trunk(inp))
    gap = layers.GlobalAveragePooling2D(keepdims=True, name="gap")
    conv = layers.Conv2D(5, 1, name="conv_preds")
    reshape = layers.Reshape((5,), name="reshape_2")
    x = reshape(conv(layers.Dropout(0.2)(gap(a))))
    model = keras.Model(inp, layers.Activation("softmax", name="predictions")(x))
    tiny_models._sharpen(conv, 6.0)
    return tiny_models.Case("mobilenet_v1", model, keras.Model(inp, a), lambda A: reshape(conv(gap(A))),
                            "last", 5, "linear")


@pytest.fixture(scope="module")
def data():
    """(calibration images, probe images)."""
    return tiny_models.images(16, seed=1), tiny_models.images(10, seed=2)


def test_mobilenet_v3_head_float32_and_int8(tmp_path, data):
    calib, probe = data
    from converters import convert

    case = mobilenet_v3_head()
    result = convert(case.model, tmp_path / "v3.tflite", calibration=calib)
    assert result.self_check.passed
    _check_float(case, result, probe)
    q = convert(case.model, tmp_path / "v3_int8.tflite", calibration=calib, quantize="int8", self_check=False)
    ref, cls = tiny_models.reference_gradcam(case, probe)
    exps = ExplainableModel(q.path).explain_batch(probe, class_index=cls.astype(int))
    assert np.median([pearson(e.cam, ref[i]) for i, e in enumerate(exps)]) >= 0.9


def test_mobilenet_v1_head_is_linear(tmp_path, data):
    calib, probe = data
    from converters import convert

    case = mobilenet_v1_head()
    result = convert(case.model, tmp_path / "v1.tflite", calibration=calib)
    _check_float(case, result, probe)
    assert result.metadata.class_weights.shape == (12, 5)


def test_keepdims_target_is_before_the_pooling():
    """find_target walks past (N, 1, 1, C) head tensors, but keeps a genuine 1×1 feature map."""
    keras = _keras()
    from converters.layers import find_target

    assert find_target(mobilenet_v3_head().model).path == "last"
    inp = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(6, 4, name="to_1x1")(inp)  # a real 1×1 feature map, no pooling after
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    assert find_target(model).path == "to_1x1"


def test_efficientnet_style_input_normalization_and_normalization_in_head(tmp_path, data):
    calib, probe = data
    """Rescaling → Normalization at the input (detected: raw pixels), swish, and a Normalization
    layer after the pooling folded into the class weights (linear mode)."""
    keras = _keras()
    from converters import convert

    keras.utils.set_random_seed(13)
    layers = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    norm_in = layers.Normalization(axis=-1, mean=[0.4, 0.5, 0.6], variance=[0.04, 0.09, 0.02])
    x = norm_in(layers.Rescaling(1.0 / 255.0)(inp))
    a = layers.Conv2D(10, 3, padding="same", activation="swish", name="last")(x)
    gap = layers.GlobalAveragePooling2D(name="gap")
    norm_head = layers.Normalization(axis=-1, mean=np.linspace(0, 1, 10), variance=np.linspace(0.5, 2, 10))
    dense = layers.Dense(4, activation="softmax", name="pred")
    model = keras.Model(inp, dense(norm_head(gap(a))))
    tiny_models._sharpen(dense)
    case = tiny_models.Case(
        "efficientnet", model, keras.Model(inp, a),
        lambda A: tf.matmul(norm_head(gap(A)), dense.kernel) + dense.bias, "last", 4, "linear",
    )
    result = convert(model, tmp_path / "eff.tflite", calibration=calib)
    assert result.metadata.converter["preprocessing"].startswith("detected")
    assert result.metadata.preprocessing.scale == (1.0,)
    _check_float(case, result, probe)


# -- derivative rules --------------------------------------------------------------------------
ACTIVATIONS = ["relu", "relu6", "leaky_relu", "sigmoid", "tanh", "elu", "softplus", "silu", "hard_sigmoid",
               "hard_silu", "gelu", "selu", "mish", "softsign", "exponential", "hard_tanh"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_activation_derivative_rules(activation, method):
    """The in-graph VJP of each activation equals GradientTape's gradient (no conversion)."""
    keras = _keras()
    from converters.head import ELEMENTWISE, analyze_head
    from converters.heads import gradient_cam

    assert activation in ELEMENTWISE
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    gmp = keras.layers.GlobalMaxPooling2D()
    hidden = keras.layers.Dense(12, activation=activation)
    act = keras.layers.Activation(activation)
    out = keras.layers.Dense(3)
    inp = keras.Input((5, 6, 8))
    keras.Model(inp, out(act(hidden(gmp(inp)))))
    # Pre-activations spread over [-4, 4] so every piece of piecewise rules is exercised.
    A = tf.constant(rng.normal(0, 1.5, (6, 5, 6, 8)).astype("float32"))
    analysis = analyze_head([gmp, hidden, act, out], (5, 6, 8), 3, "linear")
    assert analysis.mode == "gradient"
    head = gradient_cam(A, analysis.steps, tf.constant([-1, 0, 1, 2, -1, 1], tf.int32), 3, method)
    with tf.GradientTape() as tape:
        tape.watch(A)
        z = out(act(hidden(gmp(A))))
        chosen = tf.where(tf.constant([-1, 0, 1, 2, -1, 1]) < 0, tf.argmax(z, -1, output_type=tf.int32),
                          tf.constant([-1, 0, 1, 2, -1, 1]))
        score = tf.reduce_sum(z * tf.one_hot(chosen, 3), -1)
    g = tape.gradient(score, A).numpy()
    np.testing.assert_allclose(head["logits_head"].numpy(), z.numpy(), rtol=1e-4, atol=1e-4)
    ref = (A.numpy() * g).sum(-1) if method == "hirescam" else (A.numpy() * g.mean(axis=(1, 2), keepdims=True)).sum(-1)
    np.testing.assert_allclose(head["cam"].numpy(), ref, rtol=1e-3, atol=1e-4)


def test_smooth_activation_chain_converts_with_builtin_ops(tmp_path, data):
    calib, probe = data
    """gelu (TFLite has no ERF: Φ comes from the GELU op), mish and selu in one converted head."""
    keras = _keras()
    from converters import convert

    keras.utils.set_random_seed(14)
    layers = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    a = layers.Activation("gelu", name="last")(_trunk(inp))
    gap = layers.GlobalAveragePooling2D()
    d1, d2 = layers.Dense(16, activation="mish"), layers.Dense(8, activation="selu")
    d3 = layers.Dense(4, activation="softmax")
    model = keras.Model(inp, d3(d2(d1(gap(a)))))
    tiny_models._sharpen(d1, 3.0)
    tiny_models._sharpen(d3, 6.0)
    case = tiny_models.Case("smooth", model, keras.Model(inp, a),
                            lambda A: tf.matmul(d2(d1(gap(A))), d3.kernel) + d3.bias, "last", 4, "gradient")
    result = convert(model, tmp_path / "smooth.tflite", calibration=calib)
    _check_float(case, result, probe)


def test_backbone_built_for_any_input_size(tmp_path, data):
    """The usual transfer-learning code: an ``include_top=False`` backbone without input_shape
    ((None, None, 3) inside) called on a fixed-size Input. Its inner layers have no static size;
    the split takes it from the replayed graph."""
    keras = _keras()
    from converters import convert

    calib, probe = data
    keras.utils.set_random_seed(15)
    layers = keras.layers
    b_in = keras.Input((None, None, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(b_in)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(10, 3, padding="same", activation="relu", name="b_last")(x)
    backbone = keras.Model(b_in, x, name="anysize")
    inp = keras.Input((SIZE, SIZE, 3))
    rescale, gap = layers.Rescaling(1 / 255.0), layers.GlobalAveragePooling2D()
    dense = layers.Dense(4, activation="softmax")
    model = keras.Model(inp, dense(layers.Dropout(0.2)(gap(backbone(rescale(inp))))))
    tiny_models._sharpen(dense)
    case = tiny_models.Case("anysize", model, lambda t: backbone(rescale(t)),
                            lambda A: tf.matmul(gap(A), dense.kernel) + dense.bias, "anysize/b_last", 4, "linear")
    result = convert(model, tmp_path / "any.tflite", calibration=calib)
    assert result.metadata.feature_map_shape == (SIZE // 2, SIZE // 2, 10)
    _check_float(case, result, probe)
    # The whole model built for any size converts with input_size.
    from firmware_host.errors import LayerError

    with pytest.raises(LayerError, match=r"unknown spatial size .* Pass --input-size H W"):
        convert(backbone, tmp_path / "b.tflite", self_check=False)


def test_convnext_head_layernorm(tmp_path, data):
    """ConvNeXt's head: GAP → LayerNormalization → Dense, exact through its closed-form VJP."""
    keras = _keras()
    from converters import convert

    calib, probe = data
    keras.utils.set_random_seed(16)
    layers = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    a = layers.Activation("gelu", name="last")(_trunk(inp))
    gap = layers.GlobalAveragePooling2D(name="head_gap")
    norm = layers.LayerNormalization(epsilon=1e-6, name="head_layernorm")
    dense = layers.Dense(4, activation="softmax", name="head_dense")
    model = keras.Model(inp, dense(norm(gap(a))))
    rng = np.random.default_rng(16)
    norm.gamma.assign(rng.uniform(0.5, 1.5, 12).astype("float32"))
    norm.beta.assign(rng.normal(0, 0.3, 12).astype("float32"))
    tiny_models._sharpen(dense, 3.0)
    case = tiny_models.Case("convnext", model, keras.Model(inp, a),
                            lambda A: tf.matmul(norm(gap(A)), dense.kernel) + dense.bias, "last", 4, "gradient")
    result = convert(model, tmp_path / "convnext.tflite", calibration=calib)
    assert "head_layernorm" in result.reason
    _check_float(case, result, probe)
    edge = ExplainableModel(result.path)
    for c in range(4):  # every class, not only the prediction
        ref, _ = tiny_models.reference_gradcam(case, probe[:3], class_index=c)
        for i, exp in enumerate(edge.explain_batch(probe[:3], class_index=c)):
            assert pearson(exp.cam, ref[i]) >= 0.999
