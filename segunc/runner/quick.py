"""The quick demo: a small sweep that fills every result page in minutes on the shipped sample.

Backends in the order they are tried: LiteMedSAM (weights ship in a package) first, then the
U-Net when its weights are found; the paper's six modes on a few tumour slices spread over the
val patients (:func:`segunc.runner.sweep.select_slices` with ``spread``), made cheap enough for a
2-core CPU: T = 3, a TTA set of 6 transforms (flips × intensities 0.9 / 1.0 / 1.1 at scale 1; the
paper uses 30) and, for the MedSAM family, MC dropout in the mask decoder (one encoder pass). Its
results get their own result keys (the settings differ from the paper's), and the pages show T and
the TTA set used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..config import DEFAULT_MODES, PipelineConfig
from .jobs import JobSpec

__all__ = ["QUICK_BACKENDS", "QUICK_SAMPLES", "QUICK_SLICES", "QUICK_SPLIT", "QUICK_TTA", "quick_demo_specs"]

QUICK_BACKENDS = ("litemedsam", "unet")
QUICK_SAMPLES = 3
QUICK_SLICES = 4
QUICK_SPLIT = "val"
QUICK_TTA = {"tta_flips": (False, True), "tta_scales": (1.0,), "tta_intensities": (0.9, 1.0, 1.1)}


def quick_demo_specs(data: Path | str, ready: Iterable[str], samples: int = QUICK_SAMPLES,
                     limit: int = QUICK_SLICES, device: str = "cpu") -> list[JobSpec]:
    """One sweep per backend of :data:`QUICK_BACKENDS` that is in ``ready`` (those whose weights are
    found), over ``data``: the six paper modes, T = ``samples``, the TTA set :data:`QUICK_TTA`,
    ``limit`` val tumour slices spread over the patients. Empty when no quick-demo backend is ready."""
    ready = set(ready)
    return [JobSpec(data=str(data), backend=b, modes=list(DEFAULT_MODES), split=QUICK_SPLIT, limit=limit, spread=True,
                    config=PipelineConfig(samples=samples, placement="decoder" if b in ("litemedsam", "medsam") else "all",
                                          **QUICK_TTA), device=device)
            for b in QUICK_BACKENDS if b in ready]
