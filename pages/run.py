"""Run: choose backends × modes × parameters (the paper's defaults), see the cost, queue, watch progress."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from pages._access import principal
from pages._data import store, sample_notice
from pages._errors import explain, guard
from pages._format import fmt_seconds
from pages._settings import ensure_app, user_path
from pages._backends import backend_readiness
from pages._cluster import cluster_section, sent_pending
from segunc import settings
from segunc.analysis.profiles import tuned_choice_label, tuned_settings_text
from segunc.config import (DEFAULT_MODES, FUSION_SOURCES, FUSION_THRESHOLDS, FUSION_WEIGHTINGS, PLACEMENTS,
                           STOCHASTIC_SOURCES, UNCERTAINTIES, CRFParams, FusionConfig, PipelineConfig)
from segunc.backends import available_devices
from segunc.runner.jobs import (JobSpec, cancel_job, ensure_worker, estimate_cost, job_status, list_jobs, submit_job,
                                worker_alive)
from segunc.runner.selection import mode_names, select_slices
from segunc.runner.tune import TUNED_FOLDER, apply_tuned, find_tuned, tuned_label, whole_volume_caveat
from segunc.store import ResultStore

ensure_app()

ss = st.session_state
FLIPS = {False: "original", True: "horizontal flip"}
SCALES = (0.5, 0.75, 1.0, 1.5, 2.0)
INTENSITIES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
THRESHOLD_PARAM = {"fixed": ("value", "threshold", 0.5, 0.0, 1.0, 0.05), "percentile": ("q", "percentile q", 95.0, 50.0, 99.9, 0.5),
                   "mean_std": ("k", "k (mean + k·std)", 1.0, -3.0, 3.0, 0.1)}
STATE_ICON = {"queued": ":material/schedule:", "running": ":material/autorenew:", "done": ":material/check_circle:",
              "failed": ":material/error:", "cancelled": ":material/cancel:"}


def _reset() -> None:
    for k in [k for k in ss if str(k).startswith("run_")]:
        del ss[k]


@st.cache_data(show_spinner="Estimating the cost…", ttl=120, max_entries=64)
def _estimate(spec_dict: dict, root: str) -> dict:
    """The sweep's cost (results the store holds excluded) and how many patients its slices come from."""
    spec = JobSpec.from_dict(spec_dict)
    refs = select_slices(spec.data_root(), spec.split, spec.all_slices, spec.limit, spec.patients, spec.spread)
    est = estimate_cost(spec, store=ResultStore(root), refs=refs)
    return {**est, "patients": len({r.patient_id for r in refs})}


def _ready_backends() -> tuple[list[str], dict[str, str]]:
    status = backend_readiness()
    return [n for n, why in status.items() if why is None], {n: why for n, why in status.items() if why is not None}


def _config():
    """The PipelineConfig the widgets describe."""
    thr = ss["run_thr"]
    tparams = {}
    if thr in THRESHOLD_PARAM:  # only a non-default value is a parameter (the defaults give the CLI's result keys)
        name, _, default, *_ = THRESHOLD_PARAM[thr]
        if float(ss[f"run_thr_{thr}"]) != default:
            tparams[name] = float(ss[f"run_thr_{thr}"])
    fusion = FusionConfig(source=ss["run_fsource"], sources=tuple(ss["run_fsources"]), sample_mode=ss["run_fsample"],
                          uncertainty=ss["run_func"], weighting=ss["run_weighting"], lam=float(ss["run_lam"]),
                          alpha=float(ss["run_alpha"]), threshold=thr, threshold_params=tparams)
    crf = CRFParams(sdims=float(ss["run_sdims"]), schan=float(ss["run_schan"]), compat_bilateral=float(ss["run_cbil"]),
                    gaussian_sxy=float(ss["run_gsxy"]), compat_gaussian=float(ss["run_cgau"]),
                    iterations=int(ss["run_iters"]))
    return PipelineConfig(samples=int(ss["run_T"]), seed=int(ss["run_seed"]), batch_size=int(ss["run_batch"]),
                          p=float(ss["run_p"]), placement=ss["run_placement"], sigma=float(ss["run_sigma"]),
                          tta_flips=tuple(sorted(ss["run_flips"])), tta_scales=tuple(sorted(ss["run_scales"])),
                          tta_intensities=tuple(sorted(ss["run_ints"])), jitter_px=int(ss["run_jitter"]),
                          temperature=float(ss["run_temp"]), fusion=fusion, crf=crf)


