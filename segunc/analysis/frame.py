"""Metrics frames straight from :func:`segunc.pipeline.evaluate_slice` results, in the columns of
``ResultStore.metrics_frame()`` (``patient_id, slice_id, split, backend, mode``, the metrics,
``seconds, threshold, tumour_px, pred_px, mean_entropy, mean_variance, mean_mi``), optionally
widened with the scalar columns of :func:`~.errors.slice_error_stats` — for analyses without a
store (tests, one-off measurements)."""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import slice_error_stats

__all__ = ["result_row", "frame_from_results"]


def result_row(result, backend: str, target: np.ndarray | None = None, split: str | None = None,
               error_stats: bool = False) -> dict:
    """One frame row of a ``ModeResult``; with ``error_stats`` (needs ``target``) the scalar
    :func:`slice_error_stats` values are added (histogram arrays left out)."""
    m = result.maps
    row = result.row(backend)
    if split is None:
        from ..data import split_of

        split = split_of(result.patient_id)
    row = {"patient_id": row.pop("patient_id"), "slice_id": row.pop("slice_id"), "split": split, **row}
    row.update(mean_entropy=float(np.nanmean(m["entropy"])), mean_variance=float(np.nanmean(m["variance"])),
               mean_mi=float(np.nanmean(m["mutual_information"])))
    if error_stats:
        if target is None:
            raise ValueError("error_stats needs the target mask")
        row.update({k: v for k, v in slice_error_stats(m, target).items() if not isinstance(v, np.ndarray)})
    return row


def frame_from_results(items: Iterable[tuple[Mapping[str, object], np.ndarray]], backend: str,
                       error_stats: bool = False) -> pd.DataFrame:
    """``items``: (``evaluate_slice`` output {mode: ModeResult}, target mask) per slice → one row per (slice, mode)."""
    rows = [result_row(r, backend, target, error_stats=error_stats) for res, target in items for r in res.values()]
    return pd.DataFrame(rows)
