"""Benchmark: the app in headless Chromium over a store of 50,000 metric rows — the Metrics page from
cache, and switching slices on the Compare page.

    python benchmarks/browser_perf.py --store STORE [--rows 50000] [--out DIR]      (or: make bench-browser)

``STORE`` is a real results store (e.g. the app tests' fixture store kept with ``SEGUNC_TEST_STORE``);
it is copied, never changed. The big store is that store plus its rows replicated under new (synthetic)
slice ids with jittered metrics; replicas share the real rows' map files, so every row is a valid
stored result. Data and weights come from ``$SEGUNC_DATA`` / ``$SEGUNC_WEIGHTS`` (see segunc.settings).
Timings go to ``timings.json`` beside two screenshots in ``--out`` and are printed; the exit status is
1 when a page shows an error or a timing passes its bound (bounds catch pathologies, not CPU speed).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from segunc.metrics import METRIC_NAMES  # noqa: E402
from tests.test_browser import VIEWPORT, Server, chromium_path, problems, screenshot, wait_idle  # noqa: E402

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


def _timed_load(page, url: str) -> float:
    t0 = time.perf_counter()
    page.goto(url)
    wait_idle(page, timeout=600)
    return time.perf_counter() - t0


def _slice(url: str) -> str:
    return url.split("slice=")[1].split("&")[0]


def measure(page, url: str, real: list[str], shots: Path, total: int) -> dict:
    """Timings of the Metrics page (first load, then from cache) and of slice switches on Compare."""
    t = {"rows": total}
    # Metrics: first load fills the caches (reads the rows), then loads from cache
    t["metrics_first_s"] = _timed_load(page, f"{url}/metrics")
    _check(page)
    warm = [_timed_load(page, f"{url}/metrics") for _ in range(3)]
    t["metrics_cached_s"] = float(np.median(warm))
    t["metrics_cached_runs_s"] = warm
    screenshot(page, shots / "metrics_50k.png")
    _check(page)

    # Compare: step between the real slices; the first visit of a slice reads its maps, later ones are cached
    page.goto(f"{url}/compare?slice={real[0]}")
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
        _check(page)
    if _slice(page.url) != real[0]:
        raise RuntimeError(f"Compare did not come back to {real[0]} (at {_slice(page.url)})")
    t["compare_switch_first_visit_s"] = switches[:2]
    t["compare_switch_cached_s"] = switches[2:]
    t["compare_switch_cached_median_s"] = float(np.median(switches[2:]))
    screenshot(page, shots / "compare_50k.png")
    return t


def _check(page) -> None:
    found = problems(page)
    if found:
        raise RuntimeError(f"the page shows errors: {found}")


#: generous bounds: they catch pathologies (e.g. re-reading the store on every rerun), not CPU speed
BOUNDS = {"metrics_cached_s": 60, "compare_switch_cached_median_s": 20}


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    from segunc import settings
    from segunc.store import ResultStore

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=os.environ.get("SEGUNC_TEST_STORE") or None,
                    help="a real results store to replicate (default: $SEGUNC_TEST_STORE)")
    ap.add_argument("--rows", type=int, default=N_ROWS, help=f"metric rows of the big store (default {N_ROWS})")
    ap.add_argument("--out", type=Path, default=None, help="folder for timings.json and screenshots (default: a temp folder)")
    args = ap.parse_args(argv)
    if args.store is None or not (args.store / "store.sqlite").is_file():
        ap.error(f"--store: no results store at {args.store} (a folder holding store.sqlite)")
    shots = args.out or Path(tempfile.mkdtemp(prefix="segunc_bench_browser_"))
    shots.mkdir(parents=True, exist_ok=True)
    real = sorted(ResultStore(args.store).metrics_frame()["slice_id"].unique(), key=lambda s: int(s.rsplit("_", 1)[1]))
    with tempfile.TemporaryDirectory(prefix="segunc_big_") as tmp:
        root = Path(tmp) / "store"
        total = replicate_store(args.store, root, args.rows)
        env = {"SEGUNC_CACHE": str(root), "SEGUNC_DATA": str(settings.data_dir()),
               "SEGUNC_WEIGHTS": str(settings.weights_dir())}
        srv = Server(env, Path(tmp) / "streamlit.log")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"])
                ctx = browser.new_context(viewport=VIEWPORT)
                t = measure(ctx.new_page(), srv.url, real, shots, total)
                browser.close()
        finally:
            srv.stop()
    (shots / "timings.json").write_text(json.dumps(t, indent=2))
    print(json.dumps(t, indent=2))
    print(f"timings and screenshots in {shots}")
    over = {k: t[k] for k, bound in BOUNDS.items() if t[k] >= bound}
    if over:
        print(f"over the bounds {BOUNDS}: {over}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
