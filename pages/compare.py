"""Compare a slice: one panel per backend × mode — prediction against ground truth and uncertainty map.


Deep links: ``?slice=<slice_id>&backend=unet,litemedsam&mode=normal,fusion&map=entropy&focus=unet:tta``
(every parameter optional). The address bar follows the view, so it can be copied at any time.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import streamlit as st

from pages._data import load_maps, metrics_frame, run_links, runs, sample_notice
from pages._errors import guard
from pages._filters import selected_results
from pages._settings import PAGE_FILES, ensure_app
from pages._export import panel_downloads
from pages._viewer import (CHANNEL_NAMES, PANEL_CSS, VIEW_MAPS, contour_legend_html, display_options, map_scale,
                           result_panel, stored_slice_arrays)
from segunc import viz
from segunc.report.export import Panel, display_label
from segunc.metrics import METRIC_NAMES
from segunc.analysis import profiles
from segunc.analysis.stats import METRIC_LABELS, order_backends, order_modes, sort_by_backend_mode

ensure_app()

MAPS = VIEW_MAPS
SORTS = {"slice": "Slice id", "dice_asc": "Dice, worst first", "dice_desc": "Dice, best first",
         "unc_desc": "Mean uncertainty, highest first", "unc_asc": "Mean uncertainty, lowest first"}
PER_ROW = [2, 3, 4, 5]
MEAN_COL = {"entropy": "mean_entropy", "variance": "mean_variance", "mutual_information": "mean_mi"}
ss = st.session_state


def _natural(slice_id: str) -> tuple[str, int]:
    head, _, tail = slice_id.rpartition("_")
    return (head, int(tail)) if tail.isdigit() else (slice_id, -1)


LINK_KEYS = ("slice", "backend", "mode", "map", "focus")


def _link() -> tuple:
    return tuple(st.query_params.get(k) for k in LINK_KEYS)


def _apply_link(df: pd.DataFrame) -> None:
    """Query parameters → widget state when the address changed from outside (a link, the Metrics page);
    the page's own updates of the address (:func:`_write_link`) are remembered and not re-applied."""
    link = _link()
    if not any(link) or ss.get("_cmp_link") == link:
        return
    ss["_cmp_link"] = link
    slice_id, backends, modes, map_name, focus = link
    if slice_id:
        ss["cmp_slice"] = slice_id
    if backends:
        ss["f_backends"] = [b for b in backends.split(",") if b in set(df["backend"].unique())]
    if modes:
        ss["f_modes"] = [m for m in modes.split(",") if m in set(df["mode"].unique())]
    if map_name in MAPS:
        ss["cmp_map"] = map_name
    ss["cmp_focus"] = focus or ""
    if focus and ":" in focus:  # sort by the clicked result's backend and mode
        ss["cmp_ref_backend"], ss["cmp_ref_mode"] = focus.split(":", 1)


def _write_link(df: pd.DataFrame, slice_id: str, map_name: str, backends: list[str], modes: list[str]) -> None:
    """The address bar follows the view (copy it to share this exact view)."""
    st.query_params.update({"slice": slice_id, "map": map_name})
    for k, shown in (("backend", backends), ("mode", modes)):
        if set(shown) != set(df[k].unique()):
            st.query_params[k] = ",".join(shown)
        elif k in st.query_params:
            del st.query_params[k]
    ss["_cmp_link"] = _link()


def _step(order: list[str], delta: int) -> None:
    cur = ss.get("cmp_slice")
    i = order.index(cur) if cur in order else -1
    ss["cmp_slice"] = order[(i + delta) % len(order)]


def view_controls(sel: pd.DataFrame, backends: list[str], modes: list[str]) -> tuple[str, int, list[str], dict, int]:
    """Slice order (by id, Dice or mean uncertainty of a reference backend × mode), image channel and
    panels per row (in the "Order and layout" expander). Returns (sort, channel, slice order, score of each
    ranked slice, panels per row)."""
    c1, c2, c3, c4, c5 = st.columns([1.4, 1.0, 1.0, 0.9, 0.8])
    if ss.get("cmp_sort") not in SORTS:
        ss["cmp_sort"] = "slice"
    sort = c1.selectbox("Order slices by", list(SORTS), format_func=SORTS.get, key="cmp_sort")
    for key, opts in (("cmp_ref_backend", backends), ("cmp_ref_mode", modes)):
        if ss.get(key) not in opts:
            ss[key] = opts[0] if key == "cmp_ref_backend" or "normal" not in opts else "normal"
    ref_b = c2.selectbox("… of backend", backends, key="cmp_ref_backend", disabled=sort == "slice")
    ref_m = c3.selectbox("… and mode", modes, key="cmp_ref_mode", disabled=sort == "slice", format_func=viz.mode_label)
    channel = c4.selectbox("Image channel", list(CHANNEL_NAMES), index=1, key="cmp_channel", format_func=CHANNEL_NAMES.get)
    if ss.get("cmp_per_row") not in PER_ROW:
        ss["cmp_per_row"] = 4
    per_row = c5.selectbox("Panels per row", PER_ROW, key="cmp_per_row",
                           help="Fewer, larger panels for a projector (or focus on one mode above)")

    slices = sorted(sel["slice_id"].unique(), key=_natural)
    if sort == "slice":
        return sort, channel, slices, {}, per_row
    col = "dice" if sort.startswith("dice") else MEAN_COL[ss.get("cmp_map", "entropy")]
    ref = sel[(sel["backend"] == ref_b) & (sel["mode"] == ref_m)]
    score = ref.groupby("slice_id")[col].mean().to_dict() if col in ref.columns else {}
    ranked = sorted(score, key=lambda s: (score[s], _natural(s)), reverse=sort.endswith("desc"))
    return sort, channel, ranked + [s for s in slices if s not in score], score, per_row


