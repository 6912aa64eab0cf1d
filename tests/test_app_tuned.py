"""Tuned profiles in the app (AppTest over a copy of the real fixture store): the Run page lists the
store's tuned.json files, refuses one tuned for another backend, and queues a job with the same
settings (so the same result keys) as ``--tuned``; Metrics shows that job's rows as tuned on val."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest_app import SAMPLES, app_env, app_store  # noqa: F401
from tests.test_app import assert_clean, open_page

pytestmark = pytest.mark.app


@pytest.fixture
def tuned_store(tmp_path, app_env, app_store, unet_weights, monkeypatch):
    """A copy of the fixture store with ``tuned/unet_val.json`` (settings for the shared U-Net weights)."""
    from segunc.runner.jobs import JobSpec
    from segunc.runner.tune import TUNED_FOLDER

    root = tmp_path / "store"
    shutil.copytree(app_store, root, ignore=shutil.ignore_patterns("locks", "logs"))
    doc = {"profile": "tuned on val", "tuned_at": 1764614400.0, "backend": "unet", "backend_options": {},
           "weights_sha256": JobSpec(backend="unet", weights=unet_weights).weights_sha256(), "split": "val",
           "slices": ["a", "b"], "settings": {
               "temperature": 1.25,
               "fusion": {"weighting": "exponential", "lam": 5.0, "alpha": 1.0, "threshold": "fixed",
                          "threshold_params": {"value": 0.4}},
               "crf": {"sdims": 10.0, "schan": 13.0, "compat_bilateral": 3.0, "gaussian_sxy": 3.0,
                       "compat_gaussian": 0.0, "iterations": 5}}}
    path = root / TUNED_FOLDER / "unet_val.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    monkeypatch.setenv("SEGUNC_CACHE", str(root))
    return root, path.resolve()


def test_run_page_applies_a_tuned_profile_and_metrics_labels_its_rows(tuned_store, lgg_root, monkeypatch):
    import segunc.runner.jobs as jobs
    from segunc.cli import build_parser
    from segunc.cli.common import config_from_args
    from segunc.pipeline import all_mode_names
    from segunc.runner.worker import run_sweep
    from segunc.store import ResultStore
    from segunc.store import jobs as job_table

    root, path = tuned_store
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: True)  # the job is run below, in this process
    at = open_page("run")
    assert_clean(at)
    assert "unet_val.json — unet, tuned 2025-12-01 18:40 UTC on 2 val slices" in at.selectbox(key="run_tuned").options
    at.selectbox(key="run_tuned").set_value(str(path))
    at.number_input(key="run_T").set_value(SAMPLES)
    at.number_input(key="run_limit").set_value(1)
    at.toggle(key="run_spread").set_value(False)
    at.multiselect(key="run_modes").set_value(["normal"])
    at.multiselect(key="run_backends").set_value(["litemedsam"])  # tuned for the U-Net: refused, nothing to queue
    at.run()
    assert not at.exception
    refusal = [e.value for e in at.error]
    assert any("does not fit" in e and "tuned for backend 'unet', not 'litemedsam'" in e for e in refusal), refusal
    assert not [b for b in at.button if b.key == "run_queue"]
    at.multiselect(key="run_backends").set_value(["unet"])
    at.run()
    assert_clean(at)
    assert any("Tuned on val" in i.value and "temperature 1.25" in i.value for i in at.info)
    assert not [w for w in at.warning if "without tumour" in w.value]  # a fixed threshold: fine on whole volumes
    at.button(key="run_queue").click().run()
    assert_clean(at)
    job_id = at.session_state["run_last"][0]
    store = ResultStore(root)
    spec = jobs.JobSpec.from_dict(json.loads(job_table.job_spec_json(store.con, job_id)))
    assert spec.profile == "tuned on val (unet_val.json)"
    # the same settings as `--tuned`, hence the same result key of every mode
    argv = ["run", "--backend", "unet", "--data", str(lgg_root), "--samples", str(SAMPLES), "--limit", "1",
            "--tuned", str(path)]
    cli = config_from_args(build_parser().parse_args(argv))
    sha = spec.weights_sha256()
    for mode in all_mode_names():
        assert jobs._material_rest("unet", spec.pipeline_config(), mode, sha) == \
            jobs._material_rest("unet", cli, mode, sha), mode
    assert spec.pipeline_config().temperature == 1.25 and spec.pipeline_config().crf.compat_bilateral == 3.0

    _, counts = run_sweep(store, spec, progress=False)  # what the worker would do: one U-Net pass
    assert counts.computed == 1 and counts.failed == 0

    # --preset paper computes Normal as the defaults do: the sweep finds the stored result (one key)
    from segunc.cli.common import spec_from_args
    paper = spec_from_args(build_parser().parse_args(
        ["run", "--backend", "unet", "--weights", spec.weights, "--data", str(lgg_root), "--samples", str(SAMPLES),
         "--limit", "1", "--modes", "normal", "--preset", "paper"]))
    paper_job, counts = run_sweep(store, paper, progress=False)
    assert counts.computed == 0 and counts.skipped == 1 and counts.failed == 0
    links = store.run_links()
    paper_keys = set(links.loc[links["run_id"] == paper_job, "key"])
    assert len(paper_keys) == 1 and paper_keys <= set(links.loc[links["run_id"] != paper_job, "key"])

    at = open_page("metrics", state={"metrics_tab": "Summary table"})
    assert_clean(at)
    shown = at.dataframe[0].value
    rows = shown[(shown["backend"] == "unet") & (shown["mode"] == "normal")]
    # default rows, tuned ones and the paper preset's (the stored default result, asked for by that run)
    assert sorted(set(rows["profile"])) == ["", "paper preset", "tuned on val"]
    nll = rows[rows["metric"] == "NLL"].set_index("profile")
    assert nll.loc["paper preset", "n"] == nll.loc["", "n"] == 1
    assert nll.loc["paper preset", "median"] == nll.loc["", "median"] != nll.loc["tuned on val", "median"]
    assert any("Not segunc's defaults" in c.value for c in at.caption)
    # the tuned rows are shown apart, so nothing is pooled across settings: no warning that it is
    assert not [w.value for w in at.warning if "several settings" in w.value]
    at = open_page("calibration")  # a page that pools them says so
    assert any("several settings" in w.value for w in at.warning)
    # Compare shows one result per mode (the newest: the tuned one here) and says which
    slice_id = store.metrics_frame(run_ids=[job_id])["slice_id"].iloc[0]
    at = open_page("compare", query={"slice": slice_id})
    assert_clean(at)
    titles = [m.value for m in at.markdown]
    assert any("Normal (tuned on val)" in t for t in titles), titles
    table = at.dataframe[0].value
    assert "profile" in table.columns and "tuned on val" in set(table["profile"])
    at = open_page("review")  # its queue uses the newest result of each mode too, and says so
    assert_clean(at)
    assert any("non-default settings (1 tuned on val)" in i.value for i in at.info), [i.value for i in at.info]
    at = open_page("metrics", state={"m_metric": "dice"})
    assert_clean(at)
    figure = at.get("plotly_chart")[0].proto.spec
    assert "Normal (tuned on val)" in figure


def test_run_page_warns_when_a_tumour_slice_profile_meets_whole_volumes(tuned_store):
    """An Otsu fusion tuned on tumour slices only marks background on slices without tumour: the Run
    page says so when *Tumour slices only* is switched off."""
    root, path = tuned_store
    doc = json.loads(path.read_text())
    doc["settings"]["fusion"].update(threshold="otsu", threshold_params={})
    otsu = path.with_name("unet_otsu.json")
    otsu.write_text(json.dumps({**doc, "all_slices": False}))
    at = open_page("run")
    at.selectbox(key="run_tuned").set_value(str(otsu.resolve()))
    at.run()
    assert_clean(at)
    assert not [w for w in at.warning if "without tumour" in w.value]  # tumour slices, as tuned
    at.toggle(key="run_tumour").set_value(False)
    at.run()
    assert_clean(at)
    assert any("without tumour are included" in w.value and "'otsu' threshold" in w.value for w in at.warning)
