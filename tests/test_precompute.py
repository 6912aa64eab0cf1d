"""The analysis cache of segunc.analysis.precompute: a cached answer equals a fresh computation exactly
(descriptive statistics with bootstrap CIs, Friedman and Wilcoxon tables, NaN included), is found again
only for the same rows and parameters, and is never written for a read-only caller."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from segunc.analysis import stats
from segunc.analysis.precompute import DESCRIBE_VERSION, SIG_VERSION, cached_describe, cached_tests

pytestmark = pytest.mark.unit

MODES = ["normal", "mc_dropout", "tta", "fusion"]
METRICS = ("dice", "nll", "ece")


def metric_frame(n_slices: int = 12, seed: int = 3) -> pd.DataFrame:
    """Long metric frame of two backends: 3 patients, ``n_slices`` slices, four modes (the second backend
    has only two modes, and one of its slices a single result: NaN SD and CI)."""
    rng = np.random.default_rng(seed)
    rows = []
    for backend, modes in (("unet", MODES), ("litemedsam", MODES[:2])):
        base = rng.uniform(0.4, 0.9, n_slices)
        for j, mode in enumerate(modes):
            for i in range(n_slices if backend == "unet" or j == 0 else 1):
                pid = f"TCGA_P{i % 3}"
                rows.append({"key": f"{backend}-{mode}-{i}", "slice_id": f"{pid}_1999_{i}", "patient_id": pid,
                             "backend": backend, "mode": mode, "dice": float(base[i] + 0.02 * j + rng.normal(0, 0.03)),
                             "nll": float(rng.gamma(2.0, 0.1)), "ece": float(rng.uniform(0, 0.05))})
    return stats.sort_by_backend_mode(pd.DataFrame(rows))


def files(root, version: str) -> list:
    return sorted((root / "analysis" / version).glob("*.json")) if (root / "analysis" / version).is_dir() else []


@pytest.mark.parametrize("per_patient", [False, True])
def test_cached_describe_equals_fresh(tmp_path, per_patient):
    df = metric_frame()
    fresh = stats.describe(df, METRICS, per_patient=per_patient, n_resamples=500)
    first, hit1 = cached_describe(tmp_path, df, METRICS, per_patient=per_patient, n_resamples=500)
    again, hit2 = cached_describe(tmp_path, df, METRICS, per_patient=per_patient, n_resamples=500)
    assert (hit1, hit2) == (False, True) and len(files(tmp_path, DESCRIBE_VERSION)) == 1
    pd.testing.assert_frame_equal(first, fresh, check_exact=True)
    pd.testing.assert_frame_equal(again, fresh, check_exact=True)  # exactly the same doubles, NaN where NaN
    assert again["ci_low"].isna().any() and again["sd"].isna().any()  # the single-result group


def test_cached_describe_is_keyed_by_rows_order_and_parameters(tmp_path):
    df = metric_frame()
    cached_describe(tmp_path, df, METRICS, n_resamples=500)
    # another CI level, other resamples, other metrics, another row order (the bootstrap draws follow it)
    for kwargs, frame in (({"confidence": 0.9}, df), ({"n_resamples": 400}, df), ({}, df.iloc[::-1]),
                          ({"metrics": ("dice",)}, df)):
        args = {"metrics": METRICS, "n_resamples": 500, **kwargs}
        got, hit = cached_describe(tmp_path, frame, args.pop("metrics"), **args)
        assert not hit
        pd.testing.assert_frame_equal(got, stats.describe(frame, got["metric"].unique().tolist(), **args),
                                      check_exact=True)
    changed = df.assign(dice=df["dice"].where(df.index != 3, 0.123))  # one value differs: never the stale answer
    got, hit = cached_describe(tmp_path, changed, METRICS, n_resamples=500)
    assert not hit
    pd.testing.assert_frame_equal(got, stats.describe(changed, METRICS, n_resamples=500), check_exact=True)


def test_read_only_callers_write_nothing_and_a_damaged_entry_is_recomputed(tmp_path):
    df = metric_frame()
    _, hit = cached_describe(tmp_path, df, METRICS, n_resamples=300, write=False)
    got = cached_tests(tmp_path, df, "dice", "unet", write=False)
    assert not hit and not got["cached"] and not (tmp_path / "analysis").exists()
    cached_describe(tmp_path, df, METRICS, n_resamples=300)
    (path,) = files(tmp_path, DESCRIBE_VERSION)
    path.write_text(path.read_text()[:40])  # truncated
    got, hit = cached_describe(tmp_path, df, METRICS, n_resamples=300)
    assert not hit
    pd.testing.assert_frame_equal(got, stats.describe(df, METRICS, n_resamples=300), check_exact=True)


@pytest.mark.parametrize("backend,per_patient", [("unet", False), ("unet", True), ("litemedsam", False)])
def test_cached_tests_equal_fresh(tmp_path, backend, per_patient):
    df = metric_frame()
    fr = stats.friedman(df, "dice", backend, per_patient=per_patient).as_dict()
    pw = stats.pairwise_wilcoxon(df, "dice", backend, per_patient=per_patient)
    first = cached_tests(tmp_path, df, "dice", backend, per_patient=per_patient)
    again = cached_tests(tmp_path, df, "dice", backend, per_patient=per_patient)
    assert not first["cached"] and again["cached"]
    for got in (first, again):
        pd.testing.assert_frame_equal(got["pairs"], pw, check_exact=True)
        assert got["friedman"].keys() == fr.keys()
        for k, v in fr.items():
            assert got["friedman"][k] == v or (v != v and got["friedman"][k] != got["friedman"][k]), k
    # the result object the Metrics page shows, rebuilt from the cache
    assert stats.FriedmanResult(**again["friedman"]).as_dict().keys() == fr.keys()
    if backend == "litemedsam":  # two modes: no Friedman test (NaN statistic, with its note)
        assert np.isnan(again["friedman"]["pvalue"]) and again["friedman"]["note"]


def test_cached_tests_every_mode_listed_is_the_default(tmp_path):
    df = metric_frame()
    cached_tests(tmp_path, df, "dice", "unet")
    every = stats.order_modes(df.loc[df["backend"] == "unet", "mode"])
    assert cached_tests(tmp_path, df, "dice", "unet", modes=every)["cached"]  # the page's default selection
    some = cached_tests(tmp_path, df, "dice", "unet", modes=every[:3])
    assert not some["cached"] and list(some["pairs"]["mode_a"].unique()) == every[:2]
    pd.testing.assert_frame_equal(some["pairs"], stats.pairwise_wilcoxon(df, "dice", "unet", every[:3]), check_exact=True)
    assert len(files(tmp_path, SIG_VERSION)) == 2


def test_tests_cached_without_dtypes_still_read(tmp_path):
    """An entry written before the column types were recorded reads back with the same values."""
    df = metric_frame()
    cached_tests(tmp_path, df, "dice", "unet")
    (path,) = files(tmp_path, SIG_VERSION)
    rec = json.loads(path.read_text())
    del rec["pair_dtypes"]
    path.write_text(json.dumps(rec))
    got = cached_tests(tmp_path, df, "dice", "unet")
    assert got["cached"]
    pd.testing.assert_frame_equal(got["pairs"], stats.pairwise_wilcoxon(df, "dice", "unet"), check_dtype=False)