def _queue(specs: list) -> None:
    """Submit the sweeps and make sure a worker runs them (button callback)."""
    ss.pop("run_error", None)
    if not principal().can_run:  # defence in depth: viewers get neither the page nor its form
        ss["run_error"] = "this account may not queue jobs (viewer role, or demo mode)"
        return
    try:
        for spec in specs:  # the data folder a job reads must be one this app may use
            user_path(spec.data)
        ids = [spec.job_id() for spec in specs]
        if ids == ss.get("run_last") and _any_active(ids):  # a second click before the rerun: nothing new
            return
        ss["run_last"] = [submit_job(store(), spec) for spec in specs]
        ss["run_worker"] = ensure_worker(settings.store_dir(), device=specs[0].device, wait_s=10.0)
    except Exception as exc:  # noqa: BLE001 - a callback runs outside the page's guard
        ss["run_error"] = explain(exc)
        return
    if ss["run_worker"]:
        st.toast(f"Queued {len(specs)} job(s); the worker is running.", icon=":material/check:")


class ProfileRefused(ValueError):
    """The tuned profile was chosen for another backend or other weights."""


def _specs(backends: list[str], modes: list[str], config, tuned: dict | None = None) -> list:
    """One JobSpec per backend (box jitter only for the MedSAM family); a tuned profile is applied as
    ``--tuned`` applies it (:func:`~segunc.runner.tune.apply_tuned`: same settings, same result keys)."""
    out = []
    for b in backends:
        opts = {}
        if b in ("litemedsam", "medsam"):
            opts = {"channels": ss["run_channels"], "box_margin": int(ss["run_margin"])}
        bmodes = [m for m in modes if m != "box_jitter" or b in ("litemedsam", "medsam")]
        limit = int(ss["run_limit"]) or None
        spec = JobSpec(data=str(settings.app_data_dir()), backend=b, modes=bmodes, split=ss["run_split"],
                       all_slices=not ss["run_tumour"], limit=limit, config=config, backend_options=opts,
                       device=ss["run_device"], spread=bool(limit and ss["run_spread"]))
        if tuned is not None:
            path = Path(tuned["path"])
            try:
                spec.config = apply_tuned(config, tuned["doc"], backend=b, weights_sha256=spec.weights_sha256(),
                                          source=path.name)
            except ValueError as exc:
                raise ProfileRefused(str(exc)) from None
            spec.profile = tuned_label(path)
        out.append(spec)
    return out


def what_to_run() -> tuple[list[str], list[str]]:
    """Backends (only those that can run here), modes, split, slice limit and device."""
    ready, why = _ready_backends()
    st.subheader("What to run", divider="gray")
    c1, c2 = st.columns([1, 2])
    backends = c1.multiselect("Backends", ready, default=[b for b in ("unet",) if b in ready] or ready[:1], key="run_backends")
    modes = c2.multiselect("Modes", mode_names(), default=list(DEFAULT_MODES), key="run_modes",
                           help="fusion needs its source modes and crf needs fusion; both are computed as needed")
    if why:
        st.caption(f"Not ready (weights or data missing): {', '.join(why)} — see the Set-up page for how to get them.")
    c1, c2, c3, c4 = st.columns(4)
    c1.selectbox("Split", ["val", "test", "train", "all"], key="run_split")
    c2.number_input("N slices (0 = all)", 0, 100000, 0, 1, key="run_limit")
    c2.toggle("Spread over patients", value=True, key="run_spread",
              help="N slices evenly spaced over the whole selection, patient by patient (the CLI's --spread); "
                   "off: the first N (a few patients' volume edges)")
    c3.toggle("Tumour slices only", value=True, key="run_tumour", help="The paper evaluates tumour slices only")
    c4.selectbox("Device", available_devices(), key="run_device")
    return backends, modes


