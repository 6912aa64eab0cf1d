"""Summary of metric rows: median and mean per mode (the CLI's closing table)."""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

from .metrics import METRIC_NAMES


def summary_frame(rows: Iterable[dict], modes: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (backend, mode); columns ``<metric> median`` / ``<metric> mean`` and ``n``."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        return df
    g = df.groupby(["backend", "mode"], sort=False)[list(METRIC_NAMES) + ["seconds"]]
    med, mean = g.median(), g.mean()
    out = pd.concat({"median": med, "mean": mean}, axis=1).swaplevel(axis=1)
    out = out[[(m, s) for m in [*METRIC_NAMES, "seconds"] for s in ("median", "mean")]]
    out.insert(0, ("n", ""), g.size())
    if modes:
        order = {m: i for i, m in enumerate(modes)}
        out = out.sort_index(key=lambda idx: idx.map(lambda v: order.get(v, len(order))) if idx.name == "mode" else idx)
    return out


def summary_table(rows: Iterable[dict], modes: Sequence[str] | None = None) -> str:
    df = summary_frame(rows, modes)
    if df.empty:
        return "(no results)"
    df.columns = [f"{m} {s}".strip() for m, s in df.columns]
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.float_format", "{:.3f}".format):
        return df.to_string()
