"""Summary of metric rows: median and mean per (backend, mode) — the CLI's closing table."""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

from ..metrics import METRIC_NAMES

COLUMNS = [*METRIC_NAMES, "seconds"]


def summary_frame(rows: Iterable[dict] | pd.DataFrame, modes: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table: one row per (backend, mode, statistic ∈ {median, mean}), metric columns, and ``n``."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        return df
    order = {m: i for i, m in enumerate(modes or [])}
    g = df.groupby(["backend", "mode"], sort=False)[COLUMNS]
    out = pd.concat({"median": g.median(), "mean": g.mean()}, names=["stat"]).reorder_levels([1, 2, 0])
    out.insert(0, "n", g.size().reindex(out.index.droplevel("stat")).to_numpy())
    return out.sort_index(key=lambda idx: idx.map(lambda v: order.get(v, len(order))) if idx.name == "mode" else
                          (idx.map({"median": 0, "mean": 1}) if idx.name == "stat" else idx), sort_remaining=False)


def summary_table(rows: Iterable[dict] | pd.DataFrame, modes: Sequence[str] | None = None) -> str:
    """Rows = metrics, columns = ``backend/mode``, cells = ``median / mean``."""
    df = summary_frame(rows, modes)
    if df.empty:
        return "(no results)"
    cols = list(dict.fromkeys((b, m) for b, m, _ in df.index))
    table = pd.DataFrame(index=["n", *COLUMNS], columns=[f"{b}/{m}" for b, m in cols], dtype=object)
    for b, m in cols:
        med, mean = df.loc[(b, m, "median")], df.loc[(b, m, "mean")]
        table.loc["n", f"{b}/{m}"] = str(int(med["n"]))
        for c in COLUMNS:
            table.loc[c, f"{b}/{m}"] = f"{med[c]:.3f} / {mean[c]:.3f}"
    return "median / mean per mode\n" + table.to_string()
