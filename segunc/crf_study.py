"""Dense-CRF parameter study on val: does the CRF keep small predicted tumours?

Two steps, so the grid never re-runs the model::

    python -m segunc.crf_study collect --weights W --data D --limit 60 --samples 8 --out /tmp/crf_maps.npz
    python -m segunc.crf_study grid --maps /tmp/crf_maps.npz [--out study.csv]

``collect`` runs mc_dropout, tta and noisy (T samples; TTA its flip × scale views, the intensity
copies left out as they are identical after the backend's normalisation) on ``--limit`` val tumour
slices spread over the patients and caches, per slice, the image, the mask and each mode's mean
and uncertainty maps. ``grid`` fuses them with the default fusion and applies every CRF setting of
:data:`GRID`, scoring each by

* small-component survival: connected components (8-connectivity) of the fused mask smaller than
  ``SMALL_PX`` pixels, kept (≥ 1 px still foreground after the CRF) or erased; split into true
  positives (touching the ground truth) and false positives;
* mean Dice, NLL and certainty of the refined map (the metrics of :mod:`segunc.metrics`).

Objective (used for the defaults in :class:`segunc.refine.crf.CRFParams`): the settings that keep
the most small true-positive components, among them the highest mean Dice, settings within 0.002
of it tied and the lowest mean NLL among those.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

SOURCES = ("mc_dropout", "tta", "noisy")
MAPS = ("mean", "entropy", "variance", "expected_entropy", "mutual_information")
SMALL_PX = 100


def collect(weights: Path, data: Path, out: Path, limit: int = 60, samples: int = 8, budget_s: float | None = None,
            seed: int = 0, max_gt: int | None = None) -> int:
    """Compute and cache the three modes' maps on ``limit`` spread val tumour slices (with ``max_gt``:
    only those whose ground truth has fewer pixels); returns slices cached. Saved after every
    slice, so a run stopped by ``budget_s`` (or killed) keeps what it computed."""
    import torch

    from .config import PipelineConfig
    from .pipeline import evaluate_slice
    from .runner.sweep import build_backend, select_slices
    from .data.lgg import load_slice

    torch.manual_seed(seed)
    refs = select_slices(data, "val", limit=None if max_gt else limit, spread=True)
    if max_gt:
        refs = [r for r in refs if load_slice(r).mask.sum() < max_gt]
        refs = [refs[int(i * len(refs) / limit)] for i in range(min(limit, len(refs)))]
    backend = build_backend("unet", weights, "cpu", data=data)
    config = PipelineConfig(samples=samples, seed=seed, batch_size=samples, tta_intensities=(1.0,))
    store: dict[str, list] = {"slice_id": [], "image": [], "target": []}
    t0 = time.perf_counter()
    for i, ref in enumerate(refs):
        s = load_slice(ref)
        res = evaluate_slice(backend, s, SOURCES, config)
        store["slice_id"].append(s.slice_id)
        store["image"].append(s.image)
        store["target"].append(s.mask)
        for m in SOURCES:
            for k in MAPS:
                store.setdefault(f"{m}/{k}", []).append(res[m].maps[k])
        tmp = Path(f"{out}.part")
        with open(tmp, "wb") as fh:  # write then rename: a reader never sees half a file
            np.savez_compressed(fh, **{k: np.stack(v) for k, v in store.items()},
                                samples=samples, weights=str(weights), tta_views=6)
        os.replace(tmp, out)
        el = time.perf_counter() - t0
        print(f"[{i + 1}/{len(refs)}] {s.slice_id} {el:.0f}s", file=sys.stderr, flush=True)
        if budget_s and el * (i + 2) / (i + 1) > budget_s:
            break
    return len(store["slice_id"])


def fused_maps(cache) -> tuple[np.ndarray, np.ndarray]:
    """(fused mean, fused entropy) of every cached slice under the default fusion config."""
    from .config import PipelineConfig
    from .postprocess.fusion import fuse_mode_maps

    config = PipelineConfig()
    means, ents = [], []
    for i in range(len(cache["slice_id"])):
        comps = [{k: cache[f"{m}/{k}"][i] for k in MAPS} for m in SOURCES]
        f = fuse_mode_maps(comps, config)
        means.append(f["mean"])
        ents.append(f["entropy"])
    return np.stack(means), np.stack(ents)


def _s(cb, cg, sd=5, sc=5, it=5) -> tuple[str, dict]:
    return (f"cb{cb} cg{cg} sd{sd} sc{sc} it{it}",
            dict(compat_bilateral=float(cb), compat_gaussian=float(cg), sdims=float(sd), schan=float(sc), iterations=it))


def grid_settings() -> list[tuple[str, dict | None]]:
    """The grid (label, CRFParams kwargs; None = the fused map itself). cg 0 = no Gaussian term (the
    authors' bilateral-only CRF); cb/cg: bilateral/Gaussian Potts weights, sd/sc: bilateral spatial /
    intensity std, it: mean-field iterations. The Potts weights at sd 5, sc 5, 5 iterations, then the
    kernel widths and iterations around a weak bilateral-only setting, and pydensecrf's README bilateral."""
    out: list[tuple[str, dict | None]] = [("no CRF", None)]
    out += [_s(10, 3), _s(10, 0), _s(5, 1), _s(5, 0), _s(3, 1), _s(3, 0), _s(1, 0)]
    out += [_s(3, 0, 20, 5), _s(3, 0, 5, 13), _s(3, 0, 20, 13), _s(3, 0, it=10), _s(10, 3, it=10), _s(10, 0, 80, 13)]
    return out


def components(mask: np.ndarray):
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return lab, n


def score(prob: np.ndarray, ent: np.ndarray | None, fused_mask: np.ndarray, target: np.ndarray,
          small_px: int = SMALL_PX) -> dict:
    """Metrics of one refined map plus the fate of the fused mask's components."""
    from .metrics import compute_metrics
    from .uncertainty import binary_entropy

    pred = prob >= 0.5
    m = compute_metrics(prob, target, uncertainty=binary_entropy(prob) if ent is None else ent, pred=pred)
    lab, n = components(fused_mask)
    out = {"dice": m["dice"], "nll": m["nll"], "certainty": m["certainty"], "ece": m["ece"],
           "comp": 0, "comp_kept": 0, "small": 0, "small_kept": 0, "small_tp": 0, "small_tp_kept": 0,
           "small_fp": 0, "small_fp_kept": 0}
    for c in range(1, n + 1):
        region = lab == c
        kept = bool(pred[region].any())
        out["comp"] += 1
        out["comp_kept"] += kept
        if region.sum() < small_px:
            tp = bool(target[region].any())
            out["small"] += 1
            out["small_kept"] += kept
            out["small_tp" if tp else "small_fp"] += 1
            out["small_tp_kept" if tp else "small_fp_kept"] += kept
    return out


def load_caches(paths) -> dict[str, np.ndarray]:
    """Concatenate ``collect`` caches, each slice once."""
    parts = [dict(np.load(p)) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    seen: set[str] = set()
    out: dict[str, list] = {}
    for part in parts:
        for i, sid in enumerate(part["slice_id"]):
            if sid in seen:
                continue
            seen.add(str(sid))
            for k, v in part.items():
                if getattr(v, "ndim", 0) >= 1 and len(v) == len(part["slice_id"]):
                    out.setdefault(k, []).append(v[i])
    return {k: np.stack(v) for k, v in out.items()}


def run_grid(cache_path, settings=None, log=print):
    """One row per setting: totals of the component counts, means of the metrics over slices."""
    import pandas as pd

    from .refine.crf import CRFParams, dense_crf

    cache = load_caches(cache_path)
    log(f"{len(cache['slice_id'])} slices")
    fused, ent = fused_maps(cache)
    rows = []
    for label, kw in settings or grid_settings():
        t0 = time.perf_counter()
        per = []
        for i in range(len(fused)):
            fmask = fused[i] >= 0.5
            if kw is None:
                per.append(score(fused[i], ent[i], fmask, cache["target"][i]))
            else:
                q = dense_crf(fused[i], cache["image"][i], **CRFParams(**kw).as_dict())
                per.append(score(q, None, fmask, cache["target"][i]))
        df = pd.DataFrame(per)
        row = {"setting": label, **(kw or {}), **df[["dice", "nll", "certainty", "ece"]].mean().to_dict(),
               **df[[c for c in df.columns if c.startswith(("comp", "small"))]].sum().to_dict(),
               "s_per_slice": (time.perf_counter() - t0) / len(fused)}
        rows.append(row)
        log(f"{label:32s} dice {row['dice']:.4f} nll {row['nll']:.4f} cert {row['certainty']:.4f} "
            f"small kept {row['small_kept']}/{row['small']} (tp {row['small_tp_kept']}/{row['small_tp']}, "
            f"fp {row['small_fp_kept']}/{row['small_fp']})")
    return pd.DataFrame(rows)


def markdown(df) -> str:
    """The study as a Markdown table (docs/method.md)."""
    lines = ["| setting | small TP kept | small FP kept | all components kept | Dice | NLL | certainty | ECE |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['setting']} | {r['small_tp_kept']}/{r['small_tp']} | {r['small_fp_kept']}/{r['small_fp']} | "
                     f"{r['comp_kept']}/{r['comp']} | {r['dice']:.4f} | {r['nll']:.4f} | {r['certainty']:.4f} | "
                     f"{r['ece']:.4f} |")
    return "\n".join(lines)


def choose(df, dice_tol: float = 0.002):
    """The objective: the most small true-positive components kept, then the highest mean Dice
    (within ``dice_tol`` counts as tied, as in ``tune``), then the lowest mean NLL."""
    crf = df[df["setting"] != "no CRF"]
    pool = crf[crf["small_tp_kept"] == crf["small_tp_kept"].max()]
    pool = pool[pool["dice"] >= pool["dice"].max() - dice_tol]
    return pool.sort_values("nll").iloc[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m segunc.crf_study", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--weights", type=Path, required=True)
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--limit", type=int, default=60)
    c.add_argument("--samples", type=int, default=8)
    c.add_argument("--budget-s", type=float, default=None)
    c.add_argument("--max-gt", type=int, default=None, help="only slices whose tumour has fewer pixels")
    g = sub.add_parser("grid")
    g.add_argument("--maps", type=Path, nargs="+", required=True)
    g.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.cmd == "collect":
        n = collect(a.weights, a.data, a.out, a.limit, a.samples, a.budget_s, max_gt=a.max_gt)
        print(f"cached {n} slices in {a.out}")
        return 0
    df = run_grid(a.maps)
    if a.out:
        df.to_csv(a.out, index=False)
    print(markdown(df))
    best = choose(df)
    print(f"chosen: {best['setting']} dice {best['dice']:.4f} nll {best['nll']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
