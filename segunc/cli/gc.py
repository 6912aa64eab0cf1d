"""``gc``: remove orphan map files from the store; ``--verify`` also drops corrupt results."""
from __future__ import annotations

import argparse

from .common import add_store_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("gc", help="remove orphan map files; --verify also drops corrupt results")
    add_store_args(p)
    p.add_argument("--grace", type=float, default=3600.0, help="keep unreferenced files younger than this (seconds)")
    p.add_argument("--verify", action="store_true", help="check every stored map file (checksum, decode)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..store import ResultStore

    store = ResultStore(args.store)
    report = store.gc(grace_s=args.grace, verify=args.verify)
    print(" ".join(f"{k}={v}" for k, v in {**report, **store.stats()}.items()))
    return 0
