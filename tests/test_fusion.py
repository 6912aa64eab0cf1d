import math

import numpy as np
import pytest

from segunc.backends import BACKENDS
from segunc.fusion import (DEFAULT_LAMBDA, THRESHOLDS, WEIGHTINGS, binarize, fuse, normalized_weights,
                           threshold_value)
from segunc.uncertainty import binary_entropy

pytestmark = pytest.mark.unit

SCHEMES = list(WEIGHTINGS)


def _u(rng, k=5, h=6, w=7):
    return rng.random((k, h, w))


def test_registries_list_names():
    assert SCHEMES == ["inverse", "exponential", "power", "certainty_power"]
    assert list(THRESHOLDS) == ["fixed", "otsu", "percentile", "mean_std"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_weights_sum_to_one_and_favour_low_uncertainty(scheme):
    u = _u(np.random.default_rng(0))
    w = normalized_weights(u, scheme)
    assert w.shape == u.shape and np.isfinite(w).all() and (w >= 0).all()
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)
    # per pixel, the weight order is the reverse of the uncertainty order
    order_u = np.argsort(u, axis=0)
    w_sorted = np.take_along_axis(w, order_u, axis=0)
    assert (np.diff(w_sorted, axis=0) < 0).all()


def test_hand_computed_two_components():
    # inverse: u = (0.25, 0.75) -> w = (4, 4/3) -> (0.75, 0.25)   [eps = 1e-6 changes it by < 1e-5]
    u = np.array([0.25, 0.75]).reshape(2, 1, 1)
    np.testing.assert_allclose(normalized_weights(u, "inverse").ravel(), [0.75, 0.25], atol=1e-5)
    # exponential: u = (0, 1), λ = ln 3 -> w = (1, 1/3) -> (0.75, 0.25)
    u = np.array([0.0, 1.0]).reshape(2, 1, 1)
    np.testing.assert_allclose(normalized_weights(u, "exponential", lam=math.log(3)).ravel(), [0.75, 0.25])
    # exponential default λ = 10: u = (0.1, 0.2) -> w ∝ (e^-1, e^-2) -> (1/(1+e^-1), e^-1/(1+e^-1))
    u = np.array([0.1, 0.2]).reshape(2, 1, 1)
    assert DEFAULT_LAMBDA == 10
    a = 1 / (1 + math.exp(-1))
    np.testing.assert_allclose(normalized_weights(u, "exponential").ravel(), [a, 1 - a])
    # power α = 2: u = (0.5, 1) -> w = (4, 1) -> (0.8, 0.2)
    u = np.array([0.5, 1.0]).reshape(2, 1, 1)
    np.testing.assert_allclose(normalized_weights(u, "power", alpha=2).ravel(), [0.8, 0.2], atol=1e-5)
    # fused: y = (1, 0) with weights (0.8, 0.2) -> 0.8
    y = np.array([1.0, 0.0]).reshape(2, 1, 1)
    assert fuse(y, u, "power", alpha=2)[0, 0] == pytest.approx(0.8, abs=1e-5)


