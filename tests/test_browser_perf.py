"""Timings in headless Chromium over a store of 50,000 metric rows: the Metrics page from cache,
and switching slices on the Compare page. The big store is the real fixture store plus its rows
replicated under new (synthetic) slice ids with jittered metrics; replicas share the real rows'
map files, so every row is a valid stored result. Timings go to ``timings.json`` beside the
screenshots and are printed."""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from segunc.metrics import METRIC_NAMES
from tests.conftest_app import app_store  # noqa: F401
from tests.test_browser import VIEWPORT, Server, browser, problems, screenshot, shots, wait_idle  # noqa: F401

N_ROWS = 50_000
BOUNDED = {"iou", "dice", "accuracy", "precision", "recall", "ece", "brier", "certainty"}


def replicate_store(src: Path, dst: Path, n_rows: int = N_ROWS, seed: int = 0) -> int:
    """Copy the store at ``src`` to ``dst`` and add replicas of its rows until it holds ``n_rows``."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("locks", "logs", "*.lock"))
    rng = np.random.default_rng(seed)
    con = sqlite3.connect(dst / "store.sqlite")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM results")]
    slices = sorted({r["slice_id"] for r in rows})
    per_slice = len(rows) // len(slices)
    n_new = (n_rows - len(rows)) // per_slice
    cols = list(rows[0])
    out = []
    for k in range(n_new):
        src_slice = slices[k % len(slices)]
        folder = f"TCGA_SY_{k // 20:04d}_20000101"
        shift = rng.normal(0, 0.05)
        for r in rows:
            if r["slice_id"] != src_slice:
                continue
            new = dict(r)
            new["key"] = hashlib.sha256(f"{r['key']}:{k}".encode()).hexdigest()
            new["patient_id"], new["patient_folder"] = f"TCGA_SY_{k // 20:04d}", folder
            new["slice_index"], new["slice_id"] = k % 20 + 1, f"{folder}_{k % 20 + 1}"
            new["image"] = f"{folder}/{folder}_{k % 20 + 1}.tif"
            for m in METRIC_NAMES:
                v = r[m] + shift + rng.normal(0, 0.02)
                new[m] = float(np.clip(v, 0, 1) if m in BOUNDED else max(v, 0.0))
            out.append(tuple(new[c] for c in cols))
    con.executemany(f"INSERT INTO results ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", out)
    con.commit()
    total = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    con.close()
    return total


@pytest.fixture(scope="module")
def big_server(app_store, lgg_root, unet_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("big") / "store"
    total = replicate_store(app_store, root)
    assert total >= N_ROWS - 12
    env = {"SEGUNC_CACHE": str(root), "SEGUNC_DATA": str(lgg_root), "SEGUNC_WEIGHTS": str(unet_weights.parent)}
    srv = Server(env, tmp_path_factory.mktemp("big_server") / "streamlit.log")
    srv.total = total
    yield srv
    srv.stop()


def _timed_load(page, url: str) -> float:
    t0 = time.perf_counter()
    page.goto(url)
    wait_idle(page, timeout=600)
    return time.perf_counter() - t0


def _slice(url: str) -> str:
    return url.split("slice=")[1].split("&")[0]


def test_timings_with_50k_rows(big_server, browser, shots, app_store):
    from segunc.store import ResultStore

    real = sorted(ResultStore(app_store).metrics_frame()["slice_id"].unique(), key=lambda s: int(s.rsplit("_", 1)[1]))
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    t = {"rows": big_server.total}
    # Metrics: first load fills the caches (reads the 50k rows), then loads from cache
    t["metrics_first_s"] = _timed_load(page, f"{big_server.url}/metrics")
    assert not problems(page), problems(page)
    warm = [_timed_load(page, f"{big_server.url}/metrics") for _ in range(3)]
    t["metrics_cached_s"] = float(np.median(warm))
    t["metrics_cached_runs_s"] = warm
    screenshot(page, shots / "metrics_50k.png")
    assert not problems(page), problems(page)

    # Compare: step between the real slices; the first visit of a slice reads its maps, later ones are cached
    page.goto(f"{big_server.url}/compare?slice={real[0]}")
    wait_idle(page, timeout=600)
    switches = []
    for key in ["cmp_next", "cmp_next", "cmp_prev", "cmp_prev"] * 2:
        before = _slice(page.url)
        t0 = time.perf_counter()
        page.locator(f".st-key-{key} button").first.click()
        page.wait_for_function(f"() => !location.search.includes('slice={before}&') && "
                               f"!location.search.endsWith('slice={before}')", timeout=120_000)
        wait_idle(page, timeout=120)
        switches.append(round(time.perf_counter() - t0, 3))
        assert not problems(page), problems(page)
    assert [_slice(page.url)] == [real[0]]
    t["compare_switch_first_visit_s"] = switches[:2]
    t["compare_switch_cached_s"] = switches[2:]
    t["compare_switch_cached_median_s"] = float(np.median(switches[2:]))
    screenshot(page, shots / "compare_50k.png")
    ctx.close()
    (shots / "timings.json").write_text(json.dumps(t, indent=2))
    print(f"\n[browser perf] {json.dumps(t)}")
    # generous bounds: this guards against pathologies (e.g. re-reading the store on every rerun), not CPU speed
    assert t["metrics_cached_s"] < 60
    assert t["compare_switch_cached_median_s"] < 20
