"""The cost estimate counts TTA's distinct model passes: the paper set's gains ≤ 1 collapse after
every backend's per-image normalisation and are computed once (gains > 1 clip bright pixels, so
they stay distinct), so the set is not paid for as 30 passes."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from segunc.backends import BACKENDS
from segunc.config import PipelineConfig
from segunc.presets import apply_preset
from segunc.runner.jobs import mode_passes, tta_distinct_views

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["unet", "litemedsam", "medsam", "universeg"])
def test_tta_passes_count_distinct_views_for_every_backend(backend):
    cls = BACKENDS.get(backend)
    two, fixed = bool(cls.two_stage), getattr(cls, "input_size", None) is not None
    default = PipelineConfig()
    assert tta_distinct_views(default) == 30  # gammas: 30 distinct inputs
    paper, _ = apply_preset("paper", backend, PipelineConfig(), {})
    literal = dataclasses.replace(default, tta_set="paper")  # flip × scale × {gains ≤ 1, 1.1, 1.2}
    assert tta_distinct_views(literal) == 2 * 3 * 3
    assert tta_distinct_views(dataclasses.replace(literal, tta_intensities=(0.8, 0.9, 1.0))) == 6
    expected = 18 if backend == "unet" else 8  # U-Net: the literal set; MedSAM family / UniverSeg: flip × rot90
    assert tta_distinct_views(paper) == expected
    full, cost, enc, dec = mode_passes("tta", paper, two, fixed)
    assert (full, enc, dec) == (expected, 0, 0)
    full30, cost30, _, _ = mode_passes("tta", default, two, fixed)
    assert full30 == 30
    if backend == "unet":  # fully convolutional: a view costs scale², 2 flips × 3 inputs × (0.25 + 1 + 4)
        assert cost == pytest.approx(6 * (0.25 + 1 + 4)) and cost30 == pytest.approx(10 * (0.25 + 1 + 4))
    else:
        assert cost == expected and cost30 == 30


def test_tta_estimate_matches_the_passes_the_mode_makes(unet, val_slices):
    """On a real slice the U-Net's paper set runs at most the counted 18 passes of 30 views (16 here:
    at some scales a gain > 1 clips nothing), far closer than 30."""
    from segunc.modes import SliceInput
    from segunc.pipeline import make_mode

    config = dataclasses.replace(PipelineConfig(), tta_set="paper")
    mode = make_mode("tta", config)
    with torch.inference_mode():
        out = mode.sample_logits(unet, SliceInput.from_slice(val_slices[0], unet))
    assert out.shape[0] == 30 and 12 <= mode.last_forwards <= tta_distinct_views(config) == 18
