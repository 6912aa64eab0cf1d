"""Temperature scaling: synthetic over/under-confidence, the stratified pixel sample, and real
U-Net logits of val slices (fitting never raises the val NLL)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segunc.temperature import (PixelSample, TemperatureScaler, calibration_slices, fit_temperature,
                                summarize_temperature_report, temperature_nll, temperature_report)
from segunc.config import PipelineConfig
from segunc.metrics import nll
from segunc.modes import SliceInput

pytestmark = pytest.mark.integration


def _synthetic(scale: float, n: int = 20000, seed: int = 0):
    """Targets drawn from σ(z) (a calibrated model), logits reported as scale·z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    t = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    return scale * z, t


def test_overconfident_gets_t_above_one():
    z, t = _synthetic(4.0)
    s = TemperatureScaler().fit(z, t)
    assert s.temperature_ > 1 and s.temperature_ == pytest.approx(4.0, rel=0.1)
    assert s.nll_after_ < s.nll_before_ == pytest.approx(temperature_nll(z, t, 1.0))
    assert s.nll_after_ == pytest.approx(temperature_nll(z, t, s.temperature_))
    np.testing.assert_allclose(s.transform(z), z / s.temperature_)
    torch.testing.assert_close(s.transform(torch.tensor(z)), torch.tensor(z) / s.temperature_)
    assert np.all((s.predict_proba(z) > 0) & (s.predict_proba(z) < 1))


def test_underconfident_gets_t_below_one_and_calibrated_stays_near_one():
    z, t = _synthetic(0.5)
    assert TemperatureScaler().fit(z, t).temperature_ == pytest.approx(0.5, rel=0.1)
    z, t = _synthetic(1.0)
    assert TemperatureScaler().fit(z, t).temperature_ == pytest.approx(1.0, abs=0.1)


def test_samples_axis_averages_probabilities():
    z, t = _synthetic(3.0, n=20000)
    rng = np.random.default_rng(1)
    zs = z[None] + rng.normal(0, 0.5, (4, z.size))  # four noisy samples of one over-confident model
    s = TemperatureScaler().fit(zs, t)
    assert s.temperature_ > 1
    p = (1 / (1 + np.exp(-zs / s.temperature_))).mean(0)
    assert s.nll_after_ == pytest.approx(nll(p, t), rel=1e-6)
    with pytest.raises(ValueError, match="leading samples axis"):
        TemperatureScaler().fit(zs.T, t)


def test_nll_matches_the_metric_clipping():
    z = np.array([40.0, -40.0, 0.3, -2.0])
    t = np.array([False, False, True, False])
    p = 1 / (1 + np.exp(-z))
    assert temperature_nll(z, t) == pytest.approx(nll(p, t), rel=1e-9)


def test_pixel_sample_is_stratified_and_unbiased():
    rng = np.random.default_rng(2)
    z = rng.normal(-4, 3, (2, 64, 64))
    t = np.zeros((64, 64), bool)
    t[20:30, 20:30] = True  # 100 tumour pixels among 4096
    z[:, 20:30, 20:30] += 6
    with pytest.raises(ValueError, match="same number of samples"):
        PixelSample(per_stratum=50, seed=0).add(z, t).add(z[0], t)  # a 2-sample slice, then a 1-sample one
    ps = PixelSample(per_stratum=50, seed=0).add(z, t)
    zz, tt, ww = ps.arrays()
    assert zz.shape[0] == 2 and zz.shape[1] == len(tt) == len(ww) == len(ps) <= 200
    assert ww.sum() == pytest.approx(t.size)  # weights restore the pixel count
    assert tt.sum() >= 50  # tumour pixels are represented although they are 2.4 % of the slice
    assert np.average(tt, weights=ww) == pytest.approx(t.mean())
    again = PixelSample(per_stratum=50, seed=0).add(z, t).arrays()
    np.testing.assert_array_equal(again[0], zz)
    full = PixelSample(per_stratum=10 ** 6).add(z, t).arrays()
    assert full[1].size == t.size and np.all(full[2] == 1)


@pytest.fixture(scope="module")
def val_logits(unet, val_slices):
    with torch.inference_mode():
        return [unet.logits(SliceInput.from_slice(s, unet).image)[0].numpy() for s in val_slices]


def test_real_unet_temperature_never_raises_val_nll(val_logits, val_slices):
    targets = [s.mask for s in val_slices]
    exact = PixelSample(per_stratum=10 ** 6)
    sampled = PixelSample(per_stratum=300, seed=0)
    for z, t in zip(val_logits, targets):
        exact.add(z, t), sampled.add(z, t)

    def val_nll(temp):  # mean per-slice NLL of the metric on every pixel of the val slices
        return float(np.mean([nll(1 / (1 + np.exp(-z.astype(np.float64) / temp)), t) for z, t in zip(val_logits, targets)]))

    zz, tt, ww = exact.arrays()
    s = TemperatureScaler().fit(zz[0], tt, ww)
    assert s.nll_after_ <= s.nll_before_
    assert val_nll(s.temperature_) <= val_nll(1.0) + 1e-12
    zz, tt, ww = sampled.arrays()
    s2 = TemperatureScaler().fit(zz[0], tt, ww)
    assert s2.nll_after_ <= s2.nll_before_  # the fitting objective is never raised
    assert len(tt) < 0.01 * sum(t.size for t in targets)
    assert s2.temperature_ == pytest.approx(s.temperature_, rel=0.5)


def test_fit_temperature_runs_the_real_model_on_val(unet, lgg_refs):
    cfg = PipelineConfig(samples=2)
    chosen = calibration_slices(lgg_refs, "val", max_slices=2, seed=0)
    assert len(chosen) == 2 and all(r.split == "val" for r in chosen)
    assert [r.slice_id for r in chosen] == [r.slice_id for r in calibration_slices(list(reversed(lgg_refs)), "val", 2)]
    t = fit_temperature(unet, lgg_refs, cfg, max_slices=2, per_stratum=500)
    assert np.isfinite(t) and 0.05 <= t <= 20


def test_temperature_report_before_after(unet, val_slices):
    rep = temperature_report(unet, val_slices[1:2], PipelineConfig(samples=2), 2.0, modes=("normal",))
    before, after = rep[rep["phase"] == "before"].iloc[0], rep[rep["phase"] == "after"].iloc[0]
    assert before["dice"] == after["dice"]  # one pass: σ(z/T) ≥ ½ ⇔ z ≥ 0
    assert before["nll"] != after["nll"] and after["temperature"] == 2.0
    summ = summarize_temperature_report(rep)
    assert list(summ["phase"]) == ["before", "after"] and "nll_mean" in summ.columns
