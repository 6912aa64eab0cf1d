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

from . import evaluate, export, fetch, gc, passwd, report, run, snapshot, worker

#: subcommand modules in ``--help`` order; each has ``add_parser(sub)`` and ``run(args)``
COMMANDS = (evaluate, run, worker, export, gc, fetch, snapshot, passwd, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segunc", description="Uncertainty for pretrained segmentation models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
