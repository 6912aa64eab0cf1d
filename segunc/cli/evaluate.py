"""``evaluate``: sweep through the store (computing only what it lacks), then write this sweep's rows as CSV."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_selection_args, add_store_args, fail, spec_from_args, sweep, sweep_errors


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="evaluate a backend under inference modes; write per-slice metrics CSV")
    add_selection_args(p)
    add_store_args(p)
    p.add_argument("--out", required=True, type=Path, help="CSV file to write")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """One CSV row per (slice, backend, mode) and a summary table; exit 3 when the store's disk is full."""
    import pandas as pd

    from ..analysis.summary import summary_table
    from ..metrics import METRIC_NAMES
    from ..store import ResultStore, StoreFullError

    full = None
    try:
        store, spec, job_id, counts, refs = sweep(args)
    except sweep_errors() as exc:
        return fail(str(exc).strip("'\""))
    except StoreFullError as exc:  # keep what was stored; write its rows, then say how to go on
        full, store, spec = exc, ResultStore(args.store), spec_from_args(args)
        job_id, counts, refs = spec.job_id(), None, [None]
    modes = spec.mode_list()
    df = store.metrics_frame(run_ids=[job_id])
    rank = {m: i for i, m in enumerate(modes)}
    df = df[df["mode"].isin(rank)]
    df = df.assign(_s=pd.factorize(df["slice_id"])[0], _m=df["mode"].map(rank)).sort_values(["_s", "_m"], kind="stable")
    fields = ["patient_id", "slice_id", "backend", "mode", *METRIC_NAMES, "seconds", "threshold", "tumour_px", "pred_px"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df[fields].to_csv(out, index=False)
    rows = df[fields].to_dict("records")
    print(summary_table(rows, modes))
    n_slices = df["slice_id"].nunique()
    print(f"wrote {len(rows)} rows for {n_slices} slices to {out}")
    if full is not None:
        print(f"error: {full.strerror}", file=sys.stderr)
        return 3
    if counts.errors:
        print(f"{len(counts.errors)} slice(s) failed:")
        for slice_id, error in counts.errors:
            print(f"  {slice_id}: {error}")
    return 0 if rows or not refs else 1
