"""Thesis-ready downloads: plotly charts and the slice panel grid as SVG, PDF and 300-dpi PNG.

* :func:`figure_bytes` — a plotly figure (legend and colour bars included) rendered by kaleido
  (headless Chromium, offline); when kaleido or a Chromium is missing, a matplotlib rendering of the
  same traces (scatter/line, bar, box, heatmap) so a download never fails.
* :func:`panel_grid_bytes` — the Compare grid as one figure: each uncertainty map drawn over the
  anatomy with the ground-truth (solid) and predicted (dashed) contours, display labels, one shared
  colour bar and a legend (matplotlib, vector output).
* :func:`figure_downloads` — (file name, bytes, MIME type) per format, ready for download buttons.

No Streamlit here; pages call these on a button press (rendering takes seconds).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["FORMATS", "MIME", "ExportError", "Panel", "figure_bytes", "figure_downloads", "panel_grid_bytes",
           "display_label", "check_bytes", "panel_grid_downloads"]

FORMATS = ("svg", "pdf", "png")
MIME = {"svg": "image/svg+xml", "pdf": "application/pdf", "png": "image/png"}
#: the first bytes each format must start with (after optional whitespace for SVG)
_MAGIC = {"pdf": b"%PDF-", "png": b"\x89PNG\r\n\x1a\n"}


class ExportError(RuntimeError):
    """A figure that could not be rendered in the asked format."""


def check_bytes(data: bytes, fmt: str) -> bytes:
    """Return ``data`` if it is a non-empty file of ``fmt`` (header check), else raise :class:`ExportError`."""
    if not data:
        raise ExportError(f"empty {fmt} output")
    if fmt == "svg":
        head = data[:2048].lstrip()
        if not (head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096])):
            raise ExportError(f"not an SVG document (starts {data[:20]!r})")
    elif fmt in _MAGIC and not data.startswith(_MAGIC[fmt]):
        raise ExportError(f"not a {fmt.upper()} file (starts {data[:8]!r})")
    return data


def _fmt(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return fmt


# ---------------------------------------------------------------------------- labels
def display_label(*parts: str) -> str:
    """Display text for backend / mode / map identifiers: ``("unet", "mutual_information")`` →
    ``"U-Net · Mutual information (bits)"``; unknown parts are kept as they are."""
    from ..analysis.stats import BACKEND_LABELS
    from ..viz import MAP_LABELS, MODE_LABELS

    out = []
    for p in parts:
        if p is None or p == "":
            continue
        p = str(p)
        out.append(BACKEND_LABELS.get(p) or MODE_LABELS.get(p) or MAP_LABELS.get(p) or p)
    return " · ".join(out)


# ---------------------------------------------------------------------------- plotly charts
def figure_bytes(fig, fmt: str = "svg", width: int | None = None, height: int | None = None, dpi: int = 300,
                 engine: str = "auto") -> bytes:
    """``fig`` (plotly) as ``fmt`` bytes. ``engine``: ``kaleido``, ``matplotlib`` or ``auto`` (kaleido,
    else matplotlib). PNG is rendered at ``dpi`` (plotly's 96-dpi layout scaled up)."""
    fmt = _fmt(fmt)
    if engine not in ("auto", "kaleido", "matplotlib"):
        raise ValueError(f"unknown engine {engine!r}")
    w = width or fig.layout.width or 900
    h = height or fig.layout.height or 500
    if engine in ("auto", "kaleido"):
        error: Exception | None = None
        for _ in range(2):  # a loaded machine can race kaleido's page set-up ("kaleido_scopes is not defined")
            try:
                import plotly.io as pio

                data = pio.to_image(fig, format=fmt, width=int(w), height=int(h), scale=dpi / 96 if fmt == "png" else 1)
                return check_bytes(data, fmt)
            except ImportError as exc:
                error = exc
                break
            except Exception as exc:  # noqa: BLE001 - no Chromium, or it crashed
                error = exc
        if engine == "kaleido":
            raise ExportError(f"kaleido could not render the figure as {fmt}: {type(error).__name__}: {error}") from error
    return check_bytes(_mpl_render(fig, fmt, w / 96, h / 96, dpi), fmt)


def figure_downloads(fig, name: str, formats: Sequence[str] = FORMATS, **kw) -> dict[str, tuple[str, bytes, str]]:
    """``{fmt: (file name, bytes, MIME type)}`` for a download button per format."""
    return {f: (f"{name}.{f}", figure_bytes(fig, f, **kw), MIME[f]) for f in map(_fmt, formats)}


def _text(v) -> str:
    if v is None:
        return ""
    t = getattr(v, "text", v)
    return "" if t is None else str(t).replace("<br>", "\n")


def _mpl_render(fig, fmt: str, width_in: float, height_in: float, dpi: int) -> bytes:
    """A matplotlib rendering of a plotly figure's traces (one axes; subplot traces share it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mfig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(mfig)
    ax = mfig.subplots()
    bars = [t for t in fig.data if t.type == "bar"]
    nb = max(len(bars), 1)
    cats: list = []
    for t in fig.data:
        if t.type in ("bar", "box") and t.x is not None:
            cats += [c for c in t.x if c not in cats]
    boxes = 0
    for t in fig.data:
        name = t.name or None
        color = None
        if getattr(t, "marker", None) is not None and isinstance(t.marker.color, str):
            color = t.marker.color
        if getattr(t, "line", None) is not None and isinstance(getattr(t.line, "color", None), str):
            color = color or t.line.color
        if t.type in ("scatter", "scattergl"):
            x, y = np.asarray(t.x if t.x is not None else range(len(t.y))), np.asarray(t.y, dtype=float)
            mode = t.mode or "lines"
            if "lines" in mode:
                ax.plot(x, y, color=color, label=name, marker="o" if "markers" in mode else None, markersize=3)
            else:
                ax.scatter(x, y, color=color, label=name, s=20, edgecolor="black", linewidth=0.4)
            if "text" in mode and t.text is not None:
                for xi, yi, s in zip(x, y, np.atleast_1d(t.text)):
                    ax.annotate(str(s), (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
        elif t.type == "bar":
            i = bars.index(t)
            xs = np.array([cats.index(c) for c in t.x], dtype=float) + (i - (nb - 1) / 2) * 0.8 / nb
            ax.bar(xs, np.asarray(t.y, dtype=float), width=0.8 / nb, color=color, label=name)
        elif t.type == "box":
            y = np.asarray(t.y, dtype=float)
            groups = [c for c in dict.fromkeys(t.x)] if t.x is not None else [name]
            for g in groups:
                vals = y[np.asarray(t.x) == g] if t.x is not None else y
                vals = vals[np.isfinite(vals)]
                pos = cats.index(g) if g in cats else boxes
                bp = ax.boxplot([vals], positions=[pos], widths=0.5, patch_artist=True, showfliers=False)
                for patch in bp["boxes"]:
                    patch.set_facecolor(color or "#0072B2")
                    patch.set_alpha(0.6)
            boxes += 1
            ax.plot([], [], color=color or "#0072B2", label=name, linewidth=6, alpha=0.6)
        elif t.type == "heatmap":
            z = np.asarray(t.z, dtype=float)
            im = ax.imshow(z, cmap="viridis", aspect="auto")
            if t.x is not None:
                ax.set_xticks(range(len(t.x)), [str(v) for v in t.x], rotation=30)
            if t.y is not None:
                ax.set_yticks(range(len(t.y)), [str(v) for v in t.y])
            cb = mfig.colorbar(im, ax=ax)
            cb.set_label(_text(getattr(getattr(t, "colorbar", None), "title", None)))
    if cats:
        ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=30)
    ax.set_xlabel(_text(fig.layout.xaxis.title))
    ax.set_ylabel(_text(fig.layout.yaxis.title))
    if fig.layout.xaxis.type == "log":
        ax.set_xscale("log")
    if fig.layout.yaxis.type == "log":
        ax.set_yscale("log")
    title = _text(fig.layout.title)
    if title:
        ax.set_title(title, loc="left")
    if any(t.name for t in fig.data) and fig.layout.showlegend is not False:
        ax.legend(frameon=False, fontsize=8, loc="best")
    ax.grid(color="#E6EBF1", linewidth=0.8)
    ax.set_axisbelow(True)
    buf = io.BytesIO()
    mfig.savefig(buf, format=fmt, dpi=dpi, facecolor="white")
    return buf.getvalue()


# ---------------------------------------------------------------------------- panel grid
@dataclass
class Panel:
    """One cell of the grid: the anatomy ``image`` (H W or H W 3 uint8), an uncertainty ``heat`` map
    drawn over it (None: the image alone, e.g. the input column), the ground-truth mask ``truth``
    (solid contour) and the predicted ``pred`` mask (dashed contour), and a short ``caption``."""

    image: np.ndarray
    heat: np.ndarray | None = None
    truth: np.ndarray | None = None
    pred: np.ndarray | None = None
    caption: str = ""


def panel_grid_bytes(rows: Sequence[Sequence[Panel | None]], row_labels: Sequence[str], col_labels: Sequence[str],
                     fmt: str = "svg", map_name: str = "entropy", vmin: float | None = None, vmax: float | None = None,
                     cmap: str = "viridis", alpha: float = 0.6, cell_in: float = 1.9, dpi: int = 300,
                     title: str | None = None, label: Callable[[str], str] | None = None) -> bytes:
    """The panel grid as one figure with a shared colour bar (``map_name``'s display label and range,
    :data:`segunc.viz.MAP_RANGES` unless ``vmin``/``vmax``) and a legend for the contours. Row and
    column labels are shown through ``label`` (default :func:`display_label` of their ``" "``-separated
    words, so ``"unet mutual_information"`` reads ``U-Net · Mutual information (bits)``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from ..viz import MAP_LABELS, MAP_RANGES

    fmt = _fmt(fmt)
    if len(rows) != len(row_labels):
        raise ValueError(f"one label per row: {len(rows)} rows, {len(row_labels)} labels")
    n_cols = max((len(r) for r in rows), default=0)
    if not rows or n_cols == 0:
        raise ValueError("no panels to draw")
    label = label or (lambda s: display_label(*str(s).split()))
    lo, hi = MAP_RANGES.get(map_name, (0.0, 1.0))
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    fig = Figure(figsize=(cell_in * n_cols + 1.6, cell_in * len(rows) + 0.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(rows), n_cols, squeeze=False))
    im = None
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            p = row[j] if j < len(row) else None
            if i == 0 and j < len(col_labels):
                ax.set_title(label(col_labels[j]), fontsize=8)
            if j == 0:
                ax.set_ylabel(label(row_labels[i]), fontsize=8)
            if p is None:
                continue
            img = np.asarray(p.image)
            ax.imshow(img if img.ndim == 3 else img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
            if p.heat is not None:
                heat = np.ma.masked_invalid(np.asarray(p.heat, dtype=float))
                im = ax.imshow(heat, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha, interpolation="nearest")
            if p.truth is not None and np.asarray(p.truth).any():
                ax.contour(np.asarray(p.truth, float), levels=[0.5], colors="#F0E442", linewidths=0.9)
            if p.pred is not None and np.asarray(p.pred).any():
                ax.contour(np.asarray(p.pred, float), levels=[0.5], colors="#D55E00", linewidths=0.9,
                           linestyles="dashed")
            if p.caption:
                ax.set_xlabel(p.caption, fontsize=7)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.02)
        cb.set_label(MAP_LABELS.get(map_name, map_name), fontsize=8)
        cb.ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color="#F0E442", lw=1.5, label="ground truth"),
               Line2D([], [], color="#D55E00", lw=1.5, ls="--", label="prediction")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, facecolor="white")
    return check_bytes(buf.getvalue(), fmt)


def panel_grid_downloads(*args, name: str = "panels", formats: Sequence[str] = FORMATS,
                         **kw) -> Mapping[str, tuple[str, bytes, str]]:
    """``{fmt: (file name, bytes, MIME type)}`` of :func:`panel_grid_bytes` per format."""
    return {f: (f"{name}.{f}", panel_grid_bytes(*args, fmt=f, **kw), MIME[f]) for f in map(_fmt, formats)}
