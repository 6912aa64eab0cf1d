"""Tune the post-processing on val (paper §4: the val split tunes thresholding / CRF, test evaluates).

``tune`` runs the fusion's sampling modes once into the results store with their T samples
(``keep_samples``; a second tune of the same selection computes nothing), then scores every
candidate from the stored samples, without running the model again:

1. temperature τ (applied to every sample's logit, as ``--temperature``): :data:`TEMPERATURES`;
2. fusion weighting and its λ / α: :data:`WEIGHTINGS`;
3. threshold method and its parameter: :data:`THRESHOLDS`;
4. CRF parameters (scored on the ``crf`` output): :data:`CRF_CANDIDATES`.

Steps run in this order, each with the choices of the steps before it (coordinate search).
Objective: τ, a calibration parameter, by the lowest mean NLL of the fused map (on 2 val slices
the Dice-first rule picked τ = 3 for +0.011 Dice at 4× the NLL of τ = 1.25); every other step by
the highest mean Dice over the slices, candidates within :data:`DICE_TOL` of it counting as tied
and the lowest mean NLL among them winning, then the higher Dice (threshold candidates share one
probability map, so they always tie on NLL; list order must not decide).

Samples are stored as float16 probabilities; a τ ≠ 1 candidate re-derives logits from them
(clipped to [2⁻²⁴, 1 − 2⁻¹¹]), so a saturated pixel's logit is capped at ±7.6 there. The
chosen τ is then applied to exact logits by ``evaluate --tuned``.

``tuned.json`` holds the chosen ``settings``, every candidate's val scores, the backend and
options, the weights' sha256, the slices used and the sweep (job id, results computed).
:func:`apply_tuned` puts the settings into a :class:`~segunc.config.PipelineConfig`, so they
are part of every affected result key.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import PipelineConfig
from ..refine.crf import CRFParams

__all__ = ["TuneError", "tune", "apply_tuned", "load_tuned", "find_tuned", "tuned_label", "whole_volume_caveat",
           "TUNED_FOLDER",
           "TEMPERATURES", "WEIGHTINGS", "THRESHOLDS",
           "CRF_CANDIDATES", "DICE_TOL"]

DICE_TOL = 0.002
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
WEIGHTINGS: tuple[tuple[str, dict], ...] = (
    ("inverse", {}), ("exponential", {"lam": 1.0}), ("exponential", {"lam": 5.0}), ("exponential", {"lam": 10.0}),
    ("exponential", {"lam": 20.0}), ("power", {"alpha": 0.5}), ("power", {"alpha": 2.0}),
    ("certainty_power", {"alpha": 1.0}), ("certainty_power", {"alpha": 4.0}))
THRESHOLDS: tuple[tuple[str, dict], ...] = (
    *(("fixed", {"value": v}) for v in (0.3, 0.4, 0.5, 0.6, 0.7)), ("otsu", {}),
    *(("percentile", {"q": q}) for q in (50.0, 90.0, 95.0, 99.0)), *(("mean_std", {"k": k}) for k in (0.5, 1.0, 2.0)))
#: CRF settings tried (CRFParams fields; the rest at their defaults): the default, the former default
#: (bilateral 10 + Gaussian 3), the authors' bilateral-only form, and weaker / wider variants.
CRF_CANDIDATES: tuple[dict, ...] = (
    {}, {"compat_bilateral": 10.0, "compat_gaussian": 3.0}, {"compat_bilateral": 10.0, "compat_gaussian": 0.0},
    {"compat_bilateral": 3.0, "compat_gaussian": 0.0}, {"compat_bilateral": 1.0, "compat_gaussian": 0.0},
    {"compat_bilateral": 3.0, "compat_gaussian": 0.0, "sdims": 20.0, "schan": 13.0})


class TuneError(ValueError):
    """A tune request that cannot be honoured (e.g. the test split)."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 2.0 ** -24, 1.0 - 2.0 ** -11)
    return np.log(p) - np.log1p(-p)


def _with_temperature(samples: np.ndarray, t: float) -> np.ndarray:
    if t == 1.0:
        return samples
    return (1.0 / (1.0 + np.exp(-_logit(samples) / t))).astype(np.float32)  # NaN (unobserved) stays NaN


@dataclasses.dataclass
class _Slice:
    slice_id: str
    image: np.ndarray
    target: np.ndarray
    samples: dict[str, np.ndarray]  # mode → T H W float32 probabilities


