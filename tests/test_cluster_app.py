"""The Run page sends a sweep to a Ray cluster, in a real headless Chromium: a real two-node Ray
cluster on this machine (tests/conftest_ray.py), the app in server mode with a password login and
``SEGUNC_RAY_ADDRESS`` set to that cluster. A runner sees the cluster's nodes and CPUs, sends a
tiny U-Net sweep (2 real val tumour slices, T = 2, Normal and MC dropout), the job list follows
it to the end, and the store then holds the keys, metric rows and maps a local run of the same
sweep computes. A viewer gets no Run page and no send-to-cluster control.

Everything the test starts (Ray's processes, the app, the sweep's driver) is stopped by PID."""
from __future__ import annotations

import json
import os
import re
import time
import tomllib  # noqa: F401 - the secrets file below must stay valid TOML (checked when written)
from pathlib import Path

import pytest

from segunc.access import hash_password
from tests.conftest_ray import assert_same_results, cluster, kill, tree  # noqa: F401
from tests.test_browser import Server, browser, problems, wait_idle  # noqa: F401

pytestmark = [pytest.mark.app, pytest.mark.slow]

PW = "correct horse battery"
N_SLICES, SAMPLES = 2, 2
MODES = ["normal", "mc_dropout"]  # the form's first two (TTA's 30 passes would double the test's time)
SEND = re.compile(r"Send \d+ sweep\(s\) to the cluster")


def _secrets(path: Path) -> Path:
    h = hash_password(PW, n=2**10)  # a cheap scrypt cost for a test hash
    path.write_text(f'[segunc]\nmode = "server"\n\n[segunc.users.rob]\npassword_hash = "{h}"\nrole = "runner"\n\n'
                    f'[segunc.users.ann]\npassword_hash = "{h}"\nrole = "viewer"\n')
    assert tomllib.loads(path.read_text())["segunc"]["users"]["rob"]["role"] == "runner"
    return path


def _sign_in(browser, url: str, name: str):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.goto(url)
    wait_idle(page)
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector(f"text=Signed in as {name}", timeout=60_000)
    wait_idle(page)
    return ctx, page


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)
    assert box.input_value() == str(value)


def _job_done(store: Path) -> dict | None:
    from segunc.runner.jobs import list_jobs
    from segunc.store import ResultStore

    if not (store / "store.sqlite").exists():
        return None
    jobs = list_jobs(ResultStore(store))
    return jobs.iloc[0].to_dict() if len(jobs) and jobs.iloc[0]["state"] in ("done", "failed", "cancelled") else None


def test_run_page_sends_a_sweep_to_the_cluster(cluster, browser, lgg_root, unet_weights, tmp_path):  # noqa: F811
    t0 = time.monotonic()
    store = tmp_path / "store"
    env = {"SEGUNC_CACHE": str(store), "SEGUNC_DATA": str(lgg_root), "SEGUNC_WEIGHTS": str(unet_weights.parent),
           "SEGUNC_RAY_ADDRESS": cluster.address, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": cluster.env["RAY_AUTH_MODE"]}
    srv = Server(env, tmp_path / "streamlit.log", args=("--secrets.files", str(_secrets(tmp_path / "secrets.toml"))))
    try:
        # --- a viewer: no Run page, no cluster control
        ctx, page = _sign_in(browser, srv.url, "ann")
        links = page.eval_on_selector_all('[data-testid="stSidebarNav"] a', "els => els.map(e => e.href)")
        assert links and not any(h.rstrip("/").endswith("/run") for h in links), links
        assert page.get_by_role("button", name=SEND).count() == 0
        assert "Run on a Ray cluster" not in page.inner_text("body")
        ctx.close()

        # --- a runner: the cluster's nodes and CPUs, then a tiny sweep sent to it
        ctx, page = _sign_in(browser, srv.url, "rob")
        page.locator('[data-testid="stSidebarNav"] a[href$="/run"]').click()
        page.wait_for_selector("text=Cost and queue", timeout=120_000)
        wait_idle(page)
        _set_number(page, "N slices (0 = all)", N_SLICES)
        _set_number(page, "Samples T (MC dropout, noisy)", SAMPLES)
        modes = page.locator('[data-testid="stMultiSelect"]').filter(has=page.get_by_text("Modes", exact=True))
        box = modes.locator("input")
        box.click()
        for _ in range(4):  # keep the first two of normal, mc_dropout, tta, noisy, fusion, crf
            box.press("Backspace")
        box.press("Escape")
        wait_idle(page)
        assert modes.inner_text().split()[1:] == MODES, modes.inner_text()
        t_form = time.monotonic()
        page.get_by_text("Run on a Ray cluster").click()
        page.get_by_role("button", name=SEND).wait_for(timeout=120_000)
        wait_idle(page)
        assert not problems(page), problems(page)
        address = page.get_by_label("Cluster address (host:port of the Ray head)", exact=True)
        assert address.input_value() == cluster.address and address.is_disabled()  # the configured one, fixed
        metrics = {m.split("\n")[0]: m.split("\n")[-1] for m in
                   page.locator('[data-testid="stMetric"]').all_inner_texts()}
        assert (metrics.get("Nodes"), metrics.get("CPUs"), metrics.get("GPUs")) == ("2", "2", "0"), metrics
        assert page.get_by_role("link", name="Ray dashboard").count() == 0  # this cluster runs no dashboard
        t_send = time.monotonic()
        page.get_by_role("button", name=SEND).click()
        wait_idle(page)
        assert page.get_by_role("button", name=SEND).is_disabled()  # sent: not twice while it runs
        deadline = time.monotonic() + 150
        while (done := _job_done(store)) is None:
            assert time.monotonic() < deadline, f"the sweep did not finish: {_logs(store)}"
            time.sleep(1)
        assert (done["state"], done["done"], done["failed"]) == ("done", N_SLICES, 0), (done, _logs(store))
        t_done = time.monotonic()
        page.wait_for_selector("text=2/2 slices", timeout=60_000)  # the job list followed it
        wait_idle(page)
        assert not problems(page), problems(page)
        assert not page.js_errors, page.js_errors
        ctx.close()
    finally:
        srv.stop()
        kill(tree(str(store), exclude={os.getpid()}))  # the sweep's driver, if it still runs (its command line names the store)

    # --- the same keys, metric rows and maps as the local executor
    import torch

    from segunc.runner.jobs import JobSpec
    from segunc.runner.worker import run_sweep
    from segunc.store import ResultStore

    [spec_file] = (store / "cluster").glob("sweeps-*.json")
    [spec] = [JobSpec.from_dict(d) for d in json.loads(spec_file.read_text())]
    assert (spec.backend, spec.mode_list(), spec.limit, spec.pipeline_config().samples) == ("unet", MODES, N_SLICES,
                                                                                           SAMPLES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each 1-CPU Ray worker (see docs/cluster.md, thread count)
    try:
        _, counts = run_sweep(ResultStore(tmp_path / "local"), spec, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert counts.failed == 0 and counts.computed == N_SLICES * len(spec.mode_list())
    assert_same_results(store, tmp_path / "local", n=N_SLICES * len(spec.mode_list()))
    print(f"\n[cluster app] {time.monotonic() - t0:.0f} s: cluster + app + sign-ins + form {t_form - t0:.0f} s, "
          f"cluster section {t_send - t_form:.0f} s, sweep on the cluster {t_done - t_send:.0f} s, "
          f"the rest (page, local run, comparison) {time.monotonic() - t_done:.0f} s")


def _logs(store: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted((store / "cluster").glob("*.log")))
