"""The config owns itself: frozen values, exact to_dict/from_dict round trips, one source of defaults."""
from __future__ import annotations

import dataclasses
import json

import pytest

from segunc.config import CRFParams, FusionConfig, PipelineConfig, defaults_table

pytestmark = pytest.mark.unit

VARIANTS = [
    PipelineConfig(),
    PipelineConfig(samples=7, seed=3, batch_size=2, p=0.2, placement="decoder", sigma=0.05, tta_flips=(True,),
                   tta_scales=(1.0,), tta_intensities=(0.9, 1.1), jitter_px=4, temperature=1.7, keep_samples=True,
                   fusion=FusionConfig(source="samples", sample_mode="noisy", uncertainty="variance",
                                       weighting="power", alpha=2.0, threshold="percentile",
                                       threshold_params={"q": 90.0}),
                   crf=CRFParams(sdims=3.0, iterations=10)),
    PipelineConfig(fusion=FusionConfig(sources=("tta", "noisy"), threshold="mean_std", threshold_params=(("k", 0.5),))),
    PipelineConfig(tta_rotations=(0, 1, 2, 3), tta_scales=(1.0,), noise_scale="unit"),
]


@pytest.mark.parametrize("config", VARIANTS)
def test_round_trip_is_exact_also_through_json(config):
    assert PipelineConfig.from_dict(config.to_dict()) == config
    back = PipelineConfig.from_dict(json.loads(json.dumps(config.to_dict())))  # tuples come back as lists
    assert back == config and hash(back) == hash(config)
    assert isinstance(back.tta_scales, tuple) and isinstance(back.fusion.sources, tuple)
    assert isinstance(back.fusion.threshold_params, tuple)


def test_to_dict_is_the_plain_dataclass_dict_with_threshold_params_as_a_dict():
    c = VARIANTS[1]
    d = c.to_dict()
    assert d["fusion"]["threshold_params"] == {"q": 90.0}
    assert d["crf"] == dataclasses.asdict(c.crf) and d["crf"] == c.crf.to_dict() == c.crf.as_dict()
    later = {"tta_rotations", "noise_scale"}  # left out at their defaults: job ids hashed before they existed
    assert {k for k in d} == {f.name for f in dataclasses.fields(PipelineConfig)} - later
    full = PipelineConfig(tta_rotations=(0, 1), noise_scale="unit").to_dict()
    assert {k for k in full} == {f.name for f in dataclasses.fields(PipelineConfig)}
    assert c.fusion.params()["threshold_params"] == {"q": 90.0} and "sources" not in c.fusion.params()
    assert "sample_mode" not in PipelineConfig().fusion.params()


def test_configs_are_frozen_values():
    c = PipelineConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.samples = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.fusion.threshold = "otsu"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.crf.iterations = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.fusion.threshold_params["q"] = 1.0  # type: ignore[index]
    assert dataclasses.replace(c, samples=3).samples == 3 and c.samples == 30
    # a dict, pairs in any order and JSON lists are the same value
    a = FusionConfig(threshold_params={"b": 1.0, "a": 2.0})
    assert a == FusionConfig(threshold_params=[["a", 2.0], ["b", 1.0]]) == FusionConfig(threshold_params=(("b", 1.0), ("a", 2.0)))
    assert a.threshold_kwargs() == {"a": 2.0, "b": 1.0}
    assert PipelineConfig(tta_scales=[1.0, 2.0]).tta_scales == (1.0, 2.0)


def test_from_dict_takes_defaults_and_refuses_unknown_settings():
    assert PipelineConfig.from_dict({}) == PipelineConfig()
    assert PipelineConfig.from_dict({"samples": 5, "fusion": {"lam": 2.0}}) == PipelineConfig(
        samples=5, fusion=FusionConfig(lam=2.0))
    with pytest.raises(ValueError, match="PipelineConfig: unknown setting.*'sample'"):
        PipelineConfig.from_dict({"sample": 5})
    with pytest.raises(ValueError, match="FusionConfig: unknown setting.*'weight'"):
        PipelineConfig.from_dict({"fusion": {"weight": "inverse"}})
    with pytest.raises(ValueError, match="CRFParams: unknown setting.*'steps'"):
        CRFParams.from_dict({"steps": 3})
    with pytest.raises(ValueError, match="iterations must be an integer"):
        PipelineConfig.from_dict({"crf": {"iterations": 1.5}})
    with pytest.raises(ValueError, match="repeated name"):
        FusionConfig(threshold_params=[("q", 1.0), ("q", 2.0)])
    with pytest.raises(ValueError, match="threshold_params must be"):
        FusionConfig(threshold_params=5)  # type: ignore[arg-type]


def test_defaults_table_reads_the_config():
    rows = {s: (v, sec) for s, v, sec in defaults_table()}
    d = PipelineConfig()
    assert rows["samples T (MC dropout, noisy)"] == (str(d.samples), "§3.2")
    assert rows["dropout p"][0] == f"{d.p:g}" and rows["noise σ (of intensity range)"][0] == f"{d.sigma:g}"
    assert rows["fusion"] == ("inverse weighting by entropy, fixed threshold 0.5", "§3.3")
    assert rows["fusion sources"][0] == "mc_dropout, tta, noisy"
    assert rows["CRF"][0].startswith(f"sdims {d.crf.sdims}") and f"iterations {d.crf.iterations}" in rows["CRF"][0]
    other = {s: v for s, v, _ in defaults_table(dataclasses.replace(d, samples=12, fusion=FusionConfig(
        weighting="exponential", lam=5.0, threshold="percentile", threshold_params={"q": 90.0})))}
    assert other["samples T (MC dropout, noisy)"] == "12"
    assert other["fusion"] == "exponential (λ 5) weighting by entropy, percentile threshold (q 90)"
