"""Known-answer and reference tests for toolkit.metrics (heatmap comparison + faithfulness)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firmware_host import cam
from firmware_host.errors import InputError
from toolkit import metrics

stats = pytest.importorskip("scipy.stats", reason="scipy (a dev dependency) is the reference")
ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (a dev dependency) is the reference")


def blob(shape, top, left, height, width, value=1.0):
    m = np.zeros(shape, np.float32)
    m[top : top + height, left : left + width] = value
    return m


@pytest.fixture
def smooth_map():
    rng = np.random.default_rng(3)
    raw = rng.random((7, 7)).astype(np.float32)
    return cam.heatmap(raw)


# -- identical maps --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 7), (4, 4), (14, 10), (224, 224), (1, 5)])
def test_identical_maps_score_perfectly(shape):
    rng = np.random.default_rng(sum(shape))
    m = cam.heatmap(rng.random(shape).astype(np.float32))
    got = metrics.compare_maps(m, m.copy())
    assert got.pearson == pytest.approx(1.0, abs=1e-12)
    assert got.spearman == pytest.approx(1.0, abs=1e-12)
    assert got.ssim == pytest.approx(1.0, abs=1e-12)
    assert got.iou_top10 == 1.0 and got.iou_top20 == 1.0
    assert got.peak_distance == 0.0
    assert got.emd == pytest.approx(0.0, abs=1e-12)


def test_constant_map_conventions():
    zero = np.zeros((7, 7), np.float32)
    other = blob((7, 7), 1, 1, 2, 2)
    both = metrics.compare_maps(zero, zero)
    assert (both.pearson, both.spearman, both.iou_top20) == (1.0, 1.0, 1.0)
    assert both.ssim == pytest.approx(1.0)
    one = metrics.compare_maps(zero, other)
    assert (one.pearson, one.spearman, one.iou_top20) == (0.0, 0.0, 0.0)


def test_affine_change_does_not_move_correlations_or_iou(smooth_map):
    scaled = smooth_map * 3.0 + 0.5
    assert metrics.pearson(smooth_map, scaled) == pytest.approx(1.0)
    assert metrics.spearman(smooth_map, scaled) == pytest.approx(1.0)
    assert metrics.iou_top(smooth_map, scaled, 0.1) == 1.0
    assert metrics.pearson(smooth_map, 1.0 - smooth_map) == pytest.approx(-1.0)


# -- shifted maps: known IoU, peak distance, EMD -----------------------------------------------
def test_shifted_blob_known_iou_peak_and_emd():
    # 10x10 map, a 4x5 block = 20% of the cells; shifting it 2 columns keeps a 4x3 overlap.
    a = blob((10, 10), 2, 1, 4, 5)
    b = blob((10, 10), 2, 3, 4, 5)
    assert metrics.iou_top(a, b, 0.2) == pytest.approx(12 / 28)
    # The first maximum (raster order) is each block's top-left corner.
    assert metrics.peak_distance(a, b) == pytest.approx(2.0)
    # A rigid horizontal shift by d cells has (sliced) EMD exactly d.
    assert metrics.emd(a, b) == pytest.approx(2.0, rel=1e-6)


def test_shifted_one_hot():
    a = np.zeros((7, 7), np.float32)
    b = np.zeros((7, 7), np.float32)
    a[1, 2] = 1.0
    b[4, 6] = 1.0
    assert metrics.iou_top(a, b, 0.1) == 0.0
    assert metrics.iou_top(a, b, 0.2) == 0.0
    assert metrics.peak_distance(a, b) == pytest.approx(5.0)  # 3-4-5 triangle
    assert metrics.emd(a, b) == pytest.approx(5.0, rel=0.01)  # diagonal: within 1%
    assert metrics.iou_top(a, a, 0.1) == 1.0


def test_distances_in_cells_at_input_resolution():
    a = np.zeros((7, 7), np.float32)
    b = np.zeros((7, 7), np.float32)
    a[3, 1] = 1.0
    b[3, 4] = 1.0
    # Upsampling a one-hot spreads it symmetrically, so its peak stays at the cell centre.
    ua = cam.heatmap(a, (70, 70))
    ub = cam.heatmap(b, (70, 70))
    assert metrics.peak_distance(ua, ub, cells=(7, 7)) == pytest.approx(3.0, abs=0.15)
    assert metrics.emd(ua, ub, cells=(7, 7)) == pytest.approx(3.0, rel=1e-6)


# -- references --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Few distinct levels and ReLU'd zeros: heavy ties, like real quantised CAMs.
    a = np.maximum(rng.integers(-3, 5, size=(7, 7)), 0).astype(np.float32)
    b = np.maximum(a + rng.integers(-2, 3, size=(7, 7)), 0).astype(np.float32)
    want = stats.spearmanr(a.ravel(), b.ravel()).statistic
    assert metrics.spearman(a, b) == pytest.approx(want, abs=1e-12)
    np.testing.assert_allclose(metrics.rankdata(a), stats.rankdata(a.ravel()))


def test_pearson_matches_scipy(smooth_map):
    rng = np.random.default_rng(9)
    other = cam.heatmap(rng.random((7, 7)).astype(np.float32))
    # In float64: scipy >= 1.17 computes pearsonr in the inputs' dtype (float32 here).
    want = stats.pearsonr(smooth_map.ravel().astype(np.float64), other.ravel().astype(np.float64)).statistic
    assert metrics.pearson(smooth_map, other) == pytest.approx(want, abs=1e-12)


def _ssim_reference(a, b, sigma=1.5, radius=5):
    """Wang et al. 2004 with scipy's Gaussian filter, cropped to where the window fits."""
    c1, c2 = 0.01**2, 0.03**2
    filt = lambda x: ndimage.gaussian_filter(x, sigma, truncate=radius / sigma)  # noqa: E731
    mu_a, mu_b = filt(a), filt(b)
    va = filt(a * a) - mu_a**2
    vb = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s[radius:-radius, radius:-radius].mean()


