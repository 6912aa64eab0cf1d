"""Analyses of stored results: pure functions on one slice's maps (numpy) or on the
metrics frame of the results store (one row per slice × backend × mode).

errors         uncertainty as a detector of erroneous pixels; slice-level ρ and risk–coverage
review         review queue: threshold picked on val, applied to another split
decomposition  aleatoric (expected entropy) vs epistemic (mutual information)
tumour_free    false positives and uncertainty on slices without tumour
cost           seconds per slice beside quality
stored         error stats of stored results (maps × ground truth), cached beside the store
frame          metrics frames from ``evaluate_slice`` results (no store needed)
precompute     slow analyses computed ahead (snapshot export) and cached beside the store
applicable     which maps and slice scores apply to which mode (none of a single pass's variance / MI)

The names below are imported from their module on first use (PEP 562), so a page that only needs
:mod:`.stats` does not pay for scikit-learn or scipy.ndimage.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: public name → the submodule that defines it
_EXPORTS = {
    **{n: "applicable" for n in ("applicable_rows", "applies", "map_applies", "score_map")},
    "cost_quality": "cost",
    "decomposition_summary": "decomposition", "slice_decomposition": "decomposition",
    **{n: "errors" for n in ("HIST_BINS", "LOG_FLOOR", "MAP_MAX", "UNCERTAINTY_MAPS", "hist_edges", "ErrorHistogram",
                             "aurc", "auprc_from_histograms", "auroc_from_histograms", "error_histograms", "error_map",
                             "near_mask", "overlap_dice", "pixel_auprc", "pixel_auroc", "pooled_error_detection",
                             "risk_coverage", "risk_coverage_table", "slice_error_stats", "spearman_table")},
    "frame_from_results": "frame", "result_row": "frame",
    **{n: "review" for n in ("BAD_DICE", "ReviewOutcome", "ReviewReport", "apply_threshold", "patient_halves",
                             "pick_threshold", "rank_slices", "review_outcome", "review_queue")},
    "StoredErrors": "stored", "slice_scores": "stored", "stored_error_stats": "stored",
    "tumour_free_slice_stats": "tumour_free", "tumour_free_summary": "tumour_free",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and readers; at run time the names load on first use
    from .applicable import applicable_rows, applies, map_applies, score_map  # noqa: F401
    from .cost import cost_quality  # noqa: F401
    from .decomposition import decomposition_summary, slice_decomposition  # noqa: F401
    from .errors import (HIST_BINS, LOG_FLOOR, MAP_MAX, UNCERTAINTY_MAPS, ErrorHistogram, aurc,  # noqa: F401
                         auprc_from_histograms, auroc_from_histograms, error_histograms, error_map, hist_edges,
                         near_mask, overlap_dice, pixel_auprc, pixel_auroc, pooled_error_detection, risk_coverage,
                         risk_coverage_table, slice_error_stats, spearman_table)
    from .frame import frame_from_results, result_row  # noqa: F401
    from .review import (BAD_DICE, ReviewOutcome, ReviewReport, apply_threshold, patient_halves,  # noqa: F401
                         pick_threshold, rank_slices, review_outcome, review_queue)
    from .stored import StoredErrors, slice_scores, stored_error_stats  # noqa: F401
    from .tumour_free import tumour_free_slice_stats, tumour_free_summary  # noqa: F401


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
