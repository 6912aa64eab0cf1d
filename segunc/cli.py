"""Command line: ``python -m segunc <command>``.

``evaluate`` runs one backend under several inference modes on LGG slices and writes one
CSV row per (slice, backend, mode).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_DATA = Path("data/lgg/kaggle_3m")


def default_data() -> Path:
    """``$SEGUNC_DATA`` or ``data/lgg/kaggle_3m``."""
    return Path(os.environ.get("SEGUNC_DATA", DEFAULT_DATA))


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that sweeps slices."""
    p.add_argument("--data", type=Path, default=None, help="LGG kaggle_3m folder (default: $SEGUNC_DATA or data/lgg/kaggle_3m)")
    p.add_argument("--backend", default="unet", help="unet | litemedsam | medsam | universeg")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint file (default: found in $SEGUNC_WEIGHTS or data/weights)")
    p.add_argument("--modes", default=None, help="comma list of normal,mc_dropout,tta,noisy,box_jitter,fusion,crf (default: the paper's six)")
    p.add_argument("--split", default="val", choices=["train", "val", "test", "all"])
    p.add_argument("--all-slices", action="store_true", help="include slices without tumour (default: tumour slices only, as the paper)")
    p.add_argument("--limit", type=int, default=None, help="first N slices only")
    p.add_argument("--samples", type=int, default=30, help="T for mc_dropout / noisy / box_jitter (TTA uses its 30 transforms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--support-data", type=Path, default=None, help="UniverSeg support slices (train split; default: --data)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16, help="samples per forward pass")
    p.add_argument("--p", type=float, default=0.01, help="MC dropout probability")
    p.add_argument("--placement", default="all", choices=["all", "decoder"], help="MC dropout placement (MedSAM family)")
    p.add_argument("--sigma", type=float, default=0.05, help="noise σ relative to the image's intensity range")
    p.add_argument("--jitter-px", type=int, default=10, help="box_jitter: max corner offset in pixels")
    p.add_argument("--channels", default=None, help="input channels: flair3|rgb (MedSAM family), flair|luminance (UniverSeg)")
    p.add_argument("--box-margin", type=int, default=0, help="pixels added around the ground-truth box (MedSAM family)")
    p.add_argument("--fusion-weighting", default="inverse", choices=["inverse", "exponential", "power"])
    p.add_argument("--fusion-threshold", default="fixed", choices=["fixed", "otsu", "percentile", "mean_std"])
    p.add_argument("--fusion-source", default="modes", choices=["modes", "samples"])
    p.add_argument("--crf-iterations", type=int, default=5)


def config_from_args(args: argparse.Namespace):
    from .config import FusionConfig, PipelineConfig
    from .refine.crf import CRFParams

    return PipelineConfig(
        samples=args.samples, seed=args.seed, batch_size=args.batch_size, p=args.p, placement=args.placement,
        sigma=args.sigma, jitter_px=args.jitter_px,
        fusion=FusionConfig(source=args.fusion_source, weighting=args.fusion_weighting, threshold=args.fusion_threshold),
        crf=CRFParams(iterations=args.crf_iterations),
    )


def backend_options(args: argparse.Namespace) -> dict:
    opts = {}
    if args.channels:
        opts["channels"] = args.channels
    if args.backend in ("litemedsam", "medsam"):
        opts["box_margin"] = args.box_margin
    return opts


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .backends import WeightsError
    from .data import DataError
    from .metrics import METRIC_NAMES
    from .runner.sweep import build_backend, iter_sweep, parse_modes, select_slices
    from .summary import summary_table

    data = args.data or default_data()
    try:
        refs = select_slices(data, args.split, args.all_slices, args.limit)
        if not refs:
            return _fail(f"{data}: no slices in split '{args.split}'" + ("" if args.all_slices else " with tumour"))
        backend = build_backend(args.backend, args.weights, args.device, args.support_data, data, args.seed,
                                **backend_options(args))
        modes = parse_modes(args.modes, backend)
    except (DataError, WeightsError, ValueError, KeyError) as exc:
        return _fail(str(exc).strip("'\""))
    config = config_from_args(args)
    torch.set_grad_enabled(False)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["patient_id", "slice_id", "backend", "mode", *METRIC_NAMES, "seconds", "threshold", "tumour_px", "pred_px"]
    rows, failures = [], []
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        bar = tqdm(refs, desc=f"{backend.name} × {len(modes)} modes", unit="slice", file=sys.stderr)
        for outcome in iter_sweep(backend, bar, modes, config):
            if outcome.error:
                failures.append(outcome)
                bar.write(f"FAILED {outcome.ref.slice_id}: {outcome.error}")
                continue
            for res in outcome.results.values():
                row = res.row(backend.name)
                writer.writerow(row)
                rows.append(row)
            fh.flush()
    print(summary_table(rows, modes))
    print(f"wrote {len(rows)} rows for {len(refs) - len(failures)} slices to {out}")
    if failures:
        print(f"{len(failures)} slice(s) failed:")
        for f in failures:
            print(f"  {f.ref.slice_id}: {f.error}")
    return 0 if rows or not refs else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segunc", description="Uncertainty for pretrained segmentation models.")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="evaluate a backend under inference modes; write per-slice metrics CSV")
    add_selection_args(ev)
    ev.add_argument("--out", required=True, type=Path, help="CSV file to write")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
