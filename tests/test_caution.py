"""Numbers that rest on little: n/a for a decomposition that does not apply (real CRF and fusion
maps of the real U-Net), cautions for tests and thresholds on too few patients, the ρ sign note."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segunc.analysis import decomposition_summary, frame_from_results, review_outcome, slice_decomposition
from segunc.backends import BACKENDS
from segunc.config import PipelineConfig
from segunc.pipeline import evaluate_slice
from segunc.analysis.stats import MIN_PATIENTS, few_patients_caution, friedman, pairwise_wilcoxon, spearman_sign_note

pytestmark = pytest.mark.integration


def test_decomposition_is_na_for_crf_and_valid_for_sampling_and_fusion(unet_weights, val_slices):
    unet = BACKENDS.get("unet")(weights=unet_weights)
    cfg = PipelineConfig(samples=3)
    modes = ["normal", "mc_dropout", "tta", "noisy", "fusion", "crf"]
    outputs = [(evaluate_slice(unet, s, modes, cfg), s.mask) for s in val_slices[:1]]
    for res, _ in outputs:
        for mode, r in res.items():
            dec = slice_decomposition(r.maps, mode)
            if mode == "crf":
                assert dec["note"].startswith("n/a") and np.isnan(dec["epistemic_image"]) and np.isnan(dec["epistemic_share"])
                assert np.isfinite(dec["total_image"])
            else:
                assert dec["note"] is None, (mode, dec)
                assert dec["epistemic_image"] >= 0 and dec["aleatoric_image"] >= 0
                assert 0 <= dec["epistemic_share"] <= 1 or np.isnan(dec["epistemic_share"])
    summary = decomposition_summary(frame_from_results(outputs, "unet")).set_index("mode")
    assert not summary.loc["crf", "applies"] and summary.loc["crf", "note"].startswith("n/a")
    assert summary.loc["crf", ["aleatoric_image_mean", "epistemic_image_mean", "epistemic_share_median"]].isna().all()
    ok = summary.drop(index="crf")
    assert ok["applies"].all() and ok["note"].isna().all() and (ok["n_valid"] == 1).all()
    assert (ok["epistemic_image_mean"] >= 0).all() and (ok["epistemic_share_median"].dropna() <= 1).all()


def test_impossible_rows_are_left_out_not_shown():
    # the stored CRF row from the field report: aleatoric −0.00235 bits, epistemic share 4.19
    df = pd.DataFrame({"backend": "unet", "mode": ["crf", "mc_dropout", "mc_dropout", "mc_dropout"],
                       "slice_id": ["a", "a", "b", "c"],
                       "mean_entropy": [0.000737, 0.2, 0.3, 0.1], "mean_mi": [0.003087, 0.05, 0.35, 0.02]})
    d = decomposition_summary(df).set_index("mode")
    assert np.isnan(d.loc["crf", "aleatoric_image_mean"]) and np.isnan(d.loc["crf", "epistemic_share_median"])
    assert d.loc["crf", "note"].startswith("n/a")
    mc = d.loc["mc_dropout"]
    assert mc["n"] == 3 and mc["n_valid"] == 2 and mc["applies"] and "1 of 3 slices left out" in mc["note"]
    assert mc["epistemic_image_mean"] == pytest.approx((0.05 + 0.02) / 2)
    assert mc["epistemic_share_median"] <= 1 and (d[["aleatoric_image_mean", "epistemic_image_mean"]].dropna() >= 0).all().all()
    # a hand-made slice whose parts cannot be right: epistemic larger than the total
    maps = {"mask": np.ones((4, 4), bool), "entropy": np.full((4, 4), 0.1), "expected_entropy": np.zeros((4, 4)),
            "mutual_information": np.full((4, 4), 0.5)}
    dec = slice_decomposition(maps)
    assert dec["note"].startswith("n/a") and np.isnan(dec["epistemic_share"])


def _frame(n_patients: int, slices_each: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for i in range(slices_each):
            for j, mode in enumerate(["normal", "mc_dropout", "tta"]):
                rows.append({"backend": "unet", "mode": mode, "patient_id": f"TCGA_XX_{p:04d}",
                             "slice_id": f"TCGA_XX_{p:04d}_20000101_{i + 1}", "split": "val",
                             "dice": float(np.clip(0.6 + 0.05 * j + rng.normal(0, 0.1), 0, 1)),
                             "mean_entropy": float(rng.uniform(0, 1))})
    return pd.DataFrame(rows)


def test_tests_and_thresholds_on_few_patients_carry_a_caution():
    few, many = _frame(2), _frame(MIN_PATIENTS)
    f = friedman(few, "dice", "unet")
    assert f.n_blocks == 6 and f.n_patients == 2 and "2 patient(s)" in f.caution
    assert friedman(few, "dice", "unet", per_patient=True).caution  # 2 patient blocks
    assert friedman(many, "dice", "unet").caution == "" and friedman(many, "dice", "unet").n_patients == MIN_PATIENTS
    w = pairwise_wilcoxon(few, "dice", "unet")
    assert (w["n_patients"] == 2).all() and w["caution"].str.contains("fewer than 5").all()
    assert (pairwise_wilcoxon(many, "dice", "unet")["caution"] == "").all()
    one = _frame(1).query("mode == 'normal'")
    out = review_outcome(one, "val", bad_dice=0.7)
    assert out.calibration_patients == 1 and "1 patient(s)" in out.caution and out.summary()["caution"] == out.caution
    assert few_patients_caution(10) == ""


def test_spearman_sign_note():
    assert "worse" in spearman_sign_note(0.6) and "ρ = 0.60 > 0" in spearman_sign_note(0.6)
    neg = spearman_sign_note(-0.3, "mean entropy")
    assert "ρ = -0.30 < 0" in neg and "do not rank slices" in neg and "mean entropy" in neg
    assert "≈ 0" in spearman_sign_note(0.02)
    assert "rank correlation" in spearman_sign_note(None) and "Here" not in spearman_sign_note(float("nan"))
