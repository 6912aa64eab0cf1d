"""Your image: run a ready backend and modes on an uploaded slice (PNG / TIFF), with an optional mask
and, for the MedSAM family, a typed box; shown with the Compare page's viewer. Nothing is stored:
the results live in this browser session only."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages._access import principal
from pages._errors import explain, guard
from pages._export import panel_downloads
from pages._settings import ensure_app
from pages._backends import backend_readiness
from pages._viewer import (CHANNEL_NAMES, PANEL_CSS, VIEW_MAPS, contour_legend_html,
                           display_options, map_scale, result_panel)
from segunc import settings, viz
from segunc.analysis.stats import METRIC_LABELS
from segunc.backends import BACKENDS, box_from_mask, default_device
from segunc.config import PipelineConfig
from segunc.data.upload import UploadError, UploadedSlice, load_upload
from segunc.metrics import METRIC_NAMES
from segunc.pipeline import all_mode_names, required_modes
from segunc.pipeline_upload import evaluate_upload
from segunc.runner.sweep import build_backend

ensure_app()

ss = st.session_state
TYPES = ["png", "tif", "tiff"]
POLICY = """**How an upload is read** (segunc/data/upload.py)
- PNG or TIFF, recognised by content. A multi-page TIFF: the first page.
- 3 channels are taken as LGG's pre-contrast, FLAIR, post-contrast; a **grayscale** image is **replicated**
  into all three. An opaque alpha channel is dropped; other channel counts are refused.
- **16-bit** (or 32-bit / float) images are **rescaled** linearly from their own min..max to 0..255.
- Sizes other than 256 × 256 are **padded** to a square with black (aspect ratio kept) and **resized** to 256 × 256.
- The mask must be binary (0/255 or 0/1), of the image's size; it is resized with the image.
- Boxes are in pixels of the 256 × 256 slice. Results are not written to the results store."""


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _backend(name: str, weights: str | None, device: str, data: str | None):
    """The backend (one per name, weights and device; shared by sessions) and a lock: MC dropout hooks the
    shared model while it runs, so one run at a time uses it."""
    return build_backend(name, weights=weights, device=device, data=data), threading.Lock()


def _refusal() -> str | None:
    """Why this session may not upload (a viewer in server mode; demo mode), None if it may."""
    who = principal()
    if who.can_run:
        return None
    return ("Demo mode is read-only: nothing is computed here." if who.read_only
            else "Running models on your own images is for runners; you are signed in as a viewer.")


def _modes_for(cls) -> list[str]:
    out = []
    for m in all_mode_names():
        if m == "box_jitter" and not cls.needs_box:
            continue
        if m == "support_resample" and not cls.needs_support:
            continue
        out.append(m)
    return out


def _box_keys(upload) -> list[str]:
    return [f"up_box_{label}_{upload.slice_id}" for label in ("x0", "y0", "x1", "y1")]


def _box_drawn(upload) -> None:
    """The image with the box prompt: drag a box on it (Plotly box selection) to set x0, y0, x1, y1;
    the box in the fields below is drawn on it."""
    h, w = upload.image.shape[:2]
    keys = _box_keys(upload)
    fig = go.Figure(go.Image(z=viz.overlay(upload.image, None, upload.mask if upload.has_mask else None, alpha=0.3),
                             hoverinfo="x+y"))
    vals = [ss.get(k) for k in keys]
    if all(v is not None for v in vals):
        fig.add_shape(type="rect", x0=vals[0], y0=vals[1], x1=vals[2], y1=vals[3], line=dict(color="#D55E00", width=2))
    fig.update_layout(dragmode="select", height=360, margin=dict(l=0, r=0, t=0, b=0), showlegend=False,
                      xaxis=dict(visible=False, range=[-0.5, w - 0.5]),
                      yaxis=dict(visible=False, range=[h - 0.5, -0.5], scaleanchor="x"))
    event = st.plotly_chart(fig, key=f"up_boxpick_{upload.slice_id}", on_select="rerun", selection_mode="box",
                            config={"displayModeBar": False}, width="content")
    boxes = (event or {}).get("selection", {}).get("box") or []
    if boxes:
        b = boxes[-1]
        xs = sorted(int(round(min(max(v, 0), w - 1))) for v in b["x"])
        ys = sorted(int(round(min(max(v, 0), h - 1))) for v in b["y"])
        drawn = [xs[0], ys[0], xs[1], ys[1]]
        if drawn != ss.get(f"_up_drawn_{upload.slice_id}"):  # a new drag: it sets the fields (typing still wins after)
            ss[f"_up_drawn_{upload.slice_id}"] = drawn
            for k, v in zip(keys, drawn):
                ss[k] = v
            st.rerun()


def _box_inputs(upload, margin: int = 0) -> list[float | None]:
    """Four number inputs x0, y0, x1, y1; defaults: the mask's bounding box (keys follow the upload)."""
    default = box_from_mask(upload.mask, margin) if upload.has_tumour else None
    h, w = upload.image.shape[:2]
    out = []
    for i, (col, label, key) in enumerate(zip(st.columns(4), ("x0", "y0", "x1", "y1"), _box_keys(upload))):
        hi = (w if label.startswith("x") else h) - 1
        if key not in ss:
            ss[key] = None if default is None else int(default[i])
        out.append(col.number_input(label, 0, hi, step=1, key=key, placeholder="pixels"))
    return out


