"""The paper's defaults in one typed place (§3.2–3.4): p = 0.01, T = 30, the 30-transform
TTA set, σ relative to the intensity range, inverse-uncertainty fusion at 0.5, dense CRF
with sdims 5, schan 5 and 5 iterations."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .refine.crf import CRFParams

STOCHASTIC_SOURCES = ("mc_dropout", "tta", "noisy")


@dataclass
class FusionConfig:
    """Uncertainty-weighted fusion (paper §3.3).

    ``source='modes'``: fuse the mean maps of ``sources``, each weighted pixel-wise by its
    own ``uncertainty`` map (the paper's results). ``source='samples'``: fuse the T samples
    of ``sample_mode`` with u_i = entropy of sample i.
    """

    source: str = "modes"
    sources: tuple[str, ...] = STOCHASTIC_SOURCES
    sample_mode: str = "mc_dropout"
    uncertainty: str = "entropy"  # entropy | variance | mutual_information
    weighting: str = "inverse"  # inverse | exponential | power | certainty_power ((1 − u)^α, authors' scripts)
    lam: float = 10.0
    alpha: float = 1.0
    threshold: str = "fixed"  # fixed | otsu | percentile | mean_std
    threshold_params: dict[str, float] = field(default_factory=dict)

    def weighting_params(self) -> dict[str, float]:
        return {"exponential": {"lam": self.lam}, "power": {"alpha": self.alpha},
                "certainty_power": {"alpha": self.alpha}}.get(self.weighting, {})

    def threshold_value(self, prob: np.ndarray) -> float:
        from .fusion import threshold_value

        return float(threshold_value(prob, self.threshold, **self.threshold_params))

    def params(self) -> dict[str, Any]:
        d = asdict(self)
        if self.source == "samples":
            d.pop("sources")
        else:
            d.pop("sample_mode")
        if self.threshold != "fixed":  # data-derived thresholds binarise strictly (p > t): masks changed at ties
            d["binarize"] = "strict"
        return d


def tta_intensity_op(tta_set: str) -> str:
    """``default`` → gamma, ``paper`` → gain (see :mod:`segunc.modes.tta`)."""
    ops = {"default": "gamma", "paper": "gain"}
    if tta_set not in ops:
        raise ValueError(f"unknown TTA set {tta_set!r}; expected one of {sorted(ops)}")
    return ops[tta_set]


@dataclass
class PipelineConfig:
    samples: int = 30
    seed: int = 0
    batch_size: int = 16
    p: float = 0.01
    placement: str = "all"
    sigma: float = 0.01
    tta_flips: tuple[bool, ...] = (False, True)
    tta_scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    tta_intensities: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.2)
    #: ``default``: the intensities act as gamma exponents (30 distinct model inputs); ``paper``:
    #: as gains, the paper's literal set (6 distinct inputs after normalisation, computed once each)
    tta_set: str = "default"
    jitter_px: int = 10
    temperature: float = 1.0
    keep_samples: bool = False
    fusion: FusionConfig = field(default_factory=FusionConfig)
    crf: CRFParams = field(default_factory=CRFParams)

    def mode_params(self, name: str) -> dict[str, Any]:
        """Constructor parameters of a sampling mode (seed and batch size excluded)."""
        return {
            "normal": {},
            "mc_dropout": {"samples": self.samples, "p": self.p, "placement": self.placement},
            "noisy": {"samples": self.samples, "sigma": self.sigma},
            "tta": {"flips": self.tta_flips, "scales": self.tta_scales, "intensities": self.tta_intensities,
                    "intensity_op": tta_intensity_op(self.tta_set)},
            "box_jitter": {"samples": self.samples, "max_px": self.jitter_px},
        }.get(name, {"samples": self.samples})

    def post_params(self, name: str) -> dict[str, Any]:
        if name == "fusion":
            return {"mode": "fusion", **self.fusion.params()}
        if name == "crf":
            return {"mode": "crf", **self.crf.as_dict()}
        raise KeyError(name)
