"""``worker``: execute queued sweeps one at a time (one worker per device)."""
from __future__ import annotations

import argparse

from .common import add_store_args, store_root


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("worker", help="execute queued sweeps one at a time (one worker per device)")
    add_store_args(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many seconds without jobs")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the queue")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import time

    from ..runner.worker import worker_loop

    root = store_root(args).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return worker_loop(root, args.device, idle_exit=args.idle_exit, poll=args.poll,
                       log=lambda msg: print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True))