def _run(name: str, upload, modes: list[str], samples: int, box) -> None:
    """Run the modes on the upload (one run at a time per model); the result goes to session state."""
    config = PipelineConfig(samples=int(samples))
    plan = required_modes(modes, config)
    bar = st.progress(0.0, text="Loading the model…")
    cls = BACKENDS.get(name)
    weights = cls.find_weights()
    backend, lock = _backend(name, str(weights) if weights else None, default_device(),
                             str(settings.app_data_dir()) if cls.needs_support else None)
    done = []

    def on_mode(m: str) -> None:
        bar.progress(len(done) / len(plan), text=f"{viz.mode_label(m)} ({len(done) + 1} of {len(plan)})…")
        done.append(m)

    with lock:
        results = evaluate_upload(backend, upload, modes, config, box=box, on_mode=on_mode)
    bar.progress(1.0, text="Done")
    bar.empty()
    ss["up_result"] = {"slice_id": upload.slice_id, "backend": name, "modes": modes, "samples": int(samples),
                       "box": None if box is None else [int(v) for v in box], "results": results,
                       "seconds": max(r.seconds for r in results.values())}


def upload_form() -> UploadedSlice | None:
    """The slice and optional mask uploaders and how uploads are read; the checked upload, or None."""
    c1, c2 = st.columns(2)
    img_file = c1.file_uploader("Slice (PNG or TIFF)", type=TYPES, key="up_image",
                                help="256 × 256 × 3 like LGG (pre-contrast, FLAIR, post-contrast), or grayscale")
    mask_file = c2.file_uploader("Tumour mask (optional; PNG or TIFF, 0/255 or 0/1)", type=TYPES, key="up_mask",
                                 help="Without a mask, the prediction is shown without metrics")
    with st.expander("How uploads are read"):
        st.markdown(POLICY)
    if img_file is None:
        st.info("Upload a slice to begin." + (" The mask is used only together with a slice." if mask_file else ""),
                icon=":material/upload_file:")
        return None
    try:
        upload = load_upload(img_file.getvalue(), img_file.name, None if mask_file is None else mask_file.getvalue(),
                             None if mask_file is None else mask_file.name)
    except UploadError as exc:
        st.error(f"**`{exc.name}` could not be used:** {exc.problem}", icon=":material/error:")
        return None
    if upload.notes:
        st.info("**How your files were read**\n" + "\n".join(f"- {n}" for n in upload.notes), icon=":material/info:")
    return upload


