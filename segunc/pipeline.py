"""One slice through the whole method (paper Fig. 1): stochastic modes → uncertainty maps
→ uncertainty-weighted fusion → dense CRF → metrics.

``evaluate_slice`` computes the requested modes plus whatever they depend on
(``fusion`` needs its source modes, ``crf`` needs ``fusion``) and returns one
:class:`ModeResult` per requested mode.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch

from . import PIPELINE_VERSION
from .backends.base import Backend
from .config import PipelineConfig
from .data.lgg import Slice
from .fusion import binarize, fuse, normalized_weights
from .metrics import compute_metrics
from .modes import MODES, SliceInput, get_mode
from .refine.crf import dense_crf
from .uncertainty import binary_entropy, summarize

POST_MODES = ("fusion", "crf")
MAP_NAMES = ("mean", "variance", "entropy", "expected_entropy", "mutual_information")


@dataclass
class ModeResult:
    """Everything the app needs about one (slice, mode) without re-running it."""

    slice_id: str
    patient_id: str
    mode: str
    maps: dict[str, np.ndarray]  # MAP_NAMES (float32 H W) + "mask" (bool H W)
    metrics: dict[str, float]
    seconds: float  # wall time for this result, including the modes it depends on
    threshold: float = 0.5
    tumour_px: int = 0  # ground-truth foreground pixels
    samples: np.ndarray | None = None  # T H W probabilities, only if config.keep_samples

    def row(self, backend: str) -> dict[str, Any]:
        """The flat metric row (CSV / database) of this result."""
        return {"patient_id": self.patient_id, "slice_id": self.slice_id, "backend": backend, "mode": self.mode,
                **self.metrics, "seconds": round(self.seconds, 4), "threshold": self.threshold,
                "tumour_px": self.tumour_px, "pred_px": int(self.maps["mask"].sum())}


def required_modes(requested: Iterable[str], config: PipelineConfig) -> list[str]:
    """Requested modes plus their dependencies, dependencies first."""
    requested = list(dict.fromkeys(requested))
    f = config.fusion
    sources = [f.sample_mode] if f.source == "samples" else list(f.sources)
    need: list[str] = []
    for m in requested:
        if m == "crf" and "fusion" not in requested:
            need += [*sources, "fusion"]
        if m == "fusion":
            need += sources
        need.append(m)
    out = list(dict.fromkeys(need))
    stage = {"fusion": 1, "crf": 2}
    return sorted(out, key=lambda m: stage.get(m, 0))  # stable: sampling modes, then fusion, then crf


def make_mode(name: str, config: PipelineConfig):
    return get_mode(name, seed=config.seed, batch_size=config.batch_size, **config.mode_params(name))


def _maps_from_probs(probs: np.ndarray) -> dict[str, np.ndarray]:
    u = summarize(probs)
    return {k: np.asarray(getattr(u, k), dtype=np.float32) for k in MAP_NAMES}


def _fusion_maps(components: list[dict[str, np.ndarray]], config: PipelineConfig) -> dict[str, np.ndarray]:
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


def _sample_fusion_maps(probs: np.ndarray, config: PipelineConfig) -> dict[str, np.ndarray]:
    """Fuse the T samples of one mode, u_i = per-pixel entropy of sample i."""
    f = config.fusion
    u = binary_entropy(probs)
    fused = fuse(probs, u, f.weighting, **f.weighting_params()).astype(np.float32)
    maps = _maps_from_probs(probs)
    maps["mean"] = fused
    maps["entropy"] = binary_entropy(fused).astype(np.float32)
    maps["mutual_information"] = np.clip(maps["entropy"] - maps["expected_entropy"], 0, None).astype(np.float32)
    return maps


def evaluate_slice(
    backend: Backend,
    slice_: Slice,
    modes: Iterable[str],
    config: PipelineConfig,
    on_mode: Callable[[str], None] | None = None,
    box: np.ndarray | None = None,
    precomputed: dict[str, tuple[torch.Tensor, float]] | None = None,
) -> dict[str, ModeResult]:
    """Run ``modes`` on one slice and score them against its mask. ``box`` (xyxy pixels): the
    prompt of a box-prompted backend instead of the mask's bounding box (an uploaded slice).
    ``precomputed``: mode → (logits T×H×W, seconds) already computed for this slice, e.g. the
    ``normal`` pass of several slices batched together by the sweep."""
    modes = list(modes)
    plan = required_modes(modes, config)
    x = SliceInput.from_slice(slice_, backend, box=box)
    target = slice_.mask
    maps: dict[str, dict[str, np.ndarray]] = {}
    samples: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    preds: dict[str, np.ndarray] = {}
    for name in plan:
        if on_mode:
            on_mode(name)
        t0 = time.perf_counter()
        if name in MODES:
            mode = make_mode(name, config)
            if not mode.supports(backend):
                raise ValueError(f"mode '{name}' does not apply to backend '{backend.name}'")
            given = (precomputed or {}).get(name)
            with torch.inference_mode():
                logits = mode.sample_logits(backend, x) if given is None else given[0]
                probs = torch.sigmoid(logits / config.temperature).float().cpu().numpy()
            samples[name] = probs
            maps[name] = _maps_from_probs(probs)
            seconds[name] = time.perf_counter() - t0 + (0.0 if given is None else given[1])
        elif name == "fusion":
            if config.fusion.source == "samples":
                src = config.fusion.sample_mode
                maps[name] = _sample_fusion_maps(samples[src], config)
                dep = seconds[src]
            else:
                maps[name] = _fusion_maps([maps[s] for s in config.fusion.sources], config)
                dep = sum(seconds[s] for s in config.fusion.sources)
            thr = config.fusion.threshold_value(maps[name]["mean"])
            thresholds[name] = thr
            preds[name] = binarize(maps[name]["mean"], config.fusion.threshold, **config.fusion.threshold_params)
            seconds[name] = dep + time.perf_counter() - t0
        elif name == "crf":
            c = config.crf
            refined = dense_crf(maps["fusion"]["mean"], slice_.image, **c.as_dict())
            m = dict(maps["fusion"])
            m["mean"] = refined.astype(np.float32)
            m["entropy"] = binary_entropy(refined).astype(np.float32)
            maps[name] = m
            seconds[name] = seconds["fusion"] + time.perf_counter() - t0
        else:
            raise KeyError(f"unknown mode {name!r}; available: {', '.join([*MODES.names(), *POST_MODES])}")

    results: dict[str, ModeResult] = {}
    for name in modes:
        m = maps[name]
        thr = thresholds.get(name, 0.5)
        pred = preds.get(name, m["mean"] >= thr)
        metrics = compute_metrics(m["mean"], target, uncertainty=m["entropy"], pred=pred)
        out_maps = {**m, "mask": pred}
        results[name] = ModeResult(
            slice_.slice_id, slice_.patient_id, name, out_maps, metrics, seconds[name], thr,
            int(target.sum()), samples.get(name) if config.keep_samples else None,
        )
    return results


def all_mode_names() -> list[str]:
    return [*MODES.names(), *POST_MODES]


def result_key_material(backend: Backend, config: PipelineConfig, mode: str) -> dict[str, Any]:
    """Everything that determines a (slice, mode) result besides the slice itself."""
    deps = required_modes([mode], config)
    return {
        "pipeline_version": PIPELINE_VERSION,
        "backend": backend.settings(),
        "weights_sha256": backend.weights_sha256,
        "mode": mode,
        "modes": {d: (make_mode(d, config).key_params(backend) if d in MODES else config.post_params(d)) for d in deps},
        "temperature": config.temperature,
    }