@st.cache_data(ttl=30, show_spinner=False, max_entries=8)
def _tuned_profiles(root: str) -> list[dict]:
    return [{**e, "path": str(e["path"])} for e in find_tuned(root)]


def tuned_profile() -> dict | None:
    """A tuned profile (``python -m segunc tune --out <store>/tuned/NAME.json``) to apply instead of the
    temperature, fusion and CRF parameters below, or None (the parameters as set)."""
    root = settings.store_dir()
    found = {e["path"]: e for e in _tuned_profiles(str(root))}
    options = ["", *found]
    if ss.get("run_tuned") not in options:
        ss.pop("run_tuned", None)
    choice = st.selectbox(
        "Post-processing profile", options, key="run_tuned",
        format_func=lambda p: "Defaults (the parameters below)" if not p else
        tuned_choice_label(Path(p).name, found[p]["doc"], found[p]["tuned_at"]),
        help=f"Settings chosen on the val split by `python -m segunc tune … --out {root / TUNED_FOLDER}/NAME.json` "
             "(also read: tuned*.json in the store folder and beside it). Applied as `--tuned` applies it.")
    entry = found.get(choice)
    if entry is None:
        if not found:
            st.caption(f"No tuned profiles yet: `python -m segunc tune --backend B --split val … --out "
                       f"{root / TUNED_FOLDER}/tuned.json` writes one here.")
        return None
    st.info(f"**Tuned on val** for **{entry['doc'].get('backend')}**: {tuned_settings_text(entry['doc'])}. These "
            "replace the temperature, fusion and CRF parameters below; the sampling parameters still apply.",
            icon=":material/tune:")
    caveat = whole_volume_caveat(entry["doc"])
    if caveat and not ss.get("run_tumour", True):
        st.warning(f"**Slices without tumour are included:** {caveat}.", icon=":material/warning:")
    return entry


def parameters() -> dict | None:
    """The pipeline's parameters in four tabs, defaults from :class:`PipelineConfig`; returns the tuned
    profile chosen, if any."""
    st.subheader("Parameters", divider="gray")
    st.button("Reset to the paper's defaults", on_click=_reset, icon=":material/restart_alt:", key="reset_btn")
    tuned = tuned_profile()
    d = PipelineConfig()
    t1, t2, t3, t4 = st.tabs(["Sampling", "Test-time augmentation", "Fusion", "CRF and models"])
    with t1:
        sampling_tab(d)
    with t2:
        tta_tab(d)
    with t3:
        fusion_tab(d)
    with t4:
        crf_and_models_tab(d)
    return tuned


def sampling_tab(d: PipelineConfig) -> None:
    """T, dropout, noise, seed, batch, temperature and box jitter (defaults: ``d``)."""
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Samples T (MC dropout, noisy)", 1, 500, d.samples, key="run_T")
    c2.number_input("Dropout p", 0.0, 0.9, d.p, 0.005, format="%.3f", key="run_p")
    c3.selectbox("Dropout placement", PLACEMENTS, PLACEMENTS.index(d.placement), key="run_placement",
                 help="decoder: MedSAM family only, one encoder pass per slice")
    c4.number_input("Noise σ (fraction of intensity range)", 0.0, 1.0, d.sigma, 0.01, format="%.3f", key="run_sigma")
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("Seed", 0, 2**31 - 1, d.seed, key="run_seed")
    c2.number_input("Batch size", 1, 256, d.batch_size, key="run_batch")
    c3.number_input("Temperature", 0.05, 20.0, d.temperature, 0.05, key="run_temp")
    c4.number_input("Box jitter (px)", 0, 64, d.jitter_px, key="run_jitter")


