"""Review & errors: does uncertainty point at the errors, and which slices should a human check?

Error detection (pooled pixel AUROC / AUPRC of each uncertainty map, Spearman ρ of slice scores
with 1 − Dice, risk–coverage), the review queue (threshold picked on val, applied to the chosen
split; click a row to open that slice), aleatoric vs epistemic uncertainty, tumour-free slices and
cost beside quality. The numbers come from :mod:`segunc.analysis`; this page only shows them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages._data import metrics_frame, run_links, runs, store, store_version, sample_notice
from pages._errors import explain, guard
from pages._filters import selected_results
from pages._settings import PAGE_FILES, ensure_app
from pages._export import chart_downloads
from segunc import settings, viz
from segunc.analysis import profiles, stats
from segunc.analysis import (StoredErrors, applicable_rows, applies, cost_quality, decomposition_summary,
                             review_outcome, risk_coverage_table, slice_scores, spearman_table, stored_error_stats,
                             tumour_free_summary)
from segunc.data import DataError, resolve_root

ensure_app()

MAP_LABELS = {"variance": "variance", "entropy": "entropy", "mutual_information": "mutual information"}
SCORE_LABELS = {"mean_entropy": "entropy · image mean", "mean_variance": "variance · image mean",
                "mean_mi": "mutual information · image mean",
                "entropy_near": "entropy · mask + 5 px", "variance_near": "variance · mask + 5 px",
                "mutual_information_near": "mutual information · mask + 5 px",
                "entropy_in": "entropy · inside mask", "variance_in": "variance · inside mask",
                "mutual_information_in": "mutual information · inside mask"}
ss = st.session_state


@st.cache_data(show_spinner="Scoring the uncertainty maps against the errors…", max_entries=8)
def _error_stats(root: str, version: float, data: str, keys: tuple[str, ...]):
    """Per-result error stats (cached on disk beside the store unless it is read-only, and here until the
    store changes)."""
    try:
        root = resolve_root(data)
    except DataError:  # no data folder here (a demo): the cached stats, else the masks of the store's slice pack
        root = None
    return stored_error_stats(store(), list(keys), root)


def _default_score(scores: list[str]) -> int:
    """Entropy in and 5 px around the predicted mask when available. U-Net, all 229 val tumour slices:
    Spearman ρ with 1 − Dice 0.53–0.65 by mode and AUROC 0.74–0.75 for Dice < 0.7, against ρ ≈ 0 (AUROC
    0.46–0.52) for the image-mean entropy. Entropy inside the mask alone ranks the slices with a predicted
    tumour better (ρ 0.55–0.80) but has no value on the 7 with none, all missed tumours: over all 229 it
    is no better (AUROC 0.73–0.76)."""
    return scores.index("entropy_near") if "entropy_near" in scores else 0


def _shown(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in display order, modes by their labels."""
    return _labels(stats.sort_by_backend_mode(df))


