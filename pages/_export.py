"""Thesis downloads for the pages: a row of visible SVG / PDF / 300-dpi PNG buttons under a chart or the
Compare panel grid. The files are rendered only when a button is pressed (deferred download data), by
:mod:`segunc.report.export` (legend and colour bars included, display labels)."""
from __future__ import annotations

from typing import Sequence

import streamlit as st

from segunc.report.export import FORMATS, MIME, Panel, figure_bytes, panel_grid_bytes

LABELS = {"svg": "SVG", "pdf": "PDF", "png": "PNG (300 dpi)"}


def _buttons(render, name: str, key: str, formats: Sequence[str], what: str) -> None:
    cols = st.columns([1.3] + [1] * len(formats) + [max(0.5, 6 - len(formats))], vertical_alignment="center")
    cols[0].caption(f"Download {what}")
    for col, fmt in zip(cols[1:], formats):
        col.download_button(LABELS[fmt], data=lambda f=fmt: render(f), file_name=f"{name}.{fmt}", mime=MIME[fmt],
                            key=f"{key}_{fmt}", icon=":material/download:", on_click="ignore", width="stretch",
                            help=f"{LABELS[fmt]} for a thesis or slides, with the legend and colour bar")


def chart_downloads(fig, name: str, key: str, formats: Sequence[str] = FORMATS, what: str = "this chart") -> None:
    """SVG / PDF / PNG (300 dpi) download buttons for a plotly ``fig`` (file ``<name>.<fmt>``; widget keys
    ``<key>_<fmt>``, unique per page)."""
    _buttons(lambda f: figure_bytes(fig, f), name, key, formats, what)


def panel_downloads(rows: Sequence[Sequence[Panel | None]], row_labels: Sequence[str], col_labels: Sequence[str],
                    name: str, key: str, map_name: str, scale: tuple[float, float], cmap: str = "Viridis",
                    alpha: float = 0.7, title: str | None = None, formats: Sequence[str] = FORMATS,
                    label=None) -> None:
    """SVG / PDF / PNG (300 dpi) download buttons for a grid of :class:`~segunc.report.export.Panel`
    (uncertainty over the anatomy, contours, one colour bar on ``scale``, legend, display labels;
    ``label(row or column label)``: its title, default its display label)."""
    def render(fmt: str) -> bytes:
        return panel_grid_bytes(rows, row_labels, col_labels, fmt=fmt, map_name=map_name, vmin=scale[0],
                                vmax=scale[1], cmap=cmap.lower(), alpha=alpha, title=title, label=label)

    _buttons(render, name, key, formats, "the panels")
