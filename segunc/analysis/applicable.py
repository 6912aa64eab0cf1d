"""Which uncertainty maps (and the slice scores taken from them) apply to which mode.

A single deterministic pass (``normal``) has no samples to disagree: its variance and mutual
information (I = H(ȳ) − E[H(yₜ)], Gal et al. 2017) are zero by construction, so a map, an AUROC, a ρ or a
review threshold built on them says nothing. The pages hide those combinations (the Compare page
shows the reason instead of the map: :func:`segunc.viz.map_note`, which asks :func:`map_applies`).
"""
from __future__ import annotations

import pandas as pd

__all__ = ["SINGLE_PASS_MODES", "SAMPLE_MAPS", "map_applies", "score_map", "applies", "applicable_rows"]

#: modes whose result is one deterministic pass
SINGLE_PASS_MODES = ("normal",)
#: maps that need samples (zero for a single pass)
SAMPLE_MAPS = ("variance", "mutual_information")
_IMAGE_MEANS = {"mean_entropy": "entropy", "mean_variance": "variance", "mean_mi": "mutual_information",
                "mean_expected_entropy": "expected_entropy"}
_MAPS = ("variance", "entropy", "mutual_information", "expected_entropy", "mean")
_SUFFIXES = ("_near", "_in", "_image", "_auroc", "_auprc", "_error_dice")


def map_applies(mode: str, map_name: str) -> bool:
    """False when ``map_name`` carries nothing for ``mode`` (a single pass's variance or mutual information)."""
    return not (mode in SINGLE_PASS_MODES and map_name in SAMPLE_MAPS)


def score_map(name: str) -> str | None:
    """The map a slice score or error statistic is computed from (``mean_mi`` → ``mutual_information``,
    ``variance_near`` → ``variance``), the name itself for a map, None for anything else (e.g. ``dice``)."""
    if name in _IMAGE_MEANS:
        return _IMAGE_MEANS[name]
    if name in _MAPS:
        return name
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in _MAPS:
            return name[: -len(suffix)]
    return None


def applies(mode: str, name: str) -> bool:
    """Whether the map, slice score or error statistic ``name`` means something for ``mode``; names not
    taken from a map (metrics) always apply."""
    m = score_map(name)
    return True if m is None else map_applies(mode, m)


def applicable_rows(frame: pd.DataFrame, column: str, mode_column: str = "mode") -> pd.DataFrame:
    """The rows of ``frame`` whose ``column`` (a map or score name) applies to their ``mode_column``."""
    if frame.empty or column not in frame or mode_column not in frame:
        return frame
    keep = [applies(str(m), str(n)) for m, n in zip(frame[mode_column], frame[column])]
    return frame[keep]