def test_power_alpha_one_is_inverse():
    u = _u(np.random.default_rng(1))
    np.testing.assert_allclose(normalized_weights(u, "power", alpha=1.0), normalized_weights(u, "inverse"))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_stable_at_extremes(scheme):
    # zero uncertainty and huge λ/α must not give inf or NaN
    u = np.array([0.0, 0.0, 1.0, 1e-12]).reshape(4, 1, 1)
    params = {"inverse": {}, "exponential": {"lam": 1e4}, "power": {"alpha": 50}, "certainty_power": {"alpha": 50}}[scheme]
    w = normalized_weights(u, scheme, **params)
    assert np.isfinite(w).all()
    assert w.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_nan_gets_zero_weight(scheme):
    rng = np.random.default_rng(2)
    probs = rng.random((3, 4, 4))
    u = binary_entropy(probs)
    probs_nan = probs.copy()
    probs_nan[0, :2] = np.nan        # sample 0 did not see the top two rows
    u_nan = u.copy()
    u_nan[1, :, :1] = np.nan         # sample 1 has no uncertainty on column 0
    w = normalized_weights(u_nan, scheme)
    assert (w[1, :, 0] == 0).all() and np.isfinite(w).all()
    np.testing.assert_allclose(w.sum(0), 1.0)
    fused = fuse(probs_nan, u_nan, scheme)
    assert np.isfinite(fused).all()
    # the top-left pixel is seen only by sample 2
    assert fused[0, 0] == pytest.approx(probs[2, 0, 0], abs=1e-6)
    # where sample 0 is missing, fusion equals fusing samples 1 and 2 only
    expected = fuse(probs[1:, :2, 1:], u[1:, :2, 1:], scheme)
    np.testing.assert_allclose(fused[:2, 1:], expected, atol=1e-6)


def test_fuse_needs_one_observation():
    probs = np.full((2, 2, 2), np.nan)
    with pytest.raises(ValueError):
        fuse(probs, np.zeros_like(probs))
    with pytest.raises(ValueError):
        normalized_weights(-np.ones((2, 1, 1)))
    with pytest.raises(ValueError, match="available"):
        normalized_weights(np.ones((2, 1, 1)), "softmax")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fusing_identical_maps_returns_the_map(scheme):
    rng = np.random.default_rng(3)
    p = rng.random((8, 8)).astype(np.float32)
    probs = np.stack([p] * 4)
    u = rng.random((4, 8, 8))  # any uncertainties: a convex combination of equal values is the value
    out = fuse(probs, u, scheme)
    assert out.dtype == np.float32 and out.shape == (8, 8)
    np.testing.assert_allclose(out, p, atol=1e-6)


def test_fuse_is_convex_combination():
    rng = np.random.default_rng(4)
    probs = rng.random((5, 6, 6))
    out = fuse(probs, binary_entropy(probs), "exponential")
    assert (out >= probs.min(0) - 1e-6).all() and (out <= probs.max(0) + 1e-6).all()


# ---- thresholds
def _bimodal(rng):
    p = np.clip(rng.normal(0.1, 0.05, (32, 32)), 0, 1)
    p[8:20, 8:20] = np.clip(rng.normal(0.8, 0.05, (12, 12)), 0, 1)
    return p


def test_otsu_on_bimodal_map():
    p = _bimodal(np.random.default_rng(5))
    t = threshold_value(p, "otsu")
    assert 0.25 < t < 0.65
    mask = binarize(p, "otsu")  # with skimage's raw bin-centre threshold, pixel (19, 31) would leak in
    expected = np.zeros((32, 32), bool)
    expected[8:20, 8:20] = True
    np.testing.assert_array_equal(mask, expected)


def test_otsu_constant_map():
    assert threshold_value(np.full((4, 4), 0.3), "otsu") == 0.5
    assert not binarize(np.full((4, 4), 0.3), "otsu").any()
    assert binarize(np.full((4, 4), 0.9), "otsu").all()


def test_fixed_threshold():
    p = np.array([[0.2, 0.5], [0.7, 0.49]])
    assert threshold_value(p, "fixed") == 0.5
    np.testing.assert_array_equal(binarize(p), [[False, True], [True, False]])  # p >= 0.5
    np.testing.assert_array_equal(binarize(p, "fixed", value=0.6), [[False, False], [True, False]])