def _fused(sl: _Slice, config: PipelineConfig, cache: dict) -> dict[str, np.ndarray]:
    from ..pipeline import _maps_from_probs
    from ..postprocess.fusion import fuse_mode_maps, fuse_samples

    f = config.fusion
    key = (sl.slice_id, config.temperature, f.weighting, f.lam, f.alpha)
    if key not in cache:
        t = config.temperature
        if f.source == "samples":
            cache[key] = fuse_samples(_with_temperature(sl.samples[f.sample_mode], t), config)
        else:
            comps = [_maps_from_probs(_with_temperature(sl.samples[m], t)) for m in f.sources]
            cache[key] = fuse_mode_maps(comps, config)
    return cache[key]


def _score(slices: Sequence[_Slice], config: PipelineConfig, stage: str, cache: dict) -> dict[str, float]:
    """Mean metrics of the ``fusion`` or ``crf`` output over ``slices`` under ``config``."""
    from ..fusion import binarize
    from ..metrics import compute_metrics
    from ..refine.crf import dense_crf
    from ..uncertainty import binary_entropy

    rows = []
    for sl in slices:
        m = _fused(sl, config, cache)
        if stage == "fusion":
            f = config.fusion
            pred = binarize(m["mean"], f.threshold, **f.threshold_kwargs())
            rows.append(compute_metrics(m["mean"], sl.target, uncertainty=m["entropy"], pred=pred))
        else:
            q = dense_crf(m["mean"], sl.image, **config.crf.as_dict())
            rows.append(compute_metrics(q, sl.target, uncertainty=binary_entropy(q), pred=q >= 0.5))
    return {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "nll", "ece", "brier", "certainty")}


def _best(cands: list[dict], objective: str = "dice") -> dict:
    if objective == "nll":
        return min(cands, key=lambda c: c["nll"])
    top = max(c["dice"] for c in cands)
    return min((c for c in cands if c["dice"] >= top - DICE_TOL), key=lambda c: (c["nll"], -c["dice"]))


def _search(slices, base: PipelineConfig, log: Callable[[str], None]) -> tuple[PipelineConfig, list[dict]]:
    cache: dict = {}
    table: list[dict] = []
    config = base

    def step(name: str, stage: str, options: list[tuple[dict, PipelineConfig]], objective: str = "dice") -> PipelineConfig:
        cands = []
        for params, cfg in options:
            t0 = time.perf_counter()
            s = _score(slices, cfg, stage, cache)
            cands.append({"step": name, "stage": stage, "params": params, **s, "seconds": time.perf_counter() - t0,
                          "_cfg": cfg})
            log(f"{name:12s} {json.dumps(params):48s} dice {s['dice']:.4f} nll {s['nll']:.4f} ece {s['ece']:.4f}")
        best = _best(cands, objective)
        for c in cands:
            c["chosen"] = c is best
            table.append({k: v for k, v in c.items() if k != "_cfg"})
        return best["_cfg"]

    rep = dataclasses.replace
    config = step("temperature", "fusion", [({"temperature": t}, rep(config, temperature=float(t))) for t in TEMPERATURES],
                  objective="nll")
    config = step("weighting", "fusion", [({"weighting": w, **p}, rep(config, fusion=rep(config.fusion, weighting=w, **p)))
                                          for w, p in WEIGHTINGS])
    config = step("threshold", "fusion", [({"threshold": m, "threshold_params": p},
                                           rep(config, fusion=rep(config.fusion, threshold=m, threshold_params=dict(p))))
                                          for m, p in THRESHOLDS])
    crfs = [CRFParams(**p) for p in CRF_CANDIDATES]
    config = step("crf", "crf", [(c.as_dict(), rep(config, crf=c)) for c in dict.fromkeys(crfs)])
    return config, table


def settings_of(config: PipelineConfig) -> dict[str, Any]:
    """The tuned part of a config, as stored in ``tuned.json``."""
    f = config.fusion
    return {"temperature": config.temperature,
            "fusion": {"weighting": f.weighting, "lam": f.lam, "alpha": f.alpha, "threshold": f.threshold,
                       "threshold_params": dict(f.threshold_params)},
            "crf": config.crf.as_dict()}


