"""``report``: regenerate a self-contained HTML and a Markdown report from the store.

    python -m segunc report --split test --out report/ [--store DIR] [--backend unet,litemedsam]

writes ``report.html`` (one file, figures embedded as PNG data URIs), ``report.md`` with its PNG
figures, and the review queues as CSV into ``--out``. Exit 2 (with what to run) when the store
has no results for the split.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .common import add_store_args, csv_list, store_root


def _command(args: argparse.Namespace, root: Path) -> str:
    """The command line that regenerates this report (options that differ from their defaults)."""
    parts = ["python -m segunc report", f"--split {args.split}", f"--out {shlex.quote(str(args.out))}",
             f"--store {shlex.quote(str(root))}"]
    for flag, value, default in (("--backend", args.backend, None), ("--run", args.run, None),
                                 ("--val-split", args.val_split, "val"), ("--data", args.data, None),
                                 ("--score", args.score, "entropy_near"), ("--bad-dice", args.bad_dice, 0.7),
                                 ("--target-recall", args.target_recall, 0.8), ("--resamples", args.resamples, 2000)):
        if value is not None and value != default:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from ..report import NoResultsError, ReportOptions, build_report, write_report
    from ..store.readonly import open_for_reading

    root = store_root(args)
    if not (root / "store.sqlite").is_file():
        print(f"error: no results store at {root}. Compute results first, e.g.: python -m segunc run --split "
              f"{args.split if args.split != 'all' else 'val'} --backend unet --store {root}", file=sys.stderr)
        return 2
    opts = ReportOptions(split=args.split, val_split=args.val_split, backends=csv_list(args.backend), run_ids=csv_list(args.run),
                         data=args.data, score=args.score, bad_dice=args.bad_dice, target_recall=args.target_recall,
                         n_resamples=args.resamples,
                         command=_command(args, root))
    try:
        doc, attachments, failed = build_report(open_for_reading(root), opts, progress=not args.quiet)
    except NoResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    html_path, md_path = write_report(doc, args.out, attachments)
    print(f"wrote {html_path} and {md_path}" + (f" ({len(failed)} section(s) failed, see the warnings)" if failed else ""))
    return 1 if failed else 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="regenerate a self-contained HTML + Markdown report from the results store")
    p.add_argument("--split", default="val", choices=["val", "test", "train", "all"], help="split to report on")
    p.add_argument("--out", required=True, type=Path, help="folder for report.html, report.md and its figures")
    add_store_args(p)
    p.add_argument("--backend", default=None, help="comma list of backends (default: every backend with results)")
    p.add_argument("--run", default=None, help="comma list of run (job) ids to report (default: every result)")
    p.add_argument("--val-split", default="val", choices=["val", "test", "train"],
                   help="split the review-queue threshold is picked on")
    p.add_argument("--data", type=Path, default=None,
                   help="LGG kaggle_3m folder with the ground-truth masks (default: $SEGUNC_DATA or data/lgg/kaggle_3m)")
    p.add_argument("--score", default="entropy_near",
                   help="slice score of the review queue and risk–coverage: mean_entropy, mean_variance, mean_mi, "
                        "entropy_near, mutual_information_near, entropy_in, … (default: entropy_near, the entropy inside the "
                        "predicted mask and 5 px around it; mean_entropy when the masks are not available)")
    p.add_argument("--bad-dice", type=float, default=0.7, help="a slice needs review when its Dice is below this")
    p.add_argument("--target-recall", type=float, default=0.8, help="share of bad slices the queue must catch on val")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the CIs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p
