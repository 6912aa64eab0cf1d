"""``run``: compute a sweep into the store (only what is missing), or queue it for the background worker."""
from __future__ import annotations

import argparse
import sys

from .common import (add_selection_args, add_store_args, data_root, fail, fit_temperature_arg, positive_int, spec_from_args,
                     sweep, sweep_errors)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="compute a sweep into the results store (only what is missing)")
    add_selection_args(p)
    add_store_args(p)
    p.add_argument("--keep-samples", action="store_true", help="also store the T sample maps (float16)")
    p.add_argument("--background", action="store_true", help="queue it for the background worker (started if needed)")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="where to compute: here, or on a Ray cluster")
    p.add_argument("--ray-address", default=None, help="Ray cluster (host:port; default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="PyTorch CPU threads: of this process (default: PyTorch's, one per core), or of each Ray "
                        "worker with --executor ray (default 1, one worker per CPU). Maps match to the last bit "
                        "only between runs with the same count")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Last line ``DONE computed=N skipped=M failed=K``; exit 3 when the store's disk is full."""
    if args.background and args.executor == "ray":
        return fail("--executor ray runs in the foreground (the driver stores results as they arrive); drop --background")
    if args.background:
        if args.threads:
            return fail("--threads applies to a sweep run here; the background worker uses PyTorch's default")
        return _queue(args)
    from ..store import StoreFullError

    try:
        store, spec, job_id, counts, refs = sweep(args)
    except sweep_errors() as exc:
        return fail(str(exc).strip("'\""))
    except StoreFullError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 3
    print(f"job {job_id}: {len(refs)} slices x {len(spec.mode_list())} modes in {store.root}")
    for slice_id, error in counts.errors:
        print(f"FAILED {slice_id}: {error}")
    print(counts.line())
    return 0 if counts.computed + counts.skipped or not refs else 1


def _queue(args: argparse.Namespace) -> int:
    from ..runner.jobs import ensure_worker, estimate_cost, submit_job
    from ..store import ResultStore

    try:
        fit_temperature_arg(args, data_root(args))
        spec = spec_from_args(args)
        store = ResultStore(args.store)
        job_id = submit_job(store, spec)
        cost = estimate_cost(spec, store=store)
    except sweep_errors() as exc:
        return fail(str(exc).strip("'\""))
    alive = ensure_worker(store.root, args.device)
    print(f"job {job_id} queued ({cost['slices']} slices, {cost['human']}); worker {'running' if alive else 'NOT started'}")
    return 0 if alive else 1
