"""Fusion step (paper §3.3): uncertainty-weighted fusion of modes (or of one mode's samples),
then the configured threshold. The array math lives in :mod:`segunc.fusion`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..config import PipelineConfig
from ..fusion import binarize, fuse, normalized_weights, threshold_value
from ..uncertainty import binary_entropy, summarize
from .base import MAP_NAMES, POST_STEPS, PostStep, StepInput, StepOutput


def fuse_mode_maps(components: list[dict[str, np.ndarray]], config: PipelineConfig) -> dict[str, np.ndarray]:
    """Fuse component mean maps weighted by their own uncertainty maps (paper §3.3)."""
    f = config.fusion
    probs = np.stack([c["mean"] for c in components])
    unc = np.stack([c[f.uncertainty] for c in components])
    w = normalized_weights(unc, f.weighting, **f.weighting_params())
    fused = np.nansum(w * probs, axis=0).astype(np.float32)
    variance = np.nansum(w * (probs - fused) ** 2, axis=0).astype(np.float32)
    entropy = binary_entropy(fused).astype(np.float32)
    expected = np.nansum(w * np.stack([c["expected_entropy"] for c in components]), axis=0).astype(np.float32)
    return {"mean": fused, "variance": variance, "entropy": entropy, "expected_entropy": expected,
            "mutual_information": np.clip(entropy - expected, 0, None).astype(np.float32)}


def fuse_samples(probs: np.ndarray, config: PipelineConfig) -> dict[str, np.ndarray]:
    """Fuse the T samples of one mode, u_i = per-pixel entropy of sample i."""
    f = config.fusion
    u = binary_entropy(probs)
    fused = fuse(probs, u, f.weighting, **f.weighting_params()).astype(np.float32)
    s = summarize(probs)
    maps = {k: np.asarray(getattr(s, k), dtype=np.float32) for k in MAP_NAMES}
    maps["mean"] = fused
    maps["entropy"] = binary_entropy(fused).astype(np.float32)
    maps["mutual_information"] = np.clip(maps["entropy"] - maps["expected_entropy"], 0, None).astype(np.float32)
    return maps


@POST_STEPS.register("fusion")
class Fusion(PostStep):
    def requires(self, config: PipelineConfig) -> list[str]:
        f = config.fusion
        return [f.sample_mode] if f.source == "samples" else list(f.sources)

    def params(self, config: PipelineConfig) -> dict[str, Any]:
        return {"mode": "fusion", **config.fusion.params()}

    def run(self, inputs: StepInput, config: PipelineConfig) -> StepOutput:
        f = config.fusion
        if f.source == "samples":
            maps = fuse_samples(inputs.samples[f.sample_mode], config)
        else:
            maps = fuse_mode_maps([inputs.maps[s] for s in f.sources], config)
        thr = float(threshold_value(maps["mean"], f.threshold, **f.threshold_kwargs()))
        return StepOutput(maps, thr, binarize(maps["mean"], f.threshold, **f.threshold_kwargs()))
