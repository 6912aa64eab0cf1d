"""Metrics: distributions of every metric by mode and backend, descriptive statistics, significance tests.

Click a point in a distribution to open that slice on the Compare page.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._data import describe, run_links, runs, sample_notice, significance
from pages._errors import guard
from pages._filters import open_clicked, selected_results
from pages._settings import ensure_app
from pages._export import chart_downloads
from segunc import viz
from segunc.analysis import profiles, stats
from segunc.metrics import HIGHER_IS_BETTER, METRIC_NAMES

ensure_app()

LABEL = stats.METRIC_LABELS
#: above this many points per figure only outliers are drawn (all values still shape the boxes)
MAX_POINTS = 6000


def _chart(sel: pd.DataFrame, metric: str, kind: str, points: str, height: int, key: str) -> None:
    n = len(sel)
    pts = points if points != "auto" else ("all" if n <= MAX_POINTS else "outliers")
    fig = viz.distribution_figure(sel, metric, kind=kind, points=False if pts == "none" else pts, height=height,
                                  title=LABEL.get(metric, metric) if height < 400 else None)
    _n_ticks(fig, sel, metric)
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key=key,
                            config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2,
                                                                                   "filename": f"segunc_{metric}_{kind}"}})
    chart_downloads(fig, name=f"segunc_{metric}_{kind}", key=f"{key}_dl")
    open_clicked(event, key)


def box_counts(sel: pd.DataFrame, metric: str) -> dict[str, list[int]]:
    """mode → results with a value of ``metric`` per backend (display order): the n of each box."""
    backends = stats.order_backends(sel["backend"])
    n = sel.dropna(subset=[metric]).groupby(["mode", "backend"]).size()
    return {m: [int(n.get((m, b), 0)) for b in backends] for m in stats.order_modes(sel["mode"])}


def _n_ticks(fig, sel: pd.DataFrame, metric: str) -> None:
    """Each mode's tick names the n of its boxes (one per backend, in legend order)."""
    counts = box_counts(sel, metric)
    fig.update_xaxes(tickmode="array", tickvals=[viz.mode_label(m) for m in counts],
                     ticktext=[f"{viz.mode_label(m)}<br>n = {' · '.join(map(str, c))}" for m, c in counts.items()])


def distributions_tab(sel: pd.DataFrame, metrics: list[str]) -> None:
    """Box or violin plots of one metric or all of them; a clicked point opens that slice."""
    c1, c2, c3 = st.columns([2, 1, 1])
    options = ["all", *metrics]
    if st.session_state.get("m_metric") not in options:  # first visit: Dice, drawn at once (nine charts take seconds)
        st.session_state["m_metric"] = "dice" if "dice" in metrics else "all"
    choice = c1.selectbox("Metric", options, key="m_metric",
                          format_func=lambda m: "All metrics" if m == "all" else LABEL.get(m, m))
    kind = c2.segmented_control("Plot", ["box", "violin"], default="box", key="m_kind") or "box"
    points = c3.selectbox("Points", ["auto", "all", "outliers", "none"], key="m_points",
                          help=f"auto: every point up to {MAX_POINTS:,} results per figure, else outliers only")
    if choice == "all":
        cols = st.columns(3)
        for i, metric in enumerate(metrics):
            with cols[i % 3]:
                _chart(sel, metric, kind, points, 330, key=f"dist_{metric}")
    else:
        _chart(sel, choice, kind, points, 520, key=f"dist_{choice}")
    st.caption("n under each mode: results per box (one number per backend, in legend order). "
               "For thesis figures (SVG and PDF, with legends): `python -m segunc report`.")
    _profile_note(sel)
    st.download_button("Selected results (CSV)", lambda: sel.to_csv(index=False), file_name="segunc_results.csv",
                       mime="text/csv", icon=":material/download:")


