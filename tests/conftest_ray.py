"""A real multi-node Ray cluster on this machine for the tests (head + a second node, 1 CPU each,
a small object store, started with the ``ray`` CLI), and the store rows the tests compare.

Import the fixture into a test module with ``from tests.conftest_ray import cluster  # noqa: F401``.
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
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).with_name("ray"))
STORE_DB = "store.sqlite"  # ResultStore.db_path, read directly while a sweep writes it
OBJECT_STORE = str(80 * 1024 * 1024)
METRICS = ("iou", "dice", "accuracy", "precision", "recall", "nll", "ece", "brier", "certainty", "threshold",
           "tumour_px", "pred_px", "mean_entropy", "mean_variance", "mean_mi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procs() -> dict[int, tuple[int, str]]:
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


def tree(marker: str, exclude: set[int] = frozenset()) -> set[int]:
    """PIDs whose command line names ``marker`` (our temp folder), plus all their descendants."""
    table = procs()
    found = {p for p, (_, cmd) in table.items() if marker in cmd} - set(exclude)
    grew = True
    while grew:
        kids = {p for p, (pp, _) in table.items() if pp in found} - found - set(exclude)
        found |= kids
        grew = bool(kids)
    return found


def kill(pids, sig=signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def ray_start(*args, env) -> None:
    r = subprocess.run([RAY, "start", *args], capture_output=True, text=True, timeout=120, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"ray start {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


class Cluster:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="segray", dir="/tmp")  # short: Ray's socket paths are length-limited
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Ray 2.60: a local ray.init() (e.g. `run --executor ray` without an address) writes
        # ~/.ray/auth_token; with it there `ray start --head` turns token auth on but `ray start --address`
        # does not, and the second node cannot join ("InvalidAuthToken"). The test cluster says its mode.
        self.env["RAY_AUTH_MODE"] = "disabled"
        # the nodes ask for 2 threads (Ray keeps a set $OMP_NUM_THREADS): the sweep's workers must still
        # use the executor's pinned count, or their maps would not match a 1-thread local run
        self.env["OMP_NUM_THREADS"] = "2"
        self.head: set[int] = set()

    def start(self) -> None:
        def common():  # each node its own agent ports (the defaults are fixed and would collide)
            return ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE}", "--disable-usage-stats",
                    "--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={free_port()}",
                    f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

        ray_start("--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.tmp}", *common(),
                   env=self.env)
        self.head = tree(self.tmp)
        ray_start(f"--address={self.address}", *common(), env=self.env)
        assert self.node2_pids(), "the second Ray node's processes were not found"

    def node2_pids(self) -> set[int]:
        """The second node: its raylet (and helpers) plus everything they started, e.g. its workers."""
        table = procs()
        raylets = sorted(p for p, (_, cmd) in table.items() if self.tmp in cmd and "/raylet " in cmd + " ")
        heads = {p for p in raylets if p in self.head}
        return tree(self.tmp, exclude=self.head | descendants(table, heads)) if len(raylets) > 1 else set()

    def stop(self) -> None:
        kill(tree(self.tmp))


def descendants(procs, roots: set[int]) -> set[int]:
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


def rows(cache: Path) -> dict[str, dict]:
    """key → (slice id, mode, the metric columns) of every result in the store at ``cache``."""
    con = sqlite3.connect(cache / STORE_DB)
    con.row_factory = sqlite3.Row
    try:
        return {r["key"]: dict(r) for r in con.execute(f"SELECT key, slice_id, mode, {', '.join(METRICS)} FROM results")}
    finally:
        con.close()


def assert_same_results(a: Path, b: Path, n: int | None = None) -> None:
    """The stores at ``a`` and ``b`` hold the same keys, metric rows (≤ 1e-6) and decoded maps (≤ 1e-6)."""
    import numpy as np

    from segunc.store import ResultStore

    ra, rb = rows(a), rows(b)
    assert set(ra) == set(rb), (sorted(ra), sorted(rb))
    assert n is None or len(ra) == n, len(ra)
    for key in ra:
        for m in METRICS:
            assert ra[key][m] == pytest.approx(rb[key][m], abs=1e-6), (key, m)
    sa, sb = ResultStore(a), ResultStore(b)
    for key in ra:
        ma, mb = sa.load_maps(key), sb.load_maps(key)
        assert set(ma) == set(mb)
        for name in ma:
            assert ma[name].shape == mb[name].shape
            assert np.abs(ma[name].astype(np.float64) - mb[name].astype(np.float64)).max() <= 1e-6, (key, name)
