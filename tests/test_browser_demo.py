"""The defence demo stands alone, in a real headless Chromium: a snapshot of a small real store (U-Net,
two val slices, three modes) is exported, imported into a fresh store and served in demo mode with an
empty data folder and an empty weights folder. Every page in the navigation opens without an exception
or error box; the demo opens on the Overview (what the snapshot holds, the T its runs used, one large
slice), Compare shows the slice from the snapshot's slice pack, and Dataset browses the snapshot's slices.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_browser import Server, _visible_images, browser, problems, screenshot, wait_idle  # noqa: F401

pytestmark = [pytest.mark.app, pytest.mark.slow]

SAMPLES = 3  # not the paper's T = 30: the Overview must show what the runs used
MODES = ["normal", "mc_dropout", "noisy"]


def build_demo_store(out: Path, lgg_root: Path, unet_weights: Path) -> Path:
    """Sweep U-Net on two val tumour slices into ``out/source``, export a snapshot, import it into ``out/demo``."""
    from segunc.config import PipelineConfig
    from segunc.runner.jobs import JobSpec
    from segunc.runner.worker import run_sweep
    from segunc.store import ResultStore
    from segunc.store.snapshot import export_snapshot, import_snapshot

    source = out / "source"
    spec = JobSpec(data=lgg_root, backend="unet", weights=unet_weights, modes=MODES, split="val", limit=2,
                   config=PipelineConfig(samples=SAMPLES))
    _, counts = run_sweep(ResultStore(source), spec, progress=False)
    assert counts.failed == 0, counts.errors
    archive = out / "demo.tar.gz"
    export_snapshot(archive, source)
    res = import_snapshot(archive, out / "demo")
    assert res["results"] == 2 * len(MODES), res
    return out / "demo"


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory, lgg_root, unet_weights):
    base = tmp_path_factory.mktemp("demo")
    store = build_demo_store(base, lgg_root, unet_weights)
    (base / "no_data").mkdir()
    (base / "no_weights").mkdir()
    env = {"SEGUNC_MODE": "demo", "SEGUNC_CACHE": str(store), "SEGUNC_DATA": str(base / "no_data"),
           "SEGUNC_WEIGHTS": str(base / "no_weights")}
    srv = Server(env, base / "streamlit.log")
    yield srv
    srv.stop()


def test_demo_from_a_snapshot_without_data(demo_server, browser, tmp_path):  # noqa: F811
    import os

    shots = Path(os.environ.get("SEGUNC_SCREENSHOTS") or tmp_path)
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(demo_server.url)
    wait_idle(page)
    page.screenshot(path=str(shots / "demo_overview.png"), full_page=True)
    assert not problems(page), problems(page)
    main = page.inner_text('[data-testid="stMain"]')
    assert "What these results hold" in main  # the demo opens on the Overview, not the Set-up page
    assert "U-Net" in main and "MC dropout" in main
    table = page.inner_text('[data-testid="stMain"] table')  # the settings the runs used (static HTML)
    assert f"samples T = {SAMPLES}" in main, "the settings the runs used (T) are not shown"
    assert "T = 30" not in main and "T = 30" not in table
    assert len(page.query_selector_all('[data-testid="stMain"] [data-testid="stImage"] img')) >= 2
    links = page.eval_on_selector_all('[data-testid="stSidebarNav"] a', "els => els.map(e => e.getAttribute('href'))")
    assert len(links) >= 5, links
    for href in links:
        page.goto(href if href.startswith("http") else f"{demo_server.url}/{href.lstrip('/')}")
        wait_idle(page)
        name = href.split("://", 1)[-1].rstrip("/").partition("/")[2].split("?")[0] or "overview"
        if name == "compare":  # on a 1280×720 projector, under the demo banner: a first row of panels in view
            page.set_viewport_size({"width": 1280, "height": 720})
            wait_idle(page, 60, settle=2)
            imgs = _visible_images(page)
            assert len([i for i in imgs if i["top"] >= 0 and i["bottom"] <= 720]) >= 3, imgs
        screenshot(page, shots / f"demo_{name}.png")  # the whole page (the viewport grows to fit it)
        assert not problems(page), (href, problems(page))
        if name == "compare":
            assert page.query_selector_all('[data-testid="stMain"] [data-testid="stImage"] img'), "no slice shown"
            assert "TCGA_" in page.inner_text('[data-testid="stMain"] div.seg-slice')
        if name == "dataset":  # no data folder: the slices the snapshot holds, labelled as such
            text = page.inner_text('[data-testid="stMain"]')
            assert "Slices from the snapshot" in text and "2 slices of 1 patient" in text, text[:600]
            assert len(page.query_selector_all('[data-testid="stMain"] [data-testid="stImage"] img')) >= 4
            assert "FLAIR + ground truth" in text and "from the snapshot." in text
    assert not errors, errors
    ctx.close()


@pytest.mark.parametrize("fmt,magic", [("SVG", b"<svg"), ("PDF", b"%PDF-")])
def test_demo_chart_downloads_as_vector(demo_server, browser, fmt, magic):  # noqa: F811
    """The Overview's chart has visible SVG / PDF buttons that give real files (with its legend), in demo mode."""
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(demo_server.url)
    wait_idle(page)
    page.get_by_role("tab", name="Dice at a glance").click()  # drawn only when opened
    wait_idle(page)
    button = page.locator('[data-testid="stDownloadButton"] button', has_text=fmt).first
    button.scroll_into_view_if_needed()
    assert button.is_visible()
    with page.expect_download(timeout=180_000) as info:
        button.click()
    data = Path(info.value.path()).read_bytes()
    assert len(data) > 2000 and magic in data[:4096], data[:200]
    if fmt == "SVG":
        assert b"U-Net" in data and b"MC dropout" in data  # legend and display labels, not identifiers
    assert not problems(page)
    ctx.close()
