"""The paper's defaults in one typed place (§3.2–3.4): p = 0.01, T = 30, the 30-transform
TTA set, σ relative to the intensity range, inverse-uncertainty fusion at 0.5, dense CRF
with sdims 5, schan 5 and 5 iterations.

``PipelineConfig()`` is the single source of these defaults (CLI, bench, app pages). Configs are
frozen values: derive a variant with ``dataclasses.replace``. ``to_dict`` / ``from_dict``
round-trip exactly (``from_dict`` also takes JSON, where tuples come back as lists).
Stdlib only: this module sits at the bottom of the package.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["STOCHASTIC_SOURCES", "DEFAULT_MODES", "PLACEMENTS", "FUSION_SOURCES", "UNCERTAINTIES", "FUSION_WEIGHTINGS",
           "FUSION_THRESHOLDS", "CRFParams", "FusionConfig", "PipelineConfig", "defaults_table"]

STOCHASTIC_SOURCES = ("mc_dropout", "tta", "noisy")
#: the paper's six modes, in its order: what a sweep runs when no mode is named
DEFAULT_MODES = ("normal", "mc_dropout", "tta", "noisy", "fusion", "crf")
# the values a setting may take (CLI choices, app widgets)
PLACEMENTS = ("all", "decoder")
FUSION_SOURCES = ("modes", "samples")
UNCERTAINTIES = ("entropy", "variance", "mutual_information")
FUSION_WEIGHTINGS = ("inverse", "exponential", "power", "certainty_power")
TTA_SETS = ("default", "paper")
FUSION_THRESHOLDS = ("fixed", "otsu", "percentile", "mean_std")


def _check_keys(cls, d: Mapping) -> dict:
    if not isinstance(d, Mapping):
        raise ValueError(f"{cls.__name__}: expected a mapping of settings, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    return dict(d)


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF settings (paper §3.4), recordable with a result; use as
    ``dense_crf(prob, image, **params.as_dict())``.

    §3.4 names the knobs but gives only the iteration range (5-10); the Potts weights were chosen
    on val (:mod:`segunc.refine.crf`, docs/method.md §3), sdims/schan are the project's, the gaussian
    sxy pydensecrf's README's.
    """

    sdims: float = 5.0             # bilateral spatial std (pixels)
    schan: float = 5.0             # bilateral intensity std (uint8 levels, every channel)
    compat_bilateral: float = 1.0  # Potts weight of the bilateral term (former default 10)
    gaussian_sxy: float = 3.0      # gaussian spatial std (pixels)
    compat_gaussian: float = 0.0   # Potts weight of the gaussian term; 0 = no gaussian term (former default 3)
    iterations: int = 5            # mean-field steps (paper: 5-10; 0 returns the clipped input)

    def __post_init__(self):
        for name in ("sdims", "schan", "gaussian_sxy"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("compat_bilateral", "compat_gaussian"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if isinstance(self.iterations, bool) or int(self.iterations) != self.iterations or self.iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {self.iterations}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    to_dict = as_dict

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CRFParams":
        return cls(**_check_keys(cls, d))


def _pairs(value: Any) -> tuple[tuple[str, Any], ...]:
    """A mapping or (name, value) pairs (JSON: a list of lists) → sorted tuple of pairs."""
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = [(str(k), v) for k, v in items]
    except (TypeError, ValueError):
        raise ValueError(f"threshold_params must be a mapping or (name, value) pairs, got {value!r}") from None
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError(f"threshold_params has a repeated name: {value!r}")
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class FusionConfig:
    """Uncertainty-weighted fusion (paper §3.3).

    ``source='modes'``: fuse the mean maps of ``sources``, each weighted pixel-wise by its
    own ``uncertainty`` map (the paper's results). ``source='samples'``: fuse the T samples
    of ``sample_mode`` with u_i = entropy of sample i. ``threshold_params``: the threshold's
    keyword arguments as sorted (name, value) pairs (a dict is accepted and converted).
    """

    source: str = "modes"
    sources: tuple[str, ...] = STOCHASTIC_SOURCES
    sample_mode: str = "mc_dropout"
    uncertainty: str = "entropy"  # entropy | variance | mutual_information
    weighting: str = "inverse"  # inverse | exponential | power | certainty_power ((1 − u)^α, authors' scripts)
    lam: float = 10.0
    alpha: float = 1.0
    threshold: str = "fixed"  # fixed | otsu | percentile | mean_std
    threshold_params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "threshold_params", _pairs(self.threshold_params))

    def weighting_params(self) -> dict[str, float]:
        return {"exponential": {"lam": self.lam}, "power": {"alpha": self.alpha},
                "certainty_power": {"alpha": self.alpha}}.get(self.weighting, {})

    def threshold_kwargs(self) -> dict[str, float]:
        return dict(self.threshold_params)

    def to_dict(self) -> dict[str, Any]:
        """All fields; ``threshold_params`` as a dict (the form result keys and job ids hash)."""
        d = asdict(self)
        d["threshold_params"] = self.threshold_kwargs()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FusionConfig":
        return cls(**_check_keys(cls, d))

    def params(self) -> dict[str, Any]:
        """Key material: every field that changes the fused map (source-dependent)."""
        d = self.to_dict()
        d.pop("sources" if self.source == "samples" else "sample_mode")
        if self.threshold != "fixed":  # data-derived thresholds binarise strictly (p > t): masks changed at ties
            d["binarize"] = "strict"
        return d


def tta_intensity_op(tta_set: str) -> str:
    """``default`` → gamma, ``paper`` → gain (see :mod:`segunc.modes.tta`)."""
    ops = {"default": "gamma", "paper": "gain"}
    if tta_set not in ops:
        raise ValueError(f"unknown TTA set {tta_set!r}; expected one of {sorted(ops)}")
    return ops[tta_set]


_TUPLES = ("tta_flips", "tta_scales", "tta_intensities", "tta_rotations")
#: fields added after job ids were first hashed → their default (left out of ``to_dict`` there)
_LATER_DEFAULTS = {"tta_rotations": (0,), "noise_scale": "range"}


@dataclass(frozen=True)
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
    #: quarter turns per view (the paper preset's flip × rot90 set for the MedSAM family / UniverSeg)
    tta_rotations: tuple[int, ...] = (0,)
    #: ``range``: noise σ relative to the image's range, unclipped; ``unit``: the authors' [0, 1] scale, clamped
    noise_scale: str = "range"
    jitter_px: int = 10
    temperature: float = 1.0
    keep_samples: bool = False
    fusion: FusionConfig = field(default_factory=FusionConfig)
    crf: CRFParams = field(default_factory=CRFParams)

    def __post_init__(self):
        for k in _TUPLES:
            object.__setattr__(self, k, tuple(getattr(self, k)))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples stay tuples; ``json`` writes them as lists). Fields added after
        job ids were first hashed (:data:`_LATER_DEFAULTS`) are left out at their default, so a sweep
        specified before they existed keeps its job id; :meth:`from_dict` restores them."""
        d = asdict(self)
        d["fusion"] = self.fusion.to_dict()
        for name, default in _LATER_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PipelineConfig":
        """Inverse of :meth:`to_dict`; missing settings take their defaults, unknown ones are an error."""
        d = _check_keys(cls, d)
        for name, sub in (("fusion", FusionConfig), ("crf", CRFParams)):
            if name in d and not isinstance(d[name], sub):
                d[name] = sub.from_dict(d[name])
        return cls(**d)

    def mode_params(self, name: str) -> dict[str, Any]:
        """Constructor parameters of a sampling mode (seed and batch size excluded)."""
        return {
            "normal": {},
            "mc_dropout": {"samples": self.samples, "p": self.p, "placement": self.placement},
            "noisy": {"samples": self.samples, "sigma": self.sigma, "scale": self.noise_scale},
            "tta": {"flips": self.tta_flips, "scales": self.tta_scales, "intensities": self.tta_intensities,
                    "intensity_op": tta_intensity_op(self.tta_set), "rotations": self.tta_rotations},
            "box_jitter": {"samples": self.samples, "max_px": self.jitter_px},
        }.get(name, {"samples": self.samples})


def defaults_table(config: PipelineConfig | None = None) -> list[tuple[str, str, str]]:
    """(setting, value, paper section) rows describing ``config`` (default ``PipelineConfig()``),
    e.g. for the app's Set-up page."""
    c = config or PipelineConfig()
    f = c.fusion
    weighting = f.weighting + {"exponential": f" (λ {f.lam:g})", "power": f" (α {f.alpha:g})",
                               "certainty_power": f" (α {f.alpha:g})"}.get(f.weighting, "")
    if f.threshold_params:
        thr = f"{f.threshold} threshold ({', '.join(f'{k} {v:g}' for k, v in f.threshold_params)})"
    else:
        thr = f"{f.threshold} threshold" + (" 0.5" if f.threshold == "fixed" else "")
    return [
        ("samples T (MC dropout, noisy)", str(c.samples), "§3.2"),
        ("dropout p", f"{c.p:g}", "§3.2"),
        ("dropout placement", c.placement, "§3.2"),
        ("noise σ (of intensity range)", f"{c.sigma:g}", "§3.2"),
        ("TTA", f"flips {list(c.tta_flips)} × scales {list(c.tta_scales)} × {tta_intensity_op(c.tta_set)} "
                f"{list(c.tta_intensities)} ({c.tta_set} set)", "§3.2"),
        ("fusion", f"{weighting} weighting by {f.uncertainty}, {thr}", "§3.3"),
        ("fusion sources", ", ".join(f.sources) if f.source == "modes" else f"samples of {f.sample_mode}", "§3.3"),
        ("CRF", ", ".join(f"{k} {v}" for k, v in c.crf.as_dict().items()), "§3.4"),
    ]
