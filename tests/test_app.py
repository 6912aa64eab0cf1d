"""Every page of the Streamlit app, with streamlit.testing.v1.AppTest, over a real results store
(tests/conftest_app.py: the real pipeline on real val slices): renders without an exception or an
error box, and shows what the store holds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest_app import APP, MODES, N_SLICES, SAMPLES, app_env, app_store  # noqa: F401

pytestmark = pytest.mark.app

PAGES = ["home", "dataset", "run", "compare", "metrics", "calibration"]
TIMEOUT = 300


def open_page(page: str, query: dict | None = None, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    if page != "home":
        at.switch_page(f"pages/{page}.py")
    at.query_params.update(query or {})
    for k, v in (state or {}).items():
        at.session_state[k] = v
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def store_frame(app_store) -> pd.DataFrame:
    from segunc.store import ResultStore

    return ResultStore(app_store).metrics_frame()


def n_images(at: AppTest) -> int:
    return len(at.get("image"))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(app_env, page):
    at = open_page(page)
    assert_clean(at)
    assert len(at.title) == 1


def test_home_reports_data_models_and_store(app_env, app_store):
    at = open_page("home")
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Results"] == str(2 * N_SLICES * len(MODES)) and metrics["Slices"] == str(N_SLICES)
    models = at.dataframe[1].value.set_index("backend")
    assert models.loc["unet", "ready"] and models.loc["litemedsam", "ready"]
    assert not models.loc["medsam", "ready"]
    text = " ".join(m.value for m in at.markdown)
    assert "Missing weights" in text and "medsam_vit_b.pth" in text  # the backend's own weights_hint
    counts = at.dataframe[2].value
    assert (counts.to_numpy() == N_SLICES).all()


def test_dataset_browses_a_patient(app_env):
    at = open_page("dataset")
    assert_clean(at)
    assert n_images(at) == 4  # three channels + ground-truth overlay
    assert len(at.get("plotly_chart")) == 1
    patients = at.selectbox(key="ds_patient").options
    at.selectbox(key="ds_patient").set_value(at.selectbox(key="ds_patient").options[1].split("  ·")[0]).run()
    assert_clean(at)
    at.toggle(key="ds_tumour_only").set_value(True).run()
    assert_clean(at)
    assert len(patients) >= 2


# Compare's own tests (layout, deep link, stepping, linked filters): tests/test_compare_page.py


def test_metrics_distributions_table_and_tests(app_env, app_store):
    from segunc.analysis import stats

    df = store_frame(app_store)
    at = open_page("metrics")
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 1  # Dice first: one chart, drawn at once
    assert at.selectbox(key="m_metric").value == "dice"
    at = open_page("metrics", state={"m_metric": "all"})
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 9  # every metric

    at = open_page("metrics", state={"metrics_tab": "Summary table"})
    assert_clean(at)
    shown = at.dataframe[0].value
    ref = stats.describe(df, n_resamples=2000)
    assert len(shown) == len(ref) == 2 * len(MODES) * 9
    np.testing.assert_allclose(shown["median"].to_numpy(), ref["median"].to_numpy())
    np.testing.assert_allclose(shown["ci_low"].to_numpy(), ref["ci_low"].to_numpy(), equal_nan=True)
    latex = [c.value for c in at.code]
    assert latex and r"\begin{tabular}" in latex[0]

    at = open_page("metrics", state={"metrics_tab": "Significance tests"})
    assert_clean(at)
    fr = stats.friedman(df, "dice", "unet")
    values = {m.label: m.value for m in at.metric}
    assert values["Blocks (complete)"] == str(N_SLICES)
    assert values[f"χ² (df = {len(MODES) - 1})"] == f"{fr.statistic:.3f}"
    pw = at.dataframe[0].value
    ref_pw = stats.pairwise_wilcoxon(df, "dice", "unet")
    assert len(pw) == len(ref_pw) == len(MODES) * (len(MODES) - 1) // 2
    np.testing.assert_allclose(pw["pvalue"].to_numpy(dtype=float), ref_pw["pvalue"].to_numpy(dtype=float), equal_nan=True)
    at.toggle(key="m_t_pp").set_value(True).run()
    assert_clean(at)


def test_calibration_pooled_ece_matches_store(app_env, app_store):
    from segunc.store import ResultStore

    store = ResultStore(app_store)
    df = store.metrics_frame()
    at = open_page("calibration")
    assert_clean(at)
    pooled = at.dataframe[0].value.set_index(["backend", "mode"])
    for (b, m), g in df.groupby(["backend", "mode"]):
        ref = store.reliability(g["key"].tolist())
        assert pooled.loc[(b, m), "pooled ECE"] == pytest.approx(ref["ece"], abs=1e-12)
        assert pooled.loc[(b, m), "pixels"] == N_SLICES * 256 * 256
    assert len(at.get("plotly_chart")) == 1  # the reliability grid (the other tab is drawn when opened)
    at = open_page("calibration", state={"cal_tab": "NLL, ECE and Brier"})
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 4  # calibration bars, three box plots
    desc = at.dataframe[0].value
    assert len(desc) == len(df.groupby(["backend", "mode"]))  # one row per backend × mode


def test_run_page_queues_a_job(app_env, app_store, monkeypatch):
    """Queue the fixture's own sweep from the form: the same spec is the same job (already done)."""
    import segunc.runner.jobs as jobs

    from segunc.store import ResultStore

    started = []
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: started.append(a) or True)
    before = set(jobs.list_jobs(ResultStore(app_store))["job_id"])
    at = open_page("run")
    assert_clean(at)
    at.number_input(key="run_T").set_value(SAMPLES)
    at.number_input(key="run_limit").set_value(N_SLICES)
    at.toggle(key="run_spread").set_value(False)  # the fixture's sweep takes the first N
    at.multiselect(key="run_backends").set_value(["unet"])
    at.run()
    cost = at.dataframe[0].value
    assert cost.loc[0, "slices"] == N_SLICES and cost.loc[0, "backend"] == "unet"
    at.button(key="run_queue").click().run()
    assert_clean(at)
    assert started, "the page did not ask for a worker"
    after = jobs.list_jobs(ResultStore(app_store)).set_index("job_id")
    assert set(after.index) == before  # the same spec as the fixture's sweep: attached to that job
    job = at.session_state["run_last"][0]
    assert after.loc[job, "state"] == "done" and after.loc[job, "backend"] == "unet"
    assert any("done" in m.value for m in at.markdown)


