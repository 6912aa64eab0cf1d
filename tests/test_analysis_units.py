"""Analyses (segunc.analysis) on small hand-checked cases: AUROC/AUPRC arithmetic, histogram pooling,
overlap Dice, risk–coverage, review-queue threshold picking and the frame summaries."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from segunc.analysis import (ErrorHistogram, aurc, auprc_from_histograms, auroc_from_histograms,
                             cost_quality, decomposition_summary, error_histograms, hist_edges, near_mask, overlap_dice,
                             patient_halves, pick_threshold, pixel_auprc, pixel_auroc, rank_slices, review_queue,
                             risk_coverage, slice_decomposition, spearman_table, tumour_free_summary)

pytestmark = pytest.mark.unit

# u = (0.1, 0.4, 0.35, 0.8), errors at the 3rd and 4th pixel.
U = np.array([0.1, 0.4, 0.35, 0.8])
E = np.array([False, False, True, True])


def test_auroc_by_hand():
    # error/correct pairs: (0.35, 0.1) >, (0.35, 0.4) <, (0.8, 0.1) >, (0.8, 0.4) >  →  3 of 4 = 0.75
    assert pixel_auroc(U, E) == pytest.approx(0.75)
    # descending: 0.8 err (P=1, R=½), 0.4 ok, 0.35 err (P=⅔, R=1)  →  AP = ½·1 + ½·⅔ = 5/6
    assert pixel_auprc(U, E) == pytest.approx(5 / 6)
    # ten bins on [0, 1]: every score in its own bin, so the histogram values are exact
    pos, neg = error_histograms(U, E, hi=1.0, bins=10, scale="linear")
    assert pos.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 1, 0] and neg.tolist() == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert auroc_from_histograms(pos, neg) == pytest.approx(0.75)
    assert auprc_from_histograms(pos, neg) == pytest.approx(5 / 6)
    # a tie counts one half: one error and one correct pixel at the same score
    assert pixel_auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc_from_histograms([1, 0], [1, 0]) == 0.5
    # four bins of 0.25: 0.35 and 0.4 share bin 1 → that pair becomes a tie: (1 + ½ + 1 + 1)/4
    assert auroc_from_histograms(*error_histograms(U, E, hi=1.0, bins=4, scale="linear")) == pytest.approx(0.875)


def test_degenerate_cases_are_nan():
    assert np.isnan(pixel_auroc(U, np.zeros(4, bool))) and np.isnan(pixel_auprc(U, np.ones(4, bool)))
    assert np.isnan(auroc_from_histograms([0, 0], [3, 1])) and np.isnan(auprc_from_histograms([2, 0], [0, 0]))


def test_histogram_pooling_matches_sklearn_on_quantised_scores():
    rng = np.random.default_rng(0)
    h = ErrorHistogram(hi=1.0, bins=100, scale="linear")
    all_u, all_e = [], []
    for _ in range(5):  # five "slices" pooled without keeping their pixels
        u = np.floor(rng.random(3000) ** 2 * 100) / 100 + 0.005  # bin centres: exact case
        e = rng.random(3000) < 0.1 + 0.6 * u
        h.add(u, e)
        all_u.append(u), all_e.append(e)
    u, e = np.concatenate(all_u), np.concatenate(all_e)
    assert h.pos.sum() + h.neg.sum() == u.size
    assert h.auroc() == pytest.approx(roc_auc_score(e, u), abs=1e-12)
    assert h.auprc() == pytest.approx(average_precision_score(e, u), abs=1e-12)


def test_log_bins_resolve_scores_near_zero():
    """Uncertainty piles up near 0: log-spaced bins keep the ranking that equal-width bins tie away."""
    rng = np.random.default_rng(1)
    u = 10 ** rng.uniform(-7, -3.1, 20000)  # all below 1/1000: one equal-width bin of 1000 on [0, 1]
    e = rng.random(u.size) < (np.log10(u) + 7) / 4  # errors likelier as u grows
    exact = roc_auc_score(e, u)
    assert auroc_from_histograms(*error_histograms(u, e, 1.0)) == pytest.approx(exact, abs=2e-3)
    assert abs(auroc_from_histograms(*error_histograms(u, e, 1.0, scale="linear")) - exact) > 0.05
    edges = hist_edges(0.25)
    assert edges.size == 1001 and edges[0] == 0 and edges[1] == pytest.approx(0.25e-12) and edges[-1] == 0.25
    with pytest.raises(ValueError):
        hist_edges(1.0, scale="bogus")


def test_near_mask_and_overlap_dice():
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    assert near_mask(m, 1).sum() == 5 and near_mask(m, 2).sum() == 13 and near_mask(m, 0).sum() == 1
    u = np.array([[0.9, 0.8, 0.0, 0.0]])
    err = np.array([[True, False, True, False]])
    # fixed t = 0.5: U = {0, 1}; |U ∩ E| = 1; Dice = 2·1 / (2 + 2) = 0.5
    assert overlap_dice(u, err, 0.5) == 0.5
    assert overlap_dice(u, err, "otsu") == 0.5  # Otsu splits {0} | {0.8, 0.9} too
    assert overlap_dice(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 1.0


def test_risk_coverage_by_hand():
    scores, dice = [0.3, 0.1, 0.2], [0.5, 1.0, 0.8]
    rc = risk_coverage(scores, dice)
    # kept in order of score: losses 0, 0.2, 0.5 → risks 0, 0.1, 0.7/3
    assert rc["coverage"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert rc["risk"].tolist() == pytest.approx([0.0, 0.1, 0.7 / 3])
    a = aurc(scores, dice)
    assert a["aurc"] == pytest.approx((0 + 0.1 + 0.7 / 3) / 3) and a["e_aurc"] == pytest.approx(0.0)
    worst = aurc([0.1, 0.3, 0.2], dice)  # the worst slice looks the most certain
    assert worst["aurc"] > a["aurc"] and worst["e_aurc"] > 0 and worst["full_risk"] == pytest.approx(0.7 / 3)
    with pytest.raises(ValueError):
        risk_coverage([0.1, np.nan], [1.0, 0.5])


def _frame(scores, dices, prefix="s"):
    n = len(scores)
    return pd.DataFrame({"slice_id": [f"{prefix}{i}" for i in range(n)], "patient_id": [f"P{i % 3}" for i in range(n)],
                         "backend": "unet", "mode": "mc_dropout", "score": scores, "dice": dices})


def test_review_threshold_by_hand():
    # bad (Dice < 0.7): s2 (0.9), s4 (0.6), s5 (0.5), s6 (0.2), s7 (0.05): five bad slices.
    val = _frame([0.10, 0.30, 0.90, 0.40, 0.60, 0.50, 0.20, 0.05],
                 [0.95, 0.90, 0.10, 0.85, 0.40, 0.60, 0.65, 0.69])
    # recall ≥ 0.8 needs 4 of 5: the 4th largest bad score is 0.2 → flag s ≥ 0.2 (6 of 8 slices)
    assert pick_threshold(val, "score", 0.7, 0.8) == pytest.approx(0.20)
    # recall ≥ 0.6 needs 3: 0.5; recall 1.0 needs all five: 0.05 (flags everything)
    assert pick_threshold(val, "score", 0.7, 0.6) == pytest.approx(0.50)
    assert pick_threshold(val, "score", 0.7, 1.0) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no slice"):
        pick_threshold(val, "score", bad_dice=0.0)
    with pytest.raises(ValueError, match="one backend"):
        pick_threshold(pd.concat([val, val.assign(mode="noisy")]), "score")

    test = _frame([0.70, 0.25, 0.15, 0.05, 0.50], [0.30, 0.90, 0.50, 0.95, 0.80], prefix="t")
    cal, rep = review_queue(val, test, "score", 0.7, 0.8)
    assert cal.recall == pytest.approx(0.8) and cal.n_flagged == 6
    assert rep.threshold == pytest.approx(0.20)
    assert rep.n_slices == 5 and rep.n_bad == 2 and rep.n_flagged == 3
    assert rep.caught == ["t0"] and rep.missed == ["t2"] and rep.false_alarms == ["t4", "t1"]
    assert rep.recall == 0.5 and rep.flagged_fraction == pytest.approx(0.6) and rep.precision == pytest.approx(1 / 3)
    f = rep.frame
    assert f["rank"].tolist() == [1, 2, 3, 4, 5] and f["slice_id"].tolist() == ["t0", "t4", "t1", "t2", "t3"]
    assert f["outcome"].tolist() == ["caught", "false_alarm", "false_alarm", "missed", "pass"]
    assert pd.read_csv(__import__("io").StringIO(f.to_csv(index=False)))["outcome"].tolist() == f["outcome"].tolist()
    assert rank_slices(test, "score")["slice_id"].iloc[0] == "t0"
    assert rep.summary()["caught"] == 1


def test_patient_halves_deterministic_and_disjoint():
    ids = [f"TCGA_XX_{i:04d}" for i in range(17)] * 2
    a, b = patient_halves(ids, seed=0)
    assert (a, b) == patient_halves(list(reversed(ids)), seed=0)
    assert len(a) == 9 and len(b) == 8 and not set(a) & set(b) and set(a) | set(b) == set(ids)
    assert patient_halves(ids, seed=1) != (a, b)


def test_frame_summaries_by_hand():
    df = pd.DataFrame({
        "backend": "unet", "mode": ["normal", "normal", "mc_dropout", "mc_dropout"],
        "slice_id": ["a", "b", "a", "b"], "dice": [0.8, 0.6, 0.9, 0.5], "ece": [0.01, 0.03, 0.02, 0.02],
        "seconds": [1.0, 3.0, 8.0, 12.0], "tumour_px": [100, 0, 100, 0], "pred_px": [90, 40, 95, 0],
        "mean_entropy": [0.1, 0.3, 0.2, 0.4], "mean_variance": [0.0, 0.0, 0.01, 0.02], "mean_mi": [0.0, 0.0, 0.05, 0.1],
    })
    c = cost_quality(df, metrics=("dice", "ece")).set_index("mode")
    assert c.loc["normal", "seconds_median"] == 2.0 and c.loc["mc_dropout", "x_reference"] == 5.0
    assert c.loc["mc_dropout", "dice_median"] == pytest.approx(0.7)
    d = decomposition_summary(df).set_index("mode")
    assert d.loc["mc_dropout", "aleatoric_image_mean"] == pytest.approx(((0.2 - 0.05) + (0.4 - 0.1)) / 2)
    assert d.loc["normal", "epistemic_image_mean"] == 0.0 and d.loc["mc_dropout", "epistemic_share_median"] == pytest.approx(0.25)
    t = tumour_free_summary(df).set_index("mode")
    assert t.loc["normal", "n"] == 1 and t.loc["normal", "fp_px_mean"] == 40 and t.loc["mc_dropout", "any_fp_frac"] == 0
    assert t.loc["normal", "mean_entropy"] == 0.3 and t.loc["normal", "mean_entropy_tumour"] == 0.1
    rho = spearman_table(pd.DataFrame({"mode": "m", "dice": [0.9, 0.8, 0.5, 0.1], "u": [0.1, 0.2, 0.3, 0.9]}), ["u"])
    assert rho["rho"].iloc[0] == pytest.approx(1.0) and rho["n"].iloc[0] == 4


def test_slice_decomposition_by_hand():
    maps = {"entropy": np.array([[1.0, 0.5]]), "expected_entropy": np.array([[0.6, 0.5]]),
            "mutual_information": np.array([[0.4, 0.0]]), "mask": np.array([[True, False]])}
    d = slice_decomposition(maps)
    assert d["aleatoric_image"] == pytest.approx(0.55) and d["epistemic_in"] == pytest.approx(0.4)
    assert d["epistemic_share"] == pytest.approx(0.2 / 0.75)


def test_calibration_table_pools_bins_and_keeps_display_order():
    from segunc.analysis.reliability import calibration_table

    # two slices per group; bins per result key: (counts, sum_confidence, sum_correct) over 2 bins
    per_key = {"a1": ([10, 0], [6.0, 0.0], [5.0, 0.0]), "a2": ([0, 30], [0.0, 27.0], [0.0, 30.0]),
               "b1": ([4, 4], [2.4, 3.6], [2.4, 3.6]), "b2": ([2, 0], [1.2, 0.0], [0.0, 0.0])}
    frame = pd.DataFrame({"backend": ["unet", "unet", "litemedsam", "litemedsam"],
                          "mode": ["tta", "tta", "normal", "normal"], "key": ["a1", "a2", "b1", "b2"],
                          "slice_id": ["s1", "s2", "s1", "s2"], "ece": [0.1, 0.1, 0.0, 0.6],
                          "nll": [1.0, 3.0, 0.5, 0.5], "brier": [0.2, 0.4, 0.1, 0.3]})
    seen = []

    def reliability(keys):
        seen.append(sorted(keys))
        c, s, k = (np.sum([per_key[x][i] for x in keys], axis=0) for i in range(3))
        return {"counts": c, "sum_confidence": s, "sum_correct": k}

    bins, table = calibration_table(frame, reliability)
    assert list(bins) == [("unet", "tta"), ("litemedsam", "normal")]  # backends in registry order
    assert seen == [["a1", "a2"], ["b1", "b2"]]
    assert list(table.columns) == ["backend", "mode", "slices", "pixels", "pooled ECE", "mean per-slice ECE",
                                   "mean NLL", "mean Brier"]
    unet, lite = table.iloc[0], table.iloc[1]
    assert unet["pixels"] == 40 and unet["slices"] == 2
    # pooled: |5 − 6| + |30 − 27| over 40 pixels, not the mean of the per-slice ECEs
    assert unet["pooled ECE"] == pytest.approx(4 / 40)
    assert unet["mean per-slice ECE"] == pytest.approx(0.1) and unet["mean NLL"] == pytest.approx(2.0)
    assert lite["pooled ECE"] == pytest.approx(1.2 / 10) and lite["mean Brier"] == pytest.approx(0.2)
