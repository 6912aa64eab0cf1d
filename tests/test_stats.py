"""segunc.analysis.stats against scipy / statsmodels on fixed data, plus independent computation paths:
Friedman from its rank formula, Wilcoxon's exact p by enumerating every sign pattern, Holm by a
manual step-down loop, per-patient aggregation by hand, and properties of the bootstrap CI."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst
from statsmodels.stats.multitest import multipletests

from segunc.analysis import stats
from segunc.metrics import METRIC_NAMES

pytestmark = pytest.mark.unit

TOL = 1e-9
MODES = ["normal", "mc_dropout", "tta", "noisy"]


def frame(values: dict[str, np.ndarray], backend: str = "unet", patients: list[str] | None = None,
          metric: str = "dice") -> pd.DataFrame:
    """Long metric frame: values[mode][i] is slice i's metric under that mode."""
    rows = []
    for mode, v in values.items():
        for i, x in enumerate(v):
            pid = patients[i] if patients else f"P{i:03d}"
            rows.append({"key": f"{backend}-{mode}-{i}", "patient_id": pid, "slice_id": f"{pid}_19990101_{i}",
                         "backend": backend, "mode": mode, metric: float(x)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    base = rng.uniform(0.5, 0.9, 14)
    return {m: base + 0.03 * j + rng.normal(0, 0.04, 14) for j, m in enumerate(MODES)}


# --------------------------------------------------------------------------- Friedman
def test_friedman_matches_scipy_and_rank_formula(data):
    df = frame(data)
    res = stats.friedman(df, "dice", "unet")
    ref = sst.friedmanchisquare(*[data[m] for m in MODES])
    assert res.modes == MODES and res.n_blocks == 14 and not res.note
    assert res.statistic == pytest.approx(ref.statistic, abs=TOL)
    assert res.pvalue == pytest.approx(ref.pvalue, abs=TOL)
    # independent path: the rank formula (no ties in continuous data) and the χ² tail
    x = np.column_stack([data[m] for m in MODES])
    n, k = x.shape
    ranks = np.argsort(np.argsort(x, axis=1), axis=1) + 1.0
    r = ranks.sum(axis=0)
    chi2 = 12.0 / (n * k * (k + 1)) * np.sum(r ** 2) - 3.0 * n * (k + 1)
    assert res.statistic == pytest.approx(chi2, abs=TOL)
    assert res.pvalue == pytest.approx(sst.chi2.sf(chi2, k - 1), abs=TOL)
    # Kendall's W from its definition: 12 S / (n² (k³ − k))
    s = np.sum((r - r.mean()) ** 2)
    assert res.kendalls_w == pytest.approx(12 * s / (n ** 2 * (k ** 3 - k)), abs=TOL)
    assert 0 <= res.kendalls_w <= 1


def test_friedman_subset_of_modes_and_edge_cases(data):
    df = frame(data)
    res = stats.friedman(df, "dice", "unet", modes=["tta", "normal", "noisy"])
    ref = sst.friedmanchisquare(data["tta"], data["normal"], data["noisy"])
    assert res.pvalue == pytest.approx(ref.pvalue, abs=TOL)
    two = stats.friedman(df, "dice", "unet", modes=["normal", "tta"])
    assert np.isnan(two.pvalue) and "3 modes" in two.note
    same = stats.friedman(frame({m: data["normal"] for m in MODES[:3]}), "dice", "unet")
    assert same.pvalue == 1.0 and same.kendalls_w == 0.0
    with pytest.raises(KeyError, match="box_jitter"):
        stats.friedman(df, "dice", "unet", modes=["normal", "tta", "box_jitter"])


def test_incomplete_blocks_are_dropped(data):
    df = frame(data)
    df = df[~((df["mode"] == "tta") & df["slice_id"].str.endswith("_3"))]  # slice 3 lacks tta
    wide = stats.paired_table(df, "dice", "unet")
    assert len(wide) == 13 and list(wide.columns) == MODES
    res = stats.friedman(df, "dice", "unet")
    keep = np.arange(14) != 3
    ref = sst.friedmanchisquare(*[data[m][keep] for m in MODES])
    assert res.n_blocks == 13 and res.pvalue == pytest.approx(ref.pvalue, abs=TOL)


# --------------------------------------------------------------------------- Wilcoxon
def test_pairwise_wilcoxon_matches_scipy_and_holm_loop(data):
    df = frame(data)
    out = stats.pairwise_wilcoxon(df, "dice", "unet")
    pairs = list(itertools.combinations(MODES, 2))
    assert list(zip(out["mode_a"], out["mode_b"])) == pairs
    raw = np.array([sst.wilcoxon(data[a], data[b]).pvalue for a, b in pairs])
    stat = np.array([sst.wilcoxon(data[a], data[b]).statistic for a, b in pairs])
    np.testing.assert_allclose(out["pvalue"], raw, rtol=0, atol=TOL)
    np.testing.assert_allclose(out["statistic"], stat, rtol=0, atol=TOL)
    # Holm: statsmodels, and a manual step-down loop
    np.testing.assert_allclose(out["p_holm"], multipletests(raw, method="holm")[1], rtol=0, atol=TOL)
    m = len(raw)
    order = np.argsort(raw)
    manual = np.empty(m)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * raw[j]))
        manual[j] = running
    np.testing.assert_allclose(out["p_holm"], manual, rtol=0, atol=TOL)
    assert (out["significant"] == (manual < 0.05)).all()
    np.testing.assert_allclose(out["median_diff"], [np.median(data[a] - data[b]) for a, b in pairs], atol=TOL)


