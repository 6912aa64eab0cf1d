"""Runs and jobs on real slices with the real U-Net: resume after kill -9, compute once, worker."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from segunc.backends import BACKENDS
from segunc.config import PipelineConfig
from segunc.data import load_slice, select, tumour_only
from segunc.pipeline import MAP_NAMES, evaluate_slice
from segunc.runner.jobs import (JobSpec, cancel_job, ensure_worker, estimate_cost, job_status, list_jobs, record_timing,
                                submit_job, worker_alive, worker_info)
from segunc.runner.worker import run_sweep
from segunc.store import ResultStore
from segunc.store import maps as mapfile

from .conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHEAP = "normal,mc_dropout"


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "segunc", *map(str, args)]


def run_args(lgg_root, weights, cache, modes=CHEAP, limit=2) -> list[str]:
    return cli("run", "--data", lgg_root, "--weights", weights, "--modes", modes, "--samples", 2, "--limit", limit,
               "--cache", cache)


def done_line(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


def parse_done(stdout: str) -> dict[str, int]:
    line = done_line(stdout)
    assert line.startswith("DONE "), stdout
    return {k: int(v) for k, v in (part.split("=") for part in line.split()[1:])}


def n_results(cache) -> int:
    if not (cache / "store.sqlite").exists():
        return 0
    con = sqlite3.connect(cache / "store.sqlite", timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0
    finally:
        con.close()


def test_kill_9_then_resume_then_nothing_to_do(lgg_root, unet_weights, lgg_refs, tmp_path):
    """A sweep killed halfway resumes without redoing finished slices; the same sweep once more computes nothing."""
    cache = tmp_path / "cache"
    modes, limit = ["normal", "mc_dropout"], 3
    proc = subprocess.Popen(run_args(lgg_root, unet_weights, cache, ",".join(modes), limit), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while n_results(cache) < 1:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = ResultStore(cache)
    before = {r["key"]: (r["map_file"], r["created_at"]) for r in store.con.execute("SELECT * FROM results")}
    total = limit * len(modes)
    assert 1 <= len(before) < total
    job_id = store.con.execute("SELECT job_id FROM jobs").fetchone()[0]
    st = job_status(store, job_id)
    assert st["interrupted"] and st["state"] == "queued"

    resumed = subprocess.run(run_args(lgg_root, unet_weights, cache, ",".join(modes), limit), cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert parse_done(resumed.stdout) == {"computed": total - len(before), "skipped": len(before), "failed": 0}
    after = {r["key"]: (r["map_file"], r["created_at"]) for r in store.con.execute("SELECT * FROM results")}
    assert len(after) == total and all(after[k] == v for k, v in before.items())  # nothing finished was redone
    assert job_status(store, job_id)["state"] == "done"
    again = subprocess.run(run_args(lgg_root, unet_weights, cache, ",".join(modes), limit), cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert done_line(again.stdout) == f"DONE computed=0 skipped={total} failed=0"
    assert n_results(cache) == total

    # every stored entry loads and matches a fresh computation
    unet = BACKENDS.get("unet")(weights=unet_weights)
    cfg = PipelineConfig(samples=2)
    df = store.metrics_frame()
    for ref in tumour_only(select(lgg_refs, "val"))[:limit]:
        fresh = evaluate_slice(unet, load_slice(ref), modes, cfg)
        for mode, res in fresh.items():
            row = df[(df.slice_id == ref.slice_id) & (df["mode"] == mode)]
            assert len(row) == 1
            got = store.load_maps(row.key.iloc[0])
            for name in MAP_NAMES:
                v = res.maps[name]
                tol = mapfile.max_error(name, v) * 1.001 + 1e-6
                np.testing.assert_allclose(got[name], v, rtol=0, atol=tol, err_msg=f"{ref.slice_id} {mode} {name}")
            np.testing.assert_array_equal(got["mask"], res.maps["mask"])
            assert row.dice.iloc[0] == pytest.approx(res.metrics["dice"], abs=1e-9)
    store.gc(grace_s=0)  # the killed write's temporary file (if any) goes
    assert not list((cache / "maps").glob("*/*.tmp"))


def test_two_concurrent_runs_compute_once(lgg_root, unet_weights, tmp_path):
    cache = tmp_path / "cache"
    ResultStore(cache)
    procs = [subprocess.Popen(run_args(lgg_root, unet_weights, cache, "normal"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    done = [parse_done(o[0]) for o in outs]
    assert sorted(d["computed"] for d in done) == [0, 2], done  # one computed, the other attached and skipped
    assert all(d["failed"] == 0 and d["computed"] + d["skipped"] == 2 for d in done)
    assert n_results(cache) == 2
    store = ResultStore(cache)
    assert len(list_jobs(store)) == 1 and len(store.runs()) == 1


def spec_for(lgg_root, unet_weights, **kw) -> JobSpec:
    args = dict(data=lgg_root, backend="unet", weights=unet_weights, modes=["normal"], split="val", limit=2, samples=2, seed=0)
    args.update(kw)
    return JobSpec(**args)


def test_submit_is_idempotent_and_cancellable(lgg_root, unet_weights, tmp_path):
    store = ResultStore(tmp_path / "cache")
    spec = spec_for(lgg_root, unet_weights)
    a, b = submit_job(store, spec), submit_job(ResultStore(tmp_path / "cache"), spec_for(lgg_root, unet_weights))
    assert a == b and len(list_jobs(store)) == 1
    assert submit_job(store, spec_for(lgg_root, unet_weights, samples=3)) != a  # a different sweep
    st = job_status(store, a)
    assert st["state"] == "queued" and st["total"] == 2 and st["done"] == 0 and st["eta_s"] > 0
    cancel_job(store, a)
    assert job_status(store, a)["state"] == "cancelled"
    assert submit_job(store, spec) == a and job_status(store, a)["state"] == "queued"
    with pytest.raises(KeyError):
        job_status(store, "nope")


def test_worker_executes_queued_job_once(lgg_root, unet_weights, tmp_path):
    cache = tmp_path / "cache"
    store = ResultStore(cache)
    job = submit_job(store, spec_for(lgg_root, unet_weights))
    assert submit_job(store, spec_for(lgg_root, unet_weights)) == job  # a second user attaches
    assert not worker_alive(cache)
    try:
        assert ensure_worker(cache, idle_exit=2.0)
        pid = worker_info(cache)["pid"]
        assert ensure_worker(cache, idle_exit=2.0) and worker_info(cache)["pid"] == pid  # no second worker
        deadline = time.monotonic() + 300
        while (st := job_status(store, job))["state"] != "done":
            assert st["state"] in ("queued", "running") and time.monotonic() < deadline, st
            time.sleep(0.3)
        assert st["done"] == st["total"] == 2 and st["computed"] == 2 and st["errors"] == [] and st["eta_s"] == 0
        assert len(store.metrics_frame(run_ids=[job])) == 2
        deadline = time.monotonic() + 60
        while worker_alive(cache) and time.monotonic() < deadline:  # exits when idle
            time.sleep(0.3)
        assert not worker_alive(cache)
    finally:
        info = worker_info(cache)
        if info:
            os.kill(info["pid"], signal.SIGKILL)
    assert "worker" in (cache / "logs" / "worker-cpu.log").read_text()


def test_a_corrupt_tiff_is_recorded_and_the_sweep_goes_on(lgg_refs, unet_weights, tmp_path):
    refs = tumour_only(select(lgg_refs, "val"))[:3]
    folder = tmp_path / "data" / refs[0].patient_folder
    folder.mkdir(parents=True)
    for r in refs:
        shutil.copy(r.image_path, folder / r.image_path.name)
        shutil.copy(r.mask_path, folder / r.mask_path.name)
    bad = folder / refs[1].image_path.name
    bad.write_bytes(bad.read_bytes()[:700])
    store = ResultStore(tmp_path / "cache")
    spec = spec_for(tmp_path / "data", unet_weights, split="all", limit=None)
    job, counts = run_sweep(store, spec, progress=False)
    assert (counts.computed, counts.skipped, counts.failed) == (2, 0, 1)
    st = job_status(store, job)
    assert st["state"] == "done" and st["done"] == 3 and st["failed"] == 1
    [(slice_id, error)] = st["errors"]
    assert slice_id == refs[1].slice_id and str(bad) in error and "unreadable TIFF" in error
    assert sorted(store.metrics_frame()["slice_id"]) == sorted([refs[0].slice_id, refs[2].slice_id])
    # the bad slice is retried (and fails again) on the next run; the good ones are skipped
    _, again = run_sweep(store, spec, progress=False)
    assert (again.computed, again.skipped, again.failed) == (0, 2, 1)


def test_estimate_cost(lgg_root, unet_weights, tmp_path):
    store = ResultStore(tmp_path / "cache")
    spec = spec_for(lgg_root, unet_weights, modes=["normal", "mc_dropout", "tta", "fusion", "crf"], limit=3, samples=4,
                    config=PipelineConfig(), )
    est = estimate_cost(spec, {"forward": 0.5}, store=store)
    per_slice = 1 + 4 + 30 + 4  # normal, mc_dropout, tta, noisy (a fusion source); fusion/crf: no pass
    assert est["slices"] == 3 and est["forwards"] == 3 * per_slice
    tta = 10 * (0.25 + 1 + 4)  # the U-Net pays scale² per view
    assert est["seconds"] == pytest.approx(3 * ((1 + 4 + tta + 4) * 0.5 + 0.02 + 0.3))
    assert est["human"].startswith("about ") and est["human"].endswith("on this CPU")
    assert estimate_cost(spec, store=store)["source"] == "default"
    record_timing(store, "unet", "cpu", {"forward": 0.25})
    measured = estimate_cost(spec, store=store)
    assert measured["source"] == "measured" and measured["seconds"] < est["seconds"]
    long = estimate_cost(spec_for(lgg_root, unet_weights, modes=None, limit=None, samples=30), store=store)
    assert long["slices"] > 100 and " h " in long["human"]


def test_corrupt_results_are_recomputed_not_served(lgg_root, unet_weights, tmp_path):
    store = ResultStore(tmp_path / "cache")
    spec = spec_for(lgg_root, unet_weights, modes=["normal"], limit=3)
    job, first = run_sweep(store, spec, progress=False)
    assert (first.computed, first.skipped) == (3, 0)
    rows = store.con.execute("SELECT key, map_file, dice FROM results ORDER BY slice_id").fetchall()
    data = bytearray((store.root / rows[0]["map_file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in a map file
    (store.root / rows[0]["map_file"]).write_bytes(bytes(data))
    store.con.execute("UPDATE results SET dice = NULL WHERE key = ?", (rows[1]["key"],))  # a NaN metric
    with pytest.raises(KeyError):
        store.load_maps(rows[0]["key"])
    assert rows[1]["key"] not in set(store.metrics_frame()["key"])
    _, again = run_sweep(store, spec, progress=False)
    assert (again.computed, again.skipped, again.failed) == (2, 1, 0)
    for r in rows:
        store.load_maps(r["key"])
    df = store.metrics_frame(run_ids=[job])
    assert len(df) == 3 and df.set_index("key").loc[rows[1]["key"], "dice"] == pytest.approx(rows[1]["dice"])


def test_progress_is_per_slice_and_names_the_slice_being_computed(lgg_root, unet_weights, tmp_path):
    """job_slices.seconds is each slice's own time (they sum to at most the sweep's wall time, not a
    running total), and ``current`` names the first slice not yet finished, never a later one."""
    import threading

    store = ResultStore(tmp_path / "cache")
    spec = spec_for(lgg_root, unet_weights, modes=["normal", "mc_dropout"], limit=4, samples=3,
                    config=PipelineConfig(batch_size=4))
    refs = [r.slice_id for r in __import__("segunc.runner.sweep", fromlist=["x"]).select_slices(lgg_root, "val", limit=4)]
    seen: list[tuple[str | None, list[str]]] = []
    stop = threading.Event()

    def poll():
        con = sqlite3.connect(store.root / "store.sqlite", timeout=30)
        while not stop.is_set():
            try:
                row = con.execute("SELECT current, (SELECT group_concat(slice_id) FROM job_slices WHERE job_id = jobs.job_id) "
                                  "FROM jobs").fetchone()
            except sqlite3.OperationalError:
                row = None
            if row and row[0]:
                seen.append((row[0], (row[1] or "").split(",") if row[1] else []))
            time.sleep(0.02)
        con.close()

    th = threading.Thread(target=poll)
    th.start()
    t0 = time.perf_counter()
    try:
        job, counts = run_sweep(store, spec, progress=False)
    finally:
        stop.set()
        th.join()
    wall = time.perf_counter() - t0
    assert counts.computed == 8
    secs = [r[0] for r in store.con.execute("SELECT seconds FROM job_slices WHERE job_id = ? ORDER BY slice_id", (job,))]
    assert len(secs) == 4 and all(s > 0 for s in secs)
    assert sum(secs) <= wall, (secs, wall)  # a running total would sum to far more than the wall time
    assert seen, "never saw a current slice"
    for current, done in seen:
        assert current not in done, (current, done)
        assert current == next(r for r in refs if r not in done), (current, done)
    stages = measured_timing_stages(store)
    assert {"forward", "ratio:normal", "ratio:mc_dropout", "slice_overhead"} <= stages


def measured_timing_stages(store) -> set[str]:
    return {r[0] for r in store.con.execute("SELECT stage FROM calibration_timing WHERE backend = 'unet'")}


def test_estimates_exclude_stored_results_and_use_measured_costs(lgg_root, unet_weights, tmp_path):
    store = ResultStore(tmp_path / "cache")
    spec = spec_for(lgg_root, unet_weights, modes=["normal", "mc_dropout"], limit=3, samples=3)
    before = estimate_cost(spec, store=store)
    assert before["held"] == 0 and before["todo"] == 6 and before["seconds"] > 0 and not before["calibrated"]
    job, counts = run_sweep(store, spec, progress=False)
    assert counts.computed == 6
    again = estimate_cost(spec, store=store)  # the same finished sweep queued again: nothing left to do
    assert again["held"] == 6 and again["todo"] == 0 and again["seconds"] == 0 and again["forwards"] == 0
    assert again["calibrated"] and again["source"] == "measured"
    assert submit_job(store, spec, requeue=True) == job
    st = job_status(store, job)
    assert st["state"] == "queued" and st["eta_s"] == 0
    # one more slice and one more mode: only the missing slice × mode results are estimated
    bigger = spec_for(lgg_root, unet_weights, modes=["normal", "mc_dropout", "noisy"], limit=4, samples=3)
    est = estimate_cost(bigger, store=store)
    per = est["per_slice_mode"]
    over = est["seconds_per_forward"].get("slice_overhead", 0.0)
    assert est["held"] == 6 and est["todo"] == 6
    assert est["seconds"] == pytest.approx(per["normal"] + per["mc_dropout"] + 4 * per["noisy"] + 4 * over)
    # other settings (T) never count as stored
    assert estimate_cost(spec_for(lgg_root, unet_weights, modes=["normal", "mc_dropout"], limit=3, samples=4),
                         store=store)["held"] == 3  # normal does not depend on T; mc_dropout does


def test_keep_samples_sweep_repeated_computes_nothing(lgg_root, unet_weights, tmp_path):
    """Post-processing results (fusion, crf) carry no samples: a --keep-samples sweep must still find them."""
    spec = JobSpec(data=lgg_root, weights=unet_weights, modes="normal,mc_dropout,tta,fusion,crf", limit=1,
                   config=PipelineConfig(samples=2, tta_scales=(1.0,), tta_intensities=(1.0,), keep_samples=True))
    store = ResultStore(tmp_path / "store")
    _, first = run_sweep(store, spec, progress=False)
    assert (first.computed, first.failed) == (5, 0)
    assert estimate_cost(spec, store=store)["todo"] == 0
    _, again = run_sweep(store, spec, progress=False)
    assert (again.computed, again.skipped) == (0, 5)
