"""Figures and images for the app and the thesis (paper §4.1, "Qualitative Evaluation").

Pure functions: numpy arrays in, ``uint8`` RGB images or plotly figures out; no Streamlit.

* :func:`overlay` — prediction against ground truth on the MRI slice: true positives, false
  positives and false negatives in three colour-blind-safe colours (Okabe & Ito 2008: yellow,
  vermillion, sky blue; they stay apart under simulated protan-, deutan- and tritanopia).
* :func:`colorize` / :func:`colorbar_html` — uncertainty heatmaps on one shared scale.
* :func:`distribution_figure` — box / violin plots of a metric by mode and backend, each point
  carrying its result ``key`` and ``slice_id`` as ``customdata`` (click → slice).
* :func:`reliability_figure`, :func:`calibration_figure` — calibration (paper §4.1).
* :func:`pvalue_figure`, :func:`tumour_profile_figure`.
* :func:`risk_coverage_figure`, :func:`decomposition_figure`, :func:`cost_quality_figure` — the
  Review & errors page.
"""
from __future__ import annotations

import html
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .metrics import HIGHER_IS_BETTER, ece_from_bins
from .analysis.applicable import map_applies
from .analysis.stats import BACKEND_LABELS, METRIC_LABELS, MODE_LABELS, mode_label, order_backends, order_modes

__all__ = ["OUTCOME_COLORS", "BACKEND_COLORS", "MODE_COLORS", "MAP_LABELS", "MAP_RANGES", "to_rgb", "overlay",
           "outcome_counts", "colorize", "colorbar_html", "legend_html", "crop_box", "crop", "distribution_figure",
           "reliability_figure", "calibration_figure", "pvalue_figure", "tumour_profile_figure", "mode_label",
           "grid_png", "box_stats", "risk_coverage_figure", "decomposition_figure", "cost_quality_figure", "log_ticks",
           "heat_overlay", "map_note", "map_origin", "CONTOUR_COLORS"]

#: Okabe-Ito colours for the three outcomes of a prediction against the ground truth
OUTCOME_COLORS = {"TP": (240, 228, 66), "FP": (213, 94, 0), "FN": (86, 180, 233)}
OUTCOME_LABELS = {"TP": "true positive (tumour found)", "FP": "false positive (over-segmented)",
                  "FN": "false negative (tumour missed)"}
_OKABE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
BACKEND_COLORS = {"unet": "#0072B2", "litemedsam": "#E69F00", "medsam": "#009E73", "universeg": "#CC79A7"}
MODE_COLORS = {"normal": "#555555", "mc_dropout": "#0072B2", "tta": "#E69F00", "noisy": "#009E73",
               "box_jitter": "#F0E442", "fusion": "#D55E00", "crf": "#CC79A7"}
#: uncertainty maps a user can pick, with their theoretical ranges (binary probabilities, entropy in bits)
MAP_LABELS = {"entropy": "Entropy (bits)", "variance": "Variance", "mutual_information": "Mutual information (bits)",
              "expected_entropy": "Expected entropy (bits)", "mean": "Foreground probability"}
MAP_RANGES = {"entropy": (0.0, 1.0), "variance": (0.0, 0.25), "mutual_information": (0.0, 1.0),
              "expected_entropy": (0.0, 1.0), "mean": (0.0, 1.0)}