def tune(store, spec, *, out: Path | str | None = None, refs: list | None = None, progress: bool = False,
         log: Callable[[str], None] = lambda s: None) -> dict:
    """Tune on ``spec``'s slices (a :class:`~segunc.runner.jobs.JobSpec`, split val); write ``out``.

    Returns the tuned.json document; ``doc["sweep"]["computed"]`` is how many (slice, mode) results
    the model had to compute (0 when the store already held them)."""
    from ..data.lgg import load_slice
    from .sweep import select_slices
    from .worker import run_sweep

    if spec.split != "val":
        raise TuneError(f"tune selects post-processing on the val split only (paper §4), not on '{spec.split}': "
                        "tuning on test would make the test scores in-sample")
    base = dataclasses.replace(spec.pipeline_config(), temperature=1.0, keep_samples=True)
    f = base.fusion
    modes = [f.sample_mode] if f.source == "samples" else list(f.sources)
    sweep_spec = dataclasses.replace(spec, modes=modes, config=base, keep_samples=True, samples=None)
    if refs is None:
        refs = select_slices(sweep_spec.data_root(), spec.split, spec.all_slices, spec.limit, spec.patients, spec.spread)
    if not refs:
        raise TuneError(f"{spec.data}: no val slices to tune on")
    job_id, counts = run_sweep(store, sweep_spec, refs=refs, progress=progress)
    rows = store.con.execute("SELECT r.key, r.slice_id, r.mode FROM run_results rr JOIN results r ON r.key = rr.key "
                             "WHERE rr.run_id = ?", (job_id,)).fetchall()
    keys: dict[str, dict[str, str]] = {}
    for key, sid, mode in rows:
        keys.setdefault(sid, {})[mode] = key
    slices = []
    for ref in refs:
        have = keys.get(ref.slice_id, {})
        if any(m not in have for m in modes):
            continue  # failed slice (its error is in counts.errors)
        s = load_slice(ref)
        slices.append(_Slice(ref.slice_id, s.image, s.mask, {m: store.load_samples(have[m]) for m in modes}))
    if not slices:
        raise TuneError("no slice could be evaluated: " + "; ".join(e for _, e in counts.errors[:3]))
    t0 = time.perf_counter()
    chosen, table = _search(slices, base, log)
    doc = {
        "profile": "tuned on val",
        "tuned_at": time.time(),
        "objective": f"temperature: min mean NLL of the fused map; weighting, threshold, crf: max mean Dice, "
                     f"candidates within {DICE_TOL} of the best tied, lowest mean NLL wins, then highest Dice; steps in order "
                     "temperature → weighting → threshold → crf, each given the earlier choices",
        "settings": settings_of(chosen),
        "backend": spec.backend, "backend_options": dict(spec.backend_options),
        "weights": spec.weights_path(), "weights_sha256": spec.weights_sha256(),
        "data": str(sweep_spec.data_root()), "split": spec.split, "all_slices": bool(spec.all_slices),
        "slices": [s.slice_id for s in slices], "failed_slices": [sid for sid, _ in counts.errors],
        "sampling": {"modes": modes, "samples": base.samples, "seed": base.seed, "p": base.p, "sigma": base.sigma,
                     "placement": base.placement},
        "sweep": {"job_id": job_id, "store": str(store.root), "computed": counts.computed, "skipped": counts.skipped},
        "search_seconds": round(time.perf_counter() - t0, 2),
        "candidates": table,
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1, default=float))
    return doc


def whole_volume_caveat(doc: dict) -> str | None:
    """Why settings tuned on tumour slices only (the default, as the paper evaluates) should not be
    applied to slices without tumour, or None when they may. A data-derived threshold (Otsu, percentile,
    mean + k·SD) always splits the fused map, so on a tumour-free slice it marks the top of the
    background (measured in ``docs/method.md`` §5). ``tune --all-slices`` scores candidates on such
    slices too."""
    from ..fusion import DATA_THRESHOLDS

    threshold = (doc.get("settings") or {}).get("fusion", {}).get("threshold")
    if doc.get("all_slices") or threshold not in DATA_THRESHOLDS:
        return None
    return (f"these settings were tuned on tumour slices only and use the data-derived '{threshold}' threshold, "
            "which marks part of the background of a slice without tumour as tumour (fusion); tune with "
            "--all-slices to apply settings to whole volumes")


