"""One real slice through the whole method: modes → uncertainty → fusion → CRF → metrics."""
from __future__ import annotations

import numpy as np
import pytest

from segunc.config import FusionConfig, PipelineConfig
from segunc.fusion import normalized_weights
from segunc.metrics import METRIC_NAMES
from segunc.pipeline import MAP_NAMES, evaluate_slice, required_modes

pytestmark = pytest.mark.integration

ALL = ["normal", "mc_dropout", "tta", "noisy", "fusion", "crf"]


@pytest.fixture(scope="module")
def results(unet, val_slices):
    cfg = PipelineConfig(samples=3, keep_samples=True)
    return evaluate_slice(unet, val_slices[1], ALL, cfg), cfg


def test_plan_orders_dependencies():
    cfg = PipelineConfig()
    assert required_modes(["crf"], cfg) == ["mc_dropout", "tta", "noisy", "fusion", "crf"]
    assert required_modes(["crf", "fusion", "normal"], cfg) == ["mc_dropout", "tta", "noisy", "normal", "fusion", "crf"]
    samples = PipelineConfig(fusion=FusionConfig(source="samples", sample_mode="noisy"))
    assert required_modes(["fusion"], samples) == ["noisy", "fusion"]


def test_plan_is_the_former_fusion_crf_rule():
    """The step registry plans exactly as the former hard-coded rule (fusion needs its sources, crf needs
    fusion; sampling modes first, then fusion, then crf) for every request of up to 4 names."""
    import itertools

    def former(requested, config):
        requested = list(dict.fromkeys(requested))
        f = config.fusion
        sources = [f.sample_mode] if f.source == "samples" else list(f.sources)
        need = []
        for m in requested:
            if m == "crf" and "fusion" not in requested:
                need += [*sources, "fusion"]
            if m == "fusion":
                need += sources
            need.append(m)
        return sorted(dict.fromkeys(need), key=lambda m: {"fusion": 1, "crf": 2}.get(m, 0))

    names = ["normal", "mc_dropout", "tta", "noisy", "box_jitter", "fusion", "crf"]
    for cfg in (PipelineConfig(), PipelineConfig(fusion=FusionConfig(source="samples", sample_mode="tta")),
                PipelineConfig(fusion=FusionConfig(sources=("noisy", "mc_dropout")))):
        for k in range(1, 5):
            for req in itertools.permutations(names, k):
                assert required_modes(req, cfg) == former(req, cfg), req


def test_every_mode_has_maps_and_finite_metrics(results, val_slices):
    res, _ = results
    assert list(res) == ALL
    for name, r in res.items():
        assert set(r.maps) == {*MAP_NAMES, "mask"}
        for k in MAP_NAMES:
            assert r.maps[k].shape == (256, 256) and r.maps[k].dtype == np.float32 and np.isfinite(r.maps[k]).all()
        assert r.maps["mask"].dtype == bool
        assert list(r.metrics) == list(METRIC_NAMES)
        assert all(np.isfinite(v) for v in r.metrics.values()), (name, r.metrics)
        assert r.tumour_px == int(val_slices[1].mask.sum())
    assert res["normal"].metrics["dice"] > 0.2  # a small tumour at the edge of the volume
    assert res["normal"].maps["variance"].max() == 0  # one pass: no spread
    assert res["mc_dropout"].samples.shape == (3, 256, 256)
    assert res["tta"].samples.shape == (30, 256, 256)


def test_stochastic_modes_spread_and_calibrate(results):
    res, _ = results
    for m in ("mc_dropout", "tta", "noisy"):
        assert res[m].maps["variance"].max() > 0
        assert np.all(res[m].maps["mutual_information"] <= res[m].maps["entropy"] + 1e-6)


def test_fusion_is_the_uncertainty_weighted_mean(results):
    res, cfg = results
    comps = [res[m].maps for m in cfg.fusion.sources]
    w = normalized_weights(np.stack([c["entropy"] for c in comps]), "inverse")
    expected = (w * np.stack([c["mean"] for c in comps])).sum(0)
    assert np.allclose(res["fusion"].maps["mean"], expected, atol=1e-5)
    assert res["fusion"].seconds >= sum(res[m].seconds for m in cfg.fusion.sources)
    assert np.array_equal(res["crf"].maps["variance"], res["fusion"].maps["variance"])


