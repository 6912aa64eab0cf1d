"""``support_resample``: K UniverSeg predictions from K train-split support sets, on real val slices.

A random-init UniverSeg saved in the official state-dict layout stands in for the official
checkpoint (not downloadable here); S = 4 support slices, K = 3 sets.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segunc.backends.universeg import UniverSegBackend
from segunc.backends.universeg_net import universeg_v1
from segunc.config import PipelineConfig
from segunc.data import select
from segunc.modes import MODES, SliceInput, get_mode
from segunc.modes.support_resample import SupportResample, draw_support_sets
from segunc.pipeline import evaluate_slice

pytestmark = pytest.mark.integration

S, K = 4, 3


@pytest.fixture(scope="module")
def backend(tmp_path_factory, lgg_refs):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("uvs") / "universeg_v1_nf64_ss64_STA.pt"
    torch.save(universeg_v1().state_dict(), path)
    b = UniverSegBackend(weights=path, support_size=S, support_seed=0)
    b.set_support_from_refs(lgg_refs)
    return b


def _pid(slice_id: str) -> str:
    return "_".join(slice_id.split("_")[:3])


def test_registered_and_applies_only_to_in_context_backends(backend):
    assert MODES.get("support_resample") is SupportResample
    mode = get_mode("support_resample", samples=K)
    assert mode.supports(backend) and mode.stochastic
    assert not mode.supports(type("Plain", (), {"needs_support": False, "needs_box": False})())
    assert mode.params() == {"mode": "support_resample", "samples": K, "seed": 0, "support_size": None}


def test_backend_keeps_its_train_pool(backend, lgg_refs):
    pool = backend.support_pool
    assert pool and all(r.split == "train" for r in pool)
    assert len(pool) == sum(r.split == "train" for r in lgg_refs)


def test_support_sets_train_only_patient_disjoint_deterministic(backend, lgg_refs):
    mode = get_mode("support_resample", samples=K, seed=0)
    sets = mode.support_sets(backend)
    assert len(sets) == K and all(len(s) == S for s in sets)
    ids = [[r.slice_id for r in s] for s in sets]
    assert ids == [[r.slice_id for r in s] for s in get_mode("support_resample", samples=K, seed=0).support_sets(backend)]
    assert ids != [[r.slice_id for r in s] for s in get_mode("support_resample", samples=K, seed=1).support_sets(backend)]
    flat = [r for s in sets for r in s]
    assert all(r.split == "train" for r in flat)
    assert len({r.patient_id for r in flat}) == K * S  # disjoint within and across sets (K·S ≤ #train patients)
    assert not {r.patient_id for r in flat} & {r.patient_id for r in select(lgg_refs, "val")}
    # seed = the backend's support seed and the same S: set 0 is the backend's own support
    assert ids[0] == backend.options["support_ids"]
    # explicit pool: only its patients are used
    few = sorted({r.patient_id for r in backend.support_pool})[:5]
    small = [r for r in backend.support_pool if r.patient_id in few]
    own = SupportResample(samples=2, support_size=2, pool=small).support_sets(backend)
    assert {r.patient_id for s in own for r in s} <= set(few)
    # a pool too small for K·S slices falls back to K independent draws
    tiny = [r for r in backend.support_pool if r.patient_id == few[0]]
    fallback = draw_support_sets(tiny, 5, 1, seed=0)
    assert len(fallback) == 5 and all(len(s) == 1 and s[0].patient_id == few[0] for s in fallback)


def test_pipeline_on_real_val_slice(backend, val_slices):
    """K = 3 samples in chunks of 2; sample 0 = the single pass with the backend's own support."""
    cfg = PipelineConfig(samples=K, batch_size=2, keep_samples=True)
    res = evaluate_slice(backend, val_slices[1], ["support_resample"], cfg)["support_resample"]
    p = res.samples
    assert p.shape == (K, 256, 256) and np.isfinite(p).all()
    with torch.inference_mode():
        single = torch.sigmoid(backend.logits(SliceInput.from_slice(val_slices[1], backend).image))[0].numpy()
    np.testing.assert_allclose(p[0], single, atol=1e-5)
    assert not np.allclose(p[1], p[0]) and not np.allclose(p[2], p[1])
    assert res.maps["variance"].max() > 0 and np.isfinite(list(res.metrics.values())).all()
    assert np.all(res.maps["mutual_information"] <= res.maps["entropy"] + 1e-6)


def test_evaluated_train_patient_is_left_out_of_its_supports(backend, val_slices):
    mode = get_mode("support_resample", samples=K)
    first = mode.support_sets(backend)[0][0]
    from segunc.modes.support_resample import _train_patient

    excl = _train_patient(first.slice_id, backend.support_pool)
    assert excl == (first.patient_id,)
    assert first.patient_id not in {r.patient_id for s in mode.support_sets(backend, excl) for r in s}

    assert _train_patient(val_slices[0].slice_id, backend.support_pool) == ()  # a val patient: nothing to drop
    assert _train_patient("synthetic", backend.support_pool) == ()


def test_clear_errors(backend, unet_weights, val_slices):
    no_pool = SupportResample(samples=2, pool=[])
    backend_pool, backend.support_pool = backend.support_pool, None
    try:
        with pytest.raises(ValueError, match="pool"):
            no_pool.sample_logits(backend, SliceInput.from_slice(val_slices[0], backend))
    finally:
        backend.support_pool = backend_pool
    from segunc.backends import BACKENDS

    unet = BACKENDS.get("unet")(weights=unet_weights)
    with pytest.raises(ValueError, match="does not apply"):
        evaluate_slice(unet, val_slices[0], ["support_resample"], PipelineConfig(samples=2))