def model_choice(upload: UploadedSlice) -> None:
    """A ready backend, modes, samples and (MedSAM family) a box prompt; the Run button."""
    st.subheader("Model and modes", divider="gray")
    readiness = backend_readiness()
    ready = [b for b, why in readiness.items() if why is None]
    if not ready:
        st.warning("No backend is ready: see the Set-up page for the weights.", icon=":material/block:")
        st.stop()
    m1, m2, m3 = st.columns([1, 2, 1])
    name = m1.selectbox("Backend", ready, key="up_backend")
    not_ready = {b: why for b, why in readiness.items() if why}
    if not_ready:
        m1.caption("Not ready: " + ", ".join(not_ready) + " (see the Set-up page).")
    cls = BACKENDS.get(name)
    options = _modes_for(cls)
    if [m for m in ss.get("up_modes", []) if m not in options]:
        ss["up_modes"] = [m for m in ss["up_modes"] if m in options]
    modes = m2.multiselect("Modes", options, default=None if "up_modes" in ss else ["normal"], key="up_modes",
                           format_func=viz.mode_label,
                           help="Fusion needs MC dropout, TTA and noisy (computed with it); CRF needs fusion")
    samples = m3.number_input("Samples T", 1, 100, 10, key="up_T",
                              help="Samples of MC dropout, noisy and box jitter (TTA always uses its 30 transforms)")
    box = None
    if cls.needs_box:
        st.markdown("**Box prompt** — drag a box around the tumour on the image, or type it (pixels of the "
                    "256 × 256 slice; default: the mask's bounding box)")
        b1, b2 = st.columns([1, 1.4])
        with b1:
            _box_drawn(upload)
        with b2:
            vals = _box_inputs(upload)
            box = None if any(v is None for v in vals) else vals
            if box is None:
                st.caption(f"{name} needs a box around the tumour: drag one on the image or type x0, y0, x1, y1.")
            elif box[0] >= box[2] or box[1] >= box[3]:
                st.warning("The box needs x0 < x1 and y0 < y1.", icon=":material/warning:")
                box = None
    st.caption(f"Runs on {default_device().upper()} here; a CPU run of the sampling modes on the MedSAM family takes "
               "minutes (one encoder pass per sample).")
    # a callback, not the button's return value: it survives the rerun of ensure_app() on a cold start
    st.button("Run", key="up_run", type="primary", icon=":material/play_arrow:", on_click=ss.update,
              kwargs={"up_go": True}, disabled=not modes or (cls.needs_box and box is None))
    if ss.pop("up_go", False):
        try:
            _run(name, upload, list(modes), int(samples), box)
        except ValueError as exc:
            st.error(f"**The run could not start:** {explain(exc)}", icon=":material/error:")