def tta_tab(d: PipelineConfig) -> None:
    """The TTA set: flips × scales × intensity factors."""
    c1, c2, c3 = st.columns(3)
    flips = c1.multiselect("Flips", list(FLIPS), default=list(d.tta_flips), format_func=FLIPS.get, key="run_flips")
    scales = c2.multiselect("Scales", SCALES, default=list(d.tta_scales), key="run_scales")
    ints = c3.multiselect("Intensity factors", INTENSITIES, default=list(d.tta_intensities), key="run_ints")
    st.caption(f"{len(flips)} × {len(scales)} × {len(ints)} = **{len(flips) * len(scales) * len(ints)}** "
               "transforms per slice (paper: 2 × 3 × 5 = 30).")


def fusion_tab(d: PipelineConfig) -> None:
    """What is fused, the weighting and the threshold."""
    c1, c2, c3 = st.columns(3)
    src = c1.selectbox("Fuse", FUSION_SOURCES, FUSION_SOURCES.index(d.fusion.source), key="run_fsource",
                       format_func={"modes": "mean maps of the modes (paper)", "samples": "samples of one mode"}.get)
    if src == "modes":
        c2.multiselect("Source modes", STOCHASTIC_SOURCES, default=list(d.fusion.sources), key="run_fsources")
        ss.setdefault("run_fsample", d.fusion.sample_mode)
    else:
        c2.selectbox("Sample mode", STOCHASTIC_SOURCES, key="run_fsample")  # its default: the setdefault above
        ss.setdefault("run_fsources", list(d.fusion.sources))
    c3.selectbox("Weighting uncertainty", UNCERTAINTIES, UNCERTAINTIES.index(d.fusion.uncertainty), key="run_func")
    c1, c2, c3, c4 = st.columns(4)
    wt = c1.selectbox("Weighting", FUSION_WEIGHTINGS, FUSION_WEIGHTINGS.index(d.fusion.weighting), key="run_weighting")
    c2.number_input("λ (exponential)", 0.0, 1000.0, d.fusion.lam, key="run_lam", disabled=wt != "exponential")
    c3.number_input("α (power)", 0.0, 10.0, d.fusion.alpha, key="run_alpha", disabled=wt != "power")
    thr = c4.selectbox("Threshold", FUSION_THRESHOLDS, FUSION_THRESHOLDS.index(d.fusion.threshold), key="run_thr")
    for name, (_, label, default, lo, hi, step) in THRESHOLD_PARAM.items():
        if name == thr:
            st.number_input(label, lo, hi, default, step, key=f"run_thr_{name}")
        else:
            ss.setdefault(f"run_thr_{name}", default)


def crf_and_models_tab(d: PipelineConfig) -> None:
    """Dense CRF kernels and iterations; MedSAM-family input channels and box margin."""
    c = d.crf
    c1, c2, c3 = st.columns(3)
    c1.number_input("Bilateral spatial σ (sdims, px)", 0.1, 100.0, c.sdims, key="run_sdims")
    c2.number_input("Bilateral intensity σ (schan)", 0.1, 255.0, c.schan, key="run_schan")
    c3.number_input("Bilateral weight", 0.0, 100.0, c.compat_bilateral, key="run_cbil")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Gaussian spatial σ (px)", 0.1, 100.0, c.gaussian_sxy, key="run_gsxy")
    c2.number_input("Gaussian weight", 0.0, 100.0, c.compat_gaussian, key="run_cgau")
    c3.number_input("Mean-field iterations", 0, 50, c.iterations, key="run_iters")
    c1, c2, _ = st.columns(3)
    c1.selectbox("MedSAM-family input channels", ["flair3", "rgb"], key="run_channels",
                 help="flair3: FLAIR replicated (default); rgb: the three MRI channels")
    c2.number_input("Box prompt margin (px)", 0, 64, 0, key="run_margin")


