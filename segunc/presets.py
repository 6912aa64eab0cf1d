"""Named presets: a backend's settings as data, applied before explicit command-line flags.

``paper``: the authors' settings wherever segunc's defaults differ (docs/method.md lists why
segunc's defaults differ):

* input: the three MRI channels as RGB for the MedSAM family (segunc: FLAIR replicated);
* noise σ 0.01 / 0.2 / 0.1 for U-Net / MedSAM family / UniverSeg on the authors' [0, 1] scale, the
  noisy image clamped to [0, 1] (``noise_scale="unit"``; segunc: σ 0.01 relative to the image's range,
  unclipped);
* TTA: U-Net the literal 30-transform set flip × scale × gain (``tta_set="paper"``); the MedSAM family
  and UniverSeg flip × rot90 (8 views at native scale, no intensity change);
* fusion parameters: exponential β (λ) = 1, power as (1 − u)^α (``certainty_power``; the paper's text
  has u^−α), percentile q = 50, mean-std k = 0.5;
* CRF: bilateral term only (Gaussian compat 0), bilateral weight 10, sdims 5, schan 5.

A preset is a function backend → overrides: ``config`` (PipelineConfig fields), ``fusion``
(FusionConfig fields), ``weightings`` (chosen weighting → the preset's form of it),
``threshold_params`` (per threshold method), ``crf`` (CRFParams fields) and ``backend_options``. :func:`apply_preset` skips every field whose flag was given explicitly.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from .config import PipelineConfig

__all__ = ["PRESETS", "preset_overrides", "apply_preset", "explicit_flags"]

SAM_FAMILY = ("litemedsam", "medsam")


def _paper(backend: str) -> dict[str, Any]:
    sigma = {"unet": 0.01, "universeg": 0.1}.get(backend, 0.2 if backend in SAM_FAMILY else None)
    config: dict[str, Any] = {"noise_scale": "unit"} if sigma is None else {"sigma": sigma, "noise_scale": "unit"}
    config["tta_set"] = "paper"
    if backend in (*SAM_FAMILY, "universeg"):
        config.update(tta_flips=(False, True), tta_scales=(1.0,), tta_intensities=(1.0,), tta_rotations=(0, 1, 2, 3))
    return {
        "config": config,
        "fusion": {"lam": 1.0},
        "weightings": {"power": "certainty_power"},  # the authors' power weighting
        "threshold_params": {"percentile": {"q": 50.0}, "mean_std": {"k": 0.5}},
        "crf": {"compat_gaussian": 0.0, "compat_bilateral": 10.0, "sdims": 5.0, "schan": 5.0},
        "backend_options": {"channels": "rgb"} if backend in SAM_FAMILY else {},
    }


#: name → function(backend name) → overrides
PRESETS: dict[str, Callable[[str], dict[str, Any]]] = {"paper": _paper}

#: override field → the command-line flag (argparse dest) that sets it explicitly
FLAG_OF = {"sigma": "sigma", "noise_scale": "sigma", "tta_set": "tta_set", "tta_flips": "tta_set",
           "tta_scales": "tta_set", "tta_intensities": "tta_set", "tta_rotations": "tta_set", "channels": "channels",
           "iterations": "crf_iterations", "samples": "samples", "p": "p", "placement": "placement"}


def preset_overrides(name: str, backend: str) -> dict[str, Any]:
    try:
        return PRESETS[name](backend)
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None


def apply_preset(name: str, backend: str, config: PipelineConfig, backend_options: dict,
                 explicit: Iterable[str] = ()) -> tuple[PipelineConfig, dict]:
    """``(config, backend_options)`` with preset ``name`` applied, except fields set by ``explicit`` flags."""
    o = preset_overrides(name, backend)
    explicit = set(explicit)
    keep = lambda d: {k: v for k, v in d.items() if FLAG_OF.get(k) not in explicit}  # noqa: E731
    fusion = dataclasses.replace(config.fusion, **keep(o["fusion"]))
    fusion = dataclasses.replace(fusion, weighting=o.get("weightings", {}).get(fusion.weighting, fusion.weighting))
    tp = o["threshold_params"].get(fusion.threshold)
    if tp is not None:
        fusion = dataclasses.replace(fusion, threshold_params={**tp, **fusion.threshold_kwargs()})
    crf = dataclasses.replace(config.crf, **keep(o["crf"]))
    config = dataclasses.replace(config, **keep(o["config"]), fusion=fusion, crf=crf)
    return config, {**backend_options, **keep(o["backend_options"])}


def explicit_flags(argv: Iterable[str]) -> set[str]:
    """argparse dests of the ``--long-option`` flags present in ``argv`` (``--crf-iterations 8`` → crf_iterations)."""
    out = set()
    for a in argv:
        if a.startswith("--") and len(a) > 2:
            out.add(a[2:].split("=", 1)[0].replace("-", "_"))
    return out
