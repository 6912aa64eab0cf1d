"""Command line: ``python -m segunc <command>``, one module per subcommand.

``evaluate`` runs one backend under several inference modes on LGG slices and writes one CSV row
per (slice, backend, mode). ``run`` computes a sweep into the results store (only what is
missing), ``worker`` executes queued sweeps in the background, ``export`` writes stored rows as
CSV / Parquet and ``gc`` cleans the store; ``fetch`` downloads data and weights, ``snapshot``
carries the store as one file, ``passwd`` hashes a login password and ``report`` rebuilds the
results chapter. Each subcommand imports its heavy libraries (torch, pandas, matplotlib) only
when it runs, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from . import evaluate, export, fetch, gc, passwd, report, run, snapshot, tune, worker

#: subcommand modules in ``--help`` order; each has ``add_parser(sub)`` and ``run(args)``
COMMANDS = (evaluate, run, tune, worker, export, gc, fetch, snapshot, passwd, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segunc", description="Uncertainty for pretrained segmentation models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import sqlite3
    import sys

    from ..fsutil import StoreFullError, disk_full_error, is_disk_full

    from ..presets import explicit_flags

    args = build_parser().parse_args(argv)
    args.explicit = explicit_flags(sys.argv[1:] if argv is None else argv)  # --preset leaves these as given
    try:
        return args.func(args)
    except (OSError, sqlite3.OperationalError) as exc:  # a full disk at any write: one clear error, exit 3
        from ..store import StoreNotWritableError

        if isinstance(exc, StoreNotWritableError):
            print(f"error: {exc.strerror}", file=sys.stderr)
            return 2
        if not is_disk_full(exc):
            raise
        full = exc if isinstance(exc, StoreFullError) else disk_full_error(getattr(exc, "filename", None) or getattr(args, "out", None) or "output", exc)
        print(f"error: {full.strerror}", file=sys.stderr)
        return 3
