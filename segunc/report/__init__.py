"""``python -m segunc report``: regenerate a self-contained HTML and a Markdown report from the store.

    python -m segunc report --split test --out report/ [--cache DIR] [--backend unet,litemedsam]

writes ``report.html`` (one file, figures embedded as PNG data URIs), ``report.md`` with its PNG
figures, and the review queues as CSV into ``--out``. Exit 2 (with what to run) when the store
has no results for the split.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .build import NoResultsError, ReportOptions, build_report, select_results
from .doc import Document
from .html import render_html
from .markdown import render_markdown

__all__ = ["ReportOptions", "NoResultsError", "build_report", "select_results", "write_report", "render_html",
           "render_markdown", "Document", "add_report_parser", "cmd_report"]


def write_report(doc: Document, out: Path | str, attachments: dict[str, bytes] | None = None) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.md`` (+ its PNGs) and the attachments into ``out``; returns the two paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(doc), encoding="utf-8")
    md_path.write_text(render_markdown(doc, out), encoding="utf-8")
    for name, data in (attachments or {}).items():
        (out / name).write_bytes(data)
    return html_path, md_path


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _command(args: argparse.Namespace, root: Path) -> str:
    """The command line that regenerates this report (options that differ from their defaults)."""
    parts = ["python -m segunc report", f"--split {args.split}", f"--out {shlex.quote(str(args.out))}",
             f"--cache {shlex.quote(str(root))}"]
    for flag, value, default in (("--backend", args.backend, None), ("--run", args.run, None),
                                 ("--val-split", args.val_split, "val"), ("--data", args.data, None),
                                 ("--score", args.score, "entropy_near"), ("--bad-dice", args.bad_dice, 0.7),
                                 ("--target-recall", args.target_recall, 0.8), ("--resamples", args.resamples, 2000)):
        if value is not None and value != default:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def cmd_report(args: argparse.Namespace) -> int:
    from ..store import default_cache_dir
    from ..store.readonly import open_for_reading

    root = Path(args.cache or default_cache_dir()).expanduser()
    if not (root / "store.sqlite").is_file():
        print(f"error: no results store at {root}. Compute results first, e.g.: python -m segunc run --split "
              f"{args.split if args.split != 'all' else 'val'} --backend unet --cache {root}", file=sys.stderr)
        return 2
    opts = ReportOptions(split=args.split, val_split=args.val_split, backends=_csv(args.backend), run_ids=_csv(args.run),
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


def add_report_parser(sub) -> argparse.ArgumentParser:
    """Register ``report`` (called from :func:`segunc.cli.build_parser`)."""
    p = sub.add_parser("report", help="regenerate a self-contained HTML + Markdown report from the results store")
    p.add_argument("--split", default="val", choices=["val", "test", "train", "all"], help="split to report on")
    p.add_argument("--out", required=True, type=Path, help="folder for report.html, report.md and its figures")
    p.add_argument("--cache", type=Path, default=None, help="results store folder (default: $SEGUNC_CACHE or data/cache)")
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
    p.set_defaults(func=cmd_report)
    return p
