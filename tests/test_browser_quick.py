"""A fresh machine shows results in minutes, offline: the app started with no data folder configured, an
empty weights folder and an empty results store reads the shipped LGG sample (and says so), offers the
one-click quick demo (LiteMedSAM alone here: the only backend whose weights need no folder), runs it with
visible progress, and then every result page shows results without an error box. Prints the time from
the app's start to the last page filled (a figure, not a bound: the machine is shared).

The server runs in an empty working folder (with the repository's ``.streamlit`` settings), so a data
folder at the default place of a developer's checkout (``data/lgg/kaggle_3m``) cannot hide the sample.
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest_app import ROOT
from tests.test_browser import VIEWPORT, Server, browser, problems, screenshot, wait_idle  # noqa: F401

pytestmark = [pytest.mark.app, pytest.mark.slow]

#: the quick demo's whole run on this 2-core CPU took ~6 min from the app's start; a bound, not a target
DEMO_TIMEOUT_S = 720
RESULT_PAGES = ["compare", "metrics", "calibration", "review", "overview"]


def _main_text(page) -> str:
    return page.inner_text('[data-testid="stMain"]')


def _count(page, selector: str) -> int:
    return len(page.query_selector_all(f'[data-testid="stMain"] {selector}'))


def _stop_worker(store: Path) -> None:
    """The app started a detached worker for this store: stop that one process (by its lock's pid)."""
    from segunc.runner.jobs import worker_info

    info = worker_info(store)
    if info and info.get("pid"):
        try:
            os.kill(int(info["pid"]), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def test_quick_demo_on_the_shipped_sample(browser, tmp_path):  # noqa: F811
    from segunc.data.sample import sample_data_dir
    from segunc.runner.quick import QUICK_SLICES
    from segunc.store import ResultStore

    assert sample_data_dir() is not None, "the repository has no shipped sample (data/sample/kaggle_3m)"
    shots = Path(os.environ.get("SEGUNC_SCREENSHOTS") or tmp_path)
    work, store, weights = tmp_path / "cwd", tmp_path / "store", tmp_path / "no_weights"
    work.mkdir(), weights.mkdir()
    shutil.copytree(ROOT / ".streamlit", work / ".streamlit")
    env = {"SEGUNC_DATA": "", "SEGUNC_WEIGHTS": str(weights), "SEGUNC_CACHE": str(store), "SEGUNC_MODE": "local",
           "SEGUNC_OFFLINE": "1"}  # nothing configured, nothing downloaded
    t0 = time.monotonic()
    srv = Server(env, tmp_path / "streamlit.log", cwd=work)
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        page.goto(srv.url)
        wait_idle(page)
        main = _main_text(page)
        assert "Sample data" in main, "the shipped sample is not labelled as a sample"
        assert "the shipped LGG sample" in main and "Run the quick demo" in main
        assert "litemedsam × the six modes" in main  # LiteMedSAM alone: the weights folder is empty
        assert not problems(page), problems(page)

        page.get_by_role("button", name="Run the quick demo").click()
        t_click = time.monotonic()
        progress: list[str] = []
        while True:
            time.sleep(3)
            main = _main_text(page)  # one read: the progress texts re-render every 10 s
            for line in main.splitlines():
                if line.startswith("litemedsam: ") and " slices" in line and (not progress or progress[-1] != line):
                    progress.append(line.strip())
            if "The quick demo is done" in main:
                break
            assert "The quick demo ended" not in main and "could not be queued" not in main, main[-1500:]
            assert not problems(page), problems(page)
            if time.monotonic() - t_click > DEMO_TIMEOUT_S:
                log = (store / "logs" / "worker-cpu.log")
                pytest.fail(f"the quick demo did not finish in {DEMO_TIMEOUT_S} s; progress seen: {progress[-5:]}; "
                            f"worker log: {log.read_text()[-2000:] if log.exists() else 'none'}")
        t_done = time.monotonic()
        assert any("litemedsam:" in p and "slices" in p for p in progress), f"no progress shown: {progress}"
        assert any(f"/{QUICK_SLICES} slices" in p for p in progress), progress
        wait_idle(page)
        screenshot(page, shots / "quick_home_done.png")
        assert not problems(page), problems(page)

        n_results = len(ResultStore(store).metrics_frame())
        assert n_results == QUICK_SLICES * 6, n_results  # LiteMedSAM × the six modes × the slices
        seconds: dict[str, float] = {}
        for name in RESULT_PAGES:
            page.goto(f"{srv.url}/{name}")
            seconds[name] = wait_idle(page, 300)
            screenshot(page, shots / f"quick_{name}.png")
            assert not problems(page), (name, problems(page))
            text = _main_text(page)
            assert "results store is empty" not in text.lower() and "Nothing matches" not in text, (name, text[:500])
            if name == "compare":
                assert _count(page, '[data-testid="stImage"] img') >= 6, "Compare shows no panels"
                assert "TCGA_" in page.inner_text('[data-testid="stMain"] div.seg-slice')
            elif name in ("metrics", "calibration"):
                assert _count(page, '[data-testid="stPlotlyChart"]') >= 1, f"{name} shows no chart"
            elif name == "review":
                assert f"{n_results} results · {QUICK_SLICES} slices" in text, text[:500]
                assert _count(page, '[data-testid="stDataFrame"]') >= 1, "Review shows no table"
            elif name == "overview":
                assert _count(page, '[data-testid="stImage"] img') >= 2 and "LiteMedSAM" in text
        t_filled = time.monotonic()
        assert not js_errors, js_errors
        print(f"\n[quick demo] app start → quick demo done: {t_done - t0:.0f} s (compute after the click "
              f"{t_done - t_click:.0f} s); → every result page filled: {t_filled - t0:.0f} s; "
              f"pages (s): {', '.join(f'{k} {v:.1f}' for k, v in seconds.items())}; progress: {progress[:2]} … "
              f"{progress[-1:]}")
    finally:
        ctx.close()
        srv.stop()
        _stop_worker(store)