def cost_and_queue(backends: list[str], modes: list[str], tuned: dict | None = None) -> None:
    """The estimated cost of each sweep and the Queue button (a worker is started if none runs)."""
    st.subheader("Cost and queue", divider="gray")
    if not backends or not modes:
        st.info("Pick at least one backend and one mode.", icon=":material/info:")
        return
    try:
        config = _config()
        specs = _specs(backends, modes, config, tuned)
    except ProfileRefused as exc:
        st.error(f"**This tuned profile does not fit:** {exc}. Its settings were chosen for that model's outputs; "
                 "pick only its backend (with the weights it was tuned on), or the defaults.", icon=":material/block:")
        return
    except (ValueError, TypeError) as exc:
        st.error(f"Invalid parameters: {explain(exc)}", icon=":material/error:")
        return
    rows = []
    for spec in specs:
        try:
            est = _estimate(spec.to_dict(), str(settings.store_dir()))
            rows.append({"backend": spec.backend, "modes": ", ".join(spec.mode_list()), "slices": est["slices"],
                         "patients": est["patients"], "already stored": est["held"], "model passes": est["forwards"],
                         "time": est["human"], "seconds": est["seconds"],
                         "timing": ("measured here" if est.get("calibrated") else est.get("source", ""))})
        except Exception as exc:  # noqa: BLE001 - e.g. data folder missing: say so per backend
            rows.append({"backend": spec.backend, "modes": ", ".join(spec.modes), "slices": None, "patients": None,
                         "already stored": None, "model passes": None, "time": explain(exc), "seconds": None,
                         "timing": ""})
    cost = pd.DataFrame(rows)
    st.dataframe(cost.drop(columns=["seconds"]), hide_index=True, width="stretch")
    total = cost["seconds"].dropna().sum()
    st.caption(f"Total about **{fmt_seconds(total)}** of compute, for the results not yet stored (those are reused). "
               "Timing: measured per backend × mode on this machine once a sweep has run here, else a default guess.")
    ok = cost["slices"].notna().all()
    empty = ok and (cost["slices"] == 0).any()
    if empty:
        what = "tumour slices" if ss["run_tumour"] else "slices"
        st.warning(f"The **{ss['run_split']}** split of `{settings.app_data_dir()}` has no {what}: there is nothing "
                   "to queue. Pick another split.", icon=":material/block:")
    elif ok:
        n_pat = int(cost["patients"].max())
        st.caption(f"{int(cost['slices'].max())} slice(s) from **{n_pat} patient(s)**"
                   + (" — spread over the selection." if specs[0].spread else "."))
    ids = [spec.job_id() for spec in specs] if ok and not empty else []
    pending = bool(ids) and ids == ss.get("run_last") and (_any_active(ids) or sent_pending(_known(ids)))
    st.button("Queue", type="primary", icon=":material/playlist_add:", disabled=not ok or empty or pending,
              key="run_queue", on_click=_queue, args=(specs,),
              help="Already queued: see its progress below" if pending else None)
    cluster_section(specs, active=pending)
    if ss.get("run_error"):
        st.error(f"Could not queue: {ss['run_error']}", icon=":material/error:")
    elif ss.get("run_worker") is False:
        st.warning("Queued, but no worker could be started. Run `python -m segunc worker` on this machine "
                   f"(store `{settings.store_dir()}`); see `{settings.store_dir() / 'logs'}`.",
                   icon=":material/warning:")


def _known(job_ids: list[str]) -> list[str]:
    """The ids among ``job_ids`` that the store holds a job for."""
    s, out = store(), []
    for j in job_ids:
        try:
            job_status(s, j)
        except KeyError:
            continue
        out.append(j)
    return out


def _any_active(job_ids: list[str]) -> bool:
    s = store()
    try:
        return any(job_status(s, j)["state"] in ("queued", "running") for j in job_ids)
    except KeyError:
        return False


def refuse_non_runners() -> None:
    """Demo mode and viewers: say why nothing can be queued here, and stop."""
    who = principal()
    if who.read_only:
        st.info("**Demo (read-only).** These results come from a store snapshot: nothing can be computed or queued "
                "here. Run sweeps where the data and weights are, then carry the results over with "
                "`python -m segunc snapshot export` and `snapshot import`.", icon=":material/lock:")
        st.stop()
    if not who.can_run:
        st.warning("This account may browse results but not queue jobs (role: viewer). Ask the admin for the "
                   "runner role.", icon=":material/block:")
        st.stop()


#: seconds between progress refreshes while a job is queued or running (each re-reads only those job rows;
#: a slice takes tens of seconds on a CPU, and each refresh costs ~0.25 CPU s of the app server)
POLL_S = 10.0


