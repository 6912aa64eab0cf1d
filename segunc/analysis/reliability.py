"""Calibration per backend × mode from stored results: pooled top-label reliability bins and the
table beside them (pooled ECE over every pixel, and per-slice means of ECE, NLL and Brier score).

Pooled ECE = Σ_b |Σcorrect_b − Σconf_b| / N over the summed bins of all slices (Guo et al. 2017;
paper §4.1), so large slices weigh by their pixels; the per-slice mean weighs every slice equally.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..metrics import ece_from_bins
from .stats import order_backends, order_modes

__all__ = ["CALIBRATION_COLUMNS", "calibration_table"]

#: columns of :func:`calibration_table` after ``backend`` and ``mode``
CALIBRATION_COLUMNS = ("slices", "pixels", "pooled ECE", "mean per-slice ECE", "mean NLL", "mean Brier")


def calibration_table(frame: pd.DataFrame, reliability: Callable[[Sequence[str]], Mapping[str, np.ndarray]]
                      ) -> tuple[dict[tuple[str, str], Mapping[str, np.ndarray]], pd.DataFrame]:
    """Pooled reliability bins and the calibration table of a metrics frame (one row per result).

    ``reliability(keys)`` returns the pooled bins of those results (``counts``, ``sum_confidence``,
    ``sum_correct``), e.g. :meth:`segunc.store.ResultStore.reliability`. Returns the bins by
    (backend, mode) and one table row per (backend, mode) with :data:`CALIBRATION_COLUMNS`, both in
    display order (backends as registered, modes as in the paper)."""
    bins: dict[tuple[str, str], Mapping[str, np.ndarray]] = {}
    rows = []
    for backend in order_backends(frame["backend"]):
        fb = frame[frame["backend"] == backend]
        for mode in order_modes(fb["mode"]):
            g = fb[fb["mode"] == mode]
            b = reliability(g["key"].tolist())
            bins[(backend, mode)] = b
            rows.append({"backend": backend, "mode": mode, "slices": g["slice_id"].nunique(),
                         "pixels": int(np.sum(b["counts"])),
                         "pooled ECE": ece_from_bins(b["counts"], b["sum_confidence"], b["sum_correct"]),
                         **{name: float(g[col].mean()) if col in g.columns else float("nan")
                            for name, col in (("mean per-slice ECE", "ece"), ("mean NLL", "nll"),
                                              ("mean Brier", "brier"))}})
    return bins, pd.DataFrame(rows, columns=["backend", "mode", *CALIBRATION_COLUMNS])
