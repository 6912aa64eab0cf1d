"""Static report figures (matplotlib, Agg canvas; no pyplot global state): PNG bytes out, carrying
the same figure as SVG and PDF (:class:`FigureBytes`).

The figures mirror the app's: the paper's box plots of the nine metrics × modes (figures 2, 4
and 6), top-label reliability diagrams, risk–coverage curves, aleatoric vs epistemic bars and
cost beside quality. Colours are the app's (:mod:`segunc.viz`, Okabe–Ito).
"""
from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..analysis import risk_coverage
from ..metrics import HIGHER_IS_BETTER, METRIC_NAMES, ece_from_bins
from ..analysis.stats import METRIC_LABELS, order_modes
from ..viz import MODE_COLORS, mode_label

__all__ = ["DPI", "metric_boxplots", "reliability_diagrams", "risk_coverage_curves", "decomposition_bars",
           "cost_quality_scatter"]

DPI = 110
_FALLBACK = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
       "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False}


def _color(mode: str, i: int) -> str:
    return MODE_COLORS.get(mode, _FALLBACK[i % len(_FALLBACK)])


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.rcParams.update(_RC)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


class FigureBytes(bytes):
    """PNG bytes that also carry the same figure as vector graphics: ``.svg`` and ``.pdf`` bytes."""

    svg: bytes = b""
    pdf: bytes = b""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    out = FigureBytes(buf.getvalue())
    for fmt in ("svg", "pdf"):  # vector copies for a thesis (written beside the PNG by the Markdown writer)
        vec = io.BytesIO()
        fig.savefig(vec, format=fmt, facecolor="white", metadata={"Date": None} if fmt == "svg" else None)
        setattr(out, fmt, vec.getvalue())
    return out


def _style(ax) -> None:
    ax.grid(axis="y", color="#E6EBF1", linewidth=0.8)
    ax.set_axisbelow(True)


def metric_boxplots(frame: pd.DataFrame, metrics: Sequence[str] = METRIC_NAMES, title: str | None = None,
                    seed: int = 0) -> bytes:
    """A 3-column grid: one box plot per metric, one box per mode (Tukey whiskers, mean ◆, every slice a dot)."""
    metrics = [m for m in metrics if m in frame.columns]
    modes = order_modes(frame["mode"])
    ncols = 3
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = _figure(11.5, 2.9 * nrows + (0.3 if title else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, metric in zip(axes.ravel(), metrics):
        data = [frame.loc[frame["mode"] == m, metric].dropna().to_numpy(float) for m in modes]
        bp = ax.boxplot(data, tick_labels=[mode_label(m) for m in modes], showmeans=True, widths=0.6, patch_artist=True,
                        showfliers=False, meanprops=dict(marker="D", markerfacecolor="white", markeredgecolor="black",
                                                         markersize=4),
                        medianprops=dict(color="black", linewidth=1.2))
        for i, (patch, m) in enumerate(zip(bp["boxes"], modes)):
            patch.set_facecolor(_color(m, i))
            patch.set_alpha(0.55)
        for i, (x, m) in enumerate(zip(data, modes)):
            if x.size:
                jitter = rng.uniform(-0.15, 0.15, x.size) if x.size > 1 else np.zeros(1)
                ax.scatter(np.full(x.size, i + 1) + jitter, x, s=7, color=_color(m, i), edgecolor="black",
                           linewidth=0.3, alpha=0.8, zorder=3)
        arrow = "↑" if HIGHER_IS_BETTER.get(metric, True) else "↓"
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)} ({arrow} better)")
        ax.tick_params(axis="x", rotation=30)
        _style(ax)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    return _png(fig)