_FONT = dict(family="Inter, Source Sans Pro, sans-serif", size=13)
_GRID = dict(gridcolor="#E6EBF1", linecolor="#C9D2DC", zerolinecolor="#C9D2DC", ticks="")
#: a small white template (plotly's "plotly_white" is large, and copying it costs ~0.3 s per figure)
_TEMPLATE = go.layout.Template(layout=dict(paper_bgcolor="white", plot_bgcolor="white", xaxis=_GRID, yaxis=_GRID,
                                           colorway=["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]))


def _color(table: Mapping[str, str], name: str, i: int) -> str:
    return table.get(name, _OKABE[i % len(_OKABE)])


# ------------------------------------------------------------------------------- images
def to_rgb(image: np.ndarray, channel: int | None = 1) -> np.ndarray:
    """An LGG slice (H, W, 3) uint8 as a displayable RGB image: one channel as grey (default FLAIR), or all three."""
    img = np.asarray(image)
    if img.ndim == 2:
        g = img
    elif channel is None:
        return np.ascontiguousarray(img[..., :3].astype(np.uint8))
    else:
        g = img[..., channel]
    g = g.astype(np.float32)
    lo, hi = float(g.min()), float(g.max())
    g = (g - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(g)
    g = g.astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def outcome_counts(pred: np.ndarray, target: np.ndarray) -> dict[str, int]:
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    return {"TP": int((pred & target).sum()), "FP": int((pred & ~target).sum()), "FN": int((~pred & target).sum())}


def overlay(image: np.ndarray, pred: np.ndarray | None, target: np.ndarray | None, alpha: float = 0.6,
            channel: int | None = 1) -> np.ndarray:
    """RGB uint8 image with TP / FP / FN pixels blended in :data:`OUTCOME_COLORS`.

    ``pred=None`` shows the ground truth alone (as TP colour); ``target=None`` shows the prediction
    alone (FP colour would mislead, so it is drawn in the TP colour as well).
    """
    base = to_rgb(image, channel).astype(np.float32)
    h, w = base.shape[:2]
    empty = np.zeros((h, w), bool)
    p = empty if pred is None else np.asarray(pred, bool)
    t = empty if target is None else np.asarray(target, bool)
    if p.shape != (h, w) or t.shape != (h, w):
        raise ValueError(f"masks {p.shape} / {t.shape} do not match image {(h, w)}")
    if pred is None or target is None:
        regions = {"TP": p | t}
    else:
        regions = {"TP": p & t, "FP": p & ~t, "FN": ~p & t}
    for name, m in regions.items():
        if m.any():
            base[m] = (1 - alpha) * base[m] + alpha * np.asarray(OUTCOME_COLORS[name], np.float32)
    return np.clip(base + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _lut(colorscale: str) -> np.ndarray:
    cols = sample_colorscale(colorscale, list(np.linspace(0, 1, 256)), colortype="tuple")
    return np.clip(np.round(np.asarray(cols, dtype=np.float64) * (255 if max(map(max, cols)) <= 1 else 1)), 0, 255).astype(np.uint8)


def colorize(values: np.ndarray, vmin: float, vmax: float, colorscale: str = "Viridis") -> np.ndarray:
    """Map a float (H, W) array to RGB uint8 through a plotly colour scale, clipped to [vmin, vmax]."""
    v = np.asarray(values, dtype=np.float32)
    span = float(vmax) - float(vmin)
    z = np.zeros_like(v) if span <= 0 else (v - float(vmin)) / span
    idx = np.clip(np.nan_to_num(z, nan=0.0) * 255 + 0.5, 0, 255).astype(np.uint8)
    return _lut(colorscale)[idx]


def colorbar_html(vmin: float, vmax: float, label: str, colorscale: str = "Viridis", ticks: int = 5) -> str:
    """A horizontal colour bar (HTML/CSS) for a row of :func:`colorize` panels sharing one scale."""
    stops = ", ".join(f"rgb{tuple(int(c) for c in _lut(colorscale)[i])} {i / 255 * 100:.1f}%" for i in range(0, 256, 32)) \
        + f", rgb{tuple(int(c) for c in _lut(colorscale)[255])} 100%"
    vals = np.linspace(vmin, vmax, ticks)
    step = (vmax - vmin) / max(ticks - 1, 1)
    digits = max(2, int(np.ceil(-np.log10(step))) + 2) if step > 0 else 2
    tick_html = "".join(f"<span>{v:.{digits}f}</span>" for v in vals)
    return (f'<div style="max-width:520px;margin:0.2rem 0 0.6rem 0;font-size:0.8rem">'
            f'<div style="margin-bottom:2px">{label}</div>'
            f'<div style="height:12px;border-radius:3px;background:linear-gradient(to right, {stops})"></div>'
            f'<div style="display:flex;justify-content:space-between">{tick_html}</div></div>')


def table_html(df: pd.DataFrame, index: bool = True) -> str:
    """``df`` as a static HTML table, every cell escaped (values may come from a snapshot): for small
    tables that need no sorting, without the interactive grid's or Arrow's code in the browser."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    rows = [([k] if index else []) + list(v) for k, v in zip(df.index, df.itertuples(index=False, name=None))]
    cell = 'style="padding:0.25rem 0.75rem;border-bottom:1px solid #0001;text-align:left;vertical-align:top"'
    head = "".join(f"<th {cell}>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td {cell}>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    return (f'<table style="border-collapse:collapse;font-size:0.85rem;margin:0.2rem 0 0.8rem 0">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def legend_html() -> str:
    """Legend of the TP / FP / FN colours of :func:`overlay`."""
    items = "".join(
        f'<span style="display:inline-flex;align-items:center;margin-right:1.1rem">'
        f'<span style="width:14px;height:14px;border-radius:3px;margin-right:6px;display:inline-block;'
        f'background:rgb{OUTCOME_COLORS[k]};border:1px solid #0003"></span>{k}: {OUTCOME_LABELS[k]}</span>'
        for k in ("TP", "FP", "FN"))
    return f'<div style="font-size:0.85rem;margin:0.2rem 0 0.5rem 0">{items}</div>'


def crop_box(masks: Sequence[np.ndarray], shape: tuple[int, int], margin: int = 16,
             min_size: int = 64) -> tuple[int, int, int, int]:
    """Square box (y0, y1, x0, x1) around the union of ``masks`` plus ``margin``; whole image if all empty."""
    h, w = shape
    union = np.zeros((h, w), bool)
    for m in masks:
        if m is not None:
            union |= np.asarray(m, bool)
    if not union.any():
        return 0, h, 0, w
    ys, xs = np.nonzero(union)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = int(min(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) + 2 * margin, max(h, w)))
    side = min(max(side, min_size), h, w)
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    return y0, y0 + side, x0, x0 + side


def crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    return img[y0:y1, x0:x1]


#: contour colours of :func:`heat_overlay` (as in :func:`segunc.report.export.panel_grid_bytes`)
CONTOUR_COLORS = {"truth": (240, 228, 66), "pred": (213, 94, 0)}
#: maps that carry nothing for a mode: one deterministic pass has no samples to disagree, so its variance
#: and mutual information are zero by construction
_NO_SAMPLES = "one deterministic pass: no samples, so no {what}"


def map_note(mode: str, map_name: str) -> str | None:
    """Why ``map_name`` does not apply to ``mode`` (shown instead of an always-blank map), None if it does."""
    if not map_applies(mode, map_name):
        return _NO_SAMPLES.format(what=MAP_LABELS[map_name].split(" (")[0].lower())
    return None


def map_origin(mode: str, map_name: str) -> str | None:
    """Where a shown map comes from when not from ``mode`` itself (the CRF refines the fusion's mean only, so
    its variance and mutual information are the fusion's), None otherwise."""
    if mode == "crf" and map_name in ("variance", "mutual_information"):
        return "the fusion's map: the CRF refines the mean only"
    return None


def _edge(mask: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    m = np.asarray(mask, bool)
    return m & ~binary_erosion(m, iterations=width, border_value=0) if m.any() else m


def heat_overlay(image: np.ndarray, values: np.ndarray | None, vmin: float, vmax: float, colorscale: str = "Viridis",
                 alpha: float = 0.6, truth: np.ndarray | None = None, pred: np.ndarray | None = None,
                 channel: int | None = 1, box: tuple[int, int, int, int] | None = None, size: int = 384) -> np.ndarray:
    """An uncertainty map drawn over the anatomy: the slice in grey, ``values`` coloured on [vmin, vmax]
    and blended with opacity ``alpha`` × (0.25 + 0.75 z) (z: the value's place on the scale, so certain
    tissue stays readable), the ground truth as a solid and the prediction as a dashed contour
    (:data:`CONTOUR_COLORS`). Cropped to ``box``, upscaled (nearest) to at least ``size`` pixels so the
    contours stay thin. ``values=None``: the anatomy and contours alone."""
    base = to_rgb(image, channel)
    box = box or (0, base.shape[0], 0, base.shape[1])
    base = crop(base, box).astype(np.float32)
    k = max(1, int(np.ceil(size / max(base.shape[:2]))))
    up = (lambda a: np.repeat(np.repeat(a, k, axis=0), k, axis=1))
    out = up(base)
    if values is not None:
        v = np.nan_to_num(crop(np.asarray(values, np.float32), box), nan=float(vmin))
        span = float(vmax) - float(vmin)
        z = np.clip((v - float(vmin)) / span, 0, 1) if span > 0 else np.zeros_like(v)
        a = up((alpha * (0.25 + 0.75 * z))[..., None])
        out = (1 - a) * out + a * up(colorize(v, vmin, vmax, colorscale).astype(np.float32))
    width = max(1, k // 2)
    for name, mask in (("truth", truth), ("pred", pred)):
        if mask is None:
            continue
        e = _edge(up(crop(np.asarray(mask, bool), box)), width)
        if name == "pred":  # dashed: every other run of 3k pixels along both axes
            yy, xx = np.indices(e.shape)
            e &= ((yy + xx) // (3 * k)) % 2 == 0
        out[e] = CONTOUR_COLORS[name]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ figures
def _layout(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(template=_TEMPLATE, height=height, font=_FONT, margin=dict(l=60, r=20, t=50 if title else 20, b=40),
                      title=dict(text=title, x=0.0, xanchor="left") if title else None,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1.0),
                      hoverlabel=dict(font_size=12))
    return fig


CUSTOM_COLUMNS = ("key", "slice_id", "patient_id", "backend", "mode")


def _custom(g: pd.DataFrame) -> np.ndarray:
    return np.stack([g[c].astype(str).to_numpy() if c in g else np.full(len(g), "") for c in CUSTOM_COLUMNS], axis=1)


def box_stats(x: np.ndarray) -> dict[str, float]:
    """Tukey box of ``x`` as plotly draws it: linear quartiles, whiskers at the furthest points within
    1.5 IQR of the box, and the mean."""
    x = np.asarray(x, float)
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    iqr = q3 - q1
    inside = x[(x >= q1 - 1.5 * iqr) & (x <= q3 + 1.5 * iqr)]
    return {"q1": q1, "median": med, "q3": q3, "lowerfence": inside.min(), "upperfence": inside.max(), "mean": x.mean()}


def distribution_figure(df: pd.DataFrame, metric: str, kind: str = "box", points: str | bool = "all",
                        height: int = 430, title: str | None = None, max_points: int = 6000, seed: int = 0) -> go.Figure:
    """Box (``kind='box'``) or violin plot of ``metric`` by mode (x), one colour per backend.

    Every drawn point's ``customdata`` is ``[key, slice_id, patient_id, backend, mode]`` so a click can
    open that slice; hover names the slice. ``points``: ``'all'``, ``'outliers'`` or ``False``.

    Above ``max_points`` rows the figure stays light whatever the size of the table: boxes are
    computed here (:func:`box_stats`) and only their outliers are sent as points; violins are
    drawn from a random subsample of ``max_points`` rows (stratified by backend and mode).
    """
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}")
    if metric not in df.columns:
        raise KeyError(f"no metric column {metric!r}")
    modes = order_modes(df["mode"])
    labels = {m: mode_label(m) for m in modes}
    big = len(df) > max_points
    if big and kind == "violin":
        df = df.groupby(["backend", "mode"], sort=False, observed=True).sample(frac=max_points / len(df),
                                                                               random_state=seed)
    fig = go.Figure()
    hover_name = METRIC_LABELS.get(metric, metric)
    for i, backend in enumerate(order_backends(df["backend"])):
        g = df[df["backend"] == backend]
        color = _color(BACKEND_COLORS, backend, i)
        hover = (f"<b>%{{customdata[1]}}</b><br>{backend} · %{{customdata[4]}}<br>"
                 f"{hover_name} = %{{y:.4f}}<extra></extra>")
        style = dict(name=BACKEND_LABELS.get(backend, backend), legendgroup=backend, hovertemplate=hover,
                     marker=dict(color=color, size=5, opacity=0.75), line=dict(color=color))
        if kind == "box" and big:  # the outlier trace shares the box's slot (offsetgroup)
            style["offsetgroup"] = backend
            values = {m: v.to_numpy(dtype=float) for m, v in g.groupby("mode", sort=False, observed=True)[metric]}
            present = [m for m in modes if m in values]
            st = {m: box_stats(values[m]) for m in present}
            fig.add_trace(go.Box(x=[labels[m] for m in present], **{k: [st[m][k] for m in present] for k in
                                 ("q1", "median", "q3", "lowerfence", "upperfence", "mean")},
                                 boxpoints=False, hoverinfo="y", **{**style, "hovertemplate": None}))
            if points:
                lo = g["mode"].map({m: v["lowerfence"] for m, v in st.items()})
                hi = g["mode"].map({m: v["upperfence"] for m, v in st.items()})
                out = g[(g[metric] < lo) | (g[metric] > hi)]
                if len(out):  # outliers only, drawn by an invisible box in the same slot
                    fig.add_trace(go.Box(x=out["mode"].map(labels), y=out[metric], customdata=_custom(out), boxpoints="all",
                                         jitter=0.35, pointpos=0, fillcolor="rgba(0,0,0,0)", hoveron="points",
                                         showlegend=False, **{**style, "line": dict(width=0, color=color)}))
            continue
        common = dict(x=g["mode"].map(labels), y=g[metric], customdata=_custom(g), **style)
        if kind == "box":
            fig.add_trace(go.Box(boxpoints=points, jitter=0.35, pointpos=0, boxmean=True, **common))
        else:
            fig.add_trace(go.Violin(points=points, jitter=0.35, pointpos=0, box_visible=True, meanline_visible=True,
                                    spanmode="hard", scalemode="width", **common))
    arrow = "↑ higher is better" if HIGHER_IS_BETTER.get(metric, True) else "↓ lower is better"
    fig.update_xaxes(categoryorder="array", categoryarray=[labels[m] for m in modes], title=None)
    fig.update_yaxes(title=f"{METRIC_LABELS.get(metric, metric)} ({arrow})", zeroline=False)
    if kind == "box":
        fig.update_layout(boxmode="group")
    else:
        fig.update_layout(violinmode="group")
    _layout(fig, height, title)
    fig.update_layout(clickmode="event+select", dragmode="zoom", showlegend=True)  # a lone backend is named too
    return fig


def reliability_figure(bins: Mapping[tuple[str, str], Mapping[str, np.ndarray]], height_per_row: int = 270) -> go.Figure:
    """Top-label reliability diagrams: one panel per (backend, mode), accuracy vs confidence per bin.

    ``bins[(backend, mode)] = {"counts", "sum_confidence", "sum_correct"}`` pooled over slices
    (:func:`segunc.metrics.reliability_bins` summed). Bars: accuracy of each bin; hatched gap to the
    diagonal: miscalibration; panel title: pooled ECE. Empty bins are left out.
    """
    if not bins:
        raise ValueError("no reliability bins to plot")
    backends = order_backends(b for b, _ in bins)
    modes = order_modes(m for _, m in bins)
    ece = {k: ece_from_bins(v["counts"], v["sum_confidence"], v["sum_correct"]) for k, v in bins.items()}
    titles = [f"{b} · {mode_label(m)}<br><sup>ECE {ece[(b, m)]:.4f}</sup>" if (b, m) in bins else "" for b in backends
              for m in modes]
    fig = make_subplots(rows=len(backends), cols=len(modes), subplot_titles=titles, shared_xaxes=True, shared_yaxes=True,
                        horizontal_spacing=0.02, vertical_spacing=0.16 if len(backends) > 1 else 0.1)
    lo_edge = 0.0
    n_bins = len(next(iter(bins.values()))["counts"])
    if all(np.asarray(v["counts"])[: n_bins // 2].sum() == 0 for v in bins.values()):
        lo_edge = 0.5  # top-label confidence lives in [0.5, 1]
    width = 1.0 / n_bins
    for r, b in enumerate(backends, 1):
        for c, m in enumerate(modes, 1):
            v = bins.get((b, m))
            if v is None:
                continue
            n = np.asarray(v["counts"], float)
            ok = n > 0
            centres = (np.arange(n_bins) + 0.5) * width
            acc = np.divide(np.asarray(v["sum_correct"], float), n, out=np.zeros_like(n), where=ok)
            conf = np.divide(np.asarray(v["sum_confidence"], float), n, out=np.zeros_like(n), where=ok)
            share = n / max(n.sum(), 1)
            custom = np.stack([conf, n, share], axis=1)[ok]
            fig.add_trace(go.Bar(x=centres[ok], y=acc[ok], width=width * 0.92, marker_color=_color(MODE_COLORS, m, c),
                                 name=mode_label(m), legendgroup=m, showlegend=False, customdata=custom,
                                 hovertemplate="accuracy %{y:.4f}<br>mean confidence %{customdata[0]:.4f}<br>"
                                               "%{customdata[1]:,.0f} px (%{customdata[2]:.2%})<extra></extra>"),
                          row=r, col=c)
            fig.add_trace(go.Bar(x=centres[ok], y=conf[ok] - acc[ok], base=acc[ok], width=width * 0.92,
                                 marker=dict(color="rgba(213,94,0,0.18)", line=dict(color="#D55E00", width=1),
                                             pattern=dict(shape="/", fgcolor="#D55E00", size=5)),
                                 showlegend=False, hoverinfo="skip"), row=r, col=c)
            fig.add_trace(go.Scatter(x=[lo_edge, 1], y=[lo_edge, 1], mode="lines", line=dict(color="#333", dash="dot", width=1),
                                     showlegend=False, hoverinfo="skip"), row=r, col=c)
    fig.update_xaxes(range=[lo_edge, 1.0], dtick=0.1 if lo_edge else 0.2)
    fig.update_yaxes(range=[0, 1.0], dtick=0.2)
    for r in range(1, len(backends) + 1):
        fig.update_yaxes(title_text="accuracy", row=r, col=1)
    for c in range(1, len(modes) + 1):
        fig.update_xaxes(title_text="confidence", row=len(backends), col=c)
    fig.update_layout(barmode="overlay")
    _layout(fig, max(320, height_per_row * len(backends) + 90))
    fig.update_layout(margin=dict(t=70))
    fig.update_annotations(font_size=12, yshift=6)
    return fig


def calibration_figure(desc: pd.DataFrame, metrics: Sequence[str] = ("nll", "ece", "brier"), height: int = 380) -> go.Figure:
    """Mean ± bootstrap CI of the calibration metrics by mode, one panel per metric, one colour per backend.

    ``desc`` is :func:`segunc.analysis.stats.describe` output.
    """
    metrics = [m for m in metrics if m in set(desc["metric"])]
    if not metrics:
        raise ValueError("no calibration metrics in the descriptive table")
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[f"{METRIC_LABELS.get(m, m)} (↓ lower is better)" for m in metrics],
                        horizontal_spacing=0.07)
    modes = order_modes(desc["mode"])
    for c, metric in enumerate(metrics, 1):
        d = desc[desc["metric"] == metric]
        for i, backend in enumerate(order_backends(d["backend"])):
            g = d[d["backend"] == backend]
            g = g.set_index("mode").reindex([m for m in modes if m in set(g["mode"])])
            fig.add_trace(go.Bar(x=[mode_label(m) for m in g.index], y=g["mean"], name=BACKEND_LABELS.get(backend, backend), legendgroup=backend,
                                 showlegend=c == 1, marker_color=_color(BACKEND_COLORS, backend, i),
                                 error_y=dict(type="data", symmetric=False, array=g["ci_high"] - g["mean"],
                                              arrayminus=g["mean"] - g["ci_low"], thickness=1.2, width=3),
                                 customdata=np.stack([g["median"], g["ci_low"], g["ci_high"], g["n"]], axis=1),
                                 hovertemplate=f"{backend} · %{{x}}<br>mean %{{y:.4f}} [%{{customdata[1]:.4f}}, "
                                               "%{customdata[2]:.4f}]<br>median %{customdata[0]:.4f} · n=%{customdata[3]}<extra></extra>"),
                          row=1, col=c)
    fig.update_layout(barmode="group")
    _layout(fig, height)
    fig.update_layout(margin=dict(t=80), legend=dict(y=1.12))  # legend above the panel titles
    fig.update_annotations(font_size=13)
    return fig


def pvalue_figure(pairs: pd.DataFrame, alpha: float = 0.05, height: int = 400) -> go.Figure:
    """Lower-triangle matrix of Holm-adjusted p-values of :func:`segunc.analysis.stats.pairwise_wilcoxon`.

    Cell (row A, column B): colour −log10 p, text p (``*`` below ``alpha``); hover adds the rank-biserial
    r of A against B (+1: A above B in every block)."""
    modes = order_modes([*pairs["mode_a"], *pairs["mode_b"]])
    k = len(modes)
    idx = {m: i for i, m in enumerate(modes)}
    z = np.full((k, k), np.nan)
    text = np.full((k, k), "", dtype=object)
    r_ab = np.full((k, k), np.nan)
    for _, r in pairs.iterrows():
        i, j = sorted((idx[r["mode_a"]], idx[r["mode_b"]]), reverse=True)  # row below the diagonal
        sign = 1 if idx[r["mode_a"]] == i else -1
        p = r["p_holm"]
        z[i, j] = -np.log10(max(p, 1e-300)) if np.isfinite(p) else np.nan
        text[i, j] = "n/a" if not np.isfinite(p) else ("<0.001" if p < 1e-3 else f"{p:.3f}") + (" *" if p < alpha else "")
        r_ab[i, j] = sign * r["rank_biserial"]
    labels = [mode_label(m) for m in modes]
    zmax = max(3.0, float(np.nanmax(z)) if np.isfinite(z).any() else 3.0)
    fig = go.Figure(go.Heatmap(z=z[1:, :-1], x=labels[:-1], y=labels[1:], text=text[1:, :-1], customdata=r_ab[1:, :-1],
                               texttemplate="%{text}", textfont=dict(size=12), colorscale="Blues", zmin=0, zmax=zmax,
                               colorbar=dict(title="−log₁₀ p<br>(Holm)"), hoverongaps=False, xgap=2, ygap=2,
                               hovertemplate="%{y} vs %{x}<br>p (Holm) %{text}<br>r = %{customdata:+.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    _layout(fig, height)
    return fig


def tumour_profile_figure(df: pd.DataFrame, current: int | None = None, height: int = 220) -> go.Figure:
    """Tumour area (pixels) per slice index of one patient; ``df`` has ``index`` and ``tumour_px``."""
    colors = ["#D55E00" if i == current else "#0072B2" for i in df["index"]]
    fig = go.Figure(go.Bar(x=df["index"], y=df["tumour_px"], marker_color=colors,
                           hovertemplate="slice %{x}<br>%{y:,} tumour px<extra></extra>"))
    fig.update_xaxes(title="slice number")
    if len(df) <= 20:  # a few slices (e.g. those a snapshot holds): tick each number, never 12.5
        fig.update_xaxes(tickmode="array", tickvals=[int(i) for i in df["index"]])
    fig.update_yaxes(title="tumour px")
    _layout(fig, height)
    fig.update_layout(showlegend=False, margin=dict(l=60, r=20, t=10, b=40), bargap=0.1)
    return fig


def grid_png(rows: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[str], col_labels: Sequence[str],
             cell: int = 192, pad: int = 6) -> bytes:
    """A labelled PNG of image panels (rows × columns, ``None`` = empty cell), e.g. the Compare grid."""
    from io import BytesIO

    from PIL import Image, ImageDraw

    if len(rows) != len(row_labels):
        raise ValueError("one label per row")
    n_cols = max((len(r) for r in rows), default=0)
    left, top = 150, 22
    w = left + n_cols * (cell + pad) + pad
    h = top + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(col_labels[:n_cols]):
        draw.text((left + j * (cell + pad) + 4, 5), str(name), fill=(20, 20, 20))
    for i, (row, name) in enumerate(zip(rows, row_labels)):
        y = top + i * (cell + pad)
        draw.text((6, y + cell // 2 - 6), str(name), fill=(20, 20, 20))
        for j, img in enumerate(row):
            if img is None:
                continue
            tile = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (left + j * (cell + pad), y))
    buf = BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------ review & errors
def risk_coverage_figure(df: pd.DataFrame, score: str, height: int = 400, title: str | None = None) -> go.Figure:
    """Risk (mean 1 − Dice of the kept slices) against coverage when the slices most uncertain by ``score``
    are referred, one line per backend × mode (:func:`segunc.analysis.risk_coverage`); AURC in the legend."""
    from .analysis import risk_coverage

    fig = go.Figure()
    backends = order_backends(df["backend"])
    for bi, backend in enumerate(backends):
        g = df[df["backend"] == backend]
        for i, mode in enumerate(order_modes(g["mode"])):
            d = g.loc[g["mode"] == mode, [score, "dice"]].dropna()
            if d.empty:
                continue
            rc = risk_coverage(d[score].to_numpy(), d["dice"].to_numpy())
            name = f"{backend} · {mode_label(mode)}" if len(backends) > 1 else mode_label(mode)
            fig.add_trace(go.Scatter(x=rc["coverage"], y=rc["risk"], mode="lines+markers" if len(rc) <= 60 else "lines",
                                     name=f"{name} (AURC {rc['risk'].mean():.3f})", legendgroup=name,
                                     line=dict(color=_color(MODE_COLORS, mode, i), width=2,
                                               dash=["solid", "dash", "dot", "dashdot"][bi % 4]),
                                     marker=dict(size=5), customdata=rc["threshold"],
                                     hovertemplate=f"{name}<br>coverage %{{x:.2f}}<br>risk %{{y:.4f}}<br>"
                                                   "keep score ≤ %{customdata:.4g}<extra></extra>"))
    fig.update_xaxes(title="coverage (fraction of slices kept)", range=[0, 1.02])
    fig.update_yaxes(title="risk (mean 1 − Dice of kept slices)")
    _layout(fig, height, title)
    fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02))
    return fig


def decomposition_figure(summary: pd.DataFrame, height: int = 380) -> go.Figure:
    """Aleatoric (expected entropy) and epistemic (mutual information) mean uncertainty per mode, side by
    side, one panel per backend (``summary``: :func:`segunc.analysis.decomposition_summary`)."""
    backends = order_backends(summary["backend"])
    fig = make_subplots(rows=1, cols=len(backends), subplot_titles=backends, shared_yaxes=True, horizontal_spacing=0.05)
    for c, backend in enumerate(backends, 1):
        s = summary[summary["backend"] == backend]
        s = s.set_index("mode").reindex(order_modes(s["mode"]))
        x = [mode_label(m) for m in s.index]
        for col, name, color in (("aleatoric_image_mean", "aleatoric: expected entropy", "#0072B2"),
                                 ("epistemic_image_mean", "epistemic: mutual information", "#D55E00")):
            fig.add_trace(go.Bar(x=x, y=s[col], name=name, legendgroup=name, showlegend=c == 1, marker_color=color,
                                 hovertemplate=f"{backend} · %{{x}}<br>{name}: %{{y:.5f}} bits<extra></extra>"),
                          row=1, col=c)
    fig.update_yaxes(title_text="mean over the image (bits)", row=1, col=1)
    fig.update_layout(barmode="group")
    _layout(fig, height)
    fig.update_layout(margin=dict(t=70), legend=dict(y=1.1))
    return fig


def log_ticks(lo: float, hi: float, steps: Sequence[float] = (1, 2, 5)) -> tuple[list[float], list[str]]:
    """Tick values and labels for a log axis over [lo, hi]: 1-2-5 × 10^k (fewer when the range is
    wide), with one tick beyond each end, labelled in full (``0.2``, ``1``, ``50``, never lone digits)."""
    if not (lo > 0 and hi > 0):
        raise ValueError(f"log ticks need positive bounds, got {lo}, {hi}")
    lo, hi = min(lo, hi), max(lo, hi)
    k0, k1 = int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1
    if k1 - k0 > 5:
        steps = (1,)
    vals = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in steps]
    below = [v for v in vals if v <= lo]
    above = [v for v in vals if v >= hi]
    vals = [v for v in vals if (below and v >= below[-1] or not below) and (above and v <= above[0] or not above)]
    return vals, [f"{v:g}" for v in vals]


def cost_quality_figure(cost: pd.DataFrame, metric: str = "dice", height: int = 380) -> go.Figure:
    """Median seconds per slice (log x) against the median of ``metric``, one marker per backend × mode
    (``cost``: :func:`segunc.analysis.cost_quality`)."""
    fig = go.Figure()
    col = f"{metric}_median"
    for i, backend in enumerate(order_backends(cost["backend"])):
        g = cost[cost["backend"] == backend]
        fig.add_trace(go.Scatter(x=g["seconds_median"], y=g[col], mode="markers+text", name=backend,
                                 text=[mode_label(m) for m in g["mode"]], textposition="top right",
                                 marker=dict(size=11, color=_color(BACKEND_COLORS, backend, i), line=dict(width=1, color="#333")),
                                 customdata=np.stack([g["mode"].map(mode_label), g["n"]], axis=1),
                                 hovertemplate=f"{backend} · %{{customdata[0]}}<br>%{{x:.3g}} s/slice<br>"
                                               f"median {METRIC_LABELS.get(metric, metric)} %{{y:.4f}}<br>n = %{{customdata[1]}}"
                                               "<extra></extra>"))
    arrow = "↑ higher is better" if HIGHER_IS_BETTER.get(metric, True) else "↓ lower is better"
    log = bool(len(cost)) and (cost["seconds_median"] > 0).all()
    fig.update_xaxes(title="median seconds per slice", type="log" if log else "linear")
    if log:  # labelled 1-2-5 ticks, not plotly's "8 9 1 2 3" minor digits on a short log range
        vals, text = log_ticks(float(cost["seconds_median"].min()), float(cost["seconds_median"].max()))
        fig.update_xaxes(tickmode="array", tickvals=vals, ticktext=text)
    fig.update_yaxes(title=f"median {METRIC_LABELS.get(metric, metric)} ({arrow})")
    _layout(fig, height)
    return fig
