"""The app in a real headless Chromium (Playwright driving the system's Chromium; nothing is
downloaded at run time): every page loads, finishes its script run, shows no exception box, no
error box and no JavaScript error, and leaves a full-page screenshot in ``$SEGUNC_SCREENSHOTS``
(default: a temporary folder, printed). Clicking a point in a metric plot opens that slice on the
Compare page, and the arrow keys step through slices there.

Needs a Chromium: ``$SEGUNC_CHROMIUM``, else ``chromium`` / ``chromium-browser`` / ``google-chrome``
on PATH (Debian: ``apt-get install chromium``).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest_app import ROOT, app_store  # noqa: F401

pytestmark = [pytest.mark.app, pytest.mark.slow]

PAGES = {"home": "", "dataset": "dataset", "run": "run", "compare": "compare", "metrics": "metrics",
         "calibration": "calibration", "review": "review", "upload": "upload", "overview": "overview"}
VIEWPORT = {"width": 1600, "height": 1000}


def chromium_path() -> str:
    for cand in (os.environ.get("SEGUNC_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if cand and (shutil.which(cand) or Path(cand).is_file()):
            return shutil.which(cand) or cand
    pytest.fail("no Chromium found for the browser tests: install it (Debian: apt-get install chromium) "
                "or set SEGUNC_CHROMIUM to its executable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run app.py`` on a free port with the given environment (and extra ``streamlit run``
    options, e.g. ``("--secrets.files", path)``), run in ``cwd`` (default the repository root); stopped
    by :meth:`stop`."""

    def __init__(self, env: dict[str, str], log: Path, args: tuple[str, ...] = (), cwd: Path | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(self.port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false", *args]
        self.proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env={**os.environ, **env}, stdout=open(log, "w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1)
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"streamlit did not start within 120 s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_idle(page, timeout: float = 240.0, settle: int = 4) -> float:
    """Wait until the app's script run is over, images are decoded and plotly charts drawn; seconds taken."""
    t0 = time.perf_counter()
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout * 1000)
    stable = 0
    while time.perf_counter() - t0 < timeout:
        state = page.get_attribute('[data-testid="stApp"]', "data-test-script-state")
        ready = page.evaluate("""() => [...document.images].every(i => i.complete) &&
            [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].every(c => c.querySelector('.main-svg')) &&
            !document.querySelector('[data-testid="stSkeleton"]')""")
        stable = stable + 1 if state == "notRunning" and ready else 0
        if stable >= settle:
            return time.perf_counter() - t0 - settle * 0.1
        time.sleep(0.1)
    raise TimeoutError(f"page still busy after {timeout:.0f} s (script state {state!r})")


def problems(page) -> list[str]:
    """Exception boxes and error alerts on the page."""
    out = [f"exception: {e.inner_text()[:300]}" for e in page.query_selector_all('[data-testid="stException"]')]
    out += [f"error: {e.inner_text()[:300]}" for e in page.query_selector_all('[data-testid="stAlertContentError"]')]
    return out


def screenshot(page, path: Path) -> None:
    """Full-page screenshot; Streamlit scrolls inside its main section, so grow the viewport to fit it."""
    h = page.evaluate("() => (document.querySelector('[data-testid=\"stMain\"]') || document.body).scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": int(min(max(VIEWPORT["height"], h + 40), 8000))})
    time.sleep(0.5)
    wait_idle(page, 60, settle=2)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("SEGUNC_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    print(f"\n[browser] screenshots in {d}")
    return d


@pytest.fixture(scope="module")
def server(app_store, lgg_root, unet_weights, tmp_path_factory):
    env = {"SEGUNC_CACHE": str(app_store), "SEGUNC_DATA": str(lgg_root), "SEGUNC_WEIGHTS": str(unet_weights.parent)}
    srv = Server(env, tmp_path_factory.mktemp("server") / "streamlit.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport=VIEWPORT)
    pg = ctx.new_page()
    pg.js_errors = []
    pg.on("pageerror", lambda exc: pg.js_errors.append(str(exc)))
    yield pg
    ctx.close()


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_cleanly(server, page, shots, name):
    page.goto(f"{server.url}/{PAGES[name]}")
    seconds = wait_idle(page)
    screenshot(page, shots / f"{name}.png")
    assert not problems(page), problems(page)
    assert not page.js_errors, page.js_errors
    assert page.query_selector("h1"), "no page title"
    print(f"[browser] {name}: ready in {seconds:.1f} s")


def test_clicking_a_point_opens_that_slice(server, page, shots):
    page.goto(f"{server.url}/metrics")
    wait_idle(page)
    point = page.locator('[data-testid="stPlotlyChart"]').first.locator("g.points path.point").first
    point.click(force=True)
    page.wait_for_url("**/compare?*", timeout=60_000)
    wait_idle(page)
    assert "slice=TCGA_" in page.url and "focus=" in page.url
    slice_id = page.url.split("slice=")[1].split("&")[0]
    assert slice_id in page.inner_text('[data-testid="stMain"]')
    assert not problems(page) and not page.js_errors
    screenshot(page, shots / "compare_from_click.png")


def test_arrow_keys_step_through_slices(server, page):
    page.goto(f"{server.url}/compare")
    wait_idle(page)
    first = page.url.split("slice=")[1].split("&")[0]
    page.locator("h1").click()  # focus the page, not an input
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"() => !location.search.includes('slice={first}')", timeout=60_000)
    wait_idle(page)
    second = page.url.split("slice=")[1].split("&")[0]
    assert second != first
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"() => location.search.includes('slice={first}')", timeout=60_000)
    assert not problems(page) and not page.js_errors


def test_deep_link_on_a_fresh_server_runs_inside_the_app(app_store, lgg_root, unet_weights, browser, tmp_path):
    """The first request of a new server is a deep link: Streamlit's legacy pages/ mode must not take over
    (the page would run without app.py: no navigation sections, no wide layout)."""
    from segunc.store import ResultStore

    slice_id = ResultStore(app_store).metrics_frame()["slice_id"].iloc[-1]
    env = {"SEGUNC_CACHE": str(app_store), "SEGUNC_DATA": str(lgg_root), "SEGUNC_WEIGHTS": str(unet_weights.parent)}
    srv = Server(env, tmp_path / "streamlit.log")
    try:
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        page.goto(f"{srv.url}/compare?slice={slice_id}&focus=litemedsam:crf")
        try:  # the legacy run ends with a rerun through app.py; on a loaded machine the page idles between the two
            page.wait_for_function("() => (document.querySelector('[data-testid=\"stSidebarNav\"]') || {innerText: ''})"
                                   ".innerText.includes('Set-up')", timeout=120_000)
        except Exception:  # noqa: BLE001 - the assertion below says what the navigation shows instead
            pass
        wait_idle(page)
        nav = page.inner_text('[data-testid="stSidebarNav"]')
        assert "Set-up" in nav and "Compare a slice" in nav and "common" not in nav
        assert slice_id in page.inner_text('[data-testid="stMain"] div.seg-slice')  # the slice header
        assert f"slice={slice_id}" in page.url
        assert not problems(page)
        ctx.close()
    finally:
        srv.stop()


def _visible_images(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stImage"] img')]
        .map(i => { const r = i.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, width: r.width}; })""")


def test_compare_reads_at_a_glance_at_1280x720(server, browser, shots):
    """A laptop / projector screen: a first row of large panels above the fold, no clipped metric text, and a
    map that does not apply (Normal's mutual information) replaced by its reason, never an always-blank map."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    page = ctx.new_page()
    page.goto(f"{server.url}/compare?map=mutual_information")
    wait_idle(page)
    page.screenshot(path=str(shots / "compare_1280x720_mi.png"))
    assert not problems(page), problems(page)
    imgs = _visible_images(page)
    above = [i for i in imgs if i["top"] >= 0 and i["bottom"] <= 720]
    assert len(above) >= 3, f"panels above the fold at 1280×720: {imgs[:6]}"
    assert min(i["width"] for i in above) >= 150, f"panels too small: {above}"
    texts = page.evaluate("""() => [...document.querySelectorAll('table.seg-m, div.seg-foot, div.seg-na')]
        .map(e => [e.className, e.scrollWidth, e.clientWidth, e.innerText])""")
    assert texts and any(t[0] == "seg-m" for t in texts), "no metric text in the panels"
    clipped = [t for t in texts if t[1] > t[2]]
    assert not clipped, f"metric text overflows its panel: {clipped}"
    notes = [t[3] for t in texts if t[0] == "seg-na"]
    assert sum("n/a" in n for n in notes) == 2, notes  # Normal (each backend): no MI map, the reason instead
    assert len(imgs) == 12, imgs  # every panel keeps the anatomy with its contours, n/a ones too
    ctx.close()


@pytest.mark.parametrize("fmt,magic", [("SVG", b"<svg"), ("PDF", b"%PDF-")])
def test_compare_panels_download_as_vector(server, page, fmt, magic):
    """The visible download buttons under the panels give a real SVG / PDF (colour bar, legend, labels)."""
    page.goto(f"{server.url}/compare")
    wait_idle(page)
    button = page.locator('[data-testid="stDownloadButton"] button', has_text=fmt).first
    assert button.is_visible()
    with page.expect_download(timeout=180_000) as info:
        button.click()
    data = Path(info.value.path()).read_bytes()
    assert len(data) > 5000 and magic in data[:4096], data[:200]
    if fmt == "SVG":
        text = data.decode("utf-8", "replace")
        assert "ground truth" in text and "U-Net" in text and "Entropy (bits)" in text
    assert not problems(page)


def test_upload_without_a_mask_box_drawn_on_the_image(browser, lgg_root, unet_weights, tmp_path, shots):
    """No mask, a box-prompted backend: dragging a box on the image fills x0, y0, x1, y1 and draws the box."""
    image = lgg_root / "TCGA_CS_5396_20010302" / "TCGA_CS_5396_20010302_12.tif"
    env = {"SEGUNC_CACHE": str(tmp_path / "store"), "SEGUNC_DATA": str(lgg_root),
           "SEGUNC_WEIGHTS": str(unet_weights.parent), "SEGUNC_MODE": "local"}
    srv = Server(env, tmp_path / "streamlit.log")
    try:
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        page.goto(srv.url)
        wait_idle(page)
        page.goto(f"{srv.url}/upload")
        wait_idle(page)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(image))
        wait_idle(page)
        page.get_by_role("combobox", name="Backend").click()
        page.get_by_role("option", name="litemedsam").click()
        wait_idle(page)
        inputs = [page.get_by_label(name, exact=True) for name in ("x0", "y0", "x1", "y1")]
        assert [i.input_value() for i in inputs] == [""] * 4  # no mask: no box yet
        drag = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
        r = drag.bounding_box()
        page.mouse.move(r["x"] + 0.30 * r["width"], r["y"] + 0.25 * r["height"])
        page.mouse.down()
        page.mouse.move(r["x"] + 0.50 * r["width"], r["y"] + 0.40 * r["height"], steps=8)
        page.mouse.move(r["x"] + 0.60 * r["width"], r["y"] + 0.55 * r["height"], steps=8)
        page.mouse.up()
        page.wait_for_function("""() => ['x0', 'y0', 'x1', 'y1'].every(n =>
            (document.querySelector(`input[aria-label="${n}"]`) || {}).value)""", timeout=60_000)
        wait_idle(page)
        box = [int(i.input_value()) for i in inputs]
        assert abs(box[0] - 0.30 * 256) <= 6 and abs(box[2] - 0.60 * 256) <= 6, box
        assert abs(box[1] - 0.25 * 256) <= 6 and abs(box[3] - 0.55 * 256) <= 6, box
        assert page.locator('[data-testid="stPlotlyChart"] path[style*="rgb(213, 94, 0)"]').count() >= 1  # drawn
        assert page.get_by_role("button", name="Run").is_enabled()
        page.screenshot(path=str(shots / "upload_box_drawn.png"), full_page=True)
        assert not problems(page), problems(page)
        page.get_by_role("button", name="Run").click()  # LiteMedSAM, Normal: one pass with the drawn box
        page.wait_for_selector("text=Download the panels", timeout=240_000)
        wait_idle(page)
        main = page.inner_text('[data-testid="stMain"]')
        assert "box prompt" in main and f"box ({box[0]}, {box[1]}, {box[2]}, {box[3]})" in main, main[-800:]
        assert len(page.query_selector_all('[data-testid="stMain"] [data-testid="stImage"] img')) >= 2
        screenshot(page, shots / "upload_result.png")
        assert not problems(page), problems(page)
        ctx.close()
    finally:
        srv.stop()
