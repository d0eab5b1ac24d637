"""Host explainers: exact identities on tiny models, against references written here by hand.

The references share no code with ``toolkit.explain``: CAM from the Dense kernel, Grad-CAM++
weights computed by hand, finite differences, hand-set weights for guided backprop, direct
calls of the Keras layers for attention.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from firmware_host import cam
from firmware_host.compare import pearson
from firmware_host.errors import InputError, LayerError

SIZE = 16


def _keras():
    import keras

    return keras


def _rand(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).random(shape) * scale).astype(np.float32)


def _randomize_biases(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.assign(rng.normal(0, 0.2, size=bias.shape).astype("float32"))


def _cnn(seed=0, activation="softmax", classes=3, name="last"):
    """Conv → Conv(name) → GAP → Dense: returns (model, features model, dense layer)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name=name)(x)
    dense = keras.layers.Dense(classes, activation=activation, name="pred")
    model = keras.Model(inp, dense(keras.layers.GlobalAveragePooling2D(name="gap")(a)))
    _randomize_biases(model, seed)
    return model, keras.Model(inp, a), dense


def _cam_reference(features, dense, x, classes):
    """CAM (Zhou et al. 2016): Σ_k W[k, c] A^k from the Dense kernel, no autodiff involved."""
    A = np.asarray(features(x))
    W = np.asarray(dense.kernel)
    return np.stack([A[i] @ W[:, c] for i, c in enumerate(classes)])


@pytest.fixture(scope="module")
def cnn():
    return _cnn()


@pytest.fixture(scope="module")
def vit():
    """A 2-block ViT-style model: 4×4 patches of a 16×16 image, a class token, 2 heads."""
    keras = _keras()
    keras.utils.set_random_seed(3)
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    patches = L.Conv2D(8, 4, strides=4, name="patchify")(inp)  # (4, 4, 8)
    tokens = L.Reshape((16, 8), name="tokens")(patches)
    cls = L.Reshape((1, 8))(L.Dense(8, name="cls_embed")(L.GlobalAveragePooling2D()(patches)))
    x = L.Concatenate(axis=1, name="with_cls")([cls, tokens])  # 17 tokens, class token first
    mhas = []
    for i in range(2):
        mha = L.MultiHeadAttention(num_heads=2, key_dim=4, name=f"mha{i}")
        mhas.append(mha)
        h = L.LayerNormalization(name=f"ln{i}")(x)
        x = L.Add()([x, mha(h, h)])
        x = L.Add()([x, L.Dense(8, activation="gelu", name=f"mlp{i}")(L.LayerNormalization()(x))])
    out = L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling1D()(x))
    model = keras.Model(inp, out)
    return model, mhas, keras.Model(inp, [cls, tokens])