def summary_tab(sel: pd.DataFrame, metrics: list[str]) -> None:
    """Descriptive statistics with bootstrap CIs, as a table, CSV and LaTeX."""
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
    chosen = c1.multiselect("Metrics", metrics, default=metrics, key="m_table_metrics", format_func=LABEL.get)
    per_patient = c2.toggle("Per patient", key="m_table_pp", help="Average each patient's slices first")
    conf = c3.selectbox("CI level", [0.95, 0.99, 0.90], key="m_conf", format_func=lambda c: f"{c:.0%}")
    n_res = c4.selectbox("Bootstrap resamples", [1000, 2000, 5000], index=1, key="m_nres")
    if not chosen:
        st.info("Pick at least one metric.")
        return
    desc = describe(sel, tuple(chosen), per_patient, conf, n_res)
    show = profiles.profile_column(desc.assign(metric=desc["metric"].map(lambda m: LABEL.get(m, m))))
    num = {c: st.column_config.NumberColumn(format="%.4f") for c in
           ("median", "q1", "q3", "iqr", "mean", "sd", "ci_low", "ci_high")}
    st.dataframe(show, hide_index=True, width="stretch", height=min(38 + 35 * len(show), 560),
                 column_config={**num, "ci_low": st.column_config.NumberColumn(f"CI low ({conf:.0%})", format="%.4f"),
                                "ci_high": st.column_config.NumberColumn(f"CI high ({conf:.0%})", format="%.4f")})
    st.caption(f"Median and IQR (Q1–Q3), mean ± SD and a {conf:.0%} BCa bootstrap CI of the mean "
               f"({n_res:,} resamples, scipy.stats.bootstrap), over "
               + ("patients (each the mean of its slices)." if per_patient else "slices."))
    stat = st.radio("LaTeX cells", ["median_iqr", "mean_ci"], horizontal=True, key="m_latex_stat",
                    format_func={"median_iqr": "median [Q1, Q3]", "mean_ci": "mean [CI]"}.get)
    d1, d2, d3, _ = st.columns([1, 1, 1, 2])
    d1.download_button("Table (CSV)", desc.to_csv(index=False), file_name="segunc_descriptive.csv",
                       mime="text/csv", icon=":material/download:", width="stretch")
    latex = stats.to_latex(desc, chosen, stat=stat, label="tab:segunc-metrics")
    d2.download_button("Table (LaTeX)", latex, file_name="segunc_descriptive.tex", mime="text/x-tex",
                       icon=":material/functions:", width="stretch")
    d3.download_button("Results (CSV)", lambda: sel.to_csv(index=False), file_name="segunc_results.csv",
                       mime="text/csv", icon=":material/download:", width="stretch")
    with st.expander("LaTeX source"):
        st.code(latex, language="latex")
    _profile_note(sel)


def _profile_note(sel: pd.DataFrame) -> None:
    """Say what the profiled modes are (tuned on val, paper preset), when any is shown."""
    note = profiles.profile_note(sel["profile"]) if "profile" in sel.columns else ""
    if note:
        st.caption(note)


def tests_tab(sel: pd.DataFrame, metrics: list[str]) -> None:
    """Friedman test across the chosen modes of one backend, then Holm-corrected pairwise Wilcoxon tests."""
    backends = stats.order_backends(sel["backend"])
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1])
    backend = c1.selectbox("Backend", backends, key="m_t_backend")
    metric = c2.selectbox("Metric", metrics, index=metrics.index("dice") if "dice" in metrics else 0,
                          key="m_t_metric", format_func=LABEL.get)
    per_patient = c3.toggle("Per patient", key="m_t_pp", value=False,
                            help="Slices of one patient are not independent: average them and test patients")
    alpha = c4.selectbox("α (family-wise)", [0.05, 0.01, 0.001], key="m_t_alpha")
    avail = stats.order_modes(sel.loc[sel["backend"] == backend, "mode"])
    modes = st.multiselect("Modes to compare", avail, default=avail, key=f"m_t_modes_{backend}",
                           format_func=viz.mode_label)
    if len(modes) < 2:
        st.info("Pick at least two modes.")
        return
    fr, pw = significance(sel, metric, backend, tuple(modes), per_patient, alpha)
    unit = "patients" if per_patient else "slices"
    _friedman(fr, modes, unit)
    _wilcoxon(pw, metric, unit, alpha)
    st.download_button("Tests (CSV)", lambda: pd.concat([
        pd.DataFrame([{**fr.as_dict(), "modes": ",".join(fr.modes), "test": "friedman"}]).drop(columns=["extra"]),
        pw.assign(test="wilcoxon", per_patient=per_patient)]).to_csv(index=False),
        file_name=f"segunc_tests_{backend}_{metric}.csv", mime="text/csv", icon=":material/download:")