def test_wilcoxon_exact_p_by_enumerating_sign_patterns():
    """Independent of scipy: the exact null distribution of T+ over all 2^n sign patterns."""
    a = np.array([0.91, 0.84, 0.77, 0.88, 0.69, 0.95, 0.81, 0.73, 0.86, 0.79])
    d = np.array([0.031, -0.012, 0.054, 0.007, 0.043, -0.026, 0.018, 0.062, -0.004, 0.039])
    b = a - d
    out = stats.pairwise_wilcoxon(frame({"normal": a, "tta": b}), "dice", "unet")
    n = len(d)
    ranks = sst.rankdata(np.abs(d))
    t_plus = ranks[d > 0].sum()
    dist = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=n)])
    t = min(t_plus, n * (n + 1) / 2 - t_plus)
    p_exact = min(1.0, 2 * np.mean(dist <= t))
    assert out.loc[0, "pvalue"] == pytest.approx(p_exact, abs=TOL)
    assert out.loc[0, "statistic"] == pytest.approx(t, abs=TOL)


def test_rank_biserial_by_hand():
    # differences 1, -2, 3, 0, 4: the zero is dropped; ranks 1..4; R+ = 1+3+4 = 8, R- = 2 → r = 6/10
    a = np.array([2.0, 1.0, 5.0, 3.0, 9.0])
    b = np.array([1.0, 3.0, 2.0, 3.0, 5.0])
    assert stats.rank_biserial(a, b) == pytest.approx(0.6, abs=TOL)
    assert stats.rank_biserial(b, a) == pytest.approx(-0.6, abs=TOL)
    assert stats.rank_biserial(a, a) == 0.0
    # ties get average ranks: |d| = 1, 1, 2 → ranks 1.5, 1.5, 3; signs +, -, + → (4.5 - 1.5) / 6
    assert stats.rank_biserial([1, 0, 2], [0, 1, 0]) == pytest.approx(0.5, abs=TOL)


def test_rank_biserial_relates_to_wilcoxon_statistic(data):
    out = stats.pairwise_wilcoxon(frame(data), "dice", "unet")
    for _, row in out.iterrows():
        d = data[row["mode_a"]] - data[row["mode_b"]]
        n = len(d)
        t_plus = sst.rankdata(np.abs(d))[d > 0].sum()
        assert row["rank_biserial"] == pytest.approx(4 * t_plus / (n * (n + 1)) - 1, abs=TOL)
        assert row["better"] in ("", row["mode_a"], row["mode_b"])
        if row["significant"]:  # dice: higher is better
            assert row["better"] == (row["mode_a"] if row["rank_biserial"] > 0 else row["mode_b"])


def test_better_follows_metric_direction():
    a = np.linspace(0.1, 0.5, 12)
    df = frame({"normal": a, "tta": a - 0.05 - np.linspace(0, 0.01, 12)}, metric="nll")
    row = stats.pairwise_wilcoxon(df, "nll", "unet").iloc[0]
    assert row["significant"] and row["rank_biserial"] == 1.0
    assert row["better"] == "tta"  # NLL: lower is better


