"""The result pages' shared start: sidebar filters (runs, backends, modes, split) over the store's
metric rows, the empty-store message, and a clicked chart point → that slice on the Compare page."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._access import principal
from pages._data import metrics_frame, runs
from pages._format import run_label
from pages._settings import PAGE_FILES
from segunc import settings
from segunc.analysis.profiles import split_profile
from segunc.analysis.stats import order_backends, order_modes
from segunc.viz import mode_label

#: widget keys whose values survive page switches (see :func:`keep_state`)
STICKY = ("f_backends", "f_modes", "f_split", "f_runs", "f_common")
#: the split filter's first option (its default): the slices of the newest run
LATEST = "latest run"


def keep_state() -> None:
    """Keep the shared filter widgets' values when the user switches pages."""
    for k in STICKY:
        if k in st.session_state:
            st.session_state[k] = st.session_state[k]


def open_clicked(event, source: str) -> None:
    """A clicked distribution point (``customdata`` = key, slice_id, patient_id, backend, mode) → that slice
    on the Compare page; once per click (the chart keeps its selection across reruns)."""
    pts = event.selection.points if event else []
    custom = pts[0].get("customdata") if pts else None
    if not custom or len(custom) < 5:
        return
    marker = (source, custom[0])
    if st.session_state.get("_last_click") == marker:
        return
    st.session_state["_last_click"] = marker
    mode = split_profile(custom[4])[0]  # a tuned / preset row (Metrics) opens its mode
    st.switch_page(PAGE_FILES["compare"], query_params={"slice": custom[1], "focus": f"{custom[3]}:{mode}"})


def no_results(message: str = "The results store is empty.") -> None:
    """Say the store holds nothing (yet) and how to fill it; a Run link for those who may run."""
    can_run = principal().can_run
    st.info(f"{message} {'Queue a sweep on the **Run** page, or point' if can_run else 'Point'} `SEGUNC_CACHE` at "
            f"an existing store (now `{settings.store_dir()}`).", icon=":material/inbox:")
    if can_run:  # viewers have no Run page (a link to it would fail)
        st.page_link(PAGE_FILES["run"], label="Go to Run", icon=":material/play_arrow:")


def result_filters(df: pd.DataFrame, modes_default: list[str] | None = None, separate=None) -> pd.DataFrame:
    """Sidebar filters (runs, backends, modes, split) shared by the result pages; returns the selection,
    through ``separate(selection)`` when given (Metrics: tuned / preset rows as modes of their own), so the
    warning about results under several settings counts only those the page still pools."""
    with st.sidebar:
        st.subheader("Filters")
        rr = runs()
        if len(rr) > 1:
            labels = {r.run_id: run_label(r) for r in rr.itertuples()}
            _valid("f_runs", list(labels))
            sel_r = st.multiselect("Runs", list(labels), key="f_runs", format_func=labels.get,
                                   placeholder="all runs", help="Results of these sweeps only (empty: every result)")
            if sel_r:
                df = metrics_frame(tuple(sel_r))
        backends = order_backends(df["backend"])
        modes = order_modes(df["mode"])
        present = set(df["split"].unique()) if "split" in df.columns else set()
        splits = [s for s in ("val", "test", "train") if s in present]
        _valid("f_backends", backends)
        _valid("f_modes", modes)
        sel_b = st.multiselect("Backends", backends, key="f_backends", **_default("f_backends", backends))
        sel_m = st.multiselect("Modes", modes, key="f_modes", **_default("f_modes", modes_default or modes))
        latest = _latest_slices(rr)
        options = ([LATEST] if latest else []) + ["all", *splits]
        if st.session_state.get("f_split") not in options:
            st.session_state.pop("f_split", None)
        linked = st.query_params.get("slice")  # a deep link to a slice outside the newest run: show every slice
        if latest and linked and linked not in latest and st.session_state.get("f_split", LATEST) == LATEST \
                and linked in set(df["slice_id"]):
            st.session_state["f_split"] = "all"
        split = st.selectbox("Slices", options, key="f_split", disabled=len(options) < 2,
                             format_func=lambda o: f"{o} ({len(latest)})" if o == LATEST else o if o == "all" else
                             f"{o} split", help="Default: the slices of the newest run, so every mode is compared "
                                                "on the same slices; 'all': every stored result")
        common = st.toggle("Only slices common to all shown modes", key="f_common",
                           help="Drop slices that some backend × mode shown here has no result for")
    out = df[df["backend"].isin(sel_b) & df["mode"].isin(sel_m)]
    if split == LATEST:
        out = out[out["slice_id"].isin(latest)]
    elif split != "all" and "split" in out.columns:
        out = out[out["split"] == split]
    cover = coverage(out)
    if common and len(cover) > 1:
        out = out[out["slice_id"].isin(common_slices(out))]
    elif cover.nunique() > 1:
        st.warning(f"**The modes cover different slices** ({_describe_cover(cover)}): their statistics are not "
                   "on the same slices. Switch on *Only slices common to all shown modes* in the sidebar "
                   f"({len(common_slices(out))} slices), or pick one run.", icon=":material/compare_arrows:")
    if separate is not None:
        out = separate(out)
    dup = int(out.duplicated(["backend", "mode", "slice_id"]).sum())
    if dup:
        st.sidebar.warning(f"{dup} slice result(s) exist under several settings; statistics average them. "
                           "Pick runs to compare like with like.", icon=":material/warning:")
    return out