def reliability_diagrams(bins: Mapping[str, Mapping[str, np.ndarray]], title: str | None = None) -> bytes:
    """Top-label reliability diagrams, one panel per mode: accuracy per confidence bin (bars), the gap to
    the diagonal hatched, pooled ECE in the panel title. ``bins[mode] = {counts, sum_confidence, sum_correct}``."""
    modes = order_modes(bins)
    ncols = min(4, max(1, len(modes)))
    nrows = int(np.ceil(len(modes) / ncols))
    fig = _figure(2.9 * ncols, 2.7 * nrows + (0.3 if title else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for i, (ax, mode) in enumerate(zip(axes.ravel(), modes)):
        v = bins[mode]
        n = np.asarray(v["counts"], float)
        k = n.size
        ok = n > 0
        acc = np.divide(np.asarray(v["sum_correct"], float), n, out=np.zeros_like(n), where=ok)
        conf = np.divide(np.asarray(v["sum_confidence"], float), n, out=np.zeros_like(n), where=ok)
        centres = (np.arange(k) + 0.5) / k
        w = 0.92 / k
        ax.bar(centres[ok], acc[ok], width=w, color=_color(mode, i), alpha=0.85, label="accuracy")
        ax.bar(centres[ok], (conf - acc)[ok], bottom=acc[ok], width=w, color="none", edgecolor="#D55E00",
               hatch="///", linewidth=0.6, label="gap")
        lo = 0.5 if n[: k // 2].sum() == 0 else 0.0
        ax.plot([lo, 1], [lo, 1], ":", color="#333333", linewidth=1)
        ax.set_xlim(lo, 1)
        ax.set_ylim(0, 1)
        ece = ece_from_bins(v["counts"], v["sum_confidence"], v["sum_correct"])
        ax.set_title(f"{mode_label(mode)} · ECE {ece:.4f}")
        ax.set_xlabel("confidence")
        if i % ncols == 0:
            ax.set_ylabel("accuracy")
        _style(ax)
    for ax in axes.ravel()[len(modes):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    return _png(fig)


def risk_coverage_curves(frame: pd.DataFrame, score: str, title: str | None = None) -> bytes:
    """Risk (mean 1 − Dice of the kept slices) against coverage when the most uncertain slices by
    ``score`` are referred, one line per mode; AURC in the legend."""
    fig = _figure(7.6, 3.6)
    ax = fig.subplots()
    for i, mode in enumerate(order_modes(frame["mode"])):
        d = frame.loc[frame["mode"] == mode, [score, "dice"]].dropna()
        if d.empty:
            continue
        rc = risk_coverage(d[score].to_numpy(), d["dice"].to_numpy())
        ax.plot(rc["coverage"], rc["risk"], color=_color(mode, i), linewidth=1.6, marker="o" if len(rc) <= 40 else None,
                markersize=3.5, label=f"{mode_label(mode)} (AURC {rc['risk'].mean():.3f})")
    ax.set_xlim(0, 1)
    ax.set_xlabel("coverage (fraction of slices kept)")
    ax.set_ylabel("risk (mean 1 − Dice of kept)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _style(ax)
    if title:
        ax.set_title(title, loc="left")
    return _png(fig)


def decomposition_bars(summary: pd.DataFrame, title: str | None = None) -> bytes:
    """Mean aleatoric (expected entropy) and epistemic (mutual information) uncertainty per mode,
    side by side (``summary``: :func:`segunc.analysis.decomposition_summary` of one backend)."""
    modes = order_modes(summary["mode"])
    s = summary.set_index("mode").reindex(modes)
    x = np.arange(len(modes))
    fig = _figure(6.2, 3.2)
    ax = fig.subplots()
    ax.bar(x - 0.2, s["aleatoric_image_mean"], width=0.4, color="#0072B2", label="aleatoric: expected entropy")
    ax.bar(x + 0.2, s["epistemic_image_mean"], width=0.4, color="#D55E00", label="epistemic: mutual information")
    ax.set_xticks(x, [mode_label(m) for m in modes], rotation=30)
    ax.set_ylabel("mean over the image (bits)")
    ax.legend(frameon=False)
    _style(ax)
    if title:
        ax.set_title(title, loc="left")
    return _png(fig)


def cost_quality_scatter(cost: pd.DataFrame, metric: str = "dice", title: str | None = None) -> bytes:
    """Median seconds per slice (log x) against the median of ``metric``, one point per mode
    (``cost``: :func:`segunc.analysis.cost_quality` of one backend)."""
    fig = _figure(6.2, 3.4)
    ax = fig.subplots()
    col = f"{metric}_median"
    for i, r in enumerate(cost.itertuples(index=False)):
        mode = r.mode
        ax.scatter(r.seconds_median, getattr(r, col), s=45, color=_color(mode, i), edgecolor="black", linewidth=0.5,
                   zorder=3)
        ax.annotate(mode_label(mode), (r.seconds_median, getattr(r, col)), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    if (cost["seconds_median"] > 0).all():
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))  # no "8 9 1 2 3" minor labels
    ax.margins(x=0.15, y=0.12)
    ax.set_xlabel("median seconds per slice (incl. the modes it builds on)")
    arrow = "↑" if HIGHER_IS_BETTER.get(metric, True) else "↓"
    ax.set_ylabel(f"median {METRIC_LABELS.get(metric, metric)} ({arrow} better)")
    _style(ax)
    if title:
        ax.set_title(title, loc="left")
    return _png(fig)
