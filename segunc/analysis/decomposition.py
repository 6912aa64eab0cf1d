"""Aleatoric vs epistemic uncertainty per mode (Depeweg et al. 2018; Kendall & Gal 2017).

Total predictive entropy splits as H(ȳ) = E_t[H(y_t)] + I, with the expected entropy
E_t[H(y_t)] the *aleatoric* part (noise the model sees in every sample) and the mutual
information I = H(ȳ) − E_t[H(y_t)] the *epistemic* part (disagreement between samples), all in
bits (see :mod:`segunc.uncertainty`). A deterministic mode (normal) has I = 0.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["slice_decomposition", "decomposition_summary"]


def _mean(u: np.ndarray, region: np.ndarray | None = None) -> float:
    if region is None:
        return float(np.nanmean(u))
    return float(np.nanmean(u[region])) if region.any() else float("nan")


def slice_decomposition(maps: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Means of one slice's ``expected_entropy`` (aleatoric) and ``mutual_information`` (epistemic)
    over the image and inside the predicted ``mask`` (NaN if empty), and the epistemic share
    I / H(ȳ) of the image-mean total entropy (NaN if the total is 0)."""
    mask = np.asarray(maps["mask"], bool)
    ale, epi, tot = maps["expected_entropy"], maps["mutual_information"], maps["entropy"]
    total = _mean(tot)
    return {
        "aleatoric_image": _mean(ale), "epistemic_image": _mean(epi),
        "aleatoric_in": _mean(ale, mask), "epistemic_in": _mean(epi, mask),
        "total_image": total, "epistemic_share": _mean(epi) / total if total > 0 else float("nan"),
    }


def decomposition_summary(frame: pd.DataFrame, by: Sequence[str] = ("backend", "mode")) -> pd.DataFrame:
    """Per ``by`` group: n and the mean / median over slices of the aleatoric and epistemic columns.

    Uses the :func:`slice_decomposition` columns when the frame has them; otherwise the store's
    image means, aleatoric = ``mean_entropy`` − ``mean_mi`` (exact for sampling modes; for
    ``crf`` the entropy is recomputed after refinement, so read that row with care) and
    epistemic = ``mean_mi``. Also the median epistemic share.
    """
    d = frame.copy()
    if "aleatoric_image" not in d.columns:
        d["aleatoric_image"] = d["mean_entropy"] - d["mean_mi"]
        d["epistemic_image"] = d["mean_mi"]
        d["total_image"] = d["mean_entropy"]
        tot = d["total_image"].where(d["total_image"] > 0)
        d["epistemic_share"] = d["epistemic_image"] / tot
    cols = [c for c in ("aleatoric_image", "epistemic_image", "aleatoric_in", "epistemic_in") if c in d.columns]
    by = [c for c in by if c in d.columns]
    g = d.groupby(by, sort=False)
    out = pd.concat({"mean": g[cols].mean(), "median": g[cols].median()}, axis=1)
    out.columns = [f"{c}_{s}" for s, c in out.columns]
    out.insert(0, "n", g.size())
    out["epistemic_share_median"] = g["epistemic_share"].median()
    return out.reset_index()
