"""The slice viewer shared by the Compare page (stored results) and the Your image page (an uploaded
slice, never stored): display options, the heatmap scale, one backend × mode panel; and which
backends can run here. Figures come from :mod:`segunc.viz`; nothing is computed here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages._data import slice_index
from segunc import settings, viz
from segunc.backends import BACKENDS, found_weights

CHANNEL_NAMES = {0: "pre-contrast", 1: "FLAIR", 2: "post-contrast"}
VIEW_MAPS = ("entropy", "variance", "mutual_information")
PANEL_CSS = """<style>
table.seg-m {font-size: 0.74rem; border-collapse: collapse; width: 100%; margin: 0; border: none}
table.seg-m td {border: none; padding: 0 0.25rem 0 0; white-space: nowrap; color: #4a5560}
table.seg-m td b {color: #1b1f24; font-weight: 600}
div.seg-foot {font-size: 0.7rem; color: #6b7785; margin-top: 0.15rem}
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


def display_options(prefix: str) -> dict:
    """The viewer's "Display options" expander (widget keys ``<prefix>_zoom`` …): zoom, scale, cmap, alpha."""
    with st.expander("Display options"):
        o1, o2, o3, o4 = st.columns(4)
        zoom = o1.toggle("Zoom to the tumour", value=True, key=f"{prefix}_zoom")
        scale = o2.radio("Colour scale", ["max of the shown panels", "full theoretical range"], key=f"{prefix}_scale",
                         help="One scale is shared by every uncertainty panel either way")
        cmap = o3.selectbox("Colour map", ["Viridis", "Inferno", "Cividis", "Magma"], key=f"{prefix}_cmap")
        alpha = o4.slider("Overlay opacity", 0.2, 1.0, 0.6, 0.05, key=f"{prefix}_alpha")
    return {"zoom": zoom, "shared_max": scale.startswith("max"), "cmap": cmap, "alpha": alpha}


def map_scale(maps, map_name: str, shared_max: bool) -> tuple[float, float]:
    """(lo, hi) of the heatmaps: the map's theoretical range, or up to the max over ``maps`` (None skipped)."""
    lo, hi = viz.MAP_RANGES[map_name]
    if shared_max:
        vals = [float(np.nanmax(m[map_name])) for m in maps if m is not None]
        hi = max(vals) if vals and max(vals) > 0 else hi
    return lo, hi


def result_panel(title: str, image: np.ndarray, maps: dict | None, gt: np.ndarray | None, map_name: str,
                 scale: tuple[float, float], view: dict, channel: int, box, row=None):
    """One bordered panel: title, the prediction over the image (TP / FP / FN against ``gt``; the
    prediction alone when ``gt`` is None), the ``map_name`` heatmap on ``scale`` and the metrics
    of ``row``. Returns the (overlay, heatmap) images shown, (None, None) without maps."""
    ov = heat = None
    with st.container(border=True):
        st.markdown(title)
        if maps is not None:
            ov = viz.crop(viz.overlay(image, maps["mask"], gt, alpha=view["alpha"], channel=channel), box)
            heat = viz.crop(viz.colorize(maps[map_name], *scale, view["cmap"]), box)
            st.image(ov, width="stretch")
            st.image(heat, width="stretch")
        if row is not None:
            st.markdown(metric_html(row), unsafe_allow_html=True)
    return ov, heat


def backend_readiness() -> dict[str, str | None]:
    """Per registered backend: None if it can run here (weights found; UniverSeg also needs the LGG
    data for its support set), else why not."""
    out: dict[str, str | None] = {}
    for name, found in found_weights().items():
        cls = BACKENDS.get(name)
        why = None if found is not None else (cls.weights_hint or "weights missing")
        if why is None and cls.needs_support:
            try:
                slice_index(str(settings.data_dir()))
            except Exception:  # noqa: BLE001
                why = f"needs the LGG data (its support set is drawn from train slices); none at `{settings.data_dir()}`"
        out[name] = why
    return out
