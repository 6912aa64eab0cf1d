"""Argument helpers shared by the subcommands: the sweep selection, the store folder, and
turning parsed arguments into a :class:`~segunc.config.PipelineConfig` / :class:`~segunc.runner.jobs.JobSpec`.

Every flag default comes from ``PipelineConfig()`` (:data:`DEFAULTS`), so a default changes in one
place. Heavy imports (torch, pandas, the store) happen inside the functions that need them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import settings
from ..config import FUSION_SOURCES, FUSION_THRESHOLDS, FUSION_WEIGHTINGS, PLACEMENTS, TTA_SETS, PipelineConfig

#: the single source of the CLI's pipeline defaults
DEFAULTS = PipelineConfig()


def positive_int(text: str) -> int:
    """argparse ``type=``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def mode_list(text: str) -> str:
    """argparse ``type=``: a comma list naming at least one mode (checked against the registry later)."""
    if not [m for m in text.split(",") if m.strip()]:
        raise argparse.ArgumentTypeError("no mode given; name at least one, or leave --modes out for the paper's six")
    return text


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that sweeps slices."""
    d = DEFAULTS
    p.add_argument("--data", type=Path, default=None, help="LGG kaggle_3m folder (default: $SEGUNC_DATA or data/lgg/kaggle_3m)")
    p.add_argument("--backend", default="unet", help="unet | litemedsam | medsam | universeg")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint file (default: found in $SEGUNC_WEIGHTS or data/weights)")
    p.add_argument("--modes", type=mode_list, default=None, help="comma list of normal,mc_dropout,tta,noisy,box_jitter,fusion,crf (default: the paper's six)")
    p.add_argument("--split", default="val", choices=["train", "val", "test", "all"])
    p.add_argument("--all-slices", action="store_true", help="include slices without tumour (default: tumour slices only, as the paper)")
    p.add_argument("--limit", type=positive_int, default=None, help="first N slices only")
    p.add_argument("--spread", action="store_true", help="with --limit: N slices evenly spread over the split's patients")
    p.add_argument("--samples", type=positive_int, default=d.samples, help="T for mc_dropout / noisy / box_jitter (TTA uses its 30 transforms)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--support-data", type=Path, default=None, help="UniverSeg support slices (train split; default: --data)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (an error if CUDA is not available)")
    p.add_argument("--autocast", default="none", choices=["none", "bf16"], help="bf16 autocast on CUDA (part of the result key)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="samples per forward pass")
    p.add_argument("--p", type=float, default=d.p, help="MC dropout probability")
    p.add_argument("--placement", default=d.placement, choices=PLACEMENTS, help="MC dropout placement (MedSAM family)")
    p.add_argument("--sigma", type=float, default=d.sigma, help="noise σ relative to the image's intensity range")
    p.add_argument("--jitter-px", type=int, default=d.jitter_px, help="box_jitter: max corner offset in pixels")
    p.add_argument("--tta-set", default=d.tta_set, choices=TTA_SETS, help="TTA views: default = flip × scale "
                   "× gamma (30 distinct model inputs); paper = the literal flip × scale × gain set (identical inputs "
                   "computed once)")
    p.add_argument("--channels", default=None, help="input channels: flair3|rgb (MedSAM family), flair|luminance (UniverSeg)")
    p.add_argument("--box-margin", type=int, default=0, help="pixels added around the ground-truth box (MedSAM family)")
    p.add_argument("--fusion-weighting", default=d.fusion.weighting, choices=FUSION_WEIGHTINGS)
    p.add_argument("--fusion-threshold", default=d.fusion.threshold, choices=FUSION_THRESHOLDS)
    p.add_argument("--fusion-source", default=d.fusion.source, choices=FUSION_SOURCES)
    p.add_argument("--crf-iterations", type=int, default=d.crf.iterations)
    p.add_argument("--temperature", default=f"{d.temperature:g}",
                   help="logit temperature applied to every sample before averaging and fusion: a number, or 'fit' "
                        "(fitted by NLL on up to 64 val tumour slices, single pass; no retraining)")
    p.add_argument("--preset", default=None, choices=["paper"], help="the authors' settings where segunc's differ "
                   "(see docs/method.md); explicit flags still win")
    p.add_argument("--tuned", type=Path, default=None, help="tuned.json from `tune`: its temperature, fusion and CRF "
                   "settings replace the flags'")


def add_store_args(p: argparse.ArgumentParser) -> None:
    """``--store DIR`` (alias ``--cache``, its older name): the results store folder."""
    p.add_argument("--store", "--cache", dest="store", type=Path, default=None, metavar="DIR",
                   help="results store folder (default: $SEGUNC_CACHE or data/cache)")


def store_root(args: argparse.Namespace) -> Path:
    """The store folder named by ``--store`` / ``--cache``, else :func:`segunc.settings.store_dir`."""
    return settings.store_dir(getattr(args, "store", None))


def data_root(args: argparse.Namespace) -> Path:
    """The LGG folder named by ``--data``, else :func:`segunc.settings.data_dir`."""
    return settings.data_dir(getattr(args, "data", None))


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The flags' config, then ``--preset`` / ``--tuned`` applied (:mod:`segunc.runner.tune`)."""
    from ..config import CRFParams, FusionConfig
    from ..runner.tune import profile_config

    return profile_config(args, PipelineConfig(
        samples=args.samples, seed=args.seed, batch_size=args.batch_size, p=args.p, placement=args.placement,
        sigma=args.sigma, jitter_px=args.jitter_px, tta_set=getattr(args, "tta_set", DEFAULTS.tta_set),
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
    from ..temperature import fit_temperature_scaler
    from ..data import discover
    from ..runner.sweep import build_backend

    backend = build_backend(args.backend, args.weights, args.device, args.support_data, data, args.seed,
                            **backend_options(args))
    scaler = fit_temperature_scaler(backend, discover(data), config_from_args(args), max_slices=64)
    if args.split == "val":
        print("note: the temperature is fitted on the val split that is also evaluated (in-sample)", file=sys.stderr)
    print(f"temperature fitted on val tumour slices by NLL: T = {scaler.temperature_:.4f} ({scaler!r})", file=sys.stderr)
    args.temperature = repr(float(scaler.temperature_))


def backend_options(args: argparse.Namespace) -> dict:
    opts = {}
    if getattr(args, "autocast", "none") == "bf16":
        opts["precision"] = "bf16"
    if args.channels:
        opts["channels"] = args.channels
    if args.backend in ("litemedsam", "medsam"):
        opts["box_margin"] = args.box_margin
    from ..runner.tune import profile_options

    return profile_options(args, opts)


def fail(msg: str) -> int:
    """Print ``error: msg`` on stderr; exit code 2."""
    print(f"error: {msg}", file=sys.stderr)
    return 2


def csv_list(value: str | None) -> list[str] | None:
    """``"a, b,"`` → ``["a", "b"]``; empty or None → None."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def spec_from_args(args: argparse.Namespace):
    """The sweep of ``args`` as a :class:`segunc.runner.jobs.JobSpec` (a warning on stderr when ``--tuned``
    settings tuned on tumour slices only meet ``--all-slices``)."""
    from ..runner.jobs import JobSpec
    from ..runner.tune import tuned_doc, whole_volume_caveat

    if getattr(args, "tuned", None) is not None and getattr(args, "all_slices", False):
        caveat = whole_volume_caveat(tuned_doc(args))  # the file config_from_args reads below, read once
        if caveat:
            print(f"warning: {args.tuned}: {caveat}", file=sys.stderr)

    return JobSpec(data=data_root(args), backend=args.backend, weights=args.weights, modes=args.modes,
                   split=args.split, all_slices=args.all_slices, limit=args.limit, spread=bool(getattr(args, 'spread', False)),
                   config=config_from_args(args),
                   backend_options=backend_options(args), device=args.device, support_data=args.support_data,
                   keep_samples=bool(getattr(args, "keep_samples", False)) or None, profile=profile_name(args))


def profile_name(args: argparse.Namespace) -> str | None:
    """The label of ``--preset`` / ``--tuned`` (e.g. "tuned on val (tuned.json)"), recorded with the run."""
    from ..runner.tune import profile_name as name

    return name(args)


def sweep(args: argparse.Namespace):
    """Validate the selection, open the store, run the sweep through it: (store, spec, job id, counts, refs)."""
    from ..backends import BACKENDS
    from ..runner.sweep import parse_modes, select_slices
    from ..runner.worker import run_sweep
    from ..store import ResultStore

    data = data_root(args)
    refs = select_slices(data, args.split, args.all_slices, args.limit, spread=args.spread)
    if not refs:
        raise ValueError(f"{data}: no slices in split '{args.split}'" + ("" if args.all_slices else " with tumour"))
    parse_modes(args.modes)
    BACKENDS.get(args.backend)  # unknown backend: fail before touching the store
    fit_temperature_arg(args, data)
    spec = spec_from_args(args)
    store = ResultStore(args.store)
    executor, threads = None, getattr(args, "threads", None)
    if getattr(args, "executor", "local") == "ray":
        from ..runner.ray_executor import RayExecutor

        executor = RayExecutor(address=args.ray_address, threads=threads)
    elif threads:
        import torch

        torch.set_num_threads(threads)
    _print_estimate(spec, store, refs, executor)
    t0 = time.perf_counter()
    job_id, counts = run_sweep(store, spec, refs=refs, progress=True, executor=executor)
    print(f"took {_minutes(time.perf_counter() - t0)}", file=sys.stderr)
    return store, spec, job_id, counts, refs


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _print_estimate(spec, store, refs, executor) -> None:
    """One line before a sweep: what is left to compute and how long it should take (stderr)."""
    from ..runner.jobs import estimate_cost

    try:
        cost = estimate_cost(spec, store=store, refs=refs)
    except Exception:  # noqa: BLE001 - an estimate never stops a sweep
        return
    where = "" if executor is None else " (estimated for one local process; a cluster divides it)"
    basis = {"measured": "measured on this machine", "default": "a default guess: no sweep measured yet",
             "given": "given timings"}.get(cost["source"], cost["source"])
    print(f"estimate: {cost['todo']} of {cost['todo'] + cost['held']} results to compute, "
          f"{cost['human']} ({cost['seconds']:.0f} s; {basis}){where}", file=sys.stderr)


def sweep_errors() -> tuple:
    """The exceptions a bad selection raises (reported as ``error: ...``, exit code 2)."""
    from ..backends import WeightsError
    from ..data import DataError

    return (DataError, WeightsError, ValueError, KeyError)