def test_wilcoxon_identical_modes_give_nan_not_error(data):
    df = frame({"normal": data["normal"], "tta": data["normal"], "noisy": data["noisy"]})
    out = stats.pairwise_wilcoxon(df, "dice", "unet")
    same = out[(out["mode_a"] == "normal") & (out["mode_b"] == "tta")].iloc[0]
    assert np.isnan(same["pvalue"]) and np.isnan(same["p_holm"]) and not same["significant"]
    assert "identical" in same["note"]
    rest = out.dropna(subset=["pvalue"])
    np.testing.assert_allclose(rest["p_holm"], multipletests(rest["pvalue"], method="holm")[1], atol=TOL)


# ------------------------------------------------------------------------ per patient
def test_per_patient_aggregates_before_testing():
    rng = np.random.default_rng(7)
    patients = [f"TCGA_XX_{i // 3:04d}" for i in range(24)]  # 8 patients × 3 slices
    vals = {m: rng.uniform(0.4, 0.9, 24) + 0.02 * j for j, m in enumerate(MODES)}
    df = frame(vals, patients=patients)
    # by hand: mean of each patient's slices, in patient order
    agg = {m: np.array([np.mean([v for v, p in zip(vals[m], patients) if p == pid]) for pid in sorted(set(patients))])
           for m in MODES}
    fr = stats.friedman(df, "dice", "unet", per_patient=True)
    assert fr.n_blocks == 8
    assert fr.pvalue == pytest.approx(sst.friedmanchisquare(*[agg[m] for m in MODES]).pvalue, abs=TOL)
    pw = stats.pairwise_wilcoxon(df, "dice", "unet", per_patient=True)
    ref = [sst.wilcoxon(agg[a], agg[b]).pvalue for a, b in itertools.combinations(MODES, 2)]
    np.testing.assert_allclose(pw["pvalue"], ref, rtol=0, atol=TOL)
    assert (pw["n"] == 8).all()
    desc = stats.describe(df, ["dice"], per_patient=True, n_resamples=500)
    assert (desc["n"] == 8).all()
    assert desc.loc[desc["mode"] == "tta", "mean"].item() == pytest.approx(agg["tta"].mean(), abs=TOL)


def test_duplicate_results_of_one_slice_count_once(data):
    df = frame(data)
    dup = df[df["mode"] == "normal"].assign(key=lambda d: d["key"] + "-rerun", dice=lambda d: d["dice"] + 0.1)
    both = pd.concat([df, dup])
    wide = stats.paired_table(both, "dice", "unet")
    assert len(wide) == 14
    np.testing.assert_allclose(wide["normal"], data["normal"] + 0.05, atol=TOL)


# ------------------------------------------------------------------------ descriptives
def test_describe_quantiles_and_mean(data):
    df = frame(data)
    desc = stats.describe(df, ["dice"], n_resamples=1000)
    assert list(desc["mode"]) == MODES
    for _, r in desc.iterrows():
        x = data[r["mode"]]
        q1, med, q3 = np.percentile(x, [25, 50, 75])
        assert (r["n"], r["median"], r["q1"], r["q3"]) == (14, pytest.approx(med), pytest.approx(q1), pytest.approx(q3))
        assert r["iqr"] == pytest.approx(q3 - q1) and r["mean"] == pytest.approx(x.mean())
        assert r["sd"] == pytest.approx(x.std(ddof=1))
        assert r["ci_low"] < r["mean"] < r["ci_high"]


def test_describe_covers_every_metric_and_backend():
    rng = np.random.default_rng(3)
    rows = [{"key": f"{b}{m}{i}", "patient_id": "P", "slice_id": f"s{i}", "backend": b, "mode": m,
             **{k: rng.uniform() for k in METRIC_NAMES}} for b in ("unet", "litemedsam") for m in MODES for i in range(6)]
    desc = stats.describe(pd.DataFrame(rows), n_resamples=200)
    assert len(desc) == 2 * len(MODES) * len(METRIC_NAMES)
    assert list(dict.fromkeys(desc["metric"])) == list(METRIC_NAMES)


