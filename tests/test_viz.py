"""segunc.viz: overlay colours (and their colour-blind safety), colour maps, crops, figures."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest

from segunc import viz

from segunc.analysis import stats
from segunc.metrics import METRIC_NAMES, ece_from_bins, reliability_bins

pytestmark = pytest.mark.unit


def _image():
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 1] = np.arange(32, dtype=np.uint8)[None, :] * 8  # FLAIR gradient 0..248
    return img


# --------------------------------------------------------------------------- overlay
def test_overlay_colours_each_outcome():
    img = _image()
    pred = np.zeros((32, 32), bool)
    gt = np.zeros((32, 32), bool)
    pred[2:6, 2:6] = gt[2:6, 2:6] = True  # TP
    pred[10:12, 10:12] = True  # FP
    gt[20:22, 20:22] = True  # FN
    out = viz.overlay(img, pred, gt, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    assert tuple(out[3, 3]) == viz.OUTCOME_COLORS["TP"]
    assert tuple(out[10, 10]) == viz.OUTCOME_COLORS["FP"]
    assert tuple(out[21, 21]) == viz.OUTCOME_COLORS["FN"]
    grey = viz.to_rgb(img)
    assert (out[30, 5] == grey[30, 5]).all()  # true negatives keep the image
    half = viz.overlay(img, pred, gt, alpha=0.5)
    expect = np.round(0.5 * grey[3, 3] + 0.5 * np.array(viz.OUTCOME_COLORS["TP"]))
    assert np.abs(half[3, 3].astype(int) - expect).max() <= 1
    assert viz.outcome_counts(pred, gt) == {"TP": 16, "FP": 4, "FN": 4}
    gt_only = viz.overlay(img, None, gt, alpha=1.0)
    assert tuple(gt_only[21, 21]) == viz.OUTCOME_COLORS["TP"]
    with pytest.raises(ValueError):
        viz.overlay(img, pred[:10], gt)


def test_to_rgb_stretches_one_channel_or_keeps_colour():
    img = _image()
    g = viz.to_rgb(img, 1)
    assert g.shape == (32, 32, 3) and g.min() == 0 and g.max() == 255 and (g[..., 0] == g[..., 2]).all()
    assert (viz.to_rgb(img, 0) == 0).all()  # a constant channel stays black, no division by zero
    assert (viz.to_rgb(img, None) == img).all()


# Machado, Oliveira & Fernandes (2009) full-severity simulation matrices (linear RGB)
_CVD = {
    "protan": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deutan": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritan": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
    "normal": np.eye(3),
}


def _simulate(rgb, kind):
    c = np.asarray(rgb) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = np.clip(np.asarray(_CVD[kind]) @ lin, 0, 1)
    return np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


def test_outcome_colours_stay_distinct_under_colour_blindness():
    from skimage.color import deltaE_ciede2000, rgb2lab

    for kind in _CVD:
        labs = {k: rgb2lab(_simulate(c, kind)[None, None, :])[0, 0] for k, c in viz.OUTCOME_COLORS.items()}
        for a, b in itertools.combinations(labs, 2):
            assert deltaE_ciede2000(labs[a], labs[b]) > 20, (kind, a, b)
        for k, lab in labs.items():  # and stand out from a black or mid-grey MRI background
            for g in (0.0, 0.5):
                assert deltaE_ciede2000(lab, rgb2lab(np.full((1, 1, 3), g))[0, 0]) > 20, (kind, k, g)


def test_legend_names_every_outcome():
    html = viz.legend_html()
    for k, c in viz.OUTCOME_COLORS.items():
        assert k in html and f"rgb{c}" in html


# -------------------------------------------------------------------------- heatmaps
def test_colorize_scale_and_clipping():
    v = np.array([[0.0, 0.125, 0.25, 0.5, np.nan]], np.float32)
    out = viz.colorize(v, 0.0, 0.25, "Viridis")
    lut = viz._lut("Viridis")
    assert out.shape == (1, 5, 3) and out.dtype == np.uint8
    assert (out[0, 0] == lut[0]).all() and (out[0, 2] == lut[255]).all()
    assert (out[0, 3] == lut[255]).all()  # above vmax clips
    assert (out[0, 4] == lut[0]).all()  # NaN → bottom of the scale
    assert tuple(lut[0]) == (68, 1, 84) and tuple(lut[255]) == (253, 231, 37)  # viridis ends
    assert (viz.colorize(v, 0.3, 0.3) == lut[0]).all()  # empty range: no division by zero


def test_colorbar_html_ticks():
    html = viz.colorbar_html(0.0, 0.25, "Variance", ticks=3)
    assert "Variance" in html and "linear-gradient" in html
    assert "0.000" in html and "0.125" in html and "0.250" in html


def test_crop_box():
    m = np.zeros((256, 256), bool)
    m[100:110, 200:230] = True
    y0, y1, x0, x1 = viz.crop_box([m, None], m.shape, margin=8, min_size=16)
    assert y1 - y0 == x1 - x0 and 0 <= y0 and 0 <= x0 and y1 <= 256 and x1 <= 256
    assert y0 <= 100 and y1 >= 110 and x0 <= 200 and x1 >= 230
    assert viz.crop_box([np.zeros((64, 64), bool)], (64, 64)) == (0, 64, 0, 64)
    edge = np.zeros((64, 64), bool)
    edge[0, 63] = True
    y0, y1, x0, x1 = viz.crop_box([edge], (64, 64), margin=4, min_size=32)
    assert (y0, x1) == (0, 64) and y1 - y0 == 32
    assert viz.crop(np.arange(64 * 64).reshape(64, 64), (0, 32, 32, 64)).shape == (32, 32)


# --------------------------------------------------------------------------- figures
@pytest.fixture
def results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for b in ("unet", "litemedsam"):
        for m in ("crf", "normal", "tta", "fusion"):
            for i in range(8):
                rows.append({"key": f"k-{b}-{m}-{i}", "slice_id": f"TCGA_AA_0001_20000101_{i}", "patient_id": "TCGA_AA_0001",
                             "backend": b, "mode": m, **{k: float(rng.uniform()) for k in METRIC_NAMES}})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kind", ["box", "violin"])
def test_distribution_figure(results, kind):
    fig = viz.distribution_figure(results, "dice", kind=kind, points="all")
    assert [t.name for t in fig.data] == ["U-Net", "LiteMedSAM"]  # display names (legends of exported figures)
    assert all(t.type == kind for t in fig.data)
    t = fig.data[0]
    assert len(t.y) == 32 and t.customdata.shape == (32, 5)
    first = results[results["backend"] == "unet"].iloc[0]
    assert list(t.customdata[0]) == [first["key"], first["slice_id"], first["patient_id"], "unet", first["mode"]]
    assert "customdata[1]" in t.hovertemplate  # hover names the slice
    assert list(fig.layout.xaxis.categoryarray) == ["Normal", "TTA", "Fusion", "CRF"]  # paper order
    assert "higher is better" in fig.layout.yaxis.title.text
    assert "lower is better" in viz.distribution_figure(results, "nll").layout.yaxis.title.text
    assert fig.layout.clickmode == "event+select"
    with pytest.raises(ValueError):
        viz.distribution_figure(results, "dice", kind="bar")
    with pytest.raises(KeyError):
        viz.distribution_figure(results, "nope")


def test_reliability_figure_titles_carry_pooled_ece():
    rng = np.random.default_rng(1)
    bins = {}
    for b, m in (("unet", "normal"), ("unet", "tta"), ("litemedsam", "normal")):
        p = rng.uniform(0, 1, (64, 64)).astype(np.float32)
        t = rng.uniform(0, 1, (64, 64)) < p
        c, s, k = reliability_bins(p, t)
        bins[(b, m)] = {"counts": c, "sum_confidence": s, "sum_correct": k}
    fig = viz.reliability_figure(bins)
    titles = [a.text for a in fig.layout.annotations]
    for (b, m), v in bins.items():
        ece = ece_from_bins(v["counts"], v["sum_confidence"], v["sum_correct"])
        assert any(f"{b} · {viz.mode_label(m)}" in x and f"ECE {ece:.4f}" in x for x in titles)
    bars = [t for t in fig.data if t.type == "bar" and t.name == "Normal"]
    v = bins[("unet", "normal")]
    ok = v["counts"] > 0
    np.testing.assert_allclose(bars[0].y, v["sum_correct"][ok] / v["counts"][ok])
    assert fig.layout.xaxis.range == (0.5, 1.0)  # top-label confidence lives in [0.5, 1]
    with pytest.raises(ValueError):
        viz.reliability_figure({})


def test_calibration_and_pvalue_figures(results):
    desc = stats.describe(results, ["nll", "ece", "brier"], n_resamples=200)
    fig = viz.calibration_figure(desc)
    assert len(fig.data) == 6 and {t.name for t in fig.data} == {"U-Net", "LiteMedSAM"}
    pw = stats.pairwise_wilcoxon(results, "dice", "unet")
    pf = viz.pvalue_figure(pw)
    h = pf.data[0]
    z = np.asarray(h.z, float)
    assert list(h.y) == ["TTA", "Fusion", "CRF"] and list(h.x) == ["Normal", "TTA", "Fusion"]  # lower triangle
    assert z.shape == (3, 3) and np.isnan(z[np.triu_indices(3, 1)]).all() and np.isfinite(np.tril(z)[np.tril_indices(3)]).all()
    row = pw[(pw["mode_a"] == "normal") & (pw["mode_b"] == "tta")].iloc[0]
    assert z[0, 0] == pytest.approx(-np.log10(row["p_holm"]))  # row TTA, column Normal
    assert h.customdata[0][0] == pytest.approx(-row["rank_biserial"])  # r of TTA against Normal


def test_tumour_profile_highlights_current_slice():
    df = pd.DataFrame({"index": [1, 2, 3], "tumour_px": [0, 120, 40]})
    fig = viz.tumour_profile_figure(df, current=2)
    assert list(fig.data[0].marker.color) == ["#0072B2", "#D55E00", "#0072B2"]
    few = viz.tumour_profile_figure(pd.DataFrame({"index": [12, 13], "tumour_px": [900, 2897]}), current=13)
    assert list(few.layout.xaxis.tickvals) == [12, 13]  # whole slice numbers only, never 12.5
    many = viz.tumour_profile_figure(pd.DataFrame({"index": range(1, 41), "tumour_px": 0}))
    assert many.layout.xaxis.tickvals is None  # a whole volume: plotly's own ticks


def test_grid_png():
    from PIL import Image

    a = np.zeros((40, 40, 3), np.uint8)
    png = viz.grid_png([[a, None], [a, a]], ["unet prediction", "unet entropy"], ["Normal", "TTA"], cell=50, pad=5)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (150 + 2 * 55 + 5, 22 + 2 * 55 + 5)
    with pytest.raises(ValueError):
        viz.grid_png([[a]], [], ["x"])


def test_box_stats_match_tukey_definition():
    x = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 30])
    s = viz.box_stats(x)
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    assert (s["q1"], s["median"], s["q3"], s["mean"]) == (q1, med, q3, x.mean())
    assert s["lowerfence"] == 0.0 and s["upperfence"] == 8.0  # 30 lies beyond q3 + 1.5 IQR


@pytest.mark.parametrize("kind", ["box", "violin"])
def test_distribution_figure_stays_light_on_big_tables(kind):
    rng = np.random.default_rng(5)
    n = 50_000
    df = pd.DataFrame({"key": [f"{i:064x}" for i in range(n)], "slice_id": [f"TCGA_SY_{i // 20:04d}_20000101_{i % 20}" for i in range(n)],
                       "patient_id": "P", "backend": np.where(np.arange(n) % 2, "unet", "litemedsam"),
                       "mode": np.array(["normal", "tta", "fusion", "crf"])[np.arange(n) % 4], "dice": rng.beta(8, 2, n)})
    fig = viz.distribution_figure(df, "dice", kind=kind, points="all", max_points=6000)
    size = len(fig.to_json())
    assert size < 2_000_000, size  # all 50k points with their keys would be ~7 MB
    points = sum(len(t.y) for t in fig.data if t.y is not None and t.customdata is not None)
    assert 0 < points <= 6000 + 10
    if kind == "box":
        boxes = [t for t in fig.data if t.q1 is not None]
        assert [t.name for t in boxes] == ["U-Net", "LiteMedSAM"]  # registry order
        g = df[(df["backend"] == "unet") & (df["mode"] == "tta")]["dice"].to_numpy()
        b = boxes[0]
        j = list(b.x).index("TTA")
        ref = viz.box_stats(g)
        assert b.median[j] == pytest.approx(ref["median"]) and b.upperfence[j] == pytest.approx(ref["upperfence"])
        outliers = [t for t in fig.data if t.customdata is not None]
        assert all(t.offsetgroup in ("unet", "litemedsam") for t in outliers)
        n_out = sum(((df.loc[(df.backend == b_) & (df["mode"] == m_), "dice"] < viz.box_stats(gg)["lowerfence"]) |
                     (df.loc[(df.backend == b_) & (df["mode"] == m_), "dice"] > viz.box_stats(gg)["upperfence"])).sum()
                    for (b_, m_), gg in ((k, v["dice"].to_numpy()) for k, v in df.groupby(["backend", "mode"])))
        assert sum(len(t.y) for t in outliers) == n_out


def test_table_html_escapes_every_cell():
    import pandas as pd

    from segunc.viz import table_html

    df = pd.DataFrame({"value": ["<script>alert(1)</script>", None], "T": [5, 30]},
                      index=pd.Index(["run <a>", "b & c"], name="run"))
    out = table_html(df)
    assert "<script>" not in out and "&lt;script&gt;" in out and "run &lt;a&gt;" in out and "b &amp; c" in out
    assert out.count("<tr>") == 3 and "<th" in out and ">run</th>" in out and ">30</td>" in out
    assert "run" not in table_html(df, index=False).split("<tbody>")[0]