def test_ssim_matches_scipy_filter_reference():
    rng = np.random.default_rng(1)
    a = ndimage.gaussian_filter(rng.random((40, 32)), 3)
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    a, b = cam.normalize(a), cam.normalize(b)
    assert metrics.ssim_window(40, 32) == (11, 1.5)
    assert metrics.ssim(a, b) == pytest.approx(_ssim_reference(a.astype(float), b.astype(float)), abs=1e-9)


def test_ssim_window_shrinks_for_feature_maps():
    assert metrics.ssim_window(7, 7) == (7, pytest.approx(1.5 * 7 / 11))
    assert metrics.ssim_window(4, 6) == (3, pytest.approx(1.5 * 3 / 11))
    rng = np.random.default_rng(2)
    a, b = rng.random((7, 7)), rng.random((7, 7))
    size, sigma = metrics.ssim_window(7, 7)
    radius = size // 2
    # A 7x7 window on a 7x7 map has one valid position: compare with the reference there.
    assert metrics.ssim(a, b) == pytest.approx(_ssim_reference(a, b, sigma, radius), abs=1e-9)
    assert -1.0 <= metrics.ssim(a, 1 - a) < 0.0


def test_summarize_ignores_nan_and_matches_numpy():
    values = [0.9, 0.8, float("nan"), 0.1, 1.0]
    got = metrics.summarize(values)
    finite = np.array([0.9, 0.8, 0.1, 1.0])
    assert got["n"] == 4
    assert got["median"] == pytest.approx(np.median(finite))
    assert got["p05"] == pytest.approx(np.percentile(finite, 5))
    assert got["min"] == 0.1 and got["max"] == 1.0
    assert metrics.summarize([])["median"] is None


def test_shape_mismatch_is_explained():
    with pytest.raises(InputError, match=r"same shape.*\(7, 7\) and \(4, 4\)"):
        metrics.pearson(np.zeros((7, 7)), np.zeros((4, 4)))
    with pytest.raises(InputError, match="fraction must be in"):
        metrics.iou_top(np.zeros((3, 3)), np.zeros((3, 3)), 1.5)


def test_metrics_do_not_modify_inputs(smooth_map):
    a = smooth_map.copy()
    b = np.roll(smooth_map, 1, axis=1)
    b_copy = b.copy()
    metrics.compare_maps(a, b)
    np.testing.assert_array_equal(a, smooth_map)
    np.testing.assert_array_equal(b, b_copy)