def job_list() -> None:
    """The jobs: the watched ones (queued, running, or just queued here) refresh every ``POLL_S`` s while
    one is active; the full list is static."""
    st.subheader("Jobs", divider="gray")
    jobs = list_jobs(store())
    awaited = [j for j in ss.get("run_last", []) if j not in set(jobs["job_id"])] \
        if sent_pending(jobs["job_id"]) else []  # sent to the cluster, its driver still joining
    if jobs.empty and not awaited:
        st.caption("No jobs yet.")
        return
    active = jobs["state"].isin(["queued", "running"])
    watched = jobs[active | jobs["job_id"].isin(ss.get("run_last", []))]
    meta = {r.job_id: f"**{r.backend}** · {r.modes} · split {r.split} · T={r.samples} · `{r.job_id[:10]}`"
            for r in watched.itertuples()}
    live = bool(active.any()) or bool(awaited)
    (st.fragment(run_every=POLL_S)(_progress) if live else _progress)(meta, live, awaited)
    with st.expander(f"All jobs ({len(jobs)})"):
        st.dataframe(jobs, hide_index=True, width="stretch")


def _progress(meta: dict[str, str], live: bool, awaited: list[str] = ()) -> None:
    with guard("The job progress"):
        active = _progress_body(meta)
        arrived = _known(list(awaited))
        if set(awaited) - set(arrived):
            st.caption(f":material/hub: Sent to the Ray cluster; its driver is joining the cluster "
                       f"(log: `{ss.get('cluster_sent', {}).get('log', '')}`)")
        waiting = bool(awaited) and sent_pending(arrived + list(meta))
        if arrived or (live and not active and not waiting):
            st.rerun(scope="app")  # a sent job appeared (show it), or everything finished (stop the refresh)


def _progress_body(meta: dict[str, str]) -> bool:
    """Draw the watched jobs from their rows alone; returns whether any is still queued or running."""
    s = store()
    alive = worker_alive(settings.store_dir())
    any_active = False
    st.caption(f"Background worker: {'running' if alive else 'not running'} · updated {time.strftime('%H:%M:%S')}")
    for job_id, label in meta.items():
        stt = job_status(s, job_id)
        total, done = stt["total"] or 0, stt["done"] or 0
        running = stt["state"] in ("queued", "running")
        any_active |= running
        with st.container(border=True):
            c1, c2 = st.columns([5, 1], vertical_alignment="center")
            c1.markdown(f"{STATE_ICON.get(stt['state'], '')} {label} — **{stt['state']}**")
            c1.progress(done / total if total else 0.0,
                        text=f"{done}/{total} slices · {stt['failed']} failed · {stt.get('computed') or 0} computed, "
                             f"{stt.get('skipped') or 0} reused"
                             + (f" · now {stt['current']}" if stt.get("current") and stt["state"] == "running" else "")
                             + (f" · about {fmt_seconds(stt['eta_s'])} left" if running and stt.get("eta_s") else ""))
            if running:
                c2.button("Cancel", key=f"cancel_{job_id}", on_click=cancel_job, args=(s, job_id),
                          icon=":material/stop_circle:", disabled=stt.get("cancel_requested", False))
            if stt.get("error"):
                st.error(f"The job could not start: {stt['error']}", icon=":material/error:")
            if stt["errors"]:
                with st.expander(f"{len(stt['errors'])} failed slice(s)"):
                    st.dataframe(pd.DataFrame(stt["errors"], columns=["slice", "error"]), hide_index=True, width="stretch")
    return any_active


st.title("Run")
sample_notice()
st.caption("Queue sweeps of backends × modes over LGG slices. Results already in the store are reused, so a "
           "repeated or enlarged sweep only computes what is missing. A background worker runs the queue.")

refuse_non_runners()

with guard("The run form"):
    chosen_backends, chosen_modes = what_to_run()
    chosen_profile = parameters()
    cost_and_queue(chosen_backends, chosen_modes, chosen_profile)
with guard("The job list"):
    job_list()
