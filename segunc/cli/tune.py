"""``tune``: choose temperature, fusion weighting, threshold and CRF on val from stored samples
(:mod:`segunc.runner.tune`); writes ``tuned.json`` for ``evaluate`` / ``run --tuned``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import add_selection_args, add_store_args, fail, spec_from_args, sweep_errors


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("tune", help="choose temperature, fusion, threshold and CRF on val (writes tuned.json)")
    add_selection_args(p)
    add_store_args(p)
    p.add_argument("--out", required=True, type=Path, help="tuned.json to write (the app's Run page lists "
                   "<store>/tuned/*.json)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Exit 0 with tuned.json written, 2 on a bad request."""
    from ..runner.tune import tune
    from ..store import ResultStore

    if args.split != "val":
        return fail(f"tune only runs on --split val (post-processing is tuned on val and evaluated on test, "
                    f"paper §4), not on '{args.split}'")
    if getattr(args, "tuned", None) is not None:
        return fail("tune starts from the flags' settings; drop --tuned")
    try:
        spec = spec_from_args(args)
        doc = tune(ResultStore(args.store), spec, out=args.out, progress=True, log=lambda s: print(s, file=sys.stderr))
    except sweep_errors() as exc:
        return fail(str(exc).strip("'\""))
    s = doc["settings"]
    print(f"tuned on {len(doc['slices'])} val slices (computed {doc['sweep']['computed']} results, "
          f"reused {doc['sweep']['skipped']}): temperature {s['temperature']}, fusion {json.dumps(s['fusion'])}, "
          f"crf {json.dumps(s['crf'])}")
    print(f"wrote {args.out}")
    return 0
