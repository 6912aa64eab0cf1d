"""Review and report analyses on the real fixture store (tests/conftest_app.py: the real pipeline on real val slices):
``python -m segunc report`` (self-contained HTML + Markdown, exit 2 with what to run when there is
nothing to report), the cached error stats of stored results, the review-queue outcome, and the
"Review & errors" app page (streamlit.testing.v1.AppTest, helpers of tests/test_app.py)."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from segunc.cli import main
from segunc.metrics import METRIC_NAMES
from segunc.analysis.stats import METRIC_LABELS
from tests.conftest_app import MODES, N_SLICES, app_env, app_store  # noqa: F401
from tests.test_app import assert_clean, open_page, store_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _report(out, cache, *extra) -> int:
    return main(["report", "--split", "val", "--out", str(out), "--cache", str(cache), "--quiet", *extra])


# ------------------------------------------------------------------------------ the report
def test_report_on_the_fixture_store(app_store, lgg_root, tmp_path, capsys):
    from segunc.store import ResultStore

    out = tmp_path / "report"
    assert _report(out, app_store, "--data", str(lgg_root)) == 0, capsys.readouterr().err
    html_path, md_path = out / "report.html", out / "report.md"
    assert html_path.is_file() and md_path.is_file()
    html = html_path.read_text(encoding="utf-8")
    md = md_path.read_text(encoding="utf-8")

    # self-contained: every image inline, nothing fetched from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert imgs and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert len(imgs) == 2 * 5  # per backend: box plots, reliability, risk–coverage, decomposition, cost
    assert "could not be built" not in html

    store = ResultStore(app_store)
    df = store.metrics_frame()
    for backend in ("unet", "litemedsam"):
        assert f"Backend: {backend}" in html and f"Backend: {backend}" in md
        assert (out / f"{backend}_metrics.png").stat().st_size > 10_000
        queue = pd.read_csv(out / f"review_queue_{backend}.csv")
        assert set(queue["slice_id"]) <= set(df["slice_id"]) and set(queue["outcome"]) <= {"caught", "missed",
                                                                                            "false_alarm", "pass"}
    for metric in METRIC_NAMES:
        assert f"<th>{METRIC_LABELS[metric]}</th>" in html and f" {METRIC_LABELS[metric]} |" in md
    runs = store.runs()
    assert len(runs) == 2
    for sha in runs["weights_sha256"]:
        assert sha and len(sha) == 64 and sha in html and sha in md
    for run_id in runs["run_id"]:
        assert f"Job spec of run {run_id}" in html
    # every figure the Markdown names is there
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / name).is_file(), name

    # a few numbers, as the report prints them: U-Net normal median Dice, the val-patient note
    from segunc.report.doc import fmt_num

    med = df[(df["backend"] == "unet") & (df["mode"] == "normal")]["dice"].median()
    assert fmt_num(med, 3) in html
    assert "only 1 val patient(s)" in html  # the fixture's three slices come from one patient: in-sample queue
    assert "AUROC (pooled)" in html and "Spearman" in html and "AURC" in html
    # Normal's variance / MI (zero by construction) are not scored as error detectors, and read n/a in the ρ table
    assert not re.search(r"\|\s*Normal\s*\|\s*(variance|MI)\s*\|", md) and re.search(r"\|\s*Normal\s*\|\s*entropy\s*\|", md)
    assert "n/a" in md


def test_report_without_results_exits_2(app_store, tmp_path, capsys):
    from segunc.store import ResultStore

    missing = tmp_path / "no_store"
    assert _report(tmp_path / "a", missing) == 2
    err = capsys.readouterr().err
    assert "no results store" in err and "python -m segunc run" in err and not missing.exists()

    ResultStore(tmp_path / "empty")
    assert _report(tmp_path / "b", tmp_path / "empty") == 2
    err = capsys.readouterr().err
    assert "no results in the results store" in err and "python -m segunc run --split val" in err
    assert not (tmp_path / "b" / "report.html").exists()

    # the fixture holds val only: a test report names the split, what the store has, and what to run
    assert main(["report", "--split", "test", "--out", str(tmp_path / "c"), "--cache", str(app_store), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no results for split 'test'" in err and "val (36)" in err and "python -m segunc run --split test" in err
    assert main(["report", "--split", "val", "--out", str(tmp_path / "d"), "--cache", str(app_store), "--quiet",
                 "--backend", "medsam"]) == 2
    assert "backend(s) medsam" in capsys.readouterr().err


# --------------------------------------------------------------------- stored error stats
def test_stored_error_stats_match_the_maps_and_cache(app_store, lgg_root, tmp_path):
    """Pooled AUROC from the cached per-result histograms vs sklearn on every pixel of the stored maps."""
    from segunc.analysis import error_map, stored_error_stats
    from segunc.analysis.stored import mask_path_of
    from segunc.data import load_mask
    from segunc.store import ResultStore

    root = tmp_path / "store"
    shutil.copytree(app_store, root, ignore=shutil.ignore_patterns("analysis", "locks", "logs"))
    store = ResultStore(root)
    df = store.metrics_frame()
    first = stored_error_stats(store, df["key"].tolist(), lgg_root)
    assert first.computed == len(df) and first.cached == 0 and not first.missing
    again = stored_error_stats(store, df["key"].tolist(), lgg_root)
    assert again.cached == len(df) and again.computed == 0
    pd.testing.assert_frame_equal(first.frame, again.frame)

    pooled = again.pooled(df).set_index(["backend", "mode", "map"])
    images = dict(store.con.execute("SELECT key, image FROM results").fetchall())
    for backend, mode in (("unet", "tta"), ("litemedsam", "mc_dropout")):
        g = df[(df["backend"] == backend) & (df["mode"] == mode)]
        u, e = [], []
        for key in g["key"]:
            maps = store.load_maps(key)
            u.append(maps["entropy"].ravel())
            e.append(error_map(maps["mask"], load_mask(mask_path_of(lgg_root, images[key]))).ravel())
        ref = roc_auc_score(np.concatenate(e), np.concatenate(u))
        # exact up to pairs sharing a histogram bin, which count as ties: |error| <= ½ Σ n⁺_b n⁻_b / (P N)
        pos = sum(again.hists[k]["entropy"][0] for k in g["key"]).astype(float)
        neg = sum(again.hists[k]["entropy"][1] for k in g["key"]).astype(float)
        bound = 0.5 * float((pos * neg).sum()) / (pos.sum() * neg.sum())
        diff = abs(pooled.loc[(backend, mode, "entropy"), "pooled_auroc"] - ref)
        assert pos.sum() == np.concatenate(e).sum() and diff <= bound + 1e-12 and diff < 0.01
        assert pooled.loc[(backend, mode, "entropy"), "n_slices"] == N_SLICES
    # the single pass has no spread: variance and MI carry no ranking (AUROC exactly ½)
    assert pooled.loc[("unet", "normal", "variance"), "pooled_auroc"] == 0.5

    # no masks for a result → listed as missing, the others still scored
    bad = stored_error_stats(store, df["key"].tolist()[:2], tmp_path / "nowhere", cache=False)
    assert len(bad.missing) == 2 and bad.frame.empty


def test_review_outcome_picks_on_val_and_splits_val_by_patient():
    from segunc.analysis import patient_halves, review_outcome

    rows = []
    for split, patients in (("val", ["A", "B", "C", "D"]), ("test", ["E", "F"])):
        for p in patients:
            for k, (score, dice) in enumerate([(0.9, 0.2), (0.5, 0.6), (0.3, 0.9), (0.1, 0.95)]):
                rows.append({"slice_id": f"{p}_{k}", "patient_id": p, "split": split, "mean_entropy": score + 0.01 * k,
                             "dice": dice})
    frame = pd.DataFrame(rows)
    out = review_outcome(frame, "test", target_recall=1.0)
    assert out.note == "" and "picked on val, applied to test" in out.scheme
    assert out.calibration.n_slices == 16 and out.calibration.recall == 1.0
    ev = out.evaluation
    assert ev.n_slices == 8 and ev.n_bad == 4 and sorted(ev.caught) == ["E_0", "E_1", "F_0", "F_1"]
    assert ev.threshold == pytest.approx(0.51)  # the smallest bad score on val (0.5 + 0.01·1)

    a, b = patient_halves(["A", "B", "C", "D"])
    half = review_outcome(frame, "val", target_recall=1.0)
    assert "patient halves" in half.scheme and half.note == ""
    assert set(half.calibration.frame["patient_id"]) == set(a) and set(half.evaluation.frame["patient_id"]) == set(b)

    one = review_outcome(frame[frame["patient_id"] == "A"], "val")
    assert "in-sample" in one.scheme and "only 1 val patient" in one.note and one.evaluation.n_slices == 4
    none_bad = review_outcome(frame.assign(dice=0.99), "test")
    assert none_bad.evaluation is None and "no slice with Dice < 0.7" in none_bad.note
    assert np.isnan(none_bad.summary()["recall"])


# ------------------------------------------------------------------------------- the page
TABS = ["Error detection", "Review queue", "Aleatoric vs epistemic", "Tumour-free & cost"]


def test_review_page_every_tab(app_env, app_store, lgg_root):
    from segunc.analysis import applicable_rows, stored_error_stats
    from segunc.store import ResultStore

    store = ResultStore(app_store)
    df = store.metrics_frame()
    for tab in TABS:
        at = open_page("review", state={"rv_tab": tab})
        assert_clean(at)
        assert [t.value for t in at.title] == ["Review & errors"]
        if tab == "Error detection":
            shown = at.dataframe[0].value
            ref = applicable_rows(stored_error_stats(store, df["key"].tolist(), lgg_root).pooled(df), "map")
            assert len(shown) == len(ref) == 2 * (len(MODES) * 3 - 2)  # Normal has no variance / MI to score
            np.testing.assert_allclose(np.sort(shown["pooled_auroc"].to_numpy(float)),
                                       np.sort(ref["pooled_auroc"].to_numpy(float)))
            assert len(at.get("plotly_chart")) == 1  # risk–coverage
            rho = at.dataframe[1].value
            assert len(rho) == 2 * len(MODES) and "entropy · mask + 5 px" in rho.columns
            var_cols = [c for c in rho.columns if c.startswith(("variance", "mutual information"))]
            normal = rho[rho["mode"] == "Normal"]
            assert var_cols and len(normal) == 2 and (normal[var_cols] == "n/a").all().all()  # not "None"
            assert not rho.isna().any().any() and (rho[rho["mode"] != "Normal"][var_cols] != "n/a").all().all()
        elif tab == "Review queue":
            queue = at.dataframe[0].value
            assert len(queue) == N_SLICES and queue["rank"].tolist() == [1, 2, 3]
            metrics = {m.label: m.value for m in at.metric}
            assert metrics["Flagged"].endswith(f"/ {N_SLICES}")
            assert any("only 1 val patient" in w.value.lower() for w in at.warning)
        elif tab == "Aleatoric vs epistemic":
            dec = at.dataframe[0].value
            assert len(dec) == 2 * len(MODES)
            assert (dec.loc[dec["mode"] == "Normal", "epistemic_image_mean"] == 0).all()
        else:
            assert any("No tumour-free slices" in i.value for i in at.info)
            cost = at.dataframe[0].value
            assert len(cost) == 2 * len(MODES) and (cost["seconds_median"] > 0).all()


def test_review_queue_row_opens_the_slice(app_env, app_store):
    df = store_frame(app_store)
    at = open_page("review", state={"rv_tab": "Review queue", "rv_backend": "litemedsam", "rv_mode": "tta"})
    assert_clean(at)
    queue = at.dataframe[0].value
    at.session_state["rv_queue"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert_clean(at)
    assert [t.value for t in at.title] == ["Compare a slice"]
    assert at.session_state["cmp_slice"] == queue["slice_id"].iloc[1] and queue["slice_id"].iloc[1] in set(df["slice_id"])
    assert at.query_params["focus"] in (["litemedsam:tta"], "litemedsam:tta")


def test_review_page_on_an_empty_store(tmp_path, app_env, monkeypatch):
    monkeypatch.setenv("SEGUNC_CACHE", str(tmp_path / "empty"))
    at = open_page("review")
    assert_clean(at)
    assert any("store is empty" in i.value for i in at.info)


def test_review_page_without_masks_keeps_the_slice_analyses(tmp_path, app_env, app_store, monkeypatch):
    import shutil

    copy = tmp_path / "store"  # the store without its cached analyses: nothing to score the maps against
    shutil.copytree(app_store, copy, ignore=shutil.ignore_patterns("analysis", "locks"))
    monkeypatch.setenv("SEGUNC_CACHE", str(copy))
    monkeypatch.setenv("SEGUNC_DATA", str(tmp_path / "no_such_folder"))
    at = open_page("review")
    assert not at.exception and not at.error
    assert any("ground-truth masks" in w.value and "no_such_folder" in w.value for w in at.warning)
    assert len(at.dataframe) == 2  # Spearman ρ and AURC still shown