def test_bootstrap_ci_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(0.7, 0.1, 200)
    lo, hi = stats.bootstrap_ci(x, seed=1)
    assert lo < x.mean() < hi
    # close to the normal-theory interval mean ± 1.96 s/√n
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert (hi - lo) == pytest.approx(2 * half, rel=0.15)
    assert stats.bootstrap_ci(x, seed=1) == (lo, hi)  # reproducible with a seed
    lo99, hi99 = stats.bootstrap_ci(x, confidence=0.99, seed=1)
    assert lo99 < lo and hi99 > hi  # higher confidence → wider
    # width shrinks like 1/√n: 16× the data → about a quarter of the width
    small = rng.normal(0.7, 0.1, 50)
    big = rng.normal(0.7, 0.1, 800)
    ratio = np.subtract(*stats.bootstrap_ci(small)[::-1]) / np.subtract(*stats.bootstrap_ci(big)[::-1])
    assert 3.0 < ratio < 5.3
    # degenerate inputs
    assert stats.bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    assert all(np.isnan(stats.bootstrap_ci([0.5])))
    assert all(np.isnan(stats.bootstrap_ci([])))
    lo_p, hi_p = stats.bootstrap_ci(x, method="percentile", seed=1)
    assert lo_p < x.mean() < hi_p


def test_bootstrap_ci_coverage():
    """The 95 % BCa interval covers the true mean about 95 % of the time (skewed data, n = 40)."""
    rng = np.random.default_rng(11)
    true = 0.25  # mean of Beta(2, 6)
    hits = 0
    reps = 200
    for i in range(reps):
        lo, hi = stats.bootstrap_ci(rng.beta(2, 6, 40), n_resamples=1000, seed=i)
        hits += lo <= true <= hi
    assert 0.88 <= hits / reps <= 0.99


# ----------------------------------------------------------------------------- LaTeX
def test_to_latex_table(data):
    df = pd.concat([frame(data), frame({m: v[::-1] for m, v in data.items()}, backend="lite_medsam")])
    df["nll"] = 1 - df["dice"]
    desc = stats.describe(df, ["dice", "nll"], n_resamples=300)
    tex = stats.to_latex(desc, label="tab:x")
    assert r"\begin{tabular*}{\linewidth}{@{\extracolsep{\fill}}llcc@{}}" in tex and r"\label{tab:x}" in tex
    assert "Backend & Mode & Dice & NLL" in tex
    # display names, not identifiers; booktabs rules
    assert r"lite\_medsam" in tex and "U-Net &" in tex and "MC dropout" in tex and r"mc\_dropout" not in tex
    assert all(r in tex for r in (r"\toprule", r"\midrule", r"\bottomrule")) and r"\hline" not in tex
    # bold = best per backend: highest Dice and lowest NLL (the same mode here, since nll = 1 - dice)
    from segunc.viz import mode_label
    best = desc[(desc["backend"] == "unet") & (desc["metric"] == "dice")].sort_values("median").iloc[-1]
    line = next(ln for ln in tex.splitlines() if f"& {mode_label(best['mode'])} &" in ln
                and not ln.startswith("lite"))
    assert line.count(r"\textbf") == 2
    assert f"{best['median']:.3f}" in line
    dice = desc[desc["metric"] == "dice"]
    wide = stats.to_latex(pd.concat([dice.assign(metric=m) for m in ("dice", "nll", "ece", "iou", "brier")]))
    assert r"\resizebox{\linewidth}{!}{%" in wide and r"\begin{tabular}{@{}llccccc@{}}" in wide  # 5 metrics: scaled to fit
    assert wide.count("{") == wide.count("}")
    tex_ci = stats.to_latex(desc, ["dice"], stat="mean_ci", bold_best=False)
    assert r"\textbf" not in tex_ci and "bootstrap CI" in tex_ci
    with pytest.raises(ValueError):
        stats.to_latex(desc, stat="mode")
    with pytest.raises(ValueError):
        stats.to_latex(desc.iloc[:0])


def test_missing_column_is_a_clear_error(data):
    with pytest.raises(KeyError, match="ece"):
        stats.friedman(frame(data), "ece", "unet")


def test_order_modes():
    assert stats.order_modes(["crf", "zeta", "normal", "fusion", "alpha", "tta"]) == \
        ["normal", "tta", "fusion", "crf", "alpha", "zeta"]
