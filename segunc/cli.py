"""Command line: ``python -m segunc <command>``.

``evaluate`` runs one backend under several inference modes on LGG slices and writes one
CSV row per (slice, backend, mode). ``run`` computes a sweep into the results store (only what
is missing), ``worker`` executes queued sweeps in the background, ``export`` writes stored
rows as CSV / Parquet and ``gc`` cleans the store. ``evaluate`` goes through the store too.
"""
from __future__ import annotations

import argparse
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
    p.add_argument("--spread", action="store_true", help="with --limit: N slices evenly spread over the split's patients")
    p.add_argument("--samples", type=int, default=30, help="T for mc_dropout / noisy / box_jitter (TTA uses its 30 transforms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--support-data", type=Path, default=None, help="UniverSeg support slices (train split; default: --data)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16, help="samples per forward pass")
    p.add_argument("--p", type=float, default=0.01, help="MC dropout probability")
    p.add_argument("--placement", default="all", choices=["all", "decoder"], help="MC dropout placement (MedSAM family)")
    p.add_argument("--sigma", type=float, default=0.01, help="noise σ relative to the image's intensity range")
    p.add_argument("--jitter-px", type=int, default=10, help="box_jitter: max corner offset in pixels")
    p.add_argument("--tta-set", default="default", choices=["default", "paper"], help="TTA views: default = flip × scale "
                   "× gamma (30 distinct model inputs); paper = the literal flip × scale × gain set (6 distinct inputs)")
    p.add_argument("--channels", default=None, help="input channels: flair3|rgb (MedSAM family), flair|luminance (UniverSeg)")
    p.add_argument("--box-margin", type=int, default=0, help="pixels added around the ground-truth box (MedSAM family)")
    p.add_argument("--fusion-weighting", default="inverse", choices=["inverse", "exponential", "power", "certainty_power"])
    p.add_argument("--fusion-threshold", default="fixed", choices=["fixed", "otsu", "percentile", "mean_std"])
    p.add_argument("--fusion-source", default="modes", choices=["modes", "samples"])
    p.add_argument("--crf-iterations", type=int, default=5)
    p.add_argument("--temperature", default="1", help="logit temperature applied to every sample before averaging and "
                   "fusion: a number, or 'fit' (fitted by NLL on up to 64 val tumour slices, single pass; no retraining)")
    p.add_argument("--preset", default=None, choices=["paper"], help="the authors' settings where segunc's differ "
                   "(see docs/method.md); explicit flags still win")
    p.add_argument("--tuned", type=Path, default=None, help="tuned.json from `tune`: its temperature, fusion and CRF "
                   "settings replace the flags'")


def config_from_args(args: argparse.Namespace):
    from .config import FusionConfig, PipelineConfig
    from .refine.crf import CRFParams

    from .runner.tune import profile_config

    return profile_config(args, PipelineConfig(
        samples=args.samples, seed=args.seed, batch_size=args.batch_size, p=args.p, placement=args.placement,
        sigma=args.sigma, jitter_px=args.jitter_px, tta_set=getattr(args, "tta_set", "default"),
        fusion=FusionConfig(source=args.fusion_source, weighting=args.fusion_weighting, threshold=args.fusion_threshold),
        crf=CRFParams(iterations=args.crf_iterations), temperature=_temperature(args),
    ))


def _temperature(args: argparse.Namespace) -> float:
    value = getattr(args, "temperature", "1")
    if value == "fit":
        return 1.0  # until fit_temperature_arg() has replaced it
    try:
        t = float(value)
    except ValueError:
        raise ValueError(f"--temperature must be a positive number or 'fit', not {value!r}") from None
    if not t > 0:
        raise ValueError(f"--temperature must be positive, not {value!r}")
    return t


def fit_temperature_arg(args: argparse.Namespace, data) -> None:
    """``--temperature fit``: fit T by NLL on val tumour slices (single pass) and put it in ``args``."""
    if getattr(args, "temperature", "1") != "fit":
        return
    from .calibration import fit_temperature_scaler
    from .data import discover
    from .runner.sweep import build_backend

    backend = build_backend(args.backend, args.weights, args.device, args.support_data, data, args.seed,
                            **backend_options(args))
    scaler = fit_temperature_scaler(backend, discover(data), config_from_args(args), max_slices=64)
    if args.split == "val":
        print("note: the temperature is fitted on the val split that is also evaluated (in-sample)", file=sys.stderr)
    print(f"temperature fitted on val tumour slices by NLL: T = {scaler.temperature_:.4f} ({scaler!r})", file=sys.stderr)
    args.temperature = repr(float(scaler.temperature_))


def backend_options(args: argparse.Namespace) -> dict:
    opts = {}
    if args.channels:
        opts["channels"] = args.channels
    if args.backend in ("litemedsam", "medsam"):
        opts["box_margin"] = args.box_margin
    from .runner.tune import profile_options

    return profile_options(args, opts)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, default=None, help="results store folder (default: $SEGUNC_CACHE or data/cache)")