def test_post_modes_alone_compute_what_they_need(unet, val_slices, results):
    res, cfg = results
    only = evaluate_slice(unet, val_slices[1], ["crf"], cfg)
    assert list(only) == ["crf"]
    assert np.allclose(only["crf"].maps["mean"], res["crf"].maps["mean"], atol=1e-5)  # seeded: same result


def test_empty_slice_gives_no_nan(unet, val_slices):
    res = evaluate_slice(unet, val_slices[2], ["normal", "noisy"], PipelineConfig(samples=2))
    for r in res.values():
        assert all(np.isfinite(v) for v in r.metrics.values())


def test_all_zero_slice_gives_no_nan(unet, val_slices):
    import copy

    s = copy.deepcopy(val_slices[1])
    s.image[:] = 0
    res = evaluate_slice(unet, s, ["normal", "mc_dropout", "fusion"], PipelineConfig(samples=2,
                         fusion=FusionConfig(source="samples")))
    for r in res.values():
        assert all(np.isfinite(v) for v in r.metrics.values()), r.metrics


def test_sweep_batches_the_normal_pass_of_several_slices(unet, lgg_root, monkeypatch):
    """iter_sweep runs `normal` for a group of slices as one batch: same maps and metrics as one
    slice at a time (real U-Net, three real val slices from three patients; the U-Net's CPU cap of
    one image per pass, its fastest there, is lifted as on a GPU)."""
    monkeypatch.setitem(unet.options, "max_batch", 16)
    from segunc.runner.sweep import iter_sweep, select_slices

    refs = select_slices(lgg_root, "val", limit=3, spread=True)
    assert len({r.patient_id for r in refs}) == 3
    cfg = PipelineConfig(samples=2)
    calls = []
    orig = unet.logits
    unet.logits = lambda images, boxes=None: calls.append(images.shape[0]) or orig(images, boxes)
    try:
        grouped = {o.ref.slice_id: o.results for o in iter_sweep(unet, refs, ["normal"], cfg, group=3)}
        n_grouped = list(calls)
        calls.clear()
        single = {o.ref.slice_id: o.results for o in iter_sweep(unet, refs, ["normal"], cfg, group=1)}
    finally:
        del unet.logits
    assert n_grouped == [3] and calls == [1, 1, 1]
    for sid, res in single.items():
        np.testing.assert_allclose(grouped[sid]["normal"].maps["mean"], res["normal"].maps["mean"], atol=1e-5)
        assert grouped[sid]["normal"].metrics["dice"] == pytest.approx(res["normal"].metrics["dice"], abs=1e-4)


def test_a_new_post_processing_step_is_one_registered_class(unet, val_slices):
    """Registering a step is all it takes: planning, key material and evaluate_slice pick it up."""
    from segunc.postprocess import POST_STEPS, PostStep, StepOutput
    from segunc.pipeline import all_mode_names, result_key_material

    @POST_STEPS.register("squared")
    class Squared(PostStep):
        def requires(self, config):
            return ["normal"]

        def params(self, config):
            return {"mode": "squared"}

        def run(self, inputs, config):
            maps = dict(inputs.maps["normal"])
            maps["mean"] = (maps["mean"] ** 2).astype(np.float32)
            return StepOutput(maps, 0.25, maps["mean"] >= 0.25)

    try:
        cfg = PipelineConfig(samples=2)
        assert "squared" in all_mode_names()
        assert required_modes(["squared", "mc_dropout"], cfg) == ["normal", "mc_dropout", "squared"]
        assert result_key_material(unet, cfg, "squared")["modes"]["squared"] == {"mode": "squared"}
        res = evaluate_slice(unet, val_slices[0], ["normal", "squared"], cfg)
        np.testing.assert_allclose(res["squared"].maps["mean"], res["normal"].maps["mean"] ** 2, rtol=1e-6)
        assert res["squared"].threshold == 0.25 and res["squared"].seconds >= res["normal"].seconds
        np.testing.assert_array_equal(res["squared"].maps["mask"], res["normal"].maps["mean"] >= 0.5)
    finally:
        POST_STEPS._items.pop("squared", None)
    assert "squared" not in all_mode_names()
