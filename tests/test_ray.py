"""Sweeps on a real two-node Ray cluster on this machine (head + a second node, 1 CPU each, started
with the ``ray`` CLI): same keys, metric rows and maps as the local executor; a node killed
mid-sweep and a driver killed mid-sweep lose nothing and duplicate nothing.

The cluster's processes are found by their private temporary folder and stopped by PID (never
``ray stop``, which would stop every Ray instance of this user)."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

import ray  # noqa: F401 - a pinned requirement: missing, the module fails (never skips)

pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).with_name("ray"))
STORE_DB = "store.sqlite"  # ResultStore.db_path, read directly while a sweep writes it
OBJECT_STORE = str(80 * 1024 * 1024)
METRICS = ("iou", "dice", "accuracy", "precision", "recall", "nll", "ece", "brier", "certainty", "threshold",
           "tumour_px", "pred_px", "mean_entropy", "mean_variance", "mean_mi")


# ----------------------------------------------------------------------------- cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every process visible in /proc."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(d)] = (ppid, cmd)
    return out


def _tree(marker: str, exclude: set[int] = frozenset()) -> set[int]:
    """PIDs whose command line names ``marker`` (our temp folder), plus all their descendants."""
    procs = _procs()
    found = {p for p, (_, cmd) in procs.items() if marker in cmd} - set(exclude)
    grew = True
    while grew:
        kids = {p for p, (pp, _) in procs.items() if pp in found} - found - set(exclude)
        found |= kids
        grew = bool(kids)
    return found


def _kill(pids, sig=signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _ray_start(*args, env) -> None:
    r = subprocess.run([RAY, "start", *args], capture_output=True, text=True, timeout=120, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"ray start {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


class Cluster:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="segray", dir="/tmp")  # short: Ray's socket paths are length-limited
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"
        self.head: set[int] = set()

    def start(self) -> None:
        def common():  # each node its own agent ports (the defaults are fixed and would collide)
            return ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE}", "--disable-usage-stats",
                    "--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={_free_port()}",
                    f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]

        _ray_start("--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.tmp}", *common(),
                   env=self.env)
        self.head = _tree(self.tmp)
        _ray_start(f"--address={self.address}", *common(), env=self.env)
        assert self.node2_pids(), "the second Ray node's processes were not found"

    def node2_pids(self) -> set[int]:
        """The second node: its raylet (and helpers) plus everything they started, e.g. its workers."""
        procs = _procs()
        raylets = sorted(p for p, (_, cmd) in procs.items() if self.tmp in cmd and "/raylet " in cmd + " ")
        heads = {p for p in raylets if p in self.head}
        return _tree(self.tmp, exclude=self.head | _descendants(procs, heads)) if len(raylets) > 1 else set()

    def stop(self) -> None:
        _kill(_tree(self.tmp))


def _descendants(procs, roots: set[int]) -> set[int]:
    found, grew = set(roots), True
    while grew:
        kids = {p for p, (pp, _) in procs.items() if pp in found} - found
        found |= kids
        grew = bool(kids)
    return found


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


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


def _rows(cache: Path) -> dict[str, dict]:
    con = sqlite3.connect(cache / STORE_DB)
    con.row_factory = sqlite3.Row
    try:
        return {r["key"]: dict(r) for r in con.execute(f"SELECT key, slice_id, mode, {', '.join(METRICS)} FROM results")}
    finally:
        con.close()


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
    rows = _rows(cache)
    pairs = [(r["slice_id"], r["mode"]) for r in rows.values()]
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

    The local run uses one thread, as each 1-CPU actor does: PyTorch's CPU kernels sum in an order
    that depends on the thread count (U-Net logits differ by up to 2.4e-6 between 1 and 2 threads,
    metrics by < 1e-9, and a stored 8-bit map can then flip a pixel by one quantisation step)."""
    from segunc.store import ResultStore

    modes = "normal,mc_dropout,tta"
    local, remote = tmp_path / "local", tmp_path / "ray"
    r_local = _cli(_args(lgg_root, unet_weights, local, 3, modes), env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    r_ray = _cli(_args(lgg_root, unet_weights, remote, 3, modes) + ["--executor", "ray", "--ray-address", cluster.address],
                 cluster)
    assert _done_line(r_local.stdout) == _done_line(r_ray.stdout) == {"computed": 9, "skipped": 0, "failed": 0}
    assert "Ray cluster" in r_ray.stderr and "2 node(s), 2 CPU(s), 0 GPU(s)" in r_ray.stderr, r_ray.stderr[-2000:]
    a, b = _rows(local), _rows(remote)
    assert set(a) == set(b) and len(a) == 9
    for key in a:
        for m in METRICS:
            assert a[key][m] == pytest.approx(b[key][m], abs=1e-6), (key, m)
    sa, sb = ResultStore(local), ResultStore(remote)
    for key in a:
        ma, mb = sa.load_maps(key), sb.load_maps(key)
        assert set(ma) == set(mb)
        for name in ma:
            assert ma[name].shape == mb[name].shape
            assert np.abs(ma[name].astype(np.float64) - mb[name].astype(np.float64)).max() <= 1e-6, (key, name)
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
    procs = _procs()
    return any("_SweepActor.run" in procs.get(p, (0, ""))[1] for p in pids | _descendants(procs, pids))


def test_node_killed_mid_sweep(cluster, lgg_root, unet_weights, tmp_path):
    """The second node dies while its actor computes: its batches run on the head, nothing lost or doubled."""
    cache, n, modes = tmp_path / "store", 8, ["normal", "mc_dropout"]
    proc = _popen(_args(lgg_root, unet_weights, cache, n, ",".join(modes), samples=3)
                  + ["--executor", "ray", "--ray-address", cluster.address], cluster)
    try:
        _wait_for(lambda: _actor_running(cluster.node2_pids()), 300, "the second node's actor to compute", proc)
        _kill(cluster.node2_pids())
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
