"""Sweeps on a Ray cluster: the same job, keys and store as the local executor, computed by actors.

The driver (the process that holds the results store) plans every slice as the local executor
does (:func:`segunc.runner.worker.execute_job`: keys of the requested modes, skip what the store
holds), reads the slices it still needs and sends them as (slice batch × settings) tasks to
Ray actors. One actor per CPU of the cluster (per GPU with ``--device cuda``, ``num_gpus=1``)
builds the backend once and keeps it; it returns the slices' :class:`~segunc.pipeline.ModeResult`
objects (maps + metric rows) and touches neither the database nor a shared file system: slices
and, where a node lacks them, the weights travel through Ray's object store. The driver stores
each result as it arrives (``ray.wait``), so killing the driver loses only the tasks in flight
and running the sweep again resumes. Every random draw comes from (seed, slice id, mode), so
where a slice is computed does not change its result.

Faults: an actor whose node dies fails its tasks (``RayActorError``); the driver gives their
batches to the remaining actors (at most ``retries`` times per batch) and asks Ray for a
replacement actor, which joins when the cluster has room for it. Ray's own retries
(``max_restarts`` / ``max_task_retries``) are not used: a restarted actor waits for a free
CPU that its surviving peers hold, so its queued tasks would stall instead of moving on.

References: Ray Core actors and fault tolerance (docs.ray.io/en/latest/ray-core/actors.html,
docs.ray.io/en/latest/ray-core/fault_tolerance/actors.html), ``ray.wait``
(docs.ray.io/en/latest/ray-core/api/doc/ray.wait.html).
"""
from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..data.lgg import SliceError, SliceRef, load_slice
from .sweep import SliceOutcome

__all__ = ["ClusterError", "ClusterInfo", "RayExecutor", "cluster_info", "connect"]

_PKG_PARENT = str(Path(__file__).resolve().parents[2])  # the folder that holds the segunc package


#: PyTorch intra-op threads per Ray worker (one worker per CPU): a pinned count, so where a slice
#: is computed never changes its maps (see :class:`RayExecutor`)
WORKER_THREADS = 1


class ClusterError(ValueError):
    """The cluster cannot run the sweep (unreachable, no worker can start, all workers lost)."""


@dataclass
class ClusterInfo:
    """What the CLI prints and the Run page shows about the cluster a sweep goes to."""

    address: str
    nodes: int
    cpus: float
    gpus: float
    dashboard_url: str | None = None
    node_list: list[dict] = field(default_factory=list)

    def line(self) -> str:
        dash = f", dashboard {self.dashboard_url}" if self.dashboard_url else ""
        return f"Ray cluster {self.address}: {self.nodes} node(s), {self.cpus:g} CPU(s), {self.gpus:g} GPU(s){dash}"

    def as_dict(self) -> dict:
        return asdict(self)


def connect(address: str | None = None):
    """Join the Ray cluster at ``address`` (default ``$RAY_ADDRESS``, else start a local Ray
    instance); returns the ``RayContext``. Already connected: the existing context."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = {"PYTHONPATH": os.pathsep.join(p for p in (_PKG_PARENT, os.environ.get("PYTHONPATH", "")) if p)}
    try:
        return ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, logging_level="ERROR",
                        configure_logging=True, include_dashboard=None if address else False)
    except ConnectionError as exc:
        raise ClusterError(f"cannot reach a Ray cluster at {address!r}: {exc}") from None


def cluster_info(context=None) -> ClusterInfo:
    """Alive nodes, CPUs, GPUs and the dashboard address of the connected cluster."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    dash = getattr(context, "dashboard_url", None) or None
    if dash and not dash.startswith("http"):
        dash = f"http://{dash}"
    address = getattr(context, "address_info", {}).get("gcs_address") if context is not None else None
    node_list = [{"host": n.get("NodeManagerHostname"), "ip": n.get("NodeManagerAddress"),
                  "cpus": n.get("Resources", {}).get("CPU", 0), "gpus": n.get("Resources", {}).get("GPU", 0)}
                 for n in nodes]
    return ClusterInfo(address or ray.get_runtime_context().gcs_address, len(nodes), float(res.get("CPU", 0)),
                       float(res.get("GPU", 0)), dash, node_list)