def _labels(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    if "mode" in out:
        out["mode"] = out["mode"].map(viz.mode_label)
    return out


#: said wherever combinations that do not apply are left out
NA_NOTE = ("Normal (one deterministic pass) has no samples, so no variance or mutual information: "
           "those combinations are left out.")


def _newest(df: pd.DataFrame) -> pd.DataFrame:
    """One result per slice × backend × mode (the newest) — the review queue ranks slices, not settings."""
    return df[~df.duplicated(["backend", "mode", "slice_id"], keep="last")]


def _open_row(event, queue: pd.DataFrame, backend: str, mode: str) -> None:
    """A clicked queue row → that slice on the Compare page (once per click: the table keeps its selection)."""
    rows = list(event.selection.rows) if event and getattr(event, "selection", None) else []
    if not rows or rows[0] >= len(queue):
        return
    slice_id = str(queue.iloc[rows[0]]["slice_id"])
    marker = ("rv_queue", slice_id, backend, mode)
    if ss.get("_last_click") == marker:
        return
    ss["_last_click"] = marker
    st.switch_page(PAGE_FILES["compare"], query_params={"slice": slice_id, "focus": f"{backend}:{mode}"})


def review_selection() -> tuple[pd.DataFrame, pd.DataFrame, StoredErrors | None, str]:
    """(selection, the same runs / backends / modes on every split, the error stats or None, why none).
    The review threshold is picked on val, so the queue needs every split of the chosen results."""
    sel = selected_results()
    base = metrics_frame(tuple(ss.get("f_runs") or ()))
    base = _newest(base[base["backend"].isin(sel["backend"].unique()) & base["mode"].isin(sel["mode"].unique())])
    sel = _newest(sel)
    tags = profiles.result_labels(sel, profiles.run_profiles(runs()), run_links())
    if tags.astype(bool).any():  # the newest result of a mode may be a tuned / preset one: say so
        counts = tags[tags != ""].value_counts()
        st.info(f"Among the newest result of each slice and mode used here, {int(counts.sum()):,} of {len(sel):,} come "
                "only from runs with non-default settings (" + ", ".join(f"{n:,} {t}" for t, n in counts.items())
                + "). Pick one run under *Runs* in the sidebar to review one configuration.", icon=":material/tune:")
    try:
        root = settings.store_dir()
        errs = _error_stats(str(root), store_version(root), str(settings.app_data_dir()), tuple(base["key"]))
    except Exception as exc:  # noqa: BLE001 - no masks: the slice-level analyses still work
        return sel, base, None, explain(exc)
    if errs.frame.empty and errs.missing:  # nothing could be scored (no masks anywhere): as if none were asked
        return sel, base, None, (f"None of the {len(errs.missing)} results could be scored against its mask (data "
                                 f"folder `{settings.app_data_dir()}`; e.g. {next(iter(errs.missing.values()))}).")
    return errs.join(sel), errs.join(base), errs, ""


def pixel_detection(sel: pd.DataFrame, errs: StoredErrors | None, problem: str) -> None:
    """Pooled pixel AUROC / AUPRC of each uncertainty map as a detector of the erroneous pixels."""
    st.subheader("Does high uncertainty sit on the wrong pixels?", divider="gray")
    if errs is None:
        st.warning(f"Pixel-level detection needs the ground-truth masks. {problem}", icon=":material/warning:")
        return
    pooled = applicable_rows(errs.pooled(sel), "map")
    if errs.missing:
        st.caption(f"{len(errs.missing)} result(s) could not be scored (e.g. {next(iter(errs.missing.values()))}).")
    if pooled.empty:
        st.info("No error statistics for this selection.")
        return
    show = _shown(pooled).assign(map=lambda d: d["map"].map(MAP_LABELS))
    num = {c: st.column_config.NumberColumn(format="%.4f") for c in
           ("pooled_auroc", "pooled_auprc", "median_auroc", "median_auprc", "median_error_dice")}
    st.dataframe(show, hide_index=True, width="stretch", height=min(38 + 35 * len(show), 460), key="rv_pooled",
                 column_config={
                     **num,
                     "pooled_auroc": st.column_config.NumberColumn("AUROC (pooled)", format="%.4f"),
                     "pooled_auprc": st.column_config.NumberColumn("AUPRC (pooled)", format="%.4f"),
                     "median_auroc": st.column_config.NumberColumn("AUROC (median slice)", format="%.4f"),
                     "median_auprc": st.column_config.NumberColumn("AUPRC (median slice)", format="%.4f"),
                     "median_error_dice": st.column_config.NumberColumn("overlap Dice (median)", format="%.4f"),
                     "error_px": st.column_config.NumberColumn("error px", format="localized"),
                     "n_slices": "slices"})
    st.caption("Error pixels: prediction ≠ ground truth. AUROC / AUPRC of each map as a detector of "
               "them, pooled over all pixels of the selection (1000 log-spaced bins) and the median "
               "over slices; overlap Dice: the Otsu-thresholded map against the error map. "
               "Random: AUROC 0.5, AUPRC = the error rate."
               + (f" {NA_NOTE}" if (sel["mode"] == "normal").any() else ""))
    st.download_button("Error detection (CSV)", pooled.to_csv(index=False), file_name="segunc_error_detection.csv",
                       mime="text/csv", icon=":material/download:")


def slice_correlation(sel: pd.DataFrame, scores: list[str]) -> None:
    """Spearman ρ between each slice score and 1 − Dice."""
    st.subheader("Are the uncertain slices the bad ones?", divider="gray")
    rho = applicable_rows(spearman_table(sel, scores), "score")
    # text cells: "n/a" where the score does not apply to the mode (Normal's variance / MI), "–" where ρ is undefined
    cells = rho.assign(cell=[f"{r:+.3f}" if np.isfinite(r) else "–" for r in rho["rho"]])
    wide = cells.pivot_table(index=["backend", "mode"], columns="score", values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(columns=scores).fillna("n/a").rename(columns=SCORE_LABELS).reset_index()
    st.dataframe(_shown(wide), hide_index=True, width="stretch", height=min(38 + 35 * len(wide), 460), key="rv_rho",
                 column_config={SCORE_LABELS.get(s, s): st.column_config.TextColumn(width="small") for s in scores})
    finite = rho["rho"].dropna()
    typical = float(finite.median()) if len(finite) else None
    st.caption(stats.spearman_sign_note(typical, "a slice's mean uncertainty")
               + (" (ρ quoted: the median over the rows shown.)" if typical is not None else "")
               + " – where the score is constant or there are fewer than 3 slices"
               + ("; n/a for Normal (one deterministic pass) with a variance or mutual information"
                  if (sel["mode"] == "normal").any() else "") + ". p-values and n are in the CSV.")
    if len(finite) and (finite < 0).all():
        st.warning("ρ is negative in every row: on these slices, higher uncertainty goes with *better* "
                   "segmentations, so these scores cannot rank slices for review.", icon=":material/info:")
    st.download_button("Spearman ρ (CSV)", rho.to_csv(index=False), file_name="segunc_spearman.csv",
                       mime="text/csv", icon=":material/download:")


def risk_coverage(sel: pd.DataFrame, scores: list[str]) -> None:
    """Risk–coverage curves and AURC of one slice score."""
    st.subheader("Risk–coverage: refer the most uncertain slices", divider="gray")
    score = st.selectbox("Slice score", scores, key="rv_rc_score", index=_default_score(scores),
                         format_func=lambda s: SCORE_LABELS.get(s, s))
    kept = sel[[applies(m, score) for m in sel["mode"]]]
    if len(kept) < len(sel):
        left_out = ", ".join(viz.mode_label(m) for m in stats.order_modes(set(sel["mode"]) - set(kept["mode"])))
        st.caption(f"{left_out}: left out, as {SCORE_LABELS.get(score, score).split(' ·')[0]} does not apply "
                   "(one deterministic pass has no samples).")
    if kept.empty:
        st.info("No mode of this selection has this score; pick another.", icon=":material/info:")
        return
    sel = kept
    rc_fig = viz.risk_coverage_figure(sel, score)
    st.plotly_chart(rc_fig, width="stretch", key="rv_rc_fig", config={"displaylogo": False})
    chart_downloads(rc_fig, name="segunc_risk_coverage", key="rv_rc_fig_dl")
    rc = risk_coverage_table(sel, [score])
    if rc.empty:
        st.info("No slice of this selection has this score (its maps could not be read); pick another.",
                icon=":material/info:")
        return
    st.dataframe(_shown(rc).drop(columns=["score"], errors="ignore"), hide_index=True, width="stretch", key="rv_rc_table",
                 height=min(38 + 35 * len(rc), 560), column_config={
                     "aurc": st.column_config.NumberColumn("AURC", format="%.4f"),
                     "oracle_aurc": st.column_config.NumberColumn("oracle AURC", format="%.4f"),
                     "e_aurc": st.column_config.NumberColumn("E-AURC", format="%.4f"),
                     "full_risk": st.column_config.NumberColumn("risk at full coverage", format="%.4f"),
                     "n": "slices"})
    st.caption("Keep the slices with the lowest score, refer the rest: risk = mean 1 − Dice of the kept "
               "slices. AURC: area under the curve (lower is better); E-AURC = AURC − the oracle's "
               "(slices ordered by their true 1 − Dice).")


def review_queue(sel: pd.DataFrame, base: pd.DataFrame, scores: list[str]) -> None:
    """A threshold picked on val, applied to a split: which slices to send to a human, and how many bad ones
    that catches; a clicked row opens the slice on the Compare page."""
    backends = stats.order_backends(sel["backend"])
    c1, c2, c3 = st.columns(3)
    backend = c1.selectbox("Backend", backends, key="rv_backend")
    modes = stats.order_modes(sel.loc[sel["backend"] == backend, "mode"])
    mode = c2.selectbox("Mode", modes, key="rv_mode", format_func=viz.mode_label)
    scores = [s for s in scores if applies(mode, s)]  # e.g. no variance / MI score for a single pass
    if ss.get("rv_score") not in scores:
        ss.pop("rv_score", None)
    score = c3.selectbox("Uncertainty score", scores, key="rv_score", index=_default_score(scores),
                         format_func=lambda s: SCORE_LABELS.get(s, s))
    c4, c5, c6 = st.columns(3)
    bad = c4.number_input("Bad slice: Dice below", 0.05, 0.99, 0.7, 0.05, key="rv_bad")
    target = c5.slider("Catch at least (of the bad slices)", 0.5, 1.0, 0.8, 0.05, key="rv_target", format="%.2f")
    present = set(base["split"])
    splits = [s for s in ("test", "val", "train") if s in present]
    if ss.get("rv_split") not in splits:
        ss["rv_split"] = ss.get("f_split") if ss.get("f_split") in splits else splits[0]
    split = c6.selectbox("Apply to split", splits, key="rv_split",
                         help="The threshold is always picked on val; on val itself the patients are cut "
                              "in two halves (pick on one, apply to the other).")
    out = review_outcome(base[(base["backend"] == backend) & (base["mode"] == mode)], split, score, bad, target)
    st.caption(f"Flag a slice when its {SCORE_LABELS.get(score, score)} is at least the threshold; the threshold "
               f"is the largest that catches ≥ {target:.0%} of the bad slices (Dice < {bad:g}) — {out.scheme}.")
    if out.note:
        st.warning(out.note[:1].upper() + out.note[1:] + ".", icon=":material/info:")
    if out.caution:
        st.warning(f"**Few patients.** {out.caution}", icon=":material/group_off:")
    if out.evaluation is not None:
        _queue_table(out.evaluation, score, backend, mode, split)
    elif out.calibration is None:
        st.info("No threshold could be picked on val for this choice; lower the bar, or compute val results for "
                "this backend and mode on the **Run** page.", icon=":material/info:")


def _queue_table(ev, score: str, backend: str, mode: str, split: str) -> None:
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("Threshold", f"{ev.threshold:.4g}")
    m2.metric("Caught", f"{len(ev.caught)} / {ev.n_bad}", help="bad slices flagged")
    m3.metric("Missed", f"{len(ev.missed)}", help="bad slices not flagged")
    m4.metric("Flagged", f"{ev.n_flagged} / {ev.n_slices}", help="slices sent to review")
    m5.metric("Precision", "–" if ev.n_flagged == 0 else f"{ev.precision:.0%}",
              help="share of the flagged slices that are bad")
    queue = ev.frame
    event = st.dataframe(queue, hide_index=True, width="stretch", height=min(38 + 35 * len(queue), 520),
                         on_select="rerun", selection_mode="single-row", key="rv_queue", column_config={
                             score: st.column_config.NumberColumn(SCORE_LABELS.get(score, score), format="%.5f"),
                             "dice": st.column_config.NumberColumn("Dice", format="%.4f"),
                             "bad": st.column_config.CheckboxColumn("bad"),
                             "flagged": st.column_config.CheckboxColumn("flagged")})
    st.caption("Most uncertain first. Click a row to open that slice on the Compare page.")
    _open_row(event, queue, backend, mode)
    st.download_button("Review queue (CSV)", queue.to_csv(index=False),
                       file_name=f"segunc_review_{backend}_{mode}_{split}.csv", mime="text/csv",
                       icon=":material/download:", key="rv_queue_csv")


def decomposition(sel: pd.DataFrame) -> None:
    """Total entropy split into aleatoric (expected entropy) and epistemic (mutual information)."""
    dec = decomposition_summary(sel)
    dec_fig = viz.decomposition_figure(dec)
    st.plotly_chart(dec_fig, width="stretch", key="rv_dec_fig", config={"displaylogo": False})
    chart_downloads(dec_fig, name="segunc_decomposition", key="rv_dec_fig_dl")
    num = ["aleatoric_image_mean", "epistemic_image_mean", "epistemic_share_median"]
    shown = dec[["backend", "mode", "n", *num, "note"]].copy()
    shown["note"] = shown["note"].fillna("")
    # numbers stay numbers; a decomposition that does not apply (NaN) reads "n/a"
    table = _shown(shown).style.format(dict(zip(num, ("{:.5f}", "{:.5f}", "{:.3f}"))), na_rep="n/a")
    st.dataframe(table, hide_index=True, width="stretch", key="rv_dec", height=38 + 35 * len(dec),
                 column_config={"aleatoric_image_mean": "aleatoric (bits)", "epistemic_image_mean": "epistemic (bits)",
                                "epistemic_share_median": "epistemic share (median)",
                                "note": st.column_config.TextColumn("why n/a", width="large")})
    st.caption("Total predictive entropy H(ȳ) = expected entropy E[H(yₜ)] (aleatoric: noise every sample sees) "
               "+ mutual information I (epistemic: disagreement between samples); image means over slices. "
               "A single pass has I = 0; for CRF the entropy is recomputed after refinement.")


def tumour_free(sel: pd.DataFrame) -> None:
    """False positives and uncertainty on slices without tumour."""
    st.subheader("Tumour-free slices", divider="gray")
    tf = tumour_free_summary(sel)
    if tf.empty:
        st.info("No tumour-free slices in this selection: sweeps skip them unless queued with "
                "“all slices” (`--all-slices`).", icon=":material/info:")
        return
    st.dataframe(_shown(tf), hide_index=True, width="stretch", key="rv_tf")
    st.caption("Every predicted pixel is a false positive here: share of slices with any, their area, "
               "mean uncertainty against tumour slices, and how well entropy flags them (fp_auroc).")


def cost_beside_quality(sel: pd.DataFrame) -> None:
    """Seconds per slice of each mode next to its median metrics."""
    st.subheader("Cost beside quality", divider="gray")
    cost = cost_quality(sel)
    cost_fig = viz.cost_quality_figure(cost)
    st.plotly_chart(cost_fig, width="stretch", key="rv_cost_fig", config={"displaylogo": False})
    chart_downloads(cost_fig, name="segunc_cost_quality", key="rv_cost_fig_dl")
    cols = [c for c in ("backend", "mode", "n", "seconds_median", "x_reference", "dice_median", "iou_median",
                        "nll_median", "ece_median", "brier_median") if c in cost.columns]
    st.dataframe(_shown(cost[cols]), hide_index=True, width="stretch", key="rv_cost",
                 column_config={"seconds_median": st.column_config.NumberColumn("s/slice (median)", format="%.3g"),
                                "x_reference": st.column_config.NumberColumn("× normal", format="%.2f"),
                                **{c: st.column_config.NumberColumn(f"{stats.METRIC_LABELS.get(c[:-7], c)} (median)",
                                                                    format="%.4f") for c in cols[5:]}},
                 height=38 + 35 * len(cost))
    st.caption("Wall time per slice including the modes a mode builds on (fusion: its sources; CRF: fusion), "
               "on the machine that ran it.")


st.title("Review & errors")
sample_notice()

with guard("The review page"):
    selection, every_split, errors, errors_problem = review_selection()
    slice_score_names = slice_scores(selection.columns)
    st.caption(f"{len(selection):,} results · {selection['slice_id'].nunique():,} slices · "
               f"{selection['backend'].nunique()} backend(s) × {selection['mode'].nunique()} mode(s). A slice is *bad* "
               "when its Dice is below the bar you set; uncertainty is useful when it is high exactly there.")
    t_err, t_queue, t_dec, t_more = st.tabs(["Error detection", "Review queue", "Aleatoric vs epistemic",
                                             "Tumour-free & cost"], key="rv_tab", on_change="rerun")
    if t_err.open:
        with t_err:
            with guard("The pixel-level error detection"):
                pixel_detection(selection, errors, errors_problem)
            with guard("The slice-level correlation"):
                slice_correlation(selection, slice_score_names)
            with guard("The risk–coverage curves"):
                risk_coverage(selection, slice_score_names)
    if t_queue.open:
        with t_queue, guard("The review queue"):
            review_queue(selection, every_split, slice_score_names)
    if t_dec.open:
        with t_dec, guard("Aleatoric vs epistemic"):
            decomposition(selection)
    if t_more.open:
        with t_more:
            with guard("The tumour-free slices"):
                tumour_free(selection)
            with guard("The cost beside quality"):
                cost_beside_quality(selection)