def test_result_pages_on_an_empty_store(tmp_path, app_env, monkeypatch):
    monkeypatch.setenv("SEGUNC_CACHE", str(tmp_path / "empty"))
    for page in ("home", "compare", "metrics", "calibration", "run"):
        at = open_page(page)
        assert_clean(at)
        if page in ("compare", "metrics", "calibration"):
            assert any("store is empty" in i.value for i in at.info), page


def test_pages_without_data_explain_it(tmp_path, app_env, monkeypatch):
    monkeypatch.setenv("SEGUNC_DATA", str(tmp_path / "no_such_folder"))
    for page in ("home", "dataset"):
        at = open_page(page)
        assert not at.exception
        assert any("no_such_folder" in w.value for w in at.warning), page
    at = open_page("compare")
    assert not at.exception
    assert at.error and "could not be shown" in at.error[0].value and "no_such_folder" in at.error[0].value


def test_a_failing_section_becomes_a_message(app_env, monkeypatch):
    from segunc import viz

    def boom(*a, **k):
        raise RuntimeError("figure backend exploded")

    monkeypatch.setattr(viz, "distribution_figure", boom)
    at = open_page("metrics")
    assert not at.exception
    assert len(at.error) == 1
    msg = at.error[0].value
    assert "The distributions could not be shown" in msg and "RuntimeError: figure backend exploded" in msg


