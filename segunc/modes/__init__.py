"""Inference modes: how T per-sample logit maps are drawn from one backend (see :mod:`.base`, which holds the registry)."""
from __future__ import annotations

from .base import MODES, Mode, SliceInput, get_mode, slice_generator

# Each module registers itself in MODES; import order = display order.
from . import normal, mc_dropout, tta, noisy, box_jitter, support_resample  # noqa: E402,F401

__all__ = ["MODES", "Mode", "SliceInput", "get_mode", "slice_generator"]
