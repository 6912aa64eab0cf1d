"""Overview: what the results store (in demo mode: the imported snapshot) holds — backends, modes, slices,
patients, the settings its runs actually used — and one large slice view. Text read from a snapshot is
shown as plain text, never rendered as Markdown."""
from __future__ import annotations

import json

import streamlit as st

from pages._data import load_maps, metrics_frame, runs, sample_notice
from pages._errors import guard
from pages._export import chart_downloads
from pages._settings import PAGE_FILES, ensure_app
from pages._viewer import CHANNEL_NAMES, VIEW_MAPS, contour_legend_html, stored_slice_arrays
from segunc import settings, viz
from segunc.report.export import display_label
from segunc.report.overview import store_overview

ensure_app()
ss = st.session_state


def _manifest() -> dict:
    try:
        m = json.loads((settings.store_dir() / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def holdings(ov: dict) -> None:
    """Counts, then the settings each run used (from its recorded spec)."""
    c = st.columns(5)
    c[0].metric("Backends", len(ov["backends"]), help=", ".join(display_label(b) for b in ov["backends"]))
    c[1].metric("Modes", len(ov["modes"]), help=", ".join(viz.mode_label(m) for m in ov["modes"]))
    c[2].metric("Slices", ov["slices"], help=", ".join(f"{k}: {v}" for k, v in ov["splits"].items()))
    c[3].metric("Patients", ov["patients"])
    c[4].metric("Results", ov["results"])
    st.text("Backends: " + ", ".join(display_label(b) for b in ov["backends"]) + "   ·   Modes: "
            + ", ".join(viz.mode_label(m) for m in ov["modes"]) + "   ·   Slices per split: "
            + ", ".join(f"{k} {v}" for k, v in ov["splits"].items()))
    m = _manifest()
    if m:
        st.text("Manifest: " + " · ".join(f"{k} {m[k]}" for k in ("created_at", "host", "source", "segunc_version",
                                                                  "pipeline_version") if m.get(k)))


def dice_at_a_glance(df) -> None:
    """Dice per mode and backend (every stored slice), downloadable for a thesis or slides."""
    st.subheader("Dice at a glance", divider="gray")
    n = df.groupby(["backend", "mode"])["slice_id"].nunique()
    st.caption(f"Every stored result: {n.min()}–{n.max()} slices per backend × mode. The Metrics page compares "
               "like with like (common slices, tests, cautions)." if n.min() != n.max()
               else f"Every stored result: {n.min()} slices per backend × mode.")
    fig = viz.distribution_figure(df, "dice", "box", height=380)
    st.plotly_chart(fig, width="stretch", key="pres_dice")
    chart_downloads(fig, "segunc_dice_overview", "pres_dice_dl")


def settings_used(ov: dict) -> None:
    st.subheader("Settings these results were computed with", divider="gray")
    if ov["settings"].empty:
        st.caption("No run records in this store (results imported without their runs).")
        return
    st.caption("From each run's recorded spec, not the paper's defaults"
               + (f" — samples T = {', '.join(ov['samples'])}." if ov["samples"] else "."))
    # static HTML, cells escaped: the landing view loads neither the grid's nor Arrow's code
    st.markdown(viz.table_html(ov["settings"].set_index(ov["settings"].columns[0])), unsafe_allow_html=True)


def slice_view(df) -> None:
    """One large slice: a result's uncertainty over the anatomy and its prediction against the truth."""
    st.subheader("One slice", divider="gray")
    sizes = df.groupby("slice_id")["tumour_px"].max().sort_values(ascending=False)
    slices = list(sizes.index)
    s1, s2, s3, s4 = st.columns([2.2, 1, 1, 1.3])
    slice_id = s1.selectbox("Slice", slices, key="pres_slice", help="Largest tumour first")
    here = df[df["slice_id"] == slice_id]
    backends = [b for b in store_overview(here, runs().iloc[0:0])["backends"]]
    backend = s2.selectbox("Backend", backends, key="pres_backend", format_func=display_label)
    modes = store_overview(here[here["backend"] == backend], runs().iloc[0:0])["modes"]
    default = "fusion" if "fusion" in modes else modes[-1]
    if ss.get("pres_mode") not in modes:
        ss["pres_mode"] = default
    mode = s3.selectbox("Mode", modes, key="pres_mode", format_func=viz.mode_label)
    maps_ok = [m for m in VIEW_MAPS if not viz.map_note(mode, m)]
    map_name = s4.selectbox("Uncertainty map", maps_ok, key="pres_map", format_func=lambda m: viz.MAP_LABELS[m])
    row = here[(here["backend"] == backend) & (here["mode"] == mode)].iloc[-1]
    image, truth = stored_slice_arrays(slice_id)
    maps = load_maps(row["key"])
    if maps is None:
        st.warning(f"The maps of {backend} / {mode} are missing in the store.", icon=":material/warning:")
        return
    box = viz.crop_box([truth, maps["mask"]], truth.shape, margin=24)
    lo, hi = viz.MAP_RANGES[map_name]
    top = float(maps[map_name].max())
    hi = top if top > 0 else hi
    a, b = st.columns(2)
    a.image(viz.heat_overlay(image, maps[map_name], lo, hi, "Viridis", 0.75, truth, maps["mask"], 1, box, size=640),
            width="stretch", caption=f"{display_label(backend, mode)}: {viz.MAP_LABELS[map_name]} over FLAIR")
    b.image(viz.crop(viz.overlay(image, maps["mask"], truth, alpha=0.6, channel=1), box), width="stretch",
            caption=f"Prediction against the ground truth ({CHANNEL_NAMES[1]})")
    l1, l2 = st.columns(2)
    l1.markdown(contour_legend_html() + viz.colorbar_html(lo, hi, viz.MAP_LABELS[map_name]), unsafe_allow_html=True)
    l2.markdown(viz.legend_html(), unsafe_allow_html=True)
    st.text(f"Patient {row['patient_id']} · split {row['split']} · tumour {int(truth.sum()):,} px · "
            f"Dice {row['dice']:.3f} · mean {viz.MAP_LABELS[map_name].split(' (')[0].lower()} "
            f"{float(maps[map_name].mean()):.4f}")
    st.page_link(PAGE_FILES["compare"], label="Every backend and mode on this slice", icon=":material/view_column:",
                 query_params={"slice": slice_id, "map": map_name, "focus": f"{backend}:{mode}"})


st.title("What these results hold")
sample_notice()
with guard("The overview"):
    frame = metrics_frame()
    if frame.empty:
        st.info("The results store is empty: run a sweep on the Run page (or import a snapshot) first.",
                icon=":material/inbox:")
        st.stop()
    overview = store_overview(frame, runs())
    holdings(overview)
t_slice, t_dice = st.tabs(["One slice", "Dice at a glance"], key="pres_tab", on_change="rerun")
if t_slice.open:  # each tab is drawn only when open: the landing view loads no chart code
    with t_slice, guard("The slice view"):
        slice_view(frame)
if t_dice.open:
    with t_dice, guard("The Dice chart"):
        dice_at_a_glance(frame)
with guard("The settings"):
    settings_used(overview)