@pytest.fixture
def sample_env(tmp_path, app_env, monkeypatch):
    """No data folder configured and none at the default: the app falls back to the shipped sample."""
    from segunc import settings

    monkeypatch.delenv("SEGUNC_DATA", raising=False)
    monkeypatch.setattr(settings, "DEFAULT_DATA", tmp_path / "no_default" / "kaggle_3m")
    monkeypatch.setenv("SEGUNC_CACHE", str(tmp_path / "fresh_store"))
    assert settings.using_sample() and settings.app_data_dir() == settings.SAMPLE_DATA
    return tmp_path / "fresh_store"


def test_fresh_machine_reads_the_labelled_sample(sample_env):
    from segunc.data.sample import SAMPLE_LABEL, sample_data_dir

    assert sample_data_dir() is not None
    for page in ("home", "dataset", "run", "metrics"):
        at = open_page(page)
        assert_clean(at)
        assert any("Sample data" in i.value and SAMPLE_LABEL in i.value for i in at.info), page
    at = open_page("home")
    data_metrics = [(m.label, m.value) for m in at.metric][:2]  # the data section's (the store's come later)
    assert data_metrics == [("Patients", "6"), ("Slices", "42")]  # the sample, not a missing-data warning
    assert not any("No LGG data" in w.value for w in at.warning)


def test_quick_demo_button_queues_the_sample_sweeps(sample_env, monkeypatch):
    import segunc.runner.jobs as jobs
    from segunc import settings
    from segunc.runner.quick import QUICK_SAMPLES, QUICK_SLICES
    from segunc.store import ResultStore

    started = []
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: started.append(a) or True)
    at = open_page("home")
    assert_clean(at)
    btn = at.button(key="home_demo")
    assert not btn.disabled
    btn.click().run()
    assert_clean(at)
    assert started, "the quick demo did not ask for a worker"
    queued = jobs.list_jobs(ResultStore(sample_env)).set_index("job_id")
    assert sorted(queued["backend"]) == ["litemedsam", "unet"]  # LiteMedSAM ships; the U-Net's weights are found
    assert set(at.session_state["home_demo_jobs"]) == set(queued.index)
    from segunc.store import jobs as job_table

    for job_id in queued.index:
        spec = jobs.JobSpec.from_dict(json.loads(job_table.job_spec_json(ResultStore(sample_env).con, job_id)))
        assert Path(spec.data).resolve() == settings.SAMPLE_DATA.resolve()
        assert spec.split == "val" and spec.limit == QUICK_SLICES and spec.spread
        assert spec.pipeline_config().samples == QUICK_SAMPLES
        assert spec.mode_list() == MODES
        st_ = jobs.job_status(ResultStore(sample_env), job_id)
        assert st_["state"] == "queued" and st_["total"] == QUICK_SLICES
    assert at.button(key="home_demo").disabled  # not clickable twice
    assert len(at.get("progress")) == 2


def test_run_page_spreads_slices_over_patients_and_says_how_many(app_env, lgg_root):
    from segunc.runner.sweep import select_slices

    at = open_page("run")
    assert_clean(at)
    assert at.toggle(key="run_spread").value is True  # the default: spread, like the CLI's --spread
    at.number_input(key="run_limit").set_value(12)
    at.multiselect(key="run_backends").set_value(["unet"])
    at.run()
    assert_clean(at)
    cost = at.dataframe[0].value
    spread = select_slices(lgg_root, "val", limit=12, spread=True)
    first = select_slices(lgg_root, "val", limit=12)
    n_pat = len({r.patient_id for r in spread})
    assert n_pat > len({r.patient_id for r in first})  # spreading reaches more patients than the first 12
    assert cost.loc[0, "slices"] == 12 and cost.loc[0, "patients"] == n_pat
    assert any(f"from **{n_pat} patient(s)**" in c.value for c in at.caption)


