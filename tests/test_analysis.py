"""Analyses on real U-Net outputs of three val slices (two with tumour, one without):
normal / mc_dropout / noisy, two samples each."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from segunc.analysis import (HIST_BINS, UNCERTAINTY_MAPS, ErrorHistogram, cost_quality, decomposition_summary,
                             error_map, frame_from_results, pooled_error_detection, review_queue, risk_coverage_table,
                             slice_decomposition, slice_error_stats, spearman_table, tumour_free_slice_stats,
                             tumour_free_summary)
from segunc.backends import BACKENDS
from segunc.config import PipelineConfig
from segunc.metrics import METRIC_NAMES
from segunc.pipeline import evaluate_slice

pytestmark = pytest.mark.integration

MODES = ["normal", "mc_dropout", "noisy"]
#: the columns of ResultStore.metrics_frame() that frame_from_results reproduces
STORE_COLUMNS = ["patient_id", "slice_id", "split", "backend", "mode", *METRIC_NAMES, "seconds", "threshold",
                 "tumour_px", "pred_px", "mean_entropy", "mean_variance", "mean_mi"]


@pytest.fixture(scope="module")
def outputs(unet_weights, val_slices):
    unet = BACKENDS.get("unet")(weights=unet_weights)
    cfg = PipelineConfig(samples=2)
    return [(evaluate_slice(unet, s, MODES, cfg), s.mask) for s in val_slices]


@pytest.fixture(scope="module")
def frame(outputs):
    return frame_from_results(outputs, "unet", error_stats=True)


def test_slice_error_stats_on_real_maps(outputs):
    for res, target in outputs:
        for mode, r in res.items():
            st = slice_error_stats(r.maps, target)
            err = error_map(r.maps["mask"], target)
            assert st["error_px"] == err.sum()
            for m in UNCERTAINTY_MAPS:
                pos, neg = st[f"{m}_hist_err"], st[f"{m}_hist_ok"]
                assert pos.dtype == np.int64 and pos.shape == (HIST_BINS,)
                assert pos.sum() == err.sum() and neg.sum() == err.size - err.sum()
                auroc = st[f"{m}_auroc"]
                if 0 < err.sum() < err.size:
                    assert auroc == pytest.approx(roc_auc_score(err.ravel(), r.maps[m].ravel()))
                    assert 0 <= st[f"{m}_auprc"] <= 1
                else:
                    assert np.isnan(auroc)
                assert 0 <= st[f"{m}_error_dice"] <= 1 and st[f"{m}_near"] >= 0
                if r.maps["mask"].any():
                    assert st[f"{m}_in"] == pytest.approx(float(r.maps[m][r.maps["mask"]].mean()), rel=1e-5)
                else:
                    assert np.isnan(st[f"{m}_in"]) and st[f"{m}_near"] == pytest.approx(st[f"{m}_image"])
            if mode == "normal":  # one pass: no spread, a variance map carries no ranking
                assert st["variance_image"] == 0 and st["mutual_information_image"] == 0


def test_pooled_auroc_from_histograms_matches_sklearn(outputs):
    """Pooled pixel AUROC over the slices from 1000-bin histograms vs sklearn's exact value on all pixels."""
    for mode in ("mc_dropout", "noisy"):
        h = ErrorHistogram(hi=1.0)
        us, es = [], []
        for res, target in outputs:
            r = res[mode]
            err = error_map(r.maps["mask"], target)
            h.add(r.maps["entropy"], err)
            us.append(r.maps["entropy"].ravel()), es.append(err.ravel())
        u, e = np.concatenate(us), np.concatenate(es)
        assert e.any()
        assert h.auroc() == pytest.approx(roc_auc_score(e, u), abs=2e-3)
        assert h.auprc() == pytest.approx(average_precision_score(e, u), abs=2e-2)
        pooled = pooled_error_detection([slice_error_stats(res[mode].maps, t) for res, t in outputs])
        assert list(pooled.index) == list(UNCERTAINTY_MAPS) and pooled.loc["entropy", "n_slices"] == 3
        assert pooled.loc["entropy", "pooled_auroc"] == pytest.approx(h.auroc())


def test_frame_has_store_columns(frame, val_slices):
    assert list(frame.columns[:len(STORE_COLUMNS)]) == STORE_COLUMNS
    assert len(frame) == 3 * len(MODES) and set(frame["split"]) == {"val"}
    assert "entropy_auroc" in frame.columns and not any(c.endswith("_hist_err") for c in frame.columns)
    assert frame.loc[frame["mode"] == "normal", "mean_mi"].eq(0).all()


def test_slice_level_analyses_run_on_real_frame(frame):
    tum = frame[frame["tumour_px"] > 0]
    rho = spearman_table(tum, ["mean_entropy", "entropy_near"])
    assert set(rho["mode"]) == set(MODES) and (rho["n"] == 2).all()  # two tumour slices: too few, ρ is NaN
    rho_all = spearman_table(frame, ["mean_entropy", "entropy_near"])
    assert (rho_all["n"] == 3).all() and rho_all["rho"].between(-1, 1).all()
    rc = risk_coverage_table(frame, ["mean_entropy", "entropy_near"])
    assert (rc["aurc"] >= rc["oracle_aurc"] - 1e-12).all() and (rc["e_aurc"] >= -1e-12).all()
    d = decomposition_summary(frame).set_index("mode")
    assert d.loc["normal", "epistemic_image_mean"] == 0 and d.loc["mc_dropout", "epistemic_image_mean"] > 0
    c = cost_quality(frame).set_index("mode")
    assert c.loc["normal", "x_reference"] == 1 and (c["seconds_median"] > 0).all() and (c["n"] == 3).all()
    t = tumour_free_summary(frame).set_index("mode")
    assert (t["n"] == 1).all() and set(t.index) == set(MODES)


def test_review_queue_on_real_frame(frame):
    d = frame[frame["mode"] == "mc_dropout"]
    bad = d["dice"] < 0.7
    if not bad.any():
        pytest.fail("expected a bad slice among the three (the empty slice or the edge slice)")
    cal, rep = review_queue(d, d, "entropy_near", 0.7, 0.8)
    assert cal.recall >= 0.8 and rep.n_slices == 3 and rep.frame["rank"].tolist() == [1, 2, 3]
    assert set(rep.caught) | set(rep.missed) == set(d.loc[bad, "slice_id"])


def test_decomposition_and_tumour_free_on_real_maps(outputs, val_slices):
    for (res, target), s in zip(outputs, val_slices):
        for mode, r in res.items():
            dec = slice_decomposition(r.maps)
            assert dec["aleatoric_image"] + dec["epistemic_image"] == pytest.approx(dec["total_image"], abs=1e-4)
            if not s.has_tumour:
                tf = tumour_free_slice_stats(r.maps, target)
                assert tf["fp_px"] == r.maps["mask"].sum() and tf["mean_entropy"] >= 0
    res, target = outputs[0]
    with pytest.raises(ValueError):
        tumour_free_slice_stats(res["normal"].maps, target)
