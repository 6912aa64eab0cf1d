"""What a sweep covers: its slices, checked and chosen without loading any model code (the app's pages and
a job's spec use them before PyTorch is imported), and the modes it may name."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..data.lgg import SliceRef, discover, select, tumour_only

__all__ = ["check_limit", "mode_names", "select_slices"]


def check_limit(limit) -> int | None:
    """``limit`` if it is None or a positive whole number of slices, else ValueError."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of slices (or none for all), not {limit!r}")
    return limit


def select_slices(data: Path | str, split: str = "val", all_slices: bool = False, limit: int | None = None,
                  patients: Sequence[str] | None = None, spread: bool = False) -> list[SliceRef]:
    """The sweep's slices: split filter, tumour-only unless ``all_slices``, then ``limit`` of them —
    the first ones, or with ``spread`` evenly spaced over the whole (patient-sorted) selection."""
    check_limit(limit)
    refs = select(discover(data), split, patients)
    if not all_slices:
        refs = tumour_only(refs)
    if not limit or limit >= len(refs):
        return refs
    if spread:
        step = len(refs) / limit
        return [refs[int(i * step + step / 2)] for i in range(limit)]
    return refs[:limit]


def mode_names() -> list[str]:
    """Every mode a sweep may name: the registered stochastic modes, then the post-processing steps
    (the registries' names: no PyTorch imported, see :mod:`segunc._torch`)."""
    from ..pipeline import all_mode_names

    return all_mode_names()