# -- faithfulness ------------------------------------------------------------------------------
class SignalModel:
    """p(class 1) = fraction of the signal region S still showing the image; counts calls."""

    def __init__(self, signal):
        self.signal = signal.astype(bool)
        self.calls = []

    def __call__(self, batch):
        self.calls.append(len(batch))
        kept = batch[..., 0][:, self.signal].mean(axis=1)
        return np.stack([1.0 - kept, kept], axis=1)


def test_deletion_insertion_known_answer():
    # 10x10 image: S = 25 pixels; image is 1 on S, baseline 0; 20 steps of 5 pixels each.
    signal = blob((10, 10), 0, 0, 5, 5).astype(bool)
    image = np.zeros((1, 10, 10, 1), np.float32)
    image[0, signal, 0] = 1.0
    perfect = signal.astype(np.float32)[None]  # ties keep raster order (stable sort)
    reverse = 1.0 - perfect
    model = SignalModel(signal)
    good = metrics.faithfulness(model, image, perfect, 1, steps=20, baseline="zero", batch_size=8)
    bad = metrics.faithfulness(model, image, reverse, 1, steps=20, baseline="zero", batch_size=8)
    # Deleting S first: p = 1, .8, .6, .4, .2, 0, ..., 0 → (3 - 0.5) / 20.
    assert good.deletion_auc[0] == pytest.approx(0.125)
    np.testing.assert_allclose(good.deletion_curves[0, :7], [1, 0.8, 0.6, 0.4, 0.2, 0, 0])
    # Inserting S first: p = 0, .2, .4, .6, .8, then 1 for 16 steps → (18 - 0.5) / 20.
    assert good.insertion_auc[0] == pytest.approx(0.875)
    # The reversed map deletes S last: p = 1 for 16 steps, then .8 ... 0 → (18 - 0.5) / 20.
    assert bad.deletion_auc[0] == pytest.approx(0.875)
    assert bad.insertion_auc[0] == pytest.approx(0.125)
    # 1 image × 2 modes × 21 steps = 42 predictions in chunks of at most 8.
    assert sum(model.calls) == 2 * 42 and max(model.calls) == 8


def test_faithfulness_batches_many_images_and_any_predict_fn():
    rng = np.random.default_rng(0)
    images = rng.random((5, 8, 8, 3)).astype(np.float32)
    heats = rng.random((5, 8, 8)).astype(np.float32)

    def brightness(batch):  # a "model" whose class-0 probability is the mean intensity
        p = batch.mean(axis=(1, 2, 3))
        return np.stack([p, 1 - p], axis=1)

    out = metrics.faithfulness(brightness, images, heats, [0, 0, 1, 1, 0], steps=4, baseline="zero", batch_size=7)
    assert out.deletion_curves.shape == (5, 5)
    # Column 0 of deletion is the untouched image; the last column is all baseline (zero).
    np.testing.assert_allclose(out.deletion_curves[:, 0], [images[i].mean() if c == 0 else 1 - images[i].mean() for i, c in enumerate([0, 0, 1, 1, 0])], rtol=1e-6)
    np.testing.assert_allclose(out.insertion_curves[:, -1], out.deletion_curves[:, 0])
    np.testing.assert_allclose(out.deletion_auc, metrics.auc(out.deletion_curves))


def test_blur_matches_scipy_gaussian():
    rng = np.random.default_rng(4)
    x = rng.random((2, 32, 24, 3)).astype(np.float32)
    got = metrics.blur(x, sigma=2.0)
    want = ndimage.gaussian_filter(x, sigma=(0, 2.0, 2.0, 0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_faithfulness_rejects_bad_predict_fn():
    with pytest.raises(InputError, match="predict_fn must return"):
        metrics.faithfulness(lambda b: np.zeros(len(b)), np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4)), 0, steps=2)
    with pytest.raises(InputError, match="same resolution"):
        metrics.faithfulness(lambda b: b, np.zeros((1, 4, 4, 1)), np.zeros((1, 2, 2)), 0)


def test_peak_distance_is_euclidean():
    a = np.zeros((5, 5)); a[0, 0] = 1
    b = np.zeros((5, 5)); b[4, 4] = 1
    assert metrics.peak_distance(a, b) == pytest.approx(math.sqrt(32))
