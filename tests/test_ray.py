"""Sweeps on a real two-node Ray cluster on this machine (head + a second node, 1 CPU each, started
with the ``ray`` CLI; tests/conftest_ray.py): same keys, metric rows and maps as the local executor;
a node killed mid-sweep and a driver killed mid-sweep lose nothing and duplicate nothing."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.conftest_ray import STORE_DB, assert_same_results, cluster, descendants, kill, procs, rows  # noqa: F401

import ray  # noqa: F401 - a pinned requirement: missing, the module fails (never skips)

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------ sweeps
def _args(lgg_root, unet_weights, cache, limit, modes, samples=2):
    return ["run", "--data", lgg_root, "--weights", unet_weights, "--limit", str(limit), "--modes", modes,
            "--samples", str(samples), "--cache", cache]


def _cli(args, cluster=None, timeout=420, env=None):
    env = {**(cluster.env if cluster else os.environ), **(env or {})}
    r = subprocess.run([sys.executable, "-m", "segunc", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    assert r.returncode == 0, f"{args}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r


def _popen(args, cluster):
    return subprocess.Popen([sys.executable, "-m", "segunc", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=cluster.env)


def _n_results(cache: Path) -> int:
    db = cache / STORE_DB
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _done_line(out: str) -> dict[str, int]:
    line = [ln for ln in out.splitlines() if ln.startswith("DONE ")][-1]
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


def _no_duplicates(cache: Path, n_slices: int, modes: list[str]) -> None:
    stored = rows(cache)
    pairs = [(r["slice_id"], r["mode"]) for r in stored.values()]
    assert len(pairs) == len(set(pairs)) == n_slices * len(modes), sorted(pairs)
    con = sqlite3.connect(cache / STORE_DB)
    try:
        states = con.execute("SELECT state, COUNT(*) FROM job_slices GROUP BY state").fetchall()
    finally:
        con.close()
    assert dict(states) == {"done": n_slices}, states


def _wait_for(cond, timeout: float, what: str, proc=None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sweep ended before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


# ------------------------------------------------------------------------------- tests
def test_ray_sweep_equals_local(cluster, lgg_root, unet_weights, tmp_path):
    """Same keys, metric rows (≤ 1e-6) and maps (≤ 1e-6) as the local executor; a repeat computes 0.

    The local run uses one thread (``--threads 1``), as each Ray worker does (pinned, whatever the
    node's $OMP_NUM_THREADS): PyTorch's CPU kernels sum in an order that depends on the thread count,
    and a stored 8-bit map can then differ by one quantisation step at a pixel (docs/cluster.md)."""
    modes = "normal,mc_dropout,tta"
    local, remote = tmp_path / "local", tmp_path / "ray"
    r_local = _cli(_args(lgg_root, unet_weights, local, 3, modes) + ["--threads", "1"])
    r_ray = _cli(_args(lgg_root, unet_weights, remote, 3, modes) + ["--executor", "ray", "--ray-address", cluster.address],
                 cluster)
    assert _done_line(r_local.stdout) == _done_line(r_ray.stdout) == {"computed": 9, "skipped": 0, "failed": 0}
    assert "Ray cluster" in r_ray.stderr and "2 node(s), 2 CPU(s), 0 GPU(s)" in r_ray.stderr, r_ray.stderr[-2000:]
    assert_same_results(local, remote, n=9)
    again = _cli(_args(lgg_root, unet_weights, remote, 3, modes) + ["--executor", "ray", "--ray-address", cluster.address],
                 cluster)
    assert _done_line(again.stdout) == {"computed": 0, "skipped": 9, "failed": 0}


def test_cluster_info_for_the_run_page(cluster):
    """What the Run page shows: ``python -m segunc.runner.ray_executor info`` → nodes, CPUs, GPUs (JSON)."""
    import json

    r = subprocess.run([sys.executable, "-m", "segunc.runner.ray_executor", "info", "--address", cluster.address],
                       cwd=ROOT, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, env=cluster.env)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    assert (info["nodes"], info["cpus"], info["gpus"]) == (2, 2.0, 0.0), info
    assert info["address"].endswith(f":{cluster.port}") and len(info["node_list"]) == 2, info


def _actor_running(pids) -> bool:
    """A sweep actor on these processes is inside ``run`` (Ray sets the process title)."""
    table = procs()
    return any("_SweepActor.run" in table.get(p, (0, ""))[1] for p in pids | descendants(table, pids))


def test_node_killed_mid_sweep(cluster, lgg_root, unet_weights, tmp_path):
    """The second node dies while its actor computes: its batches run on the head, nothing lost or doubled."""
    cache, n, modes = tmp_path / "store", 8, ["normal", "mc_dropout"]
    proc = _popen(_args(lgg_root, unet_weights, cache, n, ",".join(modes), samples=3)
                  + ["--executor", "ray", "--ray-address", cluster.address], cluster)
    try:
        _wait_for(lambda: _actor_running(cluster.node2_pids()), 300, "the second node's actor to compute", proc)
        kill(cluster.node2_pids())
        out, err = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "a Ray worker died" in err, err[-3000:]
    assert _done_line(out) == {"computed": n * len(modes), "skipped": 0, "failed": 0}, out
    _no_duplicates(cache, n, modes)


def test_driver_killed_and_resumed(cluster, lgg_root, unet_weights, tmp_path):
    """SIGKILL the driver once part of the sweep is stored; ``run`` again completes it, no duplicates."""
    cache, n, modes = tmp_path / "store", 6, ["normal", "mc_dropout"]
    args = _args(lgg_root, unet_weights, cache, n, ",".join(modes), samples=3) + ["--executor", "ray", "--ray-address",
                                                                                   cluster.address]
    proc = _popen(args, cluster)
    try:
        _wait_for(lambda: _n_results(cache) >= 2, 300, "the first stored results", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = _n_results(cache)
    assert 2 <= stored < n * len(modes), stored
    r = _cli(args, cluster)
    done = _done_line(r.stdout)
    assert done["failed"] == 0 and done["computed"] + done["skipped"] == n * len(modes), done
    assert done["skipped"] >= stored and done["computed"] >= 1, (done, stored)
    _no_duplicates(cache, n, modes)


def test_cuda_asked_without_cuda_is_a_clear_error(unet_weights):
    """``--device cuda`` on a machine without CUDA: a ValueError naming the device (every backend
    goes through Backend.__init__); bf16 autocast off CUDA: an error, not an fp32 run under a bf16 key."""
    import torch

    from segunc.backends import get_backend
    from segunc.runner.worker import check_precision

    if torch.cuda.is_available():
        assert get_backend("unet", weights=unet_weights, device="cuda").device.type == "cuda"
        with pytest.raises(ValueError, match="CUDA device"):
            get_backend("unet", weights=unet_weights, device=f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ValueError, match="device 'cuda' asked for but CUDA is not available"):
            get_backend("unet", weights=unet_weights, device="cuda")
    with pytest.raises(ValueError, match="bf16 autocast runs on CUDA only"):
        check_precision({"precision": "bf16"}, "cpu")
    check_precision({"precision": "bf16"}, "cuda")
    with pytest.raises(ValueError, match="precision must be"):
        get_backend("unet", weights=unet_weights, device="cpu", precision="fp8")