def spec_from_args(args: argparse.Namespace):
    """The sweep of ``args`` as a :class:`segunc.runner.jobs.JobSpec`."""
    from .runner.jobs import JobSpec

    return JobSpec(data=args.data or default_data(), backend=args.backend, weights=args.weights, modes=args.modes,
                   split=args.split, all_slices=args.all_slices, limit=args.limit, spread=bool(getattr(args, 'spread', False)),
                   config=config_from_args(args),
                   backend_options=backend_options(args), device=args.device, support_data=args.support_data,
                   keep_samples=bool(getattr(args, "keep_samples", False)) or None, profile=_profile(args))


def _profile(args: argparse.Namespace) -> str | None:
    from .runner.tune import profile_name

    return profile_name(args)


def _sweep(args: argparse.Namespace):
    """Validate the selection, open the store, run the sweep through it: (store, spec, job id, counts, refs)."""
    from .runner.sweep import parse_modes, select_slices
    from .runner.worker import run_sweep
    from .store import ResultStore

    data = args.data or default_data()
    refs = select_slices(data, args.split, args.all_slices, args.limit, spread=args.spread)
    if not refs:
        raise ValueError(f"{data}: no slices in split '{args.split}'" + ("" if args.all_slices else " with tumour"))
    parse_modes(args.modes)
    from .backends import BACKENDS

    BACKENDS.get(args.backend)  # unknown backend: fail before touching the store
    fit_temperature_arg(args, data)
    spec = spec_from_args(args)
    store = ResultStore(args.cache)
    job_id, counts = run_sweep(store, spec, refs=refs, progress=True)
    return store, spec, job_id, counts, refs


def _sweep_errors() -> tuple:
    from .backends import WeightsError
    from .data import DataError

    return (DataError, WeightsError, ValueError, KeyError)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Sweep through the store (computing only what it lacks), then write this sweep's rows as CSV."""
    import pandas as pd

    from .metrics import METRIC_NAMES
    from .summary import summary_table

    from .store import ResultStore, StoreFullError

    full = None
    try:
        store, spec, job_id, counts, refs = _sweep(args)
    except _sweep_errors() as exc:
        return _fail(str(exc).strip("'\""))
    except StoreFullError as exc:  # keep what was stored; write its rows, then say how to go on
        full, store, spec = exc, ResultStore(args.cache), spec_from_args(args)
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


def cmd_run(args: argparse.Namespace) -> int:
    """Compute a sweep into the store; last line ``DONE computed=N skipped=M failed=K``."""
    if args.background:
        from .runner.jobs import ensure_worker, estimate_cost, submit_job
        from .store import ResultStore

        try:
            fit_temperature_arg(args, args.data or default_data())
            spec = spec_from_args(args)
            store = ResultStore(args.cache)
            job_id = submit_job(store, spec)
            cost = estimate_cost(spec, store=store)
        except _sweep_errors() as exc:
            return _fail(str(exc).strip("'\""))
        alive = ensure_worker(store.root, args.device)
        print(f"job {job_id} queued ({cost['slices']} slices, {cost['human']}); worker {'running' if alive else 'NOT started'}")
        return 0 if alive else 1
    from .store import StoreFullError

    try:
        store, spec, job_id, counts, refs = _sweep(args)
    except _sweep_errors() as exc:
        return _fail(str(exc).strip("'\""))
    except StoreFullError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 3
    print(f"job {job_id}: {len(refs)} slices x {len(spec.mode_list())} modes in {store.root}")
    for slice_id, error in counts.errors:
        print(f"FAILED {slice_id}: {error}")
    print(counts.line())
    return 0 if counts.computed + counts.skipped or not refs else 1