def coverage(df: pd.DataFrame) -> pd.Series:
    """Distinct slices per (backend, mode) of the selection."""
    if df.empty:
        return pd.Series(dtype=int)
    return df.groupby(["backend", "mode"], sort=False)["slice_id"].nunique()


def common_slices(df: pd.DataFrame) -> set[str]:
    """The slices every (backend, mode) of ``df`` has a result for."""
    sets = [set(g) for _, g in df.groupby(["backend", "mode"], sort=False)["slice_id"]]
    return set.intersection(*sets) if sets else set()


def _describe_cover(cover: pd.Series) -> str:
    """``unet Normal 132 · unet TTA 12 …`` (at most six groups)."""

    items = [f"{b} {mode_label(m)} {n}" for (b, m), n in cover.items()]
    return " · ".join(items[:6]) + (" …" if len(items) > 6 else "")


def _latest_slices(rr: pd.DataFrame) -> set[str]:
    """The slices of the newest run that has results (empty when the store has no runs)."""
    if rr is None or rr.empty:
        return set()
    for run_id in reversed(rr.sort_values("created_at")["run_id"].tolist()):
        ids = set(metrics_frame((run_id,))["slice_id"])
        if ids:
            return ids
    return set()


def selected_results(prepare=None, modes_default: list[str] | None = None, separate=None) -> pd.DataFrame:
    """The result pages' common start: the store's metric rows through the sidebar filters; stops
    the page with a clear message when the store is empty or nothing matches. ``prepare(df)`` runs
    on the whole frame before the filters (e.g. to apply a deep link); ``separate``: see
    :func:`result_filters`."""
    df = metrics_frame()
    if df.empty:
        no_results()
        st.stop()
    if prepare is not None:
        prepare(df)
    sel = result_filters(df, modes_default, separate)
    if sel.empty:
        st.info("Nothing matches the filters in the sidebar.", icon=":material/filter_alt_off:")
        st.stop()
    return sel


def _default(key: str, value) -> dict:
    """``default=`` only for a widget whose value Session State does not hold yet (avoids Streamlit's warning)."""
    return {} if key in st.session_state else {"default": value}


def _valid(key: str, options: list[str]) -> None:
    """Drop remembered selections that are no longer options (e.g. after a filter elsewhere)."""
    if key in st.session_state:
        st.session_state[key] = [v for v in st.session_state[key] if v in options]
