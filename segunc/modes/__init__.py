"""Inference modes: how T per-sample logit maps are drawn from one backend (see :mod:`.base`)."""
from __future__ import annotations

from ..registry import Registry
from .base import Mode, SliceInput, slice_generator

MODES: Registry[Mode] = Registry("mode")

from . import normal, mc_dropout, tta, noisy, box_jitter, support_resample  # noqa: E402,F401


def get_mode(name: str, **params) -> Mode:
    """Instantiate a registered mode by name with its parameters."""
    return MODES.get(name)(**params)


__all__ = ["MODES", "Mode", "SliceInput", "get_mode", "slice_generator"]
