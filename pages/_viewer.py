"""The slice viewer shared by the Compare page (stored results) and the Your image page (an uploaded
slice, never stored): display options, the heatmap scale, one backend × mode panel.
Figures come from :mod:`segunc.viz`; nothing is computed here (which backends can run here:
:mod:`pages._backends`, which loads the models' code)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages._data import slice_arrays, store
from segunc import settings, viz
from segunc.data.slice_pack import load_stored_slice
from segunc.report.export import Panel

CHANNEL_NAMES = {0: "pre-contrast", 1: "FLAIR", 2: "post-contrast"}
VIEW_MAPS = ("entropy", "variance", "mutual_information")
#: what each panel shows
PANEL_VIEWS = {"heat": "Uncertainty over the image", "pred": "Prediction vs truth (TP / FP / FN)", "both": "Both"}
PANEL_CSS = """<style>
table.seg-m {font-size: 0.78rem; border-collapse: collapse; width: 100%; table-layout: fixed; margin: 0; border: none}
table.seg-m td {border: none; padding: 0 0.2rem 0 0; color: #4a5560; overflow-wrap: anywhere}
table.seg-m td b {color: #1b1f24; font-weight: 600}
div.seg-foot {font-size: 0.72rem; color: #6b7785; margin-top: 0.15rem; overflow-wrap: anywhere}
div.seg-na {font-size: 0.72rem; color: #6b7785; overflow-wrap: anywhere}
div.seg-slice {line-height: 1.3; overflow-wrap: anywhere} div.seg-slice b {font-size: 1.15rem}
div.seg-slice span {font-size: 0.8rem; color: #6b7785}
</style>"""
_PANEL_METRICS = ("dice", "iou", "precision", "recall", "nll", "ece", "brier", "certainty")


def metric_html(row) -> str:
    """A compact two-column table of one panel's metrics (only the footer when the row has none)."""
    def f(k, d=3):
        return f"{row[k]:.{d}f}" if k in row and pd.notna(row[k]) else "–"
    secs = f" · {row['seconds']:.1f} s" if "seconds" in row and pd.notna(row["seconds"]) else ""
    foot = f"<div class='seg-foot'>{int(row.get('pred_px', 0)):,} px predicted{secs}</div>"
    if not any(k in row for k in _PANEL_METRICS):
        return foot
    cells = [("Dice", f("dice")), ("IoU", f("iou")), ("Prec.", f("precision")), ("Recall", f("recall")),
             ("NLL", f("nll")), ("ECE", f("ece", 4)), ("Brier", f("brier", 4)), ("Cert.", f("certainty"))]
    trs = "".join(f"<tr><td>{a}</td><td><b>{va}</b></td><td>{b}</td><td><b>{vb}</b></td></tr>"
                  for (a, va), (b, vb) in zip(cells[::2], cells[1::2]))
    return f"<table class='seg-m'>{trs}</table>{foot}"


def display_options(prefix: str, container=None) -> dict:
    """The viewer's display options (widget keys ``<prefix>_zoom`` …): what a panel shows, zoom, scale,
    cmap, alpha; in a "Display options" expander unless a ``container`` is given."""
    box = container if container is not None else st.expander("Display options")
    with box:
        o0, o1, o2, o3, o4 = st.columns([1.3, 0.9, 1.2, 0.9, 1.1])
        if st.session_state.get(f"{prefix}_show") not in PANEL_VIEWS:
            st.session_state[f"{prefix}_show"] = "heat"
        show = o0.radio("Panels show", list(PANEL_VIEWS), format_func=PANEL_VIEWS.get, key=f"{prefix}_show")
        zoom = o1.toggle("Zoom to the tumour", value=True, key=f"{prefix}_zoom")
        scale = o2.radio("Colour scale", ["max of the shown panels", "full theoretical range"], key=f"{prefix}_scale",
                         help="One scale is shared by every uncertainty panel either way")
        cmap = o3.selectbox("Colour map", ["Viridis", "Inferno", "Cividis", "Magma"], key=f"{prefix}_cmap")
        alpha = o4.slider("Overlay opacity", 0.2, 1.0, 0.7, 0.05, key=f"{prefix}_alpha",
                          help="Of the uncertainty over the anatomy (scaled by the value: certain tissue stays "
                               "readable) and of the TP / FP / FN colours")
    return {"show": show, "zoom": zoom, "shared_max": scale.startswith("max"), "cmap": cmap, "alpha": alpha}


def contour_legend_html(truth: bool = True) -> str:
    """Legend of the contours drawn by :func:`segunc.viz.heat_overlay` (the prediction's alone without a truth)."""
    t, p = (f"rgb{viz.CONTOUR_COLORS[k]}" for k in ("truth", "pred"))
    return ('<div style="font-size:0.85rem;margin:0.2rem 0 0.4rem 0">'
            + (f'<span style="display:inline-block;width:22px;border-top:3px solid {t};vertical-align:middle;'
               'margin-right:6px"></span>ground truth &nbsp; ' if truth else "")
            + f'<span style="display:inline-block;width:22px;border-top:3px dashed {p};vertical-align:middle;'
            'margin-right:6px"></span>prediction</div>')


def map_scale(maps, map_name: str, shared_max: bool) -> tuple[float, float]:
    """(lo, hi) of the heatmaps: the map's theoretical range, or up to the max over ``maps`` (None skipped)."""
    lo, hi = viz.MAP_RANGES[map_name]
    if shared_max:
        vals = [float(np.nanmax(m[map_name])) for m in maps if m is not None]
        hi = max(vals) if vals and max(vals) > 0 else hi
    return lo, hi


def result_panel(title: str, image: np.ndarray, maps: dict | None, gt: np.ndarray | None, map_name: str,
                 scale: tuple[float, float], view: dict, channel: int, box, row=None, mode: str | None = None):
    """One bordered panel: title, then (``view["show"]``) the ``map_name`` map on ``scale`` over the
    anatomy with the truth / prediction contours and/or the prediction against ``gt`` (TP / FP / FN;
    the prediction alone when ``gt`` is None), and the metrics of ``row``. A map that does not apply
    to ``mode`` (:func:`segunc.viz.map_note`) is not drawn; the reason is. Returns the panel for the
    thesis export (:class:`segunc.report.export.Panel`), None without maps."""
    panel = None
    show = view.get("show", "heat")
    note = viz.map_note(mode, map_name) if mode else None
    with st.container(border=True):
        st.markdown(title)
        if maps is not None:
            heat = None if note else maps[map_name]
            side = show == "both" and view.get("side_by_side")  # focus: the two views next to each other
            c_heat, c_pred = st.columns(2) if side else (st.container(), st.container())
            if show in ("heat", "both"):
                c_heat.image(viz.heat_overlay(image, heat, *scale, view["cmap"], view["alpha"], gt, maps["mask"],
                                              channel, box, size=512 if side else 384), width="stretch")
            if show in ("pred", "both"):
                c_pred.image(viz.crop(viz.overlay(image, maps["mask"], gt, alpha=view["alpha"], channel=channel), box),
                             width="stretch")
            if note:
                st.markdown(f"<div class='seg-na'>{viz.MAP_LABELS[map_name]}: n/a ({note})</div>",
                            unsafe_allow_html=True)
            elif mode and viz.map_origin(mode, map_name):
                st.markdown(f"<div class='seg-na'>{viz.MAP_LABELS[map_name]}: {viz.map_origin(mode, map_name)}</div>",
                            unsafe_allow_html=True)
            caption = f"Dice {row['dice']:.3f}" if row is not None and "dice" in row and pd.notna(row["dice"]) else ""
            panel = Panel(image=viz.crop(viz.to_rgb(image, channel), box),
                          heat=None if heat is None else viz.crop(np.asarray(heat, np.float32), box),
                          truth=None if gt is None else viz.crop(np.asarray(gt, bool), box),
                          pred=viz.crop(np.asarray(maps["mask"], bool), box), caption=caption)
        if row is not None:
            st.markdown(metric_html(row), unsafe_allow_html=True)
    return panel


@st.cache_resource(show_spinner=False, max_entries=256)
def _packed_slice(store_root: str, data_root: str, slice_id: str):
    rows = store().con.execute("SELECT image FROM results WHERE slice_id = ? AND image IS NOT NULL LIMIT 1",
                               (slice_id,)).fetchall()
    return load_stored_slice(store_root, rows[0][0], data_root) if rows else None


def stored_slice_arrays(slice_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) of a slice with stored results: from the data folder, else from the store's slice pack
    (a snapshot on a machine without the data); KeyError naming both places when neither has it."""
    try:
        return slice_arrays(slice_id)
    except Exception as exc:  # noqa: BLE001 - no data folder, or the slice is not in it: try the pack
        why = exc
    got = _packed_slice(str(settings.store_dir()), str(settings.app_data_dir()), slice_id)
    if got is None:
        raise KeyError(f"slice {slice_id} is neither in the data folder ({why}) nor in the store's slice pack "
                       f"({settings.store_dir() / 'slices.npz'})")
    return got