def test_percentile_threshold():
    p = np.arange(100, dtype=float).reshape(10, 10) / 100  # 0.00 .. 0.99
    # np.percentile at 95 of 0..99 (/100): rank 0.95*99 = 94.05 -> 0.94 + 0.05*0.01 = 0.9405
    assert threshold_value(p, "percentile") == pytest.approx(0.9405)
    assert binarize(p, "percentile").sum() == 5        # 0.95 .. 0.99
    assert binarize(p, "percentile", q=50).sum() == 50
    # ties at the threshold are not selected wholesale: 97 % exact zeros
    z = np.zeros((10, 10))
    z.flat[:3] = [0.9, 0.8, 0.7]
    assert threshold_value(z, "percentile") == 0.0
    assert binarize(z, "percentile").sum() == 3


def test_mean_std_threshold():
    p = np.array([[0.0, 0.0], [0.0, 1.0]])
    # mean 0.25, std sqrt(mean((x-0.25)^2)) = sqrt((3*0.0625 + 0.5625)/4) = sqrt(0.1875) = 0.4330
    assert threshold_value(p, "mean_std") == pytest.approx(0.25 + math.sqrt(0.1875))
    assert threshold_value(p, "mean_std", k=0) == pytest.approx(0.25)
    np.testing.assert_array_equal(binarize(p, "mean_std"), [[False, False], [False, True]])
    assert not binarize(np.full((3, 3), 0.7), "mean_std").any()  # constant map: no structure


def test_threshold_validation():
    with pytest.raises(ValueError, match="available"):
        threshold_value(np.zeros((2, 2)), "triangle")
    with pytest.raises(ValueError):
        binarize(np.array([[np.nan, 0.1]]), "otsu")


# ---- the pipeline binarises the fused map with fusion.binarize
@pytest.mark.parametrize("method,params", [("percentile", {"q": 50.0}), ("mean_std", {"k": 0.5}), ("otsu", {}),
                                           ("fixed", {})])
def test_pipeline_constant_fused_map_marks_nothing(val_slices, method, params):
    """A tumour-free slice through LiteMedSAM (real weights): no box prompt, so every mode gives a
    constant map; a data-derived threshold then equals the map value and must mark 0 px (not 65,536)."""
    from segunc.config import FusionConfig, PipelineConfig
    from segunc.pipeline import evaluate_slice

    empty = val_slices[2]
    assert not empty.has_tumour
    backend = BACKENDS.get("litemedsam")()
    cfg = PipelineConfig(samples=2, fusion=FusionConfig(threshold=method, threshold_params=params))
    res = evaluate_slice(backend, empty, ["fusion"], cfg)["fusion"]
    mean = res.maps["mean"]
    assert mean.min() == mean.max()  # constant fused map
    assert res.maps["mask"].sum() == 0 and res.row("litemedsam")["pred_px"] == 0
    assert res.threshold == pytest.approx(threshold_value(mean, method, **params))


def test_pipeline_mask_is_fusion_binarize(unet_weights, val_slices):
    """On a real tumour slice (U-Net) the pipeline's fused mask is exactly binarize(fused mean)."""
    from segunc.config import FusionConfig, PipelineConfig
    from segunc.pipeline import evaluate_slice

    unet = BACKENDS.get("unet")(weights=unet_weights)
    marked = {}
    for method, params in [("percentile", {"q": 90.0}), ("mean_std", {"k": 0.5}), ("fixed", {"value": 0.5})]:
        cfg = PipelineConfig(samples=2, fusion=FusionConfig(sources=("mc_dropout", "noisy"), threshold=method,
                                                            threshold_params=params))
        res = evaluate_slice(unet, val_slices[0], ["fusion"], cfg)["fusion"]
        np.testing.assert_array_equal(res.maps["mask"], binarize(res.maps["mean"], method, **params))
        marked[method] = int(res.maps["mask"].sum())
    assert 0 < marked["percentile"] < 65536 and 0 < marked["mean_std"] < 65536, marked


def test_data_thresholds_have_their_own_result_key():
    from segunc.config import FusionConfig

    assert "binarize" not in FusionConfig().params()  # fixed 0.5: unchanged results keep their key
    assert FusionConfig(threshold="percentile").params()["binarize"] == "strict"
