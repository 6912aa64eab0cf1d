"""The quick demo: a small sweep that fills every result page in minutes on the shipped sample.

Backends in the order they are tried: LiteMedSAM (weights ship in a package) first, then the
U-Net when its weights are found; the paper's six modes at a small T on a few tumour slices
spread over the val patients (:func:`segunc.runner.sweep.select_slices` with ``spread``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..config import PipelineConfig
from .jobs import JobSpec
from .sweep import DEFAULT_MODES

__all__ = ["QUICK_BACKENDS", "QUICK_SAMPLES", "QUICK_SLICES", "QUICK_SPLIT", "quick_demo_specs"]

QUICK_BACKENDS = ("litemedsam", "unet")
QUICK_SAMPLES = 5
QUICK_SLICES = 6
QUICK_SPLIT = "val"


def quick_demo_specs(data: Path | str, ready: Iterable[str], samples: int = QUICK_SAMPLES,
                     limit: int = QUICK_SLICES, device: str = "cpu") -> list[JobSpec]:
    """One sweep per backend of :data:`QUICK_BACKENDS` that is in ``ready`` (those whose weights are
    found), over ``data``: the six paper modes, T = ``samples``, ``limit`` val tumour slices spread
    over the patients. Empty when no quick-demo backend is ready."""
    ready = set(ready)
    return [JobSpec(data=str(data), backend=b, modes=list(DEFAULT_MODES), split=QUICK_SPLIT, limit=limit, spread=True,
                    config=PipelineConfig(samples=samples), device=device)
            for b in QUICK_BACKENDS if b in ready]