def slice_navigator(order: list[str], score: dict, sort: str, modes: list[str]) -> tuple[str, str, str]:
    """Prev / next buttons (← / → keys) around the slice picker, the map and a one-mode focus; returns
    (slice shown, map name, focused mode or "")."""
    if ss.get("cmp_slice") not in order:
        ss["cmp_slice"] = order[0]
    n1, n2, n3, n4, n5, n6 = st.columns([1.15, 3.0, 1.15, 0.8, 1.6, 1.3], vertical_alignment="bottom")
    n1.button("Prev", key="cmp_prev", on_click=_step, args=(order, -1), icon=":material/chevron_left:",
              shortcut="Left", width="stretch", help="Previous slice (← key)")
    what = SORTS[sort].split(",")[0]
    slice_id = n2.selectbox("Slice", order, key="cmp_slice",
                            format_func=lambda s: f"{s}  ·  {what} {score[s]:.3f}" if s in score else s)
    n3.button("Next", key="cmp_next", on_click=_step, args=(order, 1), icon=":material/chevron_right:",
              shortcut="Right", width="stretch", help="Next slice (→ key)")
    n4.markdown(f"**{order.index(slice_id) + 1}** of {len(order)}")
    if ss.get("cmp_map") not in MAPS:
        ss["cmp_map"] = "entropy"
    map_name = n5.selectbox("Uncertainty map", MAPS, key="cmp_map", format_func=lambda m: viz.MAP_LABELS[m])
    if ss.get("cmp_only", "") not in ["", *modes]:
        ss["cmp_only"] = ""
    only = n6.selectbox("Focus", ["", *modes], key="cmp_only", format_func=lambda m: viz.mode_label(m) if m else "All modes",
                        help="One mode, large, prediction and uncertainty side by side (for a projector)")
    return slice_id, map_name, only


def slice_header(slice_id: str, gt: np.ndarray, rows: pd.DataFrame, missing_maps: list, map_name: str,
                 scale: tuple[float, float], cmap: str, show: str) -> None:
    """One compact row: which slice, the legends and the shared colour bar (the panels stay above the fold)."""
    h1, h2, h3 = st.columns([2.6, 1.5, 1.8], vertical_alignment="center")
    pid = rows["patient_id"].iloc[0] if "patient_id" in rows.columns and len(rows) else slice_id.rsplit("_", 2)[0]
    split = rows["split"].iloc[0] if "split" in rows.columns and len(rows) else "?"
    h1.markdown(f"<div class='seg-slice'><b>{html.escape(slice_id)}</b><br><span>Patient {html.escape(str(pid))} · "
                f"split {html.escape(str(split))} · tumour {int(gt.sum()):,} px ({gt.mean():.2%} of the image) · "
                f"{len(rows)} stored results</span></div>", unsafe_allow_html=True)
    legends = (contour_legend_html() if show in ("heat", "both") else "") + \
        (viz.legend_html().replace("1.1rem", "0.6rem") if show in ("pred", "both") else "")
    h2.markdown(legends, unsafe_allow_html=True)
    h3.markdown(viz.colorbar_html(*scale, viz.MAP_LABELS[map_name] + " — every panel", cmap), unsafe_allow_html=True)
    if missing_maps:
        st.warning("Maps missing in the store for " + ", ".join(f"{b}/{m}" for b, m in missing_maps)
                   + "; their metrics are still shown.", icon=":material/warning:")


def panel_grid(backends: list[str], modes: list[str], rows: pd.DataFrame, maps: dict, image: np.ndarray,
               gt: np.ndarray, map_name: str, scale: tuple[float, float], view: dict, channel: int, box,
               focus: str, per_row: int) -> tuple[list[list[Panel | None]], list[str]]:
    """``per_row`` panels a row, each backend starting a row (so modes line up across backends); returns
    the panels (one row per backend) for the thesis export."""
    grid: list[list[Panel | None]] = []
    labels: list[str] = []
    for backend in backends:
        if len(backends) > 1:
            st.markdown(f"**{display_label(backend)}**")
        out: list[Panel | None] = [None] * len(modes)
        for start in range(0, len(modes), per_row):
            cols = st.columns(per_row)
            for j, (col, mode) in enumerate(zip(cols, modes[start:start + per_row]), start=start):
                with col:
                    label = rows.loc[(backend, mode), "profile"] if (backend, mode) in rows.index else ""
                    title = viz.mode_label(mode) + (f" ({label})" if label else "")
                    title = f":blue[**{title}**] :material/my_location:" if f"{backend}:{mode}" == focus else f"**{title}**"
                    if (backend, mode) not in rows.index:
                        st.markdown(title)
                        st.caption("not computed for this slice")
                        continue
                    out[j] = result_panel(title, image, maps.get((backend, mode)), gt, map_name, scale, view, channel,
                                          box, row=rows.loc[(backend, mode)], mode=mode)
        if any(p is not None for p in out):
            grid.append(out)
            labels.append(backend)
    return grid, labels


