"""One slice through the whole method (paper Fig. 1): stochastic modes → uncertainty maps
→ uncertainty-weighted fusion → dense CRF → metrics.

``evaluate_slice`` computes the requested modes plus whatever they depend on (each registered
post-processing step declares its dependencies: ``fusion`` needs its source modes, ``crf`` needs
``fusion``) and returns one :class:`ModeResult` per requested mode.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
from ._torch import torch

from . import PIPELINE_VERSION
from .backends.base import Backend
from .config import PipelineConfig
from .data.lgg import Slice
from .metrics import compute_metrics
from .modes import MODES, SliceInput, get_mode
from .postprocess import POST_STEPS, StepInput, get_step
from .postprocess.base import MAP_NAMES
from .uncertainty import summarize


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


def _requires(name: str, config: PipelineConfig) -> list[str]:
    return get_step(name).requires(config) if name in POST_STEPS else []


def _depth(name: str, config: PipelineConfig, path: tuple[str, ...] = ()) -> int:
    """0 for a sampling mode, 1 + the deepest dependency for a post-processing step."""
    if name in path:
        raise ValueError(f"post-processing steps depend on each other in a circle: {' -> '.join([*path, name])}")
    if name not in POST_STEPS:
        return 0
    return 1 + max((_depth(d, config, (*path, name)) for d in _requires(name, config)), default=-1)


def required_modes(requested: Iterable[str], config: PipelineConfig) -> list[str]:
    """Requested modes plus their dependencies, dependencies first (sampling modes, then steps by depth)."""
    depth = {m: _depth(m, config) for m in dict.fromkeys(requested)}  # also refuses circular steps
    need: list[str] = []

    def add(m: str) -> None:
        for d in _requires(m, config):
            if d not in need and not (d in POST_STEPS and d in depth):  # a requested step is added at its own place
                add(d)
        need.append(m)

    for m in depth:
        if m not in need:
            add(m)
    return sorted(dict.fromkeys(need), key=lambda m: _depth(m, config))  # stable


def make_mode(name: str, config: PipelineConfig):
    return get_mode(name, seed=config.seed, batch_size=config.batch_size, **config.mode_params(name))


def _maps_from_probs(probs: np.ndarray) -> dict[str, np.ndarray]:
    u = summarize(probs)
    return {k: np.asarray(getattr(u, k), dtype=np.float32) for k in MAP_NAMES}


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
        elif name in POST_STEPS:
            step = get_step(name)
            out = step.run(StepInput(slice_.image, maps, samples), config)
            maps[name] = out.maps
            if out.threshold is not None:
                thresholds[name] = out.threshold
            if out.pred is not None:
                preds[name] = out.pred
            seconds[name] = sum(seconds[d] for d in step.requires(config)) + time.perf_counter() - t0
        else:
            raise KeyError(f"unknown mode {name!r}; available: {', '.join(all_mode_names())}")

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
    return [*MODES.names(), *POST_STEPS.names()]


def modes_key_material(backend, config: PipelineConfig, mode: str) -> dict[str, Any]:
    """The parameters of ``mode`` and of every mode / step it depends on, as they enter its key.
    ``backend``: the backend instance or its class (what a mode's key may take from it is a class
    attribute, e.g. ``dropout_version``)."""
    return {d: (make_mode(d, config).key_params(backend) if d in MODES else get_step(d).params(config))
            for d in required_modes([mode], config)}


def result_key_material(backend: Backend, config: PipelineConfig, mode: str) -> dict[str, Any]:
    """Everything that determines a (slice, mode) result besides the slice itself."""
    return {
        "pipeline_version": PIPELINE_VERSION,
        "backend": backend.settings(),
        "weights_sha256": backend.weights_sha256,
        "mode": mode,
        "modes": modes_key_material(backend, config, mode),
        "temperature": config.temperature,
    }
