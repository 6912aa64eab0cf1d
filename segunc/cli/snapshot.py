"""``snapshot export|import``: carry the results store as one ``.tar.gz`` file."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import add_store_args


# ---------------------------------------------------------------------------------------- CLI
def run(args: argparse.Namespace) -> int:
    from ..analysis.precompute import export_snapshot_with_analyses
    from ..store.snapshot import SnapshotError, import_snapshot

    try:
        if args.snapshot_command == "export":
            out = args.out or Path(time.strftime("segunc-snapshot-%Y%m%d-%H%M%S.tar.gz"))
            m = export_snapshot_with_analyses(out, args.store, data=args.data, samples=args.with_samples)
            print(f"wrote {out}: {m['results']} results, {m['map_files']} map files, {m['runs']} runs "
                  f"(segunc {m['segunc_version']}, pipeline {m['pipeline_version']}), "
                  f"{m['map_bytes'] / 1e6:.1f} MB of maps")
            if m["samples_left_out"]:
                print(f"left out the kept samples of {m['samples_left_out']} result(s) (no page reads them; "
                      "--with-samples keeps them, e.g. to tune on the other machine)")
            if m["dropped_results"]:
                print(f"left out {len(m['dropped_results'])} result(s) whose map file was missing or corrupt")
            return 0
        res = import_snapshot(args.archive, args.store, force=args.force)
        m = res["manifest"]
        print(f"imported {res['results']} results into {res['root']} (snapshot of {m.get('source')} on "
              f"{m.get('host')}, {m.get('created_at')}, segunc {m.get('segunc_version')})")
        return 0
    except SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("snapshot", help="export / import the results store as one .tar.gz file")
    ss = p.add_subparsers(dest="snapshot_command", required=True)
    ex = ss.add_parser("export", help="write the store (database + map files + manifest) to one .tar.gz")
    add_store_args(ex)
    ex.add_argument("--out", type=Path, default=None, help="file to write (default: segunc-snapshot-<time>.tar.gz)")
    ex.add_argument("--data", type=Path, default=None,
                    help="LGG data folder to pack the slices from (default: the folders the runs used)")
    ex.add_argument("--with-samples", action="store_true",
                    help="keep the T samples of results run with --keep-samples (left out by default: the app "
                         "never reads them, and they are most of a store's size)")
    im = ss.add_parser("import", help="install a snapshot as the store (refuses to overwrite one without --force)")
    im.add_argument("archive", type=Path, help="a .tar.gz written by `snapshot export`")
    add_store_args(im)
    im.add_argument("--force", action="store_true", help="replace a store that already holds results")
    p.set_defaults(func=run)
    return p
