"""Executing jobs: one sweep streamed slice by slice into the store, and the worker loop.

Per slice: compute the keys of the requested modes, keep those stored intact, evaluate only
the missing modes (their dependencies are recomputed in memory), store the results of the
slice in one transaction, record progress (``jobs``, ``job_slices``). A failing slice is
recorded with its error and the sweep goes on. Nothing but the current slice is held in memory.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..fsutil import StoreFullError
from ..store import ResultStore, image_relpath, result_key
from ..store import jobs as job_table
from .jobs import JobSpec, forget_empty_job, job_lock, measured_timing, measure_timing, record_mode_timing, submit, worker_lock

__all__ = ["Counts", "execute_job", "run_sweep", "worker_loop"]


@dataclass
class Counts:
    """slice × mode results computed now, found in the store, failed; failed slices with errors."""

    computed: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return f"DONE computed={self.computed} skipped={self.skipped} failed={self.failed}"


def check_precision(options: dict, device: str) -> None:
    """bf16 autocast acts on CUDA only: asking for it on another device is an error, not a
    silently fp32 run stored under a bf16 key."""
    import torch

    if options.get("precision", "fp32") == "bf16" and torch.device(device).type != "cuda":
        raise ValueError(f"bf16 autocast runs on CUDA only; the device is '{device}' (use --device cuda)")


def _set(store: ResultStore, job_id: str, **cols) -> None:
    job_table.set_job(store.con, job_id, **cols)


def _record_slice(store: ResultStore, job_id: str, slice_id: str, state: str, c: Counts, computed: int, skipped: int,
                  seconds: float, error: str | None = None, file: str | None = None, current: str | None = None) -> bool:
    """Progress of one slice (and, in the same transaction, ``current``: the slice computed next, None
    after the last); returns whether a cancel was requested."""
    return job_table.record_job_slice(store.con, job_id, slice_id, state, computed, skipped, seconds,
                                      (c.computed, c.skipped, c.failed), error=error, file=file, current=current)


def execute_job(store: ResultStore, job_id: str, *, refs: list | None = None, progress: bool = False,
                raise_errors: bool = False, executor=None) -> Counts:
    """Run job ``job_id`` to the end. The caller holds its :func:`job_lock`.

    ``executor`` (e.g. :class:`segunc.runner.ray_executor.RayExecutor`) computes the slices
    elsewhere and yields their outcomes in any order; this process still plans (skips what the
    store holds) and stores each result as it arrives. None: computed here, slice by slice.
    A setup error (data, weights, modes) marks the job failed (and is raised with ``raise_errors``)."""
    import torch
    from tqdm import tqdm

    from ..pipeline import result_key_material
    from ..postprocess import POST_STEPS
    from .sweep import build_backend, iter_sweep, parse_modes, select_slices

    spec_json = job_table.job_spec_json(store.con, job_id)
    if spec_json is None:
        raise KeyError(f"no job {job_id}")
    spec = JobSpec.from_dict(json.loads(spec_json))
    _set(store, job_id, state="running", started_at=time.time(), finished_at=None, done=0, failed=0, computed=0,
         skipped=0, failed_results=0, current=None, error=None, cancel=0, owner=f"{socket.gethostname()}:{os.getpid()}")
    job_table.clear_job_slices(store.con, job_id)
    c = Counts()
    try:
        torch.set_grad_enabled(False)
        root = spec.data_root()
        check_precision(spec.backend_options, spec.device)
        if refs is None:
            refs = select_slices(root, spec.split, spec.all_slices, spec.limit, spec.patients, spec.spread)
        if not refs:
            raise ValueError(f"{root}: no slices in split '{spec.split}'" + ("" if spec.all_slices else " with tumour"))
        device = spec.device if executor is None else executor.driver_device(spec.device)
        backend = build_backend(spec.backend, spec.weights, device, spec.support_data, root,
                                spec.pipeline_config().seed, **spec.backend_options)
        modes = parse_modes(spec.modes, backend)
        config = spec.pipeline_config()
        material = {m: result_key_material(backend, config, m) for m in modes}
    except Exception as exc:
        _set(store, job_id, state="failed", error=str(exc).strip("'\""), finished_at=time.time())
        if raise_errors:
            raise
        return c
    sids = {m: store.put_settings(material[m]) for m in modes}
    store.add_run(job_id, backend.name, modes, spec_json, backend.weights_sha256, len(refs))
    _set(store, job_id, total=len(refs))
    need_timing = device == spec.device and measured_timing(store, backend.name, spec.device) is None
    planned: dict = {}  # in sweep order: the slices read but not yet finished
    last_done = [time.perf_counter()]

    def plan(ref):
        image = image_relpath(ref.image_path, root)
        keys = {m: result_key(material[m], ref.slice_id, image) for m in modes}
        sampled = [keys[m] for m in modes if m not in POST_STEPS]  # post-processing results carry no samples
        valid = (store.valid_keys(sampled, need_samples=config.keep_samples)
                 | store.valid_keys([keys[m] for m in modes if m in POST_STEPS]))
        if not planned:  # the sweep plans a group of slices, then computes them in order: the first is current
            _set(store, job_id, current=ref.slice_id)
        planned[ref] = (image, keys, time.perf_counter())
        return [m for m in modes if keys[m] not in valid]

    after = {a.slice_id: b.slice_id for a, b in zip(refs, refs[1:])}

    def finished(ref, t_plan: float) -> tuple[float, str | None]:
        """This slice's own seconds (not those of the slices of its group before it), and the next slice."""
        seconds = time.perf_counter() - max(t_plan, last_done[0])
        return seconds, (next(iter(planned)).slice_id if planned else after.get(ref.slice_id))

    bar = tqdm(total=len(refs), desc=f"{backend.name} × {len(modes)} modes",
               unit="slice", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    state = "done"
    if executor is None:
        outcomes = iter_sweep(backend, refs, modes, config, plan=plan)
    else:
        outcomes = executor.iter_sweep(spec, backend, refs, modes, config, plan=plan,
                                       log=lambda msg: bar.write(msg, file=sys.stderr))
    try:
        for out in outcomes:
            image, keys, t0 = planned.pop(out.ref)
            todo = out.planned or []
            have = [keys[m] for m in modes if m not in todo]
            if out.error:
                c.failed += len(todo)
                c.skipped += len(have)
                c.errors.append((out.ref.slice_id, out.error))
                store.link(job_id, have)
                bar.write(f"FAILED {out.ref.slice_id}: {out.error}")
                seconds, nxt = finished(out.ref, t0)
                cancel = _record_slice(store, job_id, out.ref.slice_id, "failed", c, 0, len(have),
                                       seconds, out.error, out.error_file, current=nxt)
            else:
                if todo:
                    items = [(keys[m], sids[m], out.results[m]) for m in todo]
                    store.put_slice(job_id, items, ref=out.ref, image=image, target=out.slice_.mask, backend=backend.name,
                                    keep_samples=config.keep_samples, link=have)
                else:
                    store.link(job_id, have)
                c.computed += len(todo)
                c.skipped += len(have)
                seconds, nxt = finished(out.ref, t0)
                cancel = _record_slice(store, job_id, out.ref.slice_id, "done", c, len(todo), len(have), seconds,
                                       current=nxt)
                if todo and need_timing:
                    measure_timing(store, backend, out.slice_)
                    need_timing = False
                elif todo:
                    _record_costs(store, backend.name, spec.device, config, out.results, seconds)
            bar.set_postfix(computed=c.computed, skipped=c.skipped, failed=c.failed, refresh=False)
            bar.update(1)  # per finished slice (slices are read in groups: iterating them would run ahead)
            last_done[0] = time.perf_counter()  # the next slice's time starts now (bookkeeping excluded)
            if cancel:
                state = "cancelled"
                break
    except BaseException as exc:
        cancelled = isinstance(exc, KeyboardInterrupt)
        _set(store, job_id, state="cancelled" if cancelled else "failed", current=None, finished_at=time.time(),
             error=None if cancelled else traceback.format_exception_only(type(exc), exc)[-1].strip())
        raise
    finally:
        if hasattr(outcomes, "close"):
            outcomes.close()  # an executor's generator releases its cluster workers
        bar.close()
    _set(store, job_id, state=state, current=None, finished_at=time.time())
    return c


def _own_seconds(results: dict, config) -> dict[str, float]:
    """Each computed mode's own seconds: ``ModeResult.seconds`` minus the modes it depends on."""
    from ..postprocess import POST_STEPS, get_step

    out = {}
    for m, r in results.items():
        deps = get_step(m).requires(config) if m in POST_STEPS else []
        if any(d not in results for d in deps):
            continue
        out[m] = max(0.0, r.seconds - sum(results[d].seconds for d in deps))
    return out


def _record_costs(store: ResultStore, backend: str, device: str, config, results: dict, slice_seconds: float) -> None:
    """Measured cost per backend × mode × device, for honest estimates (never fails the sweep)."""
    try:
        own = _own_seconds(results, config)
        record_mode_timing(store, backend, device, config, own, overhead=max(0.0, slice_seconds - sum(own.values())))
    except Exception:  # noqa: BLE001 - timing bookkeeping must not stop a sweep
        pass


def _attach(store: ResultStore, job_id: str, lock, progress: bool) -> None:
    """Follow another process's execution of the job until its lock is free, then take it."""
    from tqdm import tqdm

    from .jobs import job_status

    st = job_status(store, job_id)
    if progress:
        print(f"job {job_id} is already running ({st['owner']}); attaching", file=sys.stderr)
    bar = tqdm(total=st["total"], desc="attached", unit="slice", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        while not lock.acquire(timeout=1.0):
            row = job_table.job_state(store.con, job_id)
            bar.total, bar.n = row["total"], row["done"]
            bar.refresh()
    finally:
        bar.close()


def run_sweep(store: ResultStore, spec: JobSpec, *, refs: list | None = None, progress: bool = True,
              executor=None) -> tuple[str, Counts]:
    """Submit ``spec`` and execute it here; if another process is executing it, follow its
    progress, then verify (everything it stored is skipped). Returns (job id, counts)."""
    spec.check_weights()
    new = job_table.job_state(store.con, spec.job_id()) is None
    job_id = submit(store, spec, refs=refs)
    lock = job_lock(store, job_id)
    if not lock.acquire(timeout=0):
        _attach(store, job_id, lock, progress)
        refs = None
    try:
        return job_id, execute_job(store, job_id, refs=refs, progress=progress, raise_errors=True, executor=executor)
    except Exception:
        if new:  # a sweep this call queued that stored nothing leaves no job / run row behind
            forget_empty_job(store, job_id)
        raise
    finally:
        lock.release()


def worker_loop(root: Path | str, device: str = "cpu", idle_exit: float | None = None, poll: float = 1.0,
                log=print) -> int:
    """Hold the device's worker lock and execute queued (or interrupted) jobs one at a time.

    Exits 0 after ``idle_exit`` idle seconds, 3 if another worker already holds the lock or the
    store's disk is full."""
    wl = worker_lock(root, device)
    if not wl.acquire(timeout=5.0):
        log(f"another worker holds {wl.path}; exiting")
        return 3
    try:
        store = ResultStore(root)
        log(f"worker {socket.gethostname()}:{os.getpid()} on {device}, store {store.root}")
        idle_since = time.monotonic()
        while True:
            ran = False
            for job_id in job_table.runnable_jobs(store.con, device):
                lock = job_lock(store, job_id)
                if not lock.acquire(timeout=0):
                    continue  # a foreground `run` is executing it
                try:
                    st = job_table.job_state(store.con, job_id)
                    if st["state"] not in ("queued", "running") or st["cancel"]:
                        continue
                    log(f"job {job_id}: start")
                    c = execute_job(store, job_id)
                    log(f"job {job_id}: {c.line()}")
                except StoreFullError as exc:  # every further job would fail the same way
                    log(f"error: {exc.strerror}")
                    return 3
                except Exception as exc:  # noqa: BLE001 - a broken job must not stop the worker
                    log(f"job {job_id}: {type(exc).__name__}: {exc}")
                finally:
                    lock.release()
                ran = True
                break
            if ran:
                idle_since = time.monotonic()
                continue
            if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                log("idle; exiting")
                return 0
            time.sleep(poll)
    finally:
        wl.release()