def slice_metrics(slice_id: str, rows: pd.DataFrame, modes: list[str], map_name: str, grid: list,
                  labels: list[str], scale: tuple[float, float], view: dict) -> None:
    """The panels as SVG / PDF / PNG, this slice's metrics table and its CSV."""
    if grid:
        tags = {m: {rows.loc[(b, m), "profile"] for b in labels if (b, m) in rows.index} - {""} for m in modes}
        titles = {m: viz.mode_label(m) + (f" ({' / '.join(sorted(tags[m]))})" if tags[m] else "") for m in modes}
        panel_downloads(grid, labels, modes, f"{slice_id}_{map_name}", "cmp_panels", map_name, scale, view["cmap"],
                        view["alpha"], title=f"{slice_id} · {display_label(map_name)}",
                        label=lambda s: titles.get(s) or display_label(s))  # rows: the backends
    st.subheader("This slice's metrics", divider="gray")
    present = [c for c in METRIC_NAMES if c in rows.columns]
    shown = (["profile"] if rows.get("profile", pd.Series(dtype=object)).astype(bool).any() else [])
    table = rows[shown + present + [c for c in ("seconds", "pred_px", "threshold") if c in rows.columns]].reset_index()
    table = sort_by_backend_mode(table)
    st.dataframe(table.rename(columns=METRIC_LABELS), hide_index=True, width="stretch", height=38 + 35 * len(table),
                 column_config={METRIC_LABELS[c]: st.column_config.NumberColumn(format="%.4f") for c in present})
    st.download_button("Metrics (CSV)", table.to_csv(index=False), file_name=f"{slice_id}_metrics.csv",
                       mime="text/csv", icon=":material/download:", on_click="ignore")


def slice_results(sel: pd.DataFrame, slice_id: str) -> tuple[pd.DataFrame, dict]:
    """The slice's results indexed by (backend, mode) (the newest of duplicates) and their stored maps;
    ``profile``: the label of a result computed with tuned / preset settings only (``""`` otherwise)."""
    rows = sel[sel["slice_id"] == slice_id]
    rows = rows.assign(profile=profiles.result_labels(rows, profiles.run_profiles(runs()), run_links()))
    rows = rows.set_index(["backend", "mode"])
    rows = rows[~rows.index.duplicated(keep="last")]
    return rows, {bm: load_maps(rows.loc[bm, "key"]) for bm in rows.index}


st.title("Compare a slice")
sample_notice()

with guard("The slice comparison"):
    selection = selected_results(prepare=_apply_link)
    shown_backends = order_backends(selection["backend"])
    shown_modes = order_modes(selection["mode"])
    top = st.container()
    with st.expander("Slice order, layout and display options"):
        sort_by, channel_shown, slice_order, scores, panels_per_row = view_controls(selection, shown_backends,
                                                                                    shown_modes)
        options = display_options("cmp", container=st.container())
    st.markdown(PANEL_CSS, unsafe_allow_html=True)
    with top:
        current, map_shown, only = slice_navigator(slice_order, scores, sort_by, shown_modes)
    _write_link(metrics_frame(), current, map_shown, shown_backends, shown_modes)
    if only:  # one mode, large: both views side by side in each backend's panel, a backend a row
        shown_modes, panels_per_row, options = [only], 1, {**options, "show": "both", "side_by_side": True}

    img, truth = stored_slice_arrays(current)
    results, stored_maps = slice_results(selection, current)
    colour_scale = map_scale([m for (b, mode), m in stored_maps.items() if not viz.map_note(mode, map_shown)],
                             map_shown, options["shared_max"])
    crop = viz.crop_box([truth, *[m["mask"] for m in stored_maps.values() if m is not None]], truth.shape) \
        if options["zoom"] else (0, truth.shape[0], 0, truth.shape[1])
    slice_header(current, truth, results, [bm for bm, m in stored_maps.items() if m is None], map_shown,
                 colour_scale, options["cmap"], options["show"])
    panels, panel_labels = panel_grid(shown_backends, shown_modes, results, stored_maps, img, truth, map_shown,
                                      colour_scale, options, channel_shown, crop, ss.get("cmp_focus", ""),
                                      panels_per_row)
    slice_metrics(current, results, shown_modes, map_shown, panels, panel_labels, colour_scale, options)