class _SweepActor:
    """Holds one backend for a whole sweep and evaluates slice batches with it."""

    def __init__(self, spec: dict, weights_sha256: str, weights_box: list, threads: int = 1):
        import torch

        from .jobs import JobSpec
        from .sweep import build_backend

        torch.set_grad_enabled(False)
        torch.set_num_threads(threads)  # not the node's $OMP_NUM_THREADS: the sum order of a kernel depends on it
        self.spec = JobSpec.from_dict(spec)
        weights = _local_weights(self.spec.weights_path(), weights_sha256, weights_box)
        self.config = self.spec.pipeline_config()
        self.backend = build_backend(self.spec.backend, weights, self.spec.device, self.spec.support_data,
                                     self.spec.data, self.config.seed, **self.spec.backend_options)

    def ready(self) -> str:
        import socket

        return f"{socket.gethostname()}:{os.getpid()}"

    def run(self, items: list[tuple[SliceRef, list[str], object]]) -> list[SliceOutcome]:
        """``items``: (ref, modes to compute, loaded slice) → outcomes (slice not sent back)."""
        from .sweep import iter_sweep

        todo = {ref: (modes, slice_) for ref, modes, slice_ in items}
        outs = list(iter_sweep(self.backend, [ref for ref, _, _ in items], [], self.config,
                               plan=lambda ref: todo[ref][0], group=len(items), load=lambda ref: todo[ref][1]))
        for out in outs:
            out.slice_ = None
        return outs


def _local_weights(path: str | None, sha: str, box: list) -> str | None:
    """The weights file on this node if it is the driver's (same sha256), else the driver's bytes
    (from the object store) written to a private temporary file."""
    from ..fsutil import file_sha256

    if path is None or (os.path.isfile(path) and file_sha256(path) == sha):
        return path
    import ray

    data = ray.get(box[0])
    fd, tmp = tempfile.mkstemp(prefix="segunc-weights-", suffix=Path(path).suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return tmp


def _actor_died(exc: BaseException) -> bool:
    import ray.exceptions as rex

    lost = tuple(getattr(rex, n) for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
                                           "NodeDiedError", "ObjectLostError", "OwnerDiedError") if hasattr(rex, n))
    return isinstance(exc, lost)