def test_run_page_refuses_an_empty_split(app_env):
    at = open_page("run")
    at.selectbox(key="run_split").set_value("test")  # the shared LGG folder has no test patients
    at.multiselect(key="run_backends").set_value(["unet"])
    at.run()
    assert not at.exception
    assert any("**test** split" in w.value and "nothing to queue" in w.value for w in at.warning)
    assert at.button(key="run_queue").disabled


def test_run_page_queue_is_not_clickable_twice(tmp_path, app_env, monkeypatch):
    import segunc.runner.jobs as jobs
    from segunc.store import ResultStore

    monkeypatch.setenv("SEGUNC_CACHE", str(tmp_path / "store"))
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: True)  # nothing runs: the job stays queued
    at = open_page("run")
    at.number_input(key="run_T").set_value(2)
    at.number_input(key="run_limit").set_value(2)
    at.multiselect(key="run_backends").set_value(["unet"])
    at.run()
    assert not at.button(key="run_queue").disabled
    at.button(key="run_queue").click().run()
    assert_clean(at)
    queued = jobs.list_jobs(ResultStore(tmp_path / "store"))
    assert len(queued) == 1 and queued.loc[0, "state"] == "queued"
    assert at.button(key="run_queue").disabled  # the same sweep is pending
    assert any("now" not in m.value and "queued" in m.value for m in at.markdown)
    assert len(at.get("progress")) == 1


@pytest.fixture
def uneven_store(tmp_path, app_env, app_store, monkeypatch):
    """A copy of the fixture store where U-Net TTA lacks one slice: the modes cover different slices."""
    import shutil
    import sqlite3

    root = tmp_path / "uneven"
    shutil.copytree(app_store, root, ignore=shutil.ignore_patterns("locks", "logs"))
    df = store_frame(app_store)
    gone = sorted(df["slice_id"].unique())[0]
    con = sqlite3.connect(root / "store.sqlite")
    keys = [r[0] for r in con.execute("SELECT key FROM results WHERE backend = 'unet' AND mode = 'tta' AND slice_id = ?",
                                      (gone,))]
    assert keys
    con.executemany("DELETE FROM run_results WHERE key = ?", [(k,) for k in keys])
    con.executemany("DELETE FROM results WHERE key = ?", [(k,) for k in keys])
    con.commit()
    con.close()
    monkeypatch.setenv("SEGUNC_CACHE", str(root))
    return root, gone


def test_result_pages_default_to_the_latest_runs_slices(app_env):
    at = open_page("metrics")
    assert_clean(at)
    assert at.selectbox(key="f_split").value == "latest run"
    assert not any("cover different slices" in w.value for w in at.warning)


def test_metrics_warns_when_modes_cover_different_slices_and_can_restrict(uneven_store):
    root, gone = uneven_store
    at = open_page("metrics")
    assert not at.exception
    warn = [w.value for w in at.warning if "cover different slices" in w.value]
    assert warn and f"unet TTA {N_SLICES - 1}" in warn[0]
    assert any(f"{len(MODES) * 2 * N_SLICES - 1:,} results" in c.value for c in at.caption)
    at.toggle(key="f_common").set_value(True).run()
    assert_clean(at)
    assert not any("cover different slices" in w.value for w in at.warning)
    assert any(f"{len(MODES) * 2 * (N_SLICES - 1):,} results · {N_SLICES - 1:,} slices" in c.value for c in at.caption)


def test_metrics_box_plots_name_n_per_box_and_the_report_command(uneven_store):
    at = open_page("metrics", state={"m_metric": "dice"})
    assert not at.exception
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert f"n = {N_SLICES - 1} · {N_SLICES}" in next(t for t in ticks if t.startswith("TTA"))  # unet · litemedsam
    assert f"n = {N_SLICES} · {N_SLICES}" in next(t for t in ticks if t.startswith("Normal"))
    assert any("python -m segunc report" in c.value for c in at.caption)