# -- exact identities ---------------------------------------------------------------------------
def test_gradcam_equals_cam_for_gap_dense(cnn):
    import toolkit

    model, features, dense = cnn
    x = _rand((4, SIZE, SIZE, 3), 1)
    res = toolkit.explain.explain_full(model, x, "gradcam", upsample=False)
    ref = cam.relu(_cam_reference(features, dense, x, res.class_index))
    assert res.layer == "last"
    assert res.maps.shape == (4, SIZE // 2, SIZE // 2)
    for got, want in zip(res.maps, ref):
        assert pearson(got, want) > 0.9999
    # Scale is exactly 1/Z (Z = h·w): Grad-CAM = CAM / Z for GAP + Dense.
    np.testing.assert_allclose(res.maps, ref / (SIZE // 2) ** 2, rtol=1e-4, atol=1e-6)
    # Upsampled maps are the shared post-processing of the same raw maps.
    up = toolkit.explain(model, x, "gradcam")
    np.testing.assert_allclose(up, cam.heatmap(ref, (SIZE, SIZE)), atol=1e-5)
    # HiResCAM equals Grad-CAM for a GAP + Dense head (Draelos & Carin 2020, §3).
    hires = toolkit.explain(model, x, "hirescam", upsample=False)
    np.testing.assert_allclose(hires, res.maps, rtol=1e-4, atol=1e-6)


def test_gradcam_probability_target(cnn):
    """∂p_c/∂A = p_c Σ_j (δ_cj − p_j) W_j / Z: CAM with the kernel W_c − Σ_j p_j W_j."""
    import toolkit

    model, features, dense = cnn
    x = _rand((3, SIZE, SIZE, 3), 2)
    res = toolkit.explain.explain_full(model, x, "gradcam", class_index=[0, 1, 2], upsample=False,
                                       target="probability")
    A = np.asarray(features(x))
    W = np.asarray(dense.kernel)
    p = np.asarray(model(x))
    np.testing.assert_allclose(res.probabilities, p, rtol=1e-5, atol=1e-6)
    for i, c in enumerate(res.class_index):
        ref = cam.relu(p[i, c] * (A[i] @ (W[:, c] - W @ p[i])))
        assert pearson(res.maps[i], ref) > 0.9999


def test_gradcam_weights_on_hand_made_tensor():
    from toolkit.explain import GradCAM
    from toolkit.explain.gradcam_pp import GradCAMPlusPlus

    # One image, 2×2 locations, 2 channels.
    A = np.array([[[[1.0, 0.0], [0.5, 1.0]], [[0.5, 2.0], [0.0, 1.0]]]], np.float32)
    g = np.array([[[[1.0, 2.0], [0.0, -1.0]], [[2.0, 0.0], [-1.0, 3.0]]]], np.float32)
    A0, g0 = A.copy(), g.copy()
    w = GradCAM().weights(A, g)
    # α_0 = (1 + 0 + 2 − 1)/4 = 0.5, α_1 = (2 − 1 + 0 + 3)/4 = 1.0
    np.testing.assert_allclose(w.ravel(), [0.5, 1.0])
    raw = cam.combine(A, w)
    np.testing.assert_allclose(raw[0], [[0.5, 1.25], [2.25, 1.0]])
    # Grad-CAM++ (Eq. 19), channel 0: ΣA = 2, g ∈ {1, 0, 2, −1}:
    #   a = g²/(2g² + 2g³): g=1 → 1/4, g=2 → 4/24; g=0 → 0; g=−1 → ReLU(g)=0 drops it.
    #   w_0 = 1/4·1 + 1/6·2 = 7/12.
    # channel 1: ΣA = 4, g ∈ {2, −1, 0, 3}: g=2 → 4/(8+32) = 1/10, g=3 → 9/(18+108) = 1/14.
    #   w_1 = 1/10·2 + 1/14·3 = 0.2 + 3/14.
    wpp = GradCAMPlusPlus().weights(A, g)
    np.testing.assert_allclose(wpp.ravel(), [7 / 12, 0.2 + 3 / 14], rtol=1e-6)
    # The authors' code (and tf-keras-vis) divide a by Σ_ij a per channel; there the g=−1 pixel of
    # channel 1 counts: a = 1/(2 − 4) = −1/2. Channel 0's g=−1 pixel has denominator 2 − 2 = 0 → 0.
    wn = GradCAMPlusPlus(normalize_alphas=True).weights(A, g)
    np.testing.assert_allclose(wn.ravel(), [(7 / 12) / (5 / 12), (0.2 + 3 / 14) / (1 / 10 - 1 / 2 + 1 / 14)],
                               rtol=1e-6)
    assert np.array_equal(A, A0) and np.array_equal(g, g0)


def test_integrated_gradients_completeness(cnn):
    """Σ IG = F(x) − F(x') within 1%, F the logit computed directly from the Keras layers."""
    from toolkit.explain import explain_full

    model, features, dense = cnn
    x = _rand((2, SIZE, SIZE, 3), 4)
    base = np.full((1, SIZE, SIZE, 3), 0.2, np.float32)
    res = explain_full(model, x, "integrated_gradients", steps=128, baseline=base[0])
    assert np.all(res.info["completeness_error"] < 0.01)

    # Independent check of Σ IG through the method object and a hand-written logit.
    from toolkit.explain import IntegratedGradients
    from toolkit.explain._base import Session

    attribution, _, chosen, info = IntegratedGradients(steps=128, baseline=base[0]).gradients(
        Session(model, None, "logit", 64), x, np.full(2, -1, np.int32))

    def logit(batch):
        pooled = np.asarray(features(batch)).mean(axis=(1, 2))
        return pooled @ np.asarray(dense.kernel) + np.asarray(dense.bias)

    fx, fb = logit(x), logit(np.repeat(base, 2, axis=0))
    delta = fx[np.arange(2), chosen] - fb[np.arange(2), chosen]
    np.testing.assert_allclose(info["score_delta"], delta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attribution.sum(axis=(1, 2, 3)), delta, rtol=0.01)


def test_integrated_gradients_more_steps_converge(cnn):
    from toolkit.explain import explain_full

    model, _, _ = cnn
    x = _rand((1, SIZE, SIZE, 3), 5)
    coarse = explain_full(model, x, "integrated_gradients", steps=2, baseline="blur")
    fine = explain_full(model, x, "integrated_gradients", steps=64, baseline="blur")
    assert fine.info["completeness_error"][0] <= coarse.info["completeness_error"][0] + 1e-6
    assert fine.info["completeness_error"][0] < 0.01


def test_saliency_matches_finite_differences():
    """A smooth (tanh) model: ∂y_c/∂x by central differences equals the autodiff gradient."""
    keras = _keras()
    from toolkit.explain import Saliency, explain_full
    from toolkit.explain._base import Session

    keras.utils.set_random_seed(7)
    inp = keras.Input((4, 4, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(inp)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(h))  # linear output: the logit itself
    model = keras.Model(inp, out)
    _randomize_biases(model, 7)
    x = _rand((1, 4, 4, 2), 8)
    grads, logits, chosen, _ = Saliency().gradients(Session(model, None, "logit", 8), x, np.array([1], np.int32))
    eps = 1e-2
    eye = np.eye(x.size, dtype=np.float64).reshape((-1,) + x.shape[1:])
    xs = np.concatenate([x + eps * eye, x - eps * eye]).astype(np.float32)
    y = np.asarray(model(xs), dtype=np.float64)[:, 1]
    fd = ((y[: x.size] - y[x.size:]) / (2 * eps)).reshape(x.shape)
    np.testing.assert_allclose(grads, fd, rtol=2e-2, atol=2e-4)
    res = explain_full(model, x, "saliency", class_index=1, upsample=False)
    np.testing.assert_allclose(res.maps, np.abs(fd).max(axis=-1), rtol=2e-2, atol=2e-4)


@pytest.mark.parametrize("relu_kind", ["fused", "layer"])
def test_guided_backprop_keeps_only_positive_paths(relu_kind):
    """y_0 = h_1 − h_2 with h = ReLU(x·W): both units active, so saliency = w_1 − w_2, but the
    negative path through h_2 is cut by guided backprop, leaving w_1; an inactive unit h_3
    contributes to neither."""
    keras = _keras()
    from toolkit.explain import GuidedBackprop, Saliency
    from toolkit.explain._base import Session

    rng = np.random.default_rng(9)
    inp = keras.Input((2, 2, 1))
    flat = keras.layers.Flatten()(inp)
    if relu_kind == "fused":
        hidden = keras.layers.Dense(3, activation="relu", name="hidden")
        h = hidden(flat)
    else:
        hidden = keras.layers.Dense(3, name="hidden")
        h = keras.layers.ReLU(name="relu")(hidden(flat))
    head = keras.layers.Dense(2, use_bias=False, name="head")
    model = keras.Model(inp, head(h))
    W = np.abs(rng.normal(size=(4, 3))).astype("float32") + 0.1
    W[:, 2] = -W[:, 2]  # unit 3 is inactive on positive inputs
    hidden.kernel.assign(W)
    hidden.bias.assign(np.zeros(3, "float32"))
    head.kernel.assign(np.array([[1.0, 0.0], [-1.0, 1.0], [5.0, 1.0]], "float32"))
    x = _rand((1, 2, 2, 1), 10) + 0.5
    session = Session(model, None, "logit", 4)
    cls = np.array([0], np.int32)
    plain, _, _, _ = Saliency().gradients(session, x, cls)
    guided, _, _, _ = GuidedBackprop().gradients(session, x, cls)
    np.testing.assert_allclose(plain.reshape(4), W[:, 0] - W[:, 1], rtol=1e-5)
    np.testing.assert_allclose(guided.reshape(4), W[:, 0], rtol=1e-5)
    # The original model is untouched: its gradient is still the plain one.
    again, _, _, _ = Saliency().gradients(session, x, cls)
    np.testing.assert_array_equal(again, plain)


def test_guided_backprop_respects_relu6_and_nested():
    keras = _keras()
    from toolkit.explain import GuidedBackprop
    from toolkit.explain._base import Session

    inp = keras.Input((1, 1, 1))
    inner_in = keras.Input((1, 1, 1))
    inner = keras.Model(inner_in, keras.layers.ReLU(max_value=6.0, name="r6")(inner_in), name="inner")
    out = keras.layers.Dense(2, use_bias=False, name="head")(keras.layers.Flatten()(inner(inp)))
    model = keras.Model(inp, out)
    model.get_layer("head").kernel.assign(np.array([[1.0, -1.0]], "float32"))
    session = Session(model, None, "logit", 4)
    x = np.array([[[[3.0]]], [[[7.0]]], [[[-1.0]]]], np.float32)  # active, clipped, off
    g, _, _, _ = GuidedBackprop().gradients(session, x, np.zeros(3, np.int32))
    np.testing.assert_array_equal(g.ravel(), [1.0, 0.0, 0.0])
    g1, _, _, _ = GuidedBackprop().gradients(session, x, np.ones(3, np.int32))
    np.testing.assert_array_equal(g1.ravel(), [0.0, 0.0, 0.0])  # negative path cut


# -- the model shapes Keras Grad-CAM users trip on -------------------------------------------------
def test_nested_backbone_without_rebuilding():
    keras = _keras()
    import toolkit

    keras.utils.set_random_seed(11)
    b_in = keras.Input((SIZE, SIZE, 3))
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(b_in)
    b = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="top")(b)
    backbone = keras.Model(b_in, b, name="backbone")
    inp = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(3, activation="softmax", name="pred")
    model = keras.Model(inp, dense(keras.layers.GlobalAveragePooling2D()(backbone(inp))))
    _randomize_biases(model.get_layer("backbone"), 11)
    x = _rand((3, SIZE, SIZE, 3), 12)
    res = toolkit.explain.explain_full(model, x, "gradcam", upsample=False)
    assert res.layer == "backbone/top"
    ref = cam.relu(_cam_reference(backbone, dense, x, res.class_index))
    for got, want in zip(res.maps, ref):
        assert pearson(got, want) > 0.9999
    shallow = toolkit.explain(model, x, "layercam", target_layer="backbone/conv1", upsample=False)
    assert shallow.shape == (3, SIZE, SIZE)
    for name in ("saliency", "guided_backprop", "scorecam"):
        maps = toolkit.explain(model, x, name)
        assert maps.shape == (3, SIZE, SIZE) and np.all(np.isfinite(maps))


def test_sequential_model_with_fused_softmax():
    keras = _keras()
    import toolkit

    keras.utils.set_random_seed(13)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, activation="softmax", name="pred"),
    ])
    _randomize_biases(model, 13)
    x = _rand((3, SIZE, SIZE, 3), 14)
    res = toolkit.explain.explain_full(model, x, "gradcam", class_index=2, upsample=False)
    features = keras.Model(model.inputs[0], model.get_layer("last").output)
    ref = cam.relu(_cam_reference(features, model.get_layer("pred"), x, [2, 2, 2]))
    assert list(res.class_index) == [2, 2, 2]
    for got, want in zip(res.maps, ref):
        assert pearson(got, want) > 0.9999
    # The logits are the pre-softmax scores, the probabilities the model's own output.
    np.testing.assert_allclose(res.probabilities, np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_keepdims_pooling_and_1x1_conv_classifier():
    """MobileNetV3-style head: GAP(keepdims) → 1×1 Conv2D → Flatten → Softmax. The (N, 1, 1, K)
    conv output is not a map: the explained layer is the last real spatial one."""
    keras = _keras()
    import toolkit

    keras.utils.set_random_seed(17)
    inp = keras.Input((SIZE, SIZE, 3))
    a = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="last")(inp)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True)(a)
    conv = keras.layers.Conv2D(3, 1, name="logits")
    out = keras.layers.Activation("softmax")(keras.layers.Flatten()(conv(pooled)))
    model = keras.Model(inp, out)
    _randomize_biases(model, 17)
    x = _rand((2, SIZE, SIZE, 3), 18)
    res = toolkit.explain.explain_full(model, x, "gradcam", upsample=False)
    assert res.layer == "last" and res.maps.shape == (2, SIZE // 2, SIZE // 2)
    A = np.asarray(keras.Model(inp, a)(x))
    W = np.asarray(conv.kernel)[0, 0]
    for i, c in enumerate(res.class_index):
        assert pearson(res.maps[i], cam.relu(A[i] @ W[:, c])) > 0.9999


def test_single_sigmoid_output_is_two_classes():
    import toolkit

    model, features, dense = _cnn(seed=15, activation="sigmoid", classes=1)
    x = _rand((2, SIZE, SIZE, 3), 16)
    pos = toolkit.explain.explain_full(model, x, "gradcam", class_index=1, upsample=False)
    neg = toolkit.explain.explain_full(model, x, "gradcam", class_index=0, upsample=False)
    A = np.asarray(features(x))
    w = np.asarray(dense.kernel)[:, 0]
    for i in range(2):
        assert pearson(pos.maps[i], cam.relu(A[i] @ w)) > 0.9999
        assert pearson(neg.maps[i], cam.relu(-(A[i] @ w))) > 0.9999
    p = np.asarray(model(x))[:, 0]
    np.testing.assert_allclose(pos.probabilities, np.stack([1 - p, p], axis=1), rtol=1e-5, atol=1e-6)


def test_tiny_scores_of_untrained_networks_still_give_maps():
    """Random-init deep nets (e.g. MobileNetV2, weights=None) give logits of ~1e-12: the maps
    must be the same as at a normal scale (normalisation is scale-invariant), not all zeros."""
    from toolkit.explain import explain

    model, _, dense = _cnn(seed=30)
    x = _rand((2, SIZE, SIZE, 3), 31)
    normal = {m: explain(model, x, m) for m in ("gradcam", "saliency")}
    dense.kernel.assign(np.asarray(dense.kernel) * 1e-13)
    dense.bias.assign(np.asarray(dense.bias) * 1e-13)
    for method, want in normal.items():
        got = explain(model, x, method)
        assert got.max() == pytest.approx(1.0)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_weights_changed_after_a_call_are_used():
    """Splits are cached per model; training in between must not leave stale copied layers
    (the linear head, the guided ReLU layers) behind."""
    keras = _keras()
    from toolkit.explain import explain

    model, _, _ = _cnn(seed=32)
    x = _rand((2, SIZE, SIZE, 3), 33)
    for method in ("gradcam", "guided_backprop"):
        explain(model, x, method)
    rng = np.random.default_rng(34)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    for method in ("gradcam", "guided_backprop"):
        np.testing.assert_allclose(explain(model, x, method), explain(twin, x, method), atol=1e-5)


# -- the whole registry ---------------------------------------------------------------------------
def _registry_cases():
    from toolkit.explain import METHODS

    return sorted(METHODS)


@pytest.mark.parametrize("method", _registry_cases())
def test_every_method(method, cnn, vit):
    """Shape, dtype, range, finiteness, classes — and the inputs are never modified."""
    from toolkit.explain import METHODS, explain_full

    model = vit[0] if METHODS[method].family == "attention" else cnn[0]
    x = _rand((3, SIZE, SIZE, 3), 20)
    before = x.copy()
    kwargs = {"steps": 8} if method == "integrated_gradients" else {"samples": 3} if method == "smoothgrad" else {}
    res = explain_full(model, x, method, batch_size=2, **kwargs)
    np.testing.assert_array_equal(x, before)
    assert res.maps.shape == (3, SIZE, SIZE)
    assert res.maps.dtype == np.float32
    assert np.all(np.isfinite(res.maps))
    assert res.maps.min() >= 0.0 and res.maps.max() <= 1.0
    assert res.maps.max() == pytest.approx(1.0)  # a real map, not all zeros
    assert res.class_index.shape == (3,)
    np.testing.assert_allclose(res.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    raw = explain_full(model, x, method, upsample=False, batch_size=2, **kwargs).maps
    np.testing.assert_array_equal(x, before)
    assert raw.ndim == 3 and raw.dtype == np.float32 and np.all(raw >= 0)


def test_batch_size_does_not_change_results(cnn):
    from toolkit.explain import explain

    model = cnn[0]
    x = _rand((5, SIZE, SIZE, 3), 21)
    for method in ("gradcam", "scorecam", "guided_backprop"):
        a = explain(model, x, method, batch_size=2)
        b = explain(model, x, method, batch_size=64)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_scorecam_matches_masked_forward_passes(cnn):
    """Score-CAM weights from masked inputs scored one channel at a time, by hand."""
    from toolkit.explain import explain_full

    model, features, dense = cnn
    x = _rand((1, SIZE, SIZE, 3), 22)
    res = explain_full(model, x, "scorecam", upsample=False, batch_size=3)
    A = np.asarray(features(x))[0]
    c = int(res.class_index[0])
    logits_model = _keras().Model(model.inputs[0], model.get_layer("gap").output)
    scores = []
    for k in range(A.shape[-1]):
        up = cam.resize(A[..., k], (SIZE, SIZE))
        mask = (up - up.min()) / max(up.max() - up.min(), 1e-12)
        pooled = np.asarray(logits_model(x * mask[None, ..., None]))
        scores.append((pooled @ np.asarray(dense.kernel) + np.asarray(dense.bias))[0, c])
    w = np.exp(np.array(scores) - max(scores))
    w /= w.sum()
    np.testing.assert_allclose(res.maps[0], cam.relu(A @ w), rtol=1e-4, atol=1e-6)


def test_eigencam_and_layer_visualization(cnn):
    from toolkit.explain import explain

    model, features, _ = cnn
    x = _rand((2, SIZE, SIZE, 3), 23)
    A = np.asarray(features(x))
    vis = explain(model, x, "layer_visualization", upsample=False)
    np.testing.assert_allclose(vis, A.sum(axis=-1), rtol=1e-5)
    eig = explain(model, x, "eigencam", upsample=False)
    for i in range(2):
        flat = A[i].reshape(-1, A.shape[-1])
        centred = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = (centred @ vt[0]).reshape(A.shape[1:3])
        if pearson(proj, A[i].sum(-1)) < 0:
            proj = -proj
        assert pearson(eig[i], cam.relu(proj)) > 0.9999


# -- attention rollout ------------------------------------------------------------------------------
def test_attention_rollout_on_tiny_vit(vit):
    from converters.reference import forward_outputs

    from toolkit.explain import explain_full
    from toolkit.explain.attention_rollout import attention_forward, rollout, token_map

    model, mhas, embed = vit
    x = _rand((2, SIZE, SIZE, 3), 24)
    logits, *scores = forward_outputs(attention_forward(model), x)
    assert len(scores) == 2 and scores[0].shape == (2, 2, 17, 17)
    R = rollout(scores)
    np.testing.assert_allclose(R.sum(axis=-1), 1.0, rtol=1e-6)
    # First layer's scores, recomputed by calling the Keras layers directly.
    cls, tokens = embed(x)
    tokens0 = np.concatenate([np.asarray(cls), np.asarray(tokens)], axis=1)
    h = model.get_layer("ln0")(tokens0)
    _, att0 = mhas[0](h, h, return_attention_scores=True)
    np.testing.assert_allclose(scores[0], np.asarray(att0), rtol=1e-4, atol=1e-6)
    one = rollout(scores[:1])
    np.testing.assert_allclose(one, 0.5 * (np.asarray(att0).mean(axis=1) + np.eye(17)), rtol=1e-4, atol=1e-6)
    res = explain_full(model, x, "attention_rollout", upsample=False)
    assert res.maps.shape == (2, 4, 4)  # the patch grid
    np.testing.assert_allclose(res.maps, token_map(R, (4, 4), "cls"), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res.probabilities, np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_attention_rollout_needs_attention(cnn):
    from toolkit.explain import explain

    with pytest.raises(LayerError, match="no keras.layers.MultiHeadAttention"):
        explain(cnn[0], _rand((1, SIZE, SIZE, 3)), "attention_rollout")


# -- errors and imports -----------------------------------------------------------------------------
def test_errors_name_the_problem(cnn):
    from toolkit.explain import explain

    model = cnn[0]
    x = _rand((2, SIZE, SIZE, 3))
    with pytest.raises(InputError, match="Unknown explanation method 'gradcam3'.*gradcam\\+\\+"):
        explain(model, x, "gradcam3")
    with pytest.raises(InputError, match="unknown options \\['stepz'\\].*steps"):
        explain(model, x, "integrated_gradients", stepz=3)
    with pytest.raises(InputError, match="batch \\(N, H, W, C\\)"):
        explain(model, x[0])
    with pytest.raises(InputError, match="empty batch"):
        explain(model, x[:0])
    with pytest.raises(InputError, match="class_index 7 is out of range: the model has 3 classes"):
        explain(model, x, class_index=7)
    with pytest.raises(InputError, match="one int per image \\(2\\)"):
        explain(model, x, class_index=[0, 1, 2])
    with pytest.raises(LayerError, match="No layer named 'nope'.*candidates.*last"):
        explain(model, x, target_layer="nope")
    with pytest.raises(LayerError, match="'pred' is not a spatial layer"):
        explain(model, x, target_layer="pred")
    with pytest.raises(InputError, match="target must be one of"):
        explain(model, x, target="softmax")


def test_import_does_not_load_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None; import toolkit, toolkit.explain;"
        "from toolkit.explain import METHODS; assert callable(toolkit.explain);"
        "print('keras' in sys.modules, len(METHODS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd(),
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "13"]