def cmd_worker(args: argparse.Namespace) -> int:
    import time

    from .runner.worker import worker_loop
    from .store import default_cache_dir

    root = Path(args.cache or default_cache_dir()).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return worker_loop(root, args.device, idle_exit=args.idle_exit, poll=args.poll,
                       log=lambda msg: print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True))


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_export(args: argparse.Namespace) -> int:
    from .store import ResultStore

    store = ResultStore(args.cache)
    try:
        n = store.export(args.out, args.format, backends=_csv(args.backend), modes=_csv(args.modes),
                         slice_ids=_csv(args.slices), run_ids=_csv(args.run))
    except ValueError as exc:
        return _fail(str(exc))
    print(f"exported {n} rows to {args.out}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from .store import ResultStore

    store = ResultStore(args.cache)
    report = store.gc(grace_s=args.grace, verify=args.verify)
    print(" ".join(f"{k}={v}" for k, v in {**report, **store.stats()}.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segunc", description="Uncertainty for pretrained segmentation models.")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="evaluate a backend under inference modes; write per-slice metrics CSV")
    add_selection_args(ev)
    add_store_args(ev)
    ev.add_argument("--out", required=True, type=Path, help="CSV file to write")
    ev.set_defaults(func=cmd_evaluate)

    run = sub.add_parser("run", help="compute a sweep into the results store (only what is missing)")
    add_selection_args(run)
    add_store_args(run)
    run.add_argument("--keep-samples", action="store_true", help="also store the T sample maps (float16)")
    run.add_argument("--background", action="store_true", help="queue it for the background worker (started if needed)")
    run.set_defaults(func=cmd_run)

    wk = sub.add_parser("worker", help="execute queued sweeps one at a time (one worker per device)")
    add_store_args(wk)
    wk.add_argument("--device", default="cpu")
    wk.add_argument("--idle-exit", type=float, default=None, help="exit after this many seconds without jobs")
    wk.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the queue")
    wk.set_defaults(func=cmd_worker)

    ex = sub.add_parser("export", help="write stored metric rows as CSV or Parquet")
    add_store_args(ex)
    ex.add_argument("--out", required=True, type=Path, help=".csv or .parquet file")
    ex.add_argument("--format", default=None, choices=["csv", "parquet"], help="default: from the file suffix")
    ex.add_argument("--backend", default=None, help="comma list of backends")
    ex.add_argument("--modes", default=None, help="comma list of modes")
    ex.add_argument("--slices", default=None, help="comma list of slice ids")
    ex.add_argument("--run", default=None, help="comma list of run (job) ids")
    ex.set_defaults(func=cmd_export)

    gc = sub.add_parser("gc", help="remove orphan map files; --verify also drops corrupt results")
    add_store_args(gc)
    gc.add_argument("--grace", type=float, default=3600.0, help="keep unreferenced files younger than this (seconds)")
    gc.add_argument("--verify", action="store_true", help="check every stored map file (checksum, decode)")
    gc.set_defaults(func=cmd_gc)
    tu = sub.add_parser("tune", help="choose temperature, fusion, threshold and CRF on val (writes tuned.json)")
    add_selection_args(tu)
    add_store_args(tu)
    tu.add_argument("--out", required=True, type=Path, help="tuned.json to write")
    tu.set_defaults(func=lambda a: __import__("segunc.runner.tune", fromlist=["cmd_tune"]).cmd_tune(a))
    from .fetch import add_fetch_parser; add_fetch_parser(sub)  # noqa: E702  (segunc/fetch.py)
    from .snapshot import add_snapshot_parser; add_snapshot_parser(sub)  # noqa: E702  (segunc/snapshot.py)
    from .access import add_passwd_parser; add_passwd_parser(sub)  # noqa: E702  (segunc/access.py)
    from .report import add_report_parser; add_report_parser(sub)  # noqa: E702  (segunc/report/)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .presets import explicit_flags

    args.explicit = explicit_flags(sys.argv[1:] if argv is None else argv)  # --preset skips these
    return args.func(args)
