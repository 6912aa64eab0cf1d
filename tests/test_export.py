"""Thesis exports: plotly charts and the panel grid as SVG / PDF / 300-dpi PNG (header checks on the
bytes), display labels, colour bar and legend in the panel grid, vector copies of report figures,
readable log ticks on the cost chart. Real U-Net results on slices of the shipped sample."""
from __future__ import annotations

import re

import numpy as np
import pytest

from segunc import viz
from segunc.analysis import cost_quality, decomposition_summary, frame_from_results
from segunc.backends import BACKENDS
from segunc.config import PipelineConfig
from segunc.data import discover, load_slice
from segunc.data.sample import sample_data_dir
from segunc.report.export import (ExportError, Panel, check_bytes, display_label, figure_bytes, figure_downloads,
                           panel_grid_bytes)
from segunc.pipeline import evaluate_slice

pytestmark = pytest.mark.integration

MODES = ["normal", "mc_dropout", "noisy"]


@pytest.fixture(scope="module")
def results(unet_weights):
    unet = BACKENDS.get("unet")(weights=unet_weights)
    refs = [r for r in discover(sample_data_dir()) if r.split == "val"]
    slices = [load_slice(r) for r in refs[:7]]
    slices = [s for s in slices if s.has_tumour][:2]
    cfg = PipelineConfig(samples=3)
    return [(evaluate_slice(unet, s, MODES, cfg), s) for s in slices]


@pytest.fixture(scope="module")
def frame(results):
    return frame_from_results([(res, s.mask) for res, s in results], "unet")


def test_headers_are_checked():
    with pytest.raises(ExportError):
        check_bytes(b"", "svg")
    with pytest.raises(ExportError):
        check_bytes(b"<html>", "svg")
    with pytest.raises(ExportError):
        check_bytes(b"%PNG", "pdf")
    assert check_bytes(b'<?xml version="1.0"?>\n<svg></svg>', "svg")


def test_charts_export_with_kaleido(frame):
    fig = viz.cost_quality_figure(cost_quality(frame))
    out = figure_downloads(fig, "cost", engine="kaleido")
    assert set(out) == {"svg", "pdf", "png"}
    for fmt, (name, data, mime) in out.items():
        assert name == f"cost.{fmt}" and len(data) > 1000 and check_bytes(data, fmt)
    svg = out["svg"][1].decode()
    assert "MC dropout" in svg and "median seconds per slice" in svg  # display labels, axis title
    png = out["png"][1]
    w = int.from_bytes(png[16:20], "big")
    assert w >= 900 * 300 / 96 - 2  # 300 dpi: plotly's 96-dpi layout scaled up


def test_charts_export_with_matplotlib_fallback(frame):
    figs = [viz.distribution_figure(frame, "dice"), viz.decomposition_figure(decomposition_summary(frame)),
            viz.cost_quality_figure(cost_quality(frame))]
    for fig in figs:
        for fmt in ("svg", "pdf", "png"):
            data = figure_bytes(fig, fmt, engine="matplotlib")
            assert len(data) > 1000 and check_bytes(data, fmt)
    assert "MC dropout" in figure_bytes(figs[0], "svg", engine="matplotlib").decode()


def test_cost_chart_log_ticks_are_labelled_in_full(frame):
    cost = cost_quality(frame)
    cost["seconds_median"] = [8.0, 12.0, 30.0][: len(cost)]
    fig = viz.cost_quality_figure(cost)
    ax = fig.layout.xaxis
    assert ax.type == "log" and ax.tickmode == "array"
    assert list(ax.ticktext) == ["5", "10", "20", "50"] and list(ax.tickvals) == [5, 10, 20, 50]
    vals, text = viz.log_ticks(0.3, 0.9)
    assert text == ["0.2", "0.5", "1"]


def test_panel_grid_has_colour_bar_legend_and_display_labels(results):
    rows, labels = [], []
    for m in ("mc_dropout", "noisy"):
        row = []
        for res, s in results:
            r = res[m]
            row.append(Panel(s.image[..., 1], r.maps["mutual_information"], s.mask, r.maps["mask"],
                             f"Dice {r.metrics['dice']:.2f}"))
        rows.append(row)
        labels.append(f"unet {m}")
    cols = [s.slice_id for _, s in results]
    assert display_label("unet", "mutual_information") == "U-Net · Mutual information (bits)"
    svg = panel_grid_bytes(rows, labels, cols, "svg", map_name="mutual_information").decode()
    assert check_bytes(svg.encode(), "svg")
    text = " ".join(re.findall(r"<!-- (.*?) -->", svg))  # matplotlib writes each text as a comment
    assert "U-Net · MC dropout" in text and "U-Net · Noisy" in text and "unet mc_dropout" not in text
    assert "Mutual information (bits)" in text  # the colour bar's label
    assert "ground truth" in text and "prediction" in text  # the legend
    assert "Dice" in text
    for fmt in ("pdf", "png"):
        assert len(check_bytes(panel_grid_bytes(rows, labels, cols, fmt, map_name="mutual_information"), fmt)) > 5000
    with pytest.raises(ValueError, match="one label per row"):
        panel_grid_bytes(rows, labels[:1], cols)


def test_report_figures_carry_vector_copies(frame, tmp_path):
    from segunc.report import figures
    from segunc.report.doc import Document, Image
    from segunc.report.markdown import render_markdown

    png = figures.cost_quality_scatter(cost_quality(frame))
    assert check_bytes(png, "png") and check_bytes(png.svg, "svg") and check_bytes(png.pdf, "pdf")
    doc = Document("t")
    doc.add(Image("unet_cost.png", png, "cost"))
    render_markdown(doc, tmp_path)
    for fmt in ("png", "svg", "pdf"):
        assert check_bytes((tmp_path / f"unet_cost.{fmt}").read_bytes(), fmt)