class RayExecutor:
    """Computes a job's slices on a Ray cluster; used by :func:`~segunc.runner.worker.execute_job`.

    ``batch``: slices per task; ``per_actor``: tasks queued on each actor (1: the next task is
    sent before the driver stores the last result, so a worker waits only for that round trip,
    and slow stragglers never hold queued work another worker could take); ``retries``: re-dispatches of a batch whose actor died;
    ``workers``: actors (default: the cluster's CPUs / ``threads``, or its GPUs for a CUDA sweep);
    ``threads``: PyTorch intra-op threads of each actor (:data:`WORKER_THREADS`), which a CPU actor
    also reserves as its ``num_cpus``. PyTorch's CPU kernels sum in an order that depends on the
    thread count, so maps equal a local run's to the last bit only when that run used as many
    threads (``run --threads``); otherwise they differ by ~1e-6 before the store's 8-bit coding."""

    def __init__(self, address: str | None = None, batch: int = 1, per_actor: int = 1, retries: int = 3,
                 workers: int | None = None, start_timeout: float = 600.0, threads: int | None = None):
        self.address, self.batch, self.per_actor, self.retries = address, max(1, batch), max(1, per_actor), retries
        self.workers, self.start_timeout = workers, start_timeout
        self.threads = max(1, int(threads or WORKER_THREADS))
        self.info: ClusterInfo | None = None

    def driver_device(self, device: str) -> str:
        """The driver only plans and stores (it builds the backend for the result keys): CPU."""
        return "cpu"

    def connect(self) -> ClusterInfo:
        self.info = cluster_info(connect(self.address))
        return self.info

    def iter_sweep(self, spec, backend, refs: Sequence[SliceRef], modes: Sequence[str], config,
                   plan: Callable[[SliceRef], Sequence[str]], log: Callable[[str], None] = print) -> Iterator[SliceOutcome]:
        """Plan and read slices here, compute them on the cluster, yield outcomes as they arrive."""
        import ray

        info = self.connect()
        log(info.line())
        cuda = spec.device.startswith("cuda")
        if cuda and info.gpus < 1:
            raise ClusterError(f"--device {spec.device}: the Ray cluster at {info.address} has no GPU")
        n = self.workers or max(1, int(info.gpus if cuda else info.cpus // self.threads))
        weights = spec.weights_path()
        box = [ray.put(Path(weights).read_bytes())] if weights else [None]
        actor_cls = ray.remote(num_cpus=0 if cuda else self.threads, num_gpus=1 if cuda else 0, max_restarts=0,
                               max_task_retries=0)(_SweepActor)
        spec_dict = spec.to_dict()

        def start():
            a = actor_cls.remote(spec_dict, backend.weights_sha256, box, self.threads)
            return a, a.ready.remote()

        starting = dict(start() for _ in range(n))  # actor -> its ready() ref
        alive: dict = {}  # actor -> tasks in flight
        inflight: dict = {}  # task ref -> (actor, items, tries)
        retry: deque = deque()
        pending = deque(refs)
        now: list[SliceOutcome] = []
        since_alive = time.monotonic()

        def take() -> list:
            items = []
            while pending and len(items) < self.batch:
                ref = pending.popleft()
                todo = list(plan(ref))
                if not todo:
                    now.append(SliceOutcome(ref, planned=[]))
                    continue
                try:
                    items.append((ref, todo, load_slice(ref)))
                except SliceError as exc:
                    now.append(SliceOutcome(ref, error=str(exc), error_file=str(exc.path), planned=todo))
            return items

        def failed(items, why: str) -> list[SliceOutcome]:
            return [SliceOutcome(ref, error=f"{ref.image_path}: {why}", error_file=str(ref.image_path), planned=todo)
                    for ref, todo, _ in items]

        try:
            while pending or inflight or retry or now:
                # queue up to per_actor tasks per actor while work is plentiful, one near the end
                depth = self.per_actor if len(pending) + len(retry) > len(alive) * self.per_actor * self.batch else 1
                for actor in sorted(alive, key=alive.get):
                    while alive[actor] < depth and (retry or pending):
                        items, tries = retry.popleft() if retry else (take(), 0)
                        if items:
                            inflight[actor.run.remote(items)] = (actor, items, tries)
                            alive[actor] += 1
                yield from now
                now.clear()
                if not (inflight or starting):
                    if pending or retry:
                        raise ClusterError(f"no Ray worker is left to run the sweep on {info.address}")
                    continue
                waits = list(inflight) + list(starting.values())
                done, _ = ray.wait(waits, num_returns=1, timeout=5.0)
                if not alive and time.monotonic() - since_alive > self.start_timeout:
                    raise ClusterError(f"no Ray worker could start within {self.start_timeout:g} s on {info.address} "
                                       f"(needs {'1 GPU' if cuda else f'{self.threads} CPU(s)'} free per worker)")
                for ref in done:
                    actor = next((a for a, r in starting.items() if r == ref), None)
                    if actor is not None:
                        del starting[actor]
                        try:
                            ray.get(ref)
                        except Exception as exc:  # noqa: BLE001 - a worker that cannot build the backend
                            if not _actor_died(exc) or not alive and not starting and not inflight:
                                raise ClusterError(f"a Ray worker failed to start: {_cause(exc)}") from None
                            log(f"a Ray worker failed to start ({_cause(exc)})")
                            continue
                        alive[actor] = 0
                        since_alive = time.monotonic()
                        continue
                    actor, items, tries = inflight.pop(ref)
                    try:
                        outs = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001
                        if _actor_died(exc):
                            if actor in alive:
                                del alive[actor]
                                log(f"a Ray worker died ({_cause(exc)}); its batches go to the others")
                                since_alive = time.monotonic()  # with none left, the wait for a replacement starts now
                                a, r = start()  # a replacement, used once the cluster has room for it
                                starting[a] = r
                            if tries < self.retries:
                                retry.append((items, tries + 1))
                            else:
                                now.extend(failed(items, f"lost {tries + 1} times with its Ray worker: {_cause(exc)}"))
                            continue
                        alive[actor] -= 1
                        now.extend(failed(items, _cause(exc)))
                        continue
                    alive[actor] -= 1
                    slices = {ref_: s for ref_, _, s in items}
                    for out in outs:
                        out.slice_ = None if out.error else slices[out.ref]
                        now.append(out)
        finally:
            for actor in [*alive, *starting]:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    last = [t for t in text if t.strip()]
    return (last[-1] if last else type(exc).__name__)[:500]


# ------------------------------------------------------------------ command line (used by the app)
def main(argv: Sequence[str] | None = None) -> int:
    """``info [--address A]``: the cluster as JSON. ``run --cache DIR [--address A] SPECS.json``:
    run each job spec of the file (a list of :meth:`JobSpec.to_dict` dicts) on the cluster, into
    the store at DIR — what the app's Run page starts in the background."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m segunc.runner.ray_executor")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info").add_argument("--address", default=None)
    r = sub.add_parser("run")
    r.add_argument("--address", default=None)
    r.add_argument("--cache", required=True, type=Path)
    r.add_argument("--threads", type=int, default=None, help=f"PyTorch threads per worker (default {WORKER_THREADS})")
    r.add_argument("specs", type=Path)
    args = p.parse_args(argv)
    try:
        info = cluster_info(connect(args.address))
    except Exception as exc:  # noqa: BLE001 - reported to the caller as one line
        print(json.dumps({"error": str(exc).strip()[:500]}) if args.cmd == "info" else f"error: {exc}")
        return 2
    if args.cmd == "info":
        print(json.dumps(info.as_dict()))
        return 0
    from ..store import ResultStore
    from .jobs import JobSpec
    from .worker import run_sweep

    print(info.line(), flush=True)
    store, executor, rc = ResultStore(args.cache), RayExecutor(args.address, threads=args.threads), 0
    for d in json.loads(args.specs.read_text()):
        try:
            job_id, counts = run_sweep(store, JobSpec.from_dict(d), progress=False, executor=executor)
            print(f"job {job_id}: {counts.line()}", flush=True)
        except Exception as exc:  # noqa: BLE001 - the job is marked failed in the store; go on
            print(f"error: {type(exc).__name__}: {exc}", flush=True)
            rc = 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