def result_viewer(upload: UploadedSlice, res: dict) -> None:
    """The upload with its mask, one panel per mode (prediction and uncertainty), metrics and downloads."""
    results = res["results"]
    st.subheader("Result", divider="gray")
    st.caption(f"{res['backend']} · {', '.join(viz.mode_label(m) for m in res['modes'])} · T = {res['samples']}"
               + (f" · box {tuple(res['box'])}" if res["box"] else "") + f" · {res['seconds']:.1f} s")
    v1, v2 = st.columns(2)
    map_name = v1.selectbox("Uncertainty map", VIEW_MAPS, key="up_map", format_func=lambda m: viz.MAP_LABELS[m])
    channel = v2.selectbox("Image channel", list(CHANNEL_NAMES), index=1, key="up_channel",
                           format_func=CHANNEL_NAMES.get)
    view = display_options("up")
    st.markdown(PANEL_CSS, unsafe_allow_html=True)
    image = upload.image
    gt = upload.mask if upload.has_mask else None
    maps = {m: r.maps for m, r in results.items()}
    lo, hi = map_scale(maps.values(), map_name, view["shared_max"])
    prompt = np.zeros(upload.mask.shape, bool)
    if res["box"]:
        prompt[res["box"][1]:res["box"][3] + 1, res["box"][0]:res["box"][2] + 1] = True
    box = viz.crop_box([upload.mask, prompt, *[m["mask"] for m in maps.values()]], upload.mask.shape) if view["zoom"] \
        else (0, image.shape[0], 0, image.shape[1])

    h1, h2 = st.columns([1, 3])
    with h1:
        shown = viz.overlay(image, None, gt, alpha=0.35, channel=channel)
        if res["box"]:  # the box prompt the run used, in the prediction contour's colour
            x0, y0, x1, y1 = res["box"]
            for sl in (np.s_[y0, x0:x1 + 1], np.s_[y1, x0:x1 + 1], np.s_[y0:y1 + 1, x0], np.s_[y0:y1 + 1, x1]):
                shown[sl] = viz.CONTOUR_COLORS["pred"]
        st.image(viz.crop(shown, box), width="stretch",
                 caption=f"{CHANNEL_NAMES[channel]}" + (" + your mask" if gt is not None else "")
                 + (" + box prompt" if res["box"] else ""))
    with h2:
        st.markdown(f"### {upload.name}\n" + (f"Mask **{upload.mask_name}** · tumour **{int(upload.mask.sum()):,} px**"
                                              if gt is not None else "No mask: the prediction alone, no metrics."))
        st.markdown(contour_legend_html(truth=gt is not None)
                    + (viz.legend_html() if gt is not None and view["show"] != "heat" else ""), unsafe_allow_html=True)
        st.markdown(viz.colorbar_html(lo, hi, viz.MAP_LABELS[map_name] + " — every uncertainty panel", view["cmap"]),
                    unsafe_allow_html=True)

    panels = []
    per_row = 4 if len(results) > 3 else 3  # panels keep the Compare page's size, one mode or many
    items = list(results.items())
    for start in range(0, len(items), per_row):
        for col, (mode, r) in zip(st.columns(per_row), items[start:start + per_row]):
            with col:
                panels.append(result_panel(f"**{viz.mode_label(mode)}**", image, r.maps, gt, map_name, (lo, hi), view,
                                           channel, box, row=pd.Series(r.row(res["backend"])), mode=mode))
    _metrics_and_downloads(upload, res, gt is not None, panels, map_name, (lo, hi), view)


def _metrics_and_downloads(upload: UploadedSlice, res: dict, has_mask: bool, panels: list, map_name: str,
                           scale: tuple[float, float], view: dict) -> None:
    results = res["results"]
    panel_downloads([panels], [res["backend"]], list(results), f"{upload.slice_id}_{map_name}", "up_panels", map_name,
                    scale, view["cmap"], view["alpha"])
    table = None
    if has_mask:
        table = pd.DataFrame([r.row(res["backend"]) for r in results.values()])
        keep = ["mode", *[c for c in METRIC_NAMES if c in table.columns], "seconds", "pred_px", "tumour_px"]
        table = table[keep]
        st.dataframe(table.rename(columns=METRIC_LABELS), hide_index=True, width="stretch",
                     column_config={METRIC_LABELS[c]: st.column_config.NumberColumn(format="%.4f")
                                    for c in METRIC_NAMES if c in table.columns})
    if table is not None:
        st.download_button("Metrics (CSV)", table.to_csv(index=False), file_name=f"{upload.slice_id}_metrics.csv",
                           mime="text/csv", icon=":material/download:", on_click="ignore")


st.title("Your image")
st.caption("Upload one MRI slice (and, if you have it, its tumour mask), pick a ready backend and modes, and see the "
           "prediction and its uncertainty. Results stay in this browser session; nothing is written to the store.")

refused = _refusal()
if refused:
    st.warning(refused, icon=":material/lock:")
    st.stop()
uploaded = None
with guard("The upload"):
    uploaded = upload_form()
if uploaded is not None:
    with guard("The model choice"):
        model_choice(uploaded)
last = ss.get("up_result")
if uploaded is not None and last is not None and last["slice_id"] == uploaded.slice_id:
    with guard("The result viewer"):
        result_viewer(uploaded, last)
elif uploaded is not None and last is not None:
    st.caption("The last result was for another upload; press Run for this one.")
