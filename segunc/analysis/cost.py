"""Cost beside quality: seconds per slice of each mode next to its metrics.

``seconds`` is the wall time of one (slice, mode) result including the modes it depends on
(fusion = its three sources + fusing; crf = fusion + CRF), so it is the price of getting that
output from scratch for one slice on the machine that ran it.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

__all__ = ["cost_quality"]

QUALITY = ("dice", "iou", "nll", "ece", "brier", "certainty")


def cost_quality(frame: pd.DataFrame, metrics: Sequence[str] = QUALITY, by: Sequence[str] = ("backend", "mode"),
                 reference_mode: str = "normal") -> pd.DataFrame:
    """One row per ``by`` group: ``n``, ``seconds_median``, ``seconds_mean``, ``x_reference`` (median
    seconds ÷ that of ``reference_mode`` of the same backend; NaN if absent), then the median and
    mean of each metric (``dice_median``, ``dice_mean``, …). Sorted as the groups first appear."""
    by = [c for c in by if c in frame.columns]
    metrics = [m for m in metrics if m in frame.columns]
    g = frame.groupby(by, sort=False)
    out = pd.DataFrame({"n": g.size(), "seconds_median": g["seconds"].median(), "seconds_mean": g["seconds"].mean()})
    for m in metrics:
        out[f"{m}_median"] = g[m].median()
        out[f"{m}_mean"] = g[m].mean()
    out = out.reset_index()
    if "mode" in by:
        keys = [c for c in by if c != "mode"]
        ref = out[out["mode"] == reference_mode].set_index(keys)["seconds_median"] if keys else \
            out.loc[out["mode"] == reference_mode, "seconds_median"]
        if keys:
            base = out.set_index(keys).index.map(lambda k: ref.get(k, float("nan")))
            out.insert(len(by) + 3, "x_reference", out["seconds_median"].to_numpy() / base.to_numpy(dtype=float))
        else:
            base = float(ref.iloc[0]) if len(ref) else float("nan")
            out.insert(len(by) + 3, "x_reference", out["seconds_median"] / base)
    return out
