"""Post-processing steps after the sampling modes (see :mod:`.base`); import order = run order
among steps of equal depth and display order."""
from __future__ import annotations

from .base import POST_STEPS, PostStep, StepInput, StepOutput
from . import fusion, crf  # noqa: E402,F401  (each registers itself)


def get_step(name: str) -> PostStep:
    """Instantiate a registered step by name."""
    return POST_STEPS.get(name)()


__all__ = ["POST_STEPS", "PostStep", "StepInput", "StepOutput", "get_step"]
