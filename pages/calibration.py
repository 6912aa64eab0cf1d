"""Calibration: pooled reliability diagrams with ECE, and NLL / ECE / Brier side by side."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._data import describe, reliability, sample_notice
from pages._errors import guard
from pages._filters import open_clicked, selected_results
from pages._settings import ensure_app
from pages._export import chart_downloads
from segunc import viz
from segunc.analysis import stats
from segunc.analysis.reliability import calibration_table

ensure_app()

CAL = ("nll", "ece", "brier")
#: columns of the pooled table on this page (the CSV has the same)
POOLED_COLUMNS = ["backend", "mode", "slices", "pixels", "pooled ECE", "mean per-slice ECE"]
PNG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def _png(filename: str) -> dict:
    return {**PNG, "toImageButtonOptions": {**PNG["toImageButtonOptions"], "filename": filename}}


def reliability_section(sel: pd.DataFrame) -> None:
    """Reliability diagrams pooled over every pixel, the pooled-ECE table and the bins as CSV."""
    st.subheader("Reliability diagrams", divider="gray")
    bins, table = calibration_table(sel, reliability)
    rel = viz.reliability_figure(bins)
    st.plotly_chart(rel, width="stretch", key="cal_rel", config=_png("segunc_reliability"))
    chart_downloads(rel, name="segunc_reliability", key="cal_rel_dl")
    pooled = table[POOLED_COLUMNS]
    st.dataframe(pooled, hide_index=True, width="stretch", height=38 + 35 * len(pooled),
                 column_config={"pooled ECE": st.column_config.NumberColumn(format="%.5f"),
                                "mean per-slice ECE": st.column_config.NumberColumn(format="%.5f"),
                                "pixels": st.column_config.NumberColumn(format="localized")})
    bins_csv = pd.DataFrame([{"backend": b, "mode": m, "bin": i, "count": int(v["counts"][i]),
                              "sum_confidence": float(v["sum_confidence"][i]), "sum_correct": float(v["sum_correct"][i])}
                             for (b, m), v in bins.items() for i in range(len(v["counts"]))])
    c1, c2, _ = st.columns([1, 1, 3])
    c1.download_button("Pooled ECE (CSV)", pooled.to_csv(index=False), file_name="segunc_pooled_ece.csv",
                       mime="text/csv", icon=":material/download:", width="stretch")
    c2.download_button("Reliability bins (CSV)", bins_csv.to_csv(index=False), file_name="segunc_reliability_bins.csv",
                       mime="text/csv", icon=":material/download:", width="stretch")


def metrics_section(sel: pd.DataFrame) -> None:
    """NLL, ECE and Brier per slice: bars with bootstrap CIs, the table, box plots and downloads."""
    st.subheader("NLL, ECE and Brier score per slice", divider="gray")
    desc = describe(sel, CAL)
    bars = viz.calibration_figure(desc)
    st.plotly_chart(bars, width="stretch", key="cal_bars", config=_png("segunc_calibration"))
    chart_downloads(bars, name="segunc_calibration", key="cal_bars_dl")
    st.caption("Bars: mean over slices; whiskers: 95 % BCa bootstrap CI of the mean. Lower is better for all three.")
    wide = _ci_table(desc)
    st.dataframe(wide, hide_index=True, width="stretch", height=38 + 35 * len(wide))
    _box_plots(sel)
    c1, c2, _ = st.columns([1, 1, 3])
    c1.download_button("Calibration table (CSV)", desc.to_csv(index=False), file_name="segunc_calibration.csv",
                       mime="text/csv", icon=":material/download:", width="stretch")
    c2.download_button("Calibration table (LaTeX)", stats.to_latex(desc, CAL, stat="mean_ci", label="tab:segunc-calibration"),
                       file_name="segunc_calibration.tex", mime="text/x-tex", icon=":material/functions:", width="stretch")


def _ci_table(desc: pd.DataFrame) -> pd.DataFrame:
    """One row per backend × mode, one ``mean [CI low, CI high]`` cell per metric."""
    wide = desc.assign(cell=[f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in zip(desc["mean"], desc["ci_low"], desc["ci_high"])])
    wide = wide.pivot_table(index=["backend", "mode"], columns="metric", values="cell", aggfunc="first")
    wide = wide.reindex(columns=[c for c in CAL if c in wide.columns]).rename(columns=stats.METRIC_LABELS).reset_index()
    return stats.sort_by_backend_mode(wide)


def _box_plots(sel: pd.DataFrame) -> None:
    """One box plot per metric; a clicked point opens that slice on the Compare page."""
    for col, metric in zip(st.columns(3), CAL):
        with col:
            fig = viz.distribution_figure(sel, metric, "box", points="all" if len(sel) <= 6000 else "outliers",
                                          height=330, title=stats.METRIC_LABELS[metric])
            ev = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key=f"cal_box_{metric}",
                                 config={"displaylogo": False})
            chart_downloads(fig, name=f"segunc_{metric}_box", key=f"cal_box_{metric}_dl")
            open_clicked(ev, f"cal_box_{metric}")


st.title("Calibration")
sample_notice()

with guard("The calibration page"):
    selection = selected_results()
    st.caption("Top-label calibration: each pixel's confidence max(p, 1 − p) against whether its predicted label is "
               "correct, pooled over all pixels of the selected slices (10 equal-width bins; confidence ≥ 0.5). "
               "A well-calibrated model's bars touch the diagonal; the hatched gap is the miscalibration.")
    t_rel, t_metrics = st.tabs(["Reliability diagrams", "NLL, ECE and Brier"], key="cal_tab", on_change="rerun")
    if t_rel.open:  # each tab is drawn only when open: the first visit shows one chart, at once
        with t_rel, guard("The reliability diagrams"):
            reliability_section(selection)
    if t_metrics.open:
        with t_metrics, guard("The calibration metrics"):
            metrics_section(selection)