def test_tests_on_few_patients_carry_a_caution(app_env, app_store):
    from segunc.analysis import stats

    df = store_frame(app_store)
    n_pat = df["patient_id"].nunique()
    assert n_pat < stats.MIN_PATIENTS  # the fixture's slices come from few patients
    at = open_page("metrics", state={"metrics_tab": "Significance tests"})
    assert_clean(at)
    caution = stats.few_patients_caution(n_pat, "This Friedman test")
    assert any(caution in w.value for w in at.warning)
    assert any("This Wilcoxon test rests on" in w.value for w in at.warning)


def test_review_explains_rho_cautions_and_shows_na(app_env, app_store):
    from segunc.analysis import decomposition_summary

    at = open_page("review")
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "Spearman ρ is the rank correlation" in captions and "−1 the reverse" in captions

    at = open_page("review", state={"rv_tab": "Aleatoric vs epistemic"})
    assert not at.exception
    dec = next(d.value for d in at.dataframe if "note" in d.value.columns)
    crf = dec[dec["mode"].astype(str).str.contains("CRF", case=False)]
    assert len(crf) == 2 and crf["aleatoric_image_mean"].isna().all()  # never a number for the CRF row (shown as n/a)
    assert crf["note"].str.startswith("n/a").all()
    ref = decomposition_summary(store_frame(app_store))
    assert ref.loc[ref["mode"] == "crf", "aleatoric_image_mean"].isna().all()

    at = open_page("review", state={"rv_tab": "Review queue"})
    assert not at.exception
    assert any("This review threshold rests on" in w.value for w in at.warning), [w.value for w in at.warning]


def test_review_leaves_out_what_does_not_apply(app_env, app_store):
    """Normal (one pass) × variance / mutual information is not listed: no pooled AUROC row, no ρ, no review score."""
    at = open_page("review")
    assert_clean(at)
    pooled = next(d.value for d in at.dataframe if "pooled_auroc" in d.value.columns)
    normal = pooled[pooled["mode"] == "Normal"]
    assert len(normal) == 2 and set(normal["map"]) == {"entropy"}, normal  # one row per backend
    assert set(pooled.loc[pooled["mode"] == "MC dropout", "map"]) == {"variance", "entropy", "mutual information"}
    rho = next(d.value for d in at.dataframe if "entropy · image mean" in d.value.columns)
    row = rho[rho["mode"] == "Normal"]
    assert (row["variance · image mean"] == "n/a").all() and (row["mutual information · image mean"] == "n/a").all()
    at = open_page("review", state={"rv_tab": "Review queue", "rv_mode": "normal"})
    assert_clean(at)
    options = at.selectbox(key="rv_score").options
    assert options and not any("variance" in o or "mutual" in o for o in options), options
    at = open_page("review", state={"rv_tab": "Review queue", "rv_mode": "tta"})
    assert any("mutual" in o for o in at.selectbox(key="rv_score").options)


def test_lgg_size_is_said_one_way(tmp_path, app_env, monkeypatch):
    from segunc import fetch

    size = fetch.ASSETS["lgg"].size_text
    assert "0.7 GB" in size and "3 GB" in size  # the archive and the unpacked folders (see fetch.ASSETS)
    docs = (APP.parent / "docs" / "downloads.md").read_text()
    assert size in docs and "~1 GB" not in docs
    monkeypatch.setenv("SEGUNC_DATA", str(tmp_path / "no_such_folder"))
    at = open_page("home")
    text = " ".join(m.value for m in at.markdown)
    assert size in text and "GB download;" not in text


def test_sidebar_has_one_results_heading(app_env):
    at = open_page("metrics")
    assert_clean(at)
    assert "Results" not in [h.value for h in at.sidebar.subheader]
    assert "Filters" in [h.value for h in at.sidebar.subheader]
