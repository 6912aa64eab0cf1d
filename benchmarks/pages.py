"""Page-readiness benchmark (a measurement, not a test): start the app on a given store in a real
headless Chromium and record, per page and per tab (a tab is drawn only when opened), the seconds from the
request or the click until it is ready (page loaded, script run over, images decoded, plotly charts drawn,
no skeleton), on the first visit (cold) and on a second visit (warm).
Pages are visited in the order given, the landing page first (Overview in demo mode, Set-up otherwise),
as a visitor would: a page's first visit pays for what no page before it needed.

    python benchmarks/pages.py --cache STORE [--data DIR] [--weights DIR] [--mode demo] [--snapshot FILE]
                               [--repeat 1] [--out table.csv]

``--snapshot`` imports a snapshot into a fresh temporary store first (the defence demo: add
``--mode demo`` and no ``--data`` to measure a machine without the data folder). Prints a Markdown
table (page, cold s, warm s, load average, problems) and optionally writes it as CSV. Needs playwright and a
Chromium (``$SEGUNC_CHROMIUM``, else ``chromium`` on PATH).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # segunc and the browser tests' helpers, run as a script
    sys.path.insert(0, str(ROOT))
#: page name → its URL path; the landing page (Overview in demo mode, Set-up otherwise) is at "" (see app.py)
PAGES = {"overview": "overview", "home": "home", "dataset": "dataset", "run": "run", "compare": "compare",
         "metrics": "metrics", "calibration": "calibration", "review": "review", "upload": "upload"}
#: the tabs after the first of each page: each is drawn only when opened, so its first opening is measured too
TABS = {"overview": ["Dice at a glance"], "metrics": ["Summary table", "Significance tests"],
        "calibration": ["NLL, ECE and Brier"],
        "review": ["Review queue", "Aleatoric vs epistemic", "Tumour-free & cost"]}
#: pages a demo (read-only viewer) does not get (app.py hides them)
DEMO_HIDDEN = ("upload",)
VIEWPORT = {"width": 1600, "height": 1000}


def chromium_path() -> str:
    for cand in (os.environ.get("SEGUNC_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if cand and (shutil.which(cand) or Path(cand).is_file()):
            return shutil.which(cand) or cand
    sys.exit("no Chromium found: install it (Debian: apt-get install chromium) or set SEGUNC_CHROMIUM")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(env: dict[str, str], log: Path, timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(ROOT / "app.py"), "--server.port", str(port),  # as `make app` starts it
           "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    sys.exit(f"streamlit did not start within {timeout:.0f} s")


def wait_ready(page, timeout: float = 300.0, settle: int = 4) -> float:
    """Seconds until the script run is over, images decoded, charts drawn, no skeleton (the browser
    tests' ``wait_idle``; NaN when the page is still busy after ``timeout``)."""
    from tests.test_browser import wait_idle  # the repository root is on sys.path (see main)

    try:
        return wait_idle(page, timeout, settle)
    except TimeoutError:
        return float("nan")


def problems(page) -> list[str]:
    out = [f"exception: {e.inner_text()[:120]}" for e in page.query_selector_all('[data-testid="stException"]')]
    out += [f"error: {e.inner_text()[:120]}" for e in page.query_selector_all('[data-testid="stAlertContentError"]')]
    return [" ".join(o.split()) for o in out]  # one line each (Markdown table cells)


def page_url(url: str, name: str, demo: bool) -> str:
    """The address of page ``name``: the landing page (Overview in a demo, Set-up otherwise) is the root."""
    landing = "overview" if demo else "home"
    return f"{url}/" if name == landing else f"{url}/{PAGES[name]}"


def load() -> str:
    """The 1-, 5- and 15-minute load averages (the machine's load during the measurement)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(url: str, pages: list[str], repeat: int, demo: bool = False, pause: float = 0.0,
            tabs: bool = True) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        for i, name in enumerate(pages):
            if i and pause:
                time.sleep(pause)  # a visitor reading the page before the next one
            times = []
            for _ in range(1 + repeat):  # the first visit is cold, the rest warm
                t0 = time.perf_counter()  # from the request: page load, script run and drawing
                page.goto(page_url(url, name, demo))
                loaded = time.perf_counter() - t0
                times.append(loaded + wait_ready(page))  # NaN stays NaN (still busy at the timeout)
            warm = [t for t in times[1:]]
            rows.append({"page": name, "cold_s": round(times[0], 2),
                         "warm_s": round(min(warm), 2) if warm else float("nan"), "load": load(),
                         "problems": "; ".join(problems(page))})
            print(f"{name}: cold {times[0]:.2f} s, warm {rows[-1]['warm_s']} s", file=sys.stderr, flush=True)
            if tabs:
                rows += measure_tabs(page, name, repeat)
        browser.close()
    return rows


def measure_tabs(page, name: str, repeat: int) -> list[dict]:
    """Per tab of :data:`TABS` on the open page ``name``: seconds from the click until ready, on the
    first opening (cold) and on opening it again after the first tab (warm)."""
    rows = []
    tab_list = page.get_by_role("tab")
    first = tab_list.first.inner_text().strip() if tab_list.count() else None
    for label in TABS.get(name, []):
        tab = page.get_by_role("tab", name=label, exact=True)
        if not tab.count():
            rows.append({"page": f"{name} › {label}", "cold_s": float("nan"), "warm_s": float("nan"), "load": load(),
                         "problems": "tab not found"})
            continue
        times = []
        for i in range(1 + repeat):
            if i and first:
                page.get_by_role("tab", name=first, exact=True).click()
                wait_ready(page)
            t0 = time.perf_counter()
            tab.click()
            times.append(time.perf_counter() - t0 + wait_ready(page))
        rows.append({"page": f"{name} › {label}", "cold_s": round(times[0], 2),
                     "warm_s": round(min(times[1:]), 2) if repeat else float("nan"), "load": load(),
                     "problems": "; ".join(problems(page))})
        print(f"{name} › {label}: cold {times[0]:.2f} s", file=sys.stderr, flush=True)
    return rows


def _results(store: Path) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{Path(store) / 'store.sqlite'}?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, help="results store folder (or the target of --snapshot)")
    ap.add_argument("--snapshot", type=Path, help="import this snapshot into a fresh temporary store first")
    ap.add_argument("--data", type=Path, help="LGG data folder (omit to measure a machine without one)")
    ap.add_argument("--weights", type=Path, help="weights folder")
    ap.add_argument("--mode", choices=("local", "demo", "server"), default=None, help="$SEGUNC_MODE for the app")
    ap.add_argument("--pages", help="comma-separated pages, visited in this order (default: all, the landing page first)")
    ap.add_argument("--repeat", type=int, default=1, help="warm visits per page after the cold one")
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds between pages, as a visitor reading each one (default 0: back to back)")
    ap.add_argument("--no-tabs", action="store_true", help="measure each page's first tab only (default: every tab)")
    ap.add_argument("--out", type=Path, help="also write the table as CSV")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="segunc-bench-pages-"))
    cache = args.cache
    if args.snapshot:
        from segunc.store.snapshot import import_snapshot

        cache = cache or tmp / "store"
        import_snapshot(args.snapshot, cache, force=True)
    if cache is None:
        ap.error("give --cache or --snapshot")
    env = {"SEGUNC_CACHE": str(cache)}
    # no data / weights folder given: point at empty ones, so nothing is found by default
    env["SEGUNC_DATA"] = str(args.data) if args.data else str(tmp / "no-data")
    env["SEGUNC_WEIGHTS"] = str(args.weights) if args.weights else str(tmp / "no-weights")
    if args.mode:
        env["SEGUNC_MODE"] = args.mode
    demo = args.mode == "demo"
    landing = "overview" if demo else "home"
    order = args.pages.split(",") if args.pages else [landing, *(p for p in PAGES if p != landing)]
    pages = [p for p in order if p and not (demo and p in DEMO_HIDDEN)]
    bad = [p for p in pages if p not in PAGES]
    if bad:
        ap.error(f"unknown page(s) {bad}; pages: {', '.join(PAGES)}")
    t0 = time.perf_counter()
    proc, url = start_app(env, tmp / "streamlit.log")
    started = time.perf_counter() - t0
    try:
        before = load()
        rows = measure(url, pages, args.repeat, demo, args.pause, tabs=not args.no_tabs)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    n = _results(cache)
    print(f"\napp started in {started:.1f} s; store {cache} ({n} results); data {env['SEGUNC_DATA']}; "
          f"mode {args.mode or 'local'}; {args.pause:g} s between pages; load average {before} before, {load()} after; {os.cpu_count()} CPUs\n")
    print("| page | cold (s) | warm (s) | load avg (1, 5, 15 min) | problems |\n|---|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['page']} | {r['cold_s']} | {r['warm_s']} | {r['load']} | {r['problems'] or '—'} |")
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["page", "cold_s", "warm_s", "load", "problems"])
            w.writeheader()
            w.writerows(rows)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