def _friedman(fr, modes: list[str], unit: str) -> None:
    st.markdown(f"**Friedman test** across {len(modes)} modes, blocked by {unit} "
                f"(scipy.stats.friedmanchisquare)")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Blocks (complete)", f"{fr.n_blocks:,}")
    m2.metric(f"χ² (df = {len(modes) - 1})", "–" if fr.note and fr.pvalue != fr.pvalue else f"{fr.statistic:.3f}")
    m3.metric("p-value", "–" if fr.pvalue != fr.pvalue else (f"{fr.pvalue:.2e}" if fr.pvalue < 1e-3 else f"{fr.pvalue:.4f}"))
    m4.metric("Kendall's W", "–" if fr.kendalls_w != fr.kendalls_w else f"{fr.kendalls_w:.3f}",
              help="Effect size: 0 = no agreement on the ranking of modes, 1 = every block ranks them the same")
    if fr.note:
        st.caption(fr.note)
    if fr.caution:
        st.warning(f"**Few patients.** {fr.caution}", icon=":material/group_off:")


def _wilcoxon(pw: pd.DataFrame, metric: str, unit: str, alpha: float) -> None:
    arrow = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
    st.markdown(f"**Pairwise Wilcoxon signed-rank tests** (scipy.stats.wilcoxon), Holm-corrected over "
                f"{len(pw)} pairs; effect size: matched-pairs rank-biserial r (+1: every {unit[:-1]} has "
                f"mode A above mode B). {LABEL.get(metric, metric)}: {arrow} is better.")
    cols = ["mode_a", "mode_b", "n", "median_a", "median_b", "rank_biserial", "p_holm", "significant", "better",
            "pvalue", "statistic", "median_diff", "note"]
    show = pw.assign(mode_a=pw["mode_a"].map(viz.mode_label), mode_b=pw["mode_b"].map(viz.mode_label),
                     better=pw["better"].map(lambda m: viz.mode_label(m) if m else ""))[cols]
    st.dataframe(show, hide_index=True, width="stretch", height=min(38 + 35 * len(show), 600), column_config={
        "mode_a": "mode A", "mode_b": "mode B",
        "median_a": st.column_config.NumberColumn("median A", format="%.4f"),
        "median_b": st.column_config.NumberColumn("median B", format="%.4f"),
        "rank_biserial": st.column_config.NumberColumn("r", format="%+.3f", help="matched-pairs rank-biserial"),
        "p_holm": st.column_config.NumberColumn("p (Holm)", format="%.2e"),
        "significant": st.column_config.CheckboxColumn("< α"),
        "better": st.column_config.TextColumn("better", help="the favoured mode when significant"),
        "pvalue": st.column_config.NumberColumn("p (raw)", format="%.2e"),
        "statistic": st.column_config.NumberColumn("W", format="%.1f", help="Wilcoxon statistic"),
        "median_diff": st.column_config.NumberColumn("median A−B", format="%.4f"),
    })
    caution = next((c for c in pw.get("caution", pd.Series(dtype=object)) if isinstance(c, str) and c), "")
    if caution:
        st.warning(f"**Few patients.** {caution}", icon=":material/group_off:")
    left, _ = st.columns([3, 2])
    with left:
        pfig = viz.pvalue_figure(pw, alpha=alpha)
        st.plotly_chart(pfig, width="stretch", key="m_pfig", config={"displaylogo": False})
        chart_downloads(pfig, name=f"segunc_pvalues_{metric}", key="m_pfig_dl")


st.title("Metrics")
sample_notice()

with guard("The metrics page"):
    # tuned / preset rows apart; a result shared by runs of several profiles is a row of each
    selection = selected_results(separate=lambda sel: profiles.with_profiles(sel, profiles.run_profiles(runs()),
                                                                             run_links()))
    names = [m for m in METRIC_NAMES if m in selection.columns]
    st.caption(f"{selection['key'].nunique():,} results · {selection['slice_id'].nunique():,} slices · "
               f"{selection['patient_id'].nunique():,} patients · {selection['backend'].nunique()} backend(s) × "
               f"{selection['mode'].nunique()} mode(s). Click a point to open that slice.")
    t_dist, t_table, t_tests = st.tabs(["Distributions", "Summary table", "Significance tests"], key="metrics_tab",
                                       on_change="rerun")
    if t_dist.open:
        with t_dist, guard("The distributions"):
            distributions_tab(selection, names)
    if t_table.open:
        with t_table, guard("The summary table"):
            summary_tab(selection, names)
    if t_tests.open:
        with t_tests, guard("The significance tests"):
            tests_tab(selection, names)
