"""``export``: write stored metric rows as CSV or Parquet."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_store_args, csv_list, fail


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write stored metric rows as CSV or Parquet")
    add_store_args(p)
    p.add_argument("--out", required=True, type=Path, help=".csv or .parquet file")
    p.add_argument("--format", default=None, choices=["csv", "parquet"], help="default: from the file suffix")
    p.add_argument("--backend", default=None, help="comma list of backends")
    p.add_argument("--modes", default=None, help="comma list of modes")
    p.add_argument("--slices", default=None, help="comma list of slice ids")
    p.add_argument("--run", default=None, help="comma list of run (job) ids")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..store.readonly import open_for_reading

    store = open_for_reading(args.store)
    try:
        n = store.export(args.out, args.format, backends=csv_list(args.backend), modes=csv_list(args.modes),
                         slice_ids=csv_list(args.slices), run_ids=csv_list(args.run))
    except ValueError as exc:
        return fail(str(exc))
    print(f"exported {n} rows to {args.out}")
    return 0
