"""Tumour-free slices: how often a model paints tumour where there is none, and whether its
uncertainty shows it.

On a slice with an empty ground truth every predicted pixel is a false positive (FP area =
``pred_px``). A model whose uncertainty is informative should be more uncertain on the slices
where it hallucinates: ``fp_auroc`` is the AUROC of the slice score for "has any FP pixel"
among the tumour-free slices (NaN when all or none have one).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["tumour_free_slice_stats", "tumour_free_summary"]


def tumour_free_slice_stats(maps: Mapping[str, np.ndarray], target: np.ndarray) -> dict[str, float]:
    """One tumour-free slice: FP area (px, fraction of the image), mean entropy / variance / MI over the
    image and over the FP pixels (NaN if none), and the max entropy. Raises if ``target`` has tumour."""
    target = np.asarray(target, bool)
    if target.any():
        raise ValueError("tumour_free_slice_stats needs a slice without tumour")
    fp = np.asarray(maps["mask"], bool)
    out = {"fp_px": float(fp.sum()), "fp_frac": float(fp.mean()), "max_entropy": float(np.nanmax(maps["entropy"]))}
    for m, short in (("entropy", "entropy"), ("variance", "variance"), ("mutual_information", "mi")):
        u = np.asarray(maps[m], dtype=np.float64)
        out[f"mean_{short}"] = float(np.nanmean(u))
        out[f"fp_{short}"] = float(np.nanmean(u[fp])) if fp.any() else float("nan")
    return out


def tumour_free_summary(frame: pd.DataFrame, score: str = "mean_entropy",
                        by: Sequence[str] = ("backend", "mode")) -> pd.DataFrame:
    """Per ``by`` group over rows with ``tumour_px == 0``: ``n``, ``any_fp_frac`` (slices with a
    false positive), ``fp_px_mean`` / ``fp_px_median`` / ``fp_px_max``, mean uncertainty columns
    (``mean_entropy``, ``mean_variance``, ``mean_mi`` when present), the same means on tumour
    slices of the group for contrast (``*_tumour``), and ``fp_auroc`` of ``score``."""
    from sklearn.metrics import roc_auc_score  # here: loading this module stays cheap

    by = [c for c in by if c in frame.columns]
    unc = [c for c in ("mean_entropy", "mean_variance", "mean_mi") if c in frame.columns]
    rows = []
    for key, g in frame.groupby(by, sort=False) if by else [((), frame)]:
        key = key if isinstance(key, tuple) else (key,)
        free, tum = g[g["tumour_px"] == 0], g[g["tumour_px"] > 0]
        if free.empty:
            continue
        has_fp = (free["pred_px"] > 0).to_numpy()
        row = {**dict(zip(by, key)), "n": len(free), "any_fp_frac": float(has_fp.mean()),
               "fp_px_mean": float(free["pred_px"].mean()), "fp_px_median": float(free["pred_px"].median()),
               "fp_px_max": int(free["pred_px"].max())}
        for c in unc:
            row[c] = float(free[c].mean())
            row[f"{c}_tumour"] = float(tum[c].mean()) if len(tum) else float("nan")
        s = free[score].to_numpy(dtype=float) if score in free.columns else np.full(len(free), np.nan)
        ok = np.isfinite(s)
        both = has_fp[ok].any() and not has_fp[ok].all()
        row["fp_auroc"] = float(roc_auc_score(has_fp[ok], s[ok])) if both else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
