"""A sweep: one backend × several modes over a list of slices, streamed slice by slice.

A slice that fails (bad file, model error) yields a :class:`SliceOutcome` with ``error``
set and the sweep goes on; nothing computed before it is lost. An optional ``plan`` hook
chooses, per slice, which of the modes still need computing (the results store passes the
modes it lacks); a slice with nothing to compute is not even loaded.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..backends import Backend, get_backend
from ..config import DEFAULT_MODES, PipelineConfig
from ..data.lgg import Slice, SliceError, SliceRef, load_slice
from ..pipeline import ModeResult, all_mode_names, evaluate_slice
from .selection import check_limit, select_slices  # noqa: F401 - part of this module's interface

@dataclass
class SliceOutcome:
    ref: SliceRef
    results: dict[str, ModeResult] = field(default_factory=dict)
    error: str | None = None
    error_file: str | None = None
    planned: list[str] | None = None  # the modes this slice was asked for (after ``plan``)
    slice_: Slice | None = None  # the loaded slice (None if skipped or unreadable)


def parse_modes(spec: str | Sequence[str] | None, backend: Backend | None = None) -> list[str]:
    """``"normal,tta"`` → validated list; None → the paper's six modes."""
    if spec is None or spec == "all":
        modes = list(DEFAULT_MODES)
    elif isinstance(spec, str):
        modes = [m.strip() for m in spec.split(",") if m.strip()]
    else:
        modes = list(spec)
    if not modes:
        raise ValueError(f"no mode given (modes {spec!r}); name at least one of {', '.join(all_mode_names())}, "
                         "or leave the option out for the paper's six")
    known = all_mode_names()
    bad = [m for m in modes if m not in known]
    if bad:
        raise ValueError(f"unknown mode(s) {bad}; available: {', '.join(known)}")
    if backend is not None and not backend.needs_box and "box_jitter" in modes:
        raise ValueError(f"mode 'box_jitter' needs a box-prompted backend; '{backend.name}' takes no box")
    return modes


def build_backend(name: str, weights: Path | str | None = None, device: str = "cpu", support_data: Path | str | None = None,
                  data: Path | str | None = None, seed: int = 0, **options) -> Backend:
    """Instantiate a backend; UniverSeg also gets its support set drawn from train-split slices."""
    backend = get_backend(name, weights=weights, device=device, **options)
    if backend.needs_support:
        root = support_data or data
        if root is None:
            raise ValueError("backend 'universeg' needs --support-data (train-split LGG slices)")
        backend.set_support_from_refs(discover(root))
    return backend


def iter_sweep(backend: Backend, refs: Iterable[SliceRef], modes: Sequence[str], config: PipelineConfig,
               plan: Callable[[SliceRef], Sequence[str]] | None = None, group: int | None = None,
               load: Callable[[SliceRef], Slice] = load_slice) -> Iterator[SliceOutcome]:
    """Evaluate each slice; yield its outcome (results or the error that stopped it).

    ``plan(ref)`` (optional) returns the subset of ``modes`` to compute for that slice. Slices are
    read ``group`` at a time (default ``config.batch_size``) so that the single ``normal`` pass of
    all of them runs as one batch; every stochastic mode already fills a batch with its samples.
    ``load`` reads a slice (a cluster worker is given slices the driver has already read)."""
    group = max(1, group or config.batch_size)
    it = iter(refs)
    while True:
        chunk = [ref for _, ref in zip(range(group), it)]
        if not chunk:
            return
        ready: list[tuple[SliceRef, list[str], Slice]] = []
        for ref in chunk:
            todo = list(modes) if plan is None else list(plan(ref))
            if not todo:
                yield SliceOutcome(ref, planned=[])
                continue
            try:
                ready.append((ref, todo, load(ref)))
            except SliceError as exc:
                yield SliceOutcome(ref, error=str(exc), error_file=str(exc.path), planned=todo)
        pre = _batched_normal(backend, [s for _, todo, s in ready if "normal" in todo], config)
        for ref, todo, slice_ in ready:
            try:
                given = {"normal": pre[slice_.slice_id]} if slice_.slice_id in pre else None
                yield SliceOutcome(ref, evaluate_slice(backend, slice_, todo, config, precomputed=given), planned=todo,
                                   slice_=slice_)
            except Exception as exc:  # a model error on one slice must not abort the sweep
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                yield SliceOutcome(ref, error=f"{ref.image_path}: {tb}", error_file=str(ref.image_path), planned=todo)


def _batched_normal(backend: Backend, slices: list[Slice], config: PipelineConfig) -> dict[str, tuple]:
    """slice id → (normal logits, seconds per slice) from one batched pass; {} for fewer than two
    slices or if the batch fails (each slice then runs alone, and reports its own error)."""
    if len(slices) < 2:
        return {}
    import time

    import torch

    from ..modes import SliceInput
    from ..pipeline import make_mode

    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            xs = [SliceInput.from_slice(s, backend) for s in slices]
            logits = make_mode("normal", config).sample_logits_many(backend, xs)
        each = (time.perf_counter() - t0) / len(slices)
    except Exception:  # noqa: BLE001 - fall back to one slice at a time
        return {}
    return {s.slice_id: (lg, each) for s, lg in zip(slices, logits)}
