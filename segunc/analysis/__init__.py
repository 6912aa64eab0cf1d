"""Analyses of stored results: pure functions on one slice's maps (numpy) or on the
metrics frame of the results store (one row per slice × backend × mode).

errors         uncertainty as a detector of erroneous pixels; slice-level ρ and risk–coverage
review         review queue: threshold picked on val, applied to another split
decomposition  aleatoric (expected entropy) vs epistemic (mutual information)
tumour_free    false positives and uncertainty on slices without tumour
cost           seconds per slice beside quality
stored         error stats of stored results (maps × ground truth), cached beside the store
frame          metrics frames from ``evaluate_slice`` results (no store needed)
applicable     which maps and slice scores apply to which mode (none of a single pass's variance / MI)
"""
from .applicable import applicable_rows, applies, map_applies, score_map
from .cost import cost_quality
from .decomposition import decomposition_summary, slice_decomposition
from .errors import (HIST_BINS, LOG_FLOOR, MAP_MAX, UNCERTAINTY_MAPS, hist_edges, ErrorHistogram, aurc, auprc_from_histograms,
                     auroc_from_histograms, error_histograms, error_map, near_mask, overlap_dice, pixel_auprc,
                     pixel_auroc, pooled_error_detection, risk_coverage, risk_coverage_table, slice_error_stats,
                     spearman_table)
from .frame import frame_from_results, result_row
from .review import (BAD_DICE, ReviewOutcome, ReviewReport, apply_threshold, patient_halves, pick_threshold,
                     rank_slices, review_outcome, review_queue)
from .stored import StoredErrors, slice_scores, stored_error_stats
from .tumour_free import tumour_free_slice_stats, tumour_free_summary

__all__ = ["applicable_rows", "applies", "map_applies", "score_map", "cost_quality", "decomposition_summary", "slice_decomposition", "HIST_BINS", "LOG_FLOOR", "MAP_MAX", "UNCERTAINTY_MAPS", "hist_edges",
           "ErrorHistogram", "aurc", "auprc_from_histograms", "auroc_from_histograms", "error_histograms", "error_map",
           "near_mask", "overlap_dice", "pixel_auprc", "pixel_auroc", "pooled_error_detection", "risk_coverage",
           "risk_coverage_table", "slice_error_stats", "spearman_table", "frame_from_results", "result_row",
           "BAD_DICE", "ReviewReport", "apply_threshold", "patient_halves", "pick_threshold", "rank_slices",
           "review_queue", "ReviewOutcome", "review_outcome", "StoredErrors", "slice_scores", "stored_error_stats",
           "tumour_free_slice_stats", "tumour_free_summary"]