def load_tuned(path: Path | str) -> dict:
    """Read and check a tuned.json; a clear ValueError naming the file if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read tuned settings ({exc})") from None
    s = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(s, dict) or not {"temperature", "fusion", "crf"} <= set(s):
        raise ValueError(f"{path}: not a tuned.json (needs settings.temperature, settings.fusion, settings.crf)")
    return doc


def apply_tuned(config: PipelineConfig, doc: dict, backend: str | None = None, weights_sha256: str | None = None,
                source: str = "tuned.json") -> PipelineConfig:
    """``config`` with the tuned temperature, fusion and CRF settings. Refuses settings tuned for
    another backend or other weights (they were chosen for that model's outputs)."""
    if backend is not None and doc.get("backend") not in (None, backend):
        raise ValueError(f"{source}: tuned for backend '{doc['backend']}', not '{backend}'")
    if weights_sha256 not in (None, "missing") and doc.get("weights_sha256") not in (None, "missing", weights_sha256):
        raise ValueError(f"{source}: tuned for other weights (sha256 {doc['weights_sha256'][:12]}…, "
                         f"these are {weights_sha256[:12]}…)")
    s = doc["settings"]
    f = dict(s["fusion"])
    f["threshold_params"] = dict(f.get("threshold_params") or {})
    try:
        return dataclasses.replace(config, temperature=float(s["temperature"]),
                                   fusion=dataclasses.replace(config.fusion, **f), crf=CRFParams(**s["crf"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: invalid tuned settings ({exc})") from None


#: the store's subfolder the app looks in for tuned profiles (``tune --out <store>/tuned/NAME.json``)
TUNED_FOLDER = "tuned"


def tuned_label(path: Path | str) -> str:
    """The run's profile label for settings from ``path``: ``tuned on val (<file name>)``."""
    return f"tuned on val ({Path(path).name})"


def find_tuned(store_root: Path | str) -> list[dict]:
    """The tuned profiles the app offers: ``*.json`` in ``<store>/tuned/`` and ``tuned*.json`` in the store
    folder and beside it, each ``{path, doc, tuned_at}`` (``tuned_at``: the file's ``tuned_at``, else its
    modification time), newest first. Files that are not a tuned.json are left out."""
    root = Path(store_root)
    paths = [*sorted((root / TUNED_FOLDER).glob("*.json")), *sorted(root.glob("tuned*.json")),
             *sorted(root.parent.glob("tuned*.json"))]
    out = []
    for path in dict.fromkeys(p.resolve() for p in paths if p.is_file()):
        try:
            doc = load_tuned(path)
        except ValueError:
            continue
        when = doc.get("tuned_at")
        out.append({"path": path, "doc": doc,
                    "tuned_at": float(when) if isinstance(when, (int, float)) else path.stat().st_mtime})
    return sorted(out, key=lambda e: -e["tuned_at"])


# ------------------------------------------------------------------ command-line glue (thin)
def tuned_doc(args) -> dict | None:
    """The tuned.json of ``--tuned`` (None without it), read once per parsed command line."""
    path = getattr(args, "tuned", None)
    if path is None:
        return None
    cached = getattr(args, "_tuned_doc", None)
    if cached is None:
        cached = load_tuned(path)
        args._tuned_doc = cached
    return cached


def profile_config(args, config: PipelineConfig) -> PipelineConfig:
    """``--preset`` (before explicit flags), then ``--tuned`` (replaces temperature, fusion, CRF)."""
    from ..presets import apply_preset

    if getattr(args, "preset", None):
        config, _ = apply_preset(args.preset, args.backend, config, {}, getattr(args, "explicit", ()))
    doc = tuned_doc(args)
    if doc is not None:
        from .jobs import JobSpec

        sha = JobSpec(backend=args.backend, weights=args.weights).weights_sha256()
        config = apply_tuned(config, doc, backend=args.backend, weights_sha256=sha, source=str(args.tuned))
    return config


def profile_options(args, options: dict) -> dict:
    """Backend options with ``--preset``'s applied (explicit ``--channels`` wins)."""
    from ..presets import apply_preset

    if getattr(args, "preset", None):
        _, options = apply_preset(args.preset, args.backend, PipelineConfig(), options, getattr(args, "explicit", ()))
    return options


def profile_name(args) -> str | None:
    """What the run row records: ``preset:paper``, ``tuned on val (<file>)``, both, or None."""
    parts = []
    if getattr(args, "preset", None):
        parts.append(f"preset:{args.preset}")
    if getattr(args, "tuned", None) is not None:
        parts.append(tuned_label(args.tuned))
    return " + ".join(parts) or None
