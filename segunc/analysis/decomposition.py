"""Aleatoric vs epistemic uncertainty per mode (Depeweg et al. 2018; Kendall & Gal 2017).

Total predictive entropy splits as H(ȳ) = E_t[H(y_t)] + I, with the expected entropy
E_t[H(y_t)] the *aleatoric* part (noise the model sees in every sample) and the mutual
information I = H(ȳ) − E_t[H(y_t)] the *epistemic* part (disagreement between samples), all in
bits (see :mod:`segunc.uncertainty`). A deterministic mode (normal) has I = 0.

The split only holds when E_t[H(y_t)] is an average over the samples of the same predictive
distribution whose entropy is H(ȳ) (then I ≥ 0 by concavity and I / H(ȳ) ≤ 1). Uncertainty-weighted
fusion keeps that (a pixel-wise convex mixture of the sources' samples); the CRF does not: its
entropy is recomputed on the refined map while the expected entropy is the fused one, so its rows
are "not applicable" (NaN with a ``note``), and so is any row whose numbers are impossible
(I < 0, aleatoric < 0 or an epistemic share > 1). Never report those as numbers.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["slice_decomposition", "decomposition_summary", "NOT_APPLICABLE", "decomposition_note"]

#: modes whose maps do not decompose, with the reason shown instead of numbers
NOT_APPLICABLE = {
    "crf": "n/a: the CRF's entropy is computed on the refined map, not averaged over samples, "
           "so total = aleatoric + epistemic does not hold",
}
#: tolerance (bits) for rounding in stored 8-bit maps before a value counts as impossible
TOL = 1e-4


def decomposition_note(mode: str) -> str | None:
    """Why the decomposition does not apply to ``mode`` (None when it does)."""
    return NOT_APPLICABLE.get(mode)


def _impossible(aleatoric: float, epistemic: float, total: float) -> str | None:
    if np.isfinite(epistemic) and epistemic < -TOL:
        return f"n/a: impossible values (epistemic {epistemic:.4g} bits < 0)"
    if np.isfinite(aleatoric) and aleatoric < -TOL:
        return f"n/a: impossible values (aleatoric {aleatoric:.4g} bits < 0)"
    if np.isfinite(total) and total > 0 and np.isfinite(epistemic) and epistemic > total * (1 + 1e-3) + TOL:
        return f"n/a: impossible values (epistemic share {epistemic / total:.3g} > 1)"
    return None


def _mean(u: np.ndarray, region: np.ndarray | None = None) -> float:
    if region is None:
        return float(np.nanmean(u))
    return float(np.nanmean(u[region])) if region.any() else float("nan")


def slice_decomposition(maps: Mapping[str, np.ndarray], mode: str | None = None) -> dict:
    """Means of one slice's ``expected_entropy`` (aleatoric) and ``mutual_information`` (epistemic)
    over the image and inside the predicted ``mask`` (NaN if empty), and the epistemic share
    I / H(ȳ) of the image-mean total entropy (NaN if the total is 0). For a ``mode`` it does not
    apply to (:data:`NOT_APPLICABLE`), or impossible values, the parts are NaN and ``note`` says why."""
    mask = np.asarray(maps["mask"], bool)
    ale, epi, tot = maps["expected_entropy"], maps["mutual_information"], maps["entropy"]
    total = _mean(tot)
    out = {
        "aleatoric_image": _mean(ale), "epistemic_image": _mean(epi),
        "aleatoric_in": _mean(ale, mask), "epistemic_in": _mean(epi, mask),
        "total_image": total, "epistemic_share": _mean(epi) / total if total > 0 else float("nan"),
    }
    note = decomposition_note(mode) if mode else None
    note = note or _impossible(out["aleatoric_image"], out["epistemic_image"], total)
    if note is None and np.isfinite(out["total_image"]):
        # the parts must add up to the total (the maps are stored with 8-bit quantisation: allow for it)
        gap = abs(out["aleatoric_image"] + out["epistemic_image"] - total)
        if gap > max(0.02 * total, 1e-3):
            note = f"n/a: aleatoric + epistemic differs from the total entropy by {gap:.3g} bits"
    if note:
        for k in ("aleatoric_image", "epistemic_image", "aleatoric_in", "epistemic_in", "epistemic_share"):
            out[k] = float("nan")
    out["note"] = note
    return out


def decomposition_summary(frame: pd.DataFrame, by: Sequence[str] = ("backend", "mode")) -> pd.DataFrame:
    """Per ``by`` group: n and the mean / median over slices of the aleatoric and epistemic columns.

    Uses the :func:`slice_decomposition` columns when the frame has them; otherwise the store's
    image means, aleatoric = ``mean_entropy`` − ``mean_mi`` (exact for sampling modes; for
    ``crf`` the entropy is recomputed after refinement, so read that row with care) and
    epistemic = ``mean_mi``. Also the median epistemic share, ``n_valid`` (slices it applies to),
    ``applies`` and ``note`` (why the parts are NaN: "n/a: ..."; slices with impossible values are left out).
    """
    d = frame.copy()
    if "aleatoric_image" not in d.columns:
        d["aleatoric_image"] = d["mean_entropy"] - d["mean_mi"]
        d["epistemic_image"] = d["mean_mi"]
        d["total_image"] = d["mean_entropy"]
        tot = d["total_image"].where(d["total_image"] > 0)
        d["epistemic_share"] = d["epistemic_image"] / tot
    cols = [c for c in ("aleatoric_image", "epistemic_image", "aleatoric_in", "epistemic_in") if c in d.columns]
    parts = [*cols, "epistemic_share"]
    # rows the decomposition does not apply to, or with impossible numbers, count as n/a, never as values
    notes = pd.Series([decomposition_note(str(m)) for m in d["mode"]] if "mode" in d.columns else [None] * len(d),
                      index=d.index, dtype=object)
    bad = notes.isna() & (
        (d["epistemic_image"] < -TOL) | (d["aleatoric_image"] < -TOL)
        | ((d["total_image"] > 0) & (d["epistemic_image"] > d["total_image"] * (1 + 1e-3) + TOL)))
    notes[bad] = "n/a: impossible values (epistemic < 0, aleatoric < 0 or share > 1)"
    d.loc[notes.notna(), parts] = np.nan
    d["_valid"] = notes.isna()
    d["_note"] = notes
    by = [c for c in by if c in d.columns]
    g = d.groupby(by, sort=False)
    out = pd.concat({"mean": g[cols].mean(), "median": g[cols].median()}, axis=1)
    out.columns = [f"{c}_{s}" for s, c in out.columns]
    out.insert(0, "n", g.size())
    out["epistemic_share_median"] = g["epistemic_share"].median()
    out["n_valid"] = g["_valid"].sum().astype(int)
    out["applies"] = out["n_valid"] > 0

    def _note(s: pd.Series) -> str | None:
        u = list(dict.fromkeys(s.dropna()))
        return "; ".join(u) if u else None

    notes_g = g["_note"].agg(_note)
    out["note"] = pd.Series([
        None if not isinstance(nt, str) or nv == n else nt if nv == 0 else f"{nt} ({n - nv} of {n} slices left out)"
        for nt, nv, n in zip(notes_g.reindex(out.index), out["n_valid"], out["n"])], index=out.index, dtype=object)
    return out.reset_index()
