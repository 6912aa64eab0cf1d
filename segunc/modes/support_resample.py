"""``support_resample``: epistemic uncertainty of an in-context learner (UniverSeg) from the
choice of its examples. Sample k of K is the prediction y_k = f(x; 𝒮_k) with its own support
set 𝒮_k of S tumour slices, no retraining (support-set ensembling, Butoi et al. 2023 §5).

Support sets: one :func:`~segunc.backends.universeg.draw_support` of K·S slices from the pool,
seeded by the mode's ``seed``, cut into K consecutive blocks of S. ``draw_support`` visits
train-split patients round-robin in a seeded order, so the sets are patient-disjoint within
and between each other while K·S ≤ #train patients, and within each set while S ≤ #patients
(if the pool has fewer than K·S tumour slices, each set is drawn on its own with seed
(seed, k)). With the default seed equal to the backend's ``support_seed`` and the same S,
set 0 is the backend's own support, so the single-pass prediction is one of the samples.
The sets do not depend on the evaluated slice; they come only from TRAIN-split patients
(the evaluated split is never used), and a train-split slice (if one is evaluated) has
its own patient removed from the pool.

Pool: the ``pool`` argument (``SliceRef`` list), else ``backend.support_pool`` (the refs
:meth:`UniverSegBackend.set_support_from_refs` drew from). The pool is not part of
``params()``: it is the train split of the data the backend's support (recorded in its
settings) came from. The loaded support tensors are cached per backend (a few entries), so
the K·S slices are read once, not once per evaluated slice.
"""
from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from typing import Sequence

from .._torch import torch

from .base import MODES, Mode, SliceInput, chunks

_CACHE: "weakref.WeakKeyDictionary[object, OrderedDict]" = weakref.WeakKeyDictionary()
_CACHE_ENTRIES = 4


def draw_support_sets(pool: Sequence, k: int, size: int, seed: int = 0, exclude_patients: Sequence[str] = ()) -> list[list]:
    """K lists of ``size`` train tumour ``SliceRef`` each (see module doc), deterministic in ``seed``."""
    from ..backends.universeg import draw_support

    if k < 1:
        raise ValueError(f"need at least one support set, got {k}")
    try:
        flat = draw_support(pool, k * size, seed, exclude_patients)
        return [flat[i * size:(i + 1) * size] for i in range(k)]
    except ValueError:
        sub = lambda i: int.from_bytes(hashlib.sha256(f"{seed}|{i}".encode()).digest()[:4], "little")  # noqa: E731
        return [draw_support(pool, size, sub(i), exclude_patients) for i in range(k)]


def _train_patient(slice_id: str, pool: Sequence) -> tuple[str, ...]:
    """(patient id,) if the evaluated slice belongs to a patient of the pool's train split, else ()."""
    from ..data import DataError, patient_id

    try:
        pid = patient_id(slice_id)
    except DataError:
        return ()
    return (pid,) if any(r.patient_id == pid and r.split == "train" for r in pool) else ()


@MODES.register("support_resample")
class SupportResample(Mode):
    def __init__(self, samples: int = 30, seed: int = 0, batch_size: int = 16, support_size: int | None = None,
                 pool: Sequence | None = None):
        super().__init__(samples, seed, batch_size, support_size=None if support_size is None else int(support_size))
        self.pool = None if pool is None else list(pool)

    def supports(self, backend) -> bool:
        return bool(getattr(backend, "needs_support", False)) and hasattr(backend, "logits_with_supports")

    def _pool(self, backend) -> list:
        pool = self.pool if self.pool is not None else getattr(backend, "support_pool", None)
        if not pool:
            raise ValueError("support_resample needs a pool of train refs: pass pool=... or build the backend with "
                             "set_support_from_refs(refs)")
        return pool

    def support_size(self, backend) -> int:
        return int(self.extra["support_size"] or backend.options["support_size"])

    def support_sets(self, backend, exclude_patients: Sequence[str] = ()) -> list[list]:
        """The K support sets (``SliceRef`` lists) this mode uses on ``backend``."""
        return draw_support_sets(self._pool(backend), self.samples, self.support_size(backend), self.seed,
                                 exclude_patients)

    def _tensors(self, backend, exclude: tuple[str, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        from ..data import load_slice

        pool = self._pool(backend)
        size = self.support_size(backend)
        ids = hashlib.sha256("\n".join(sorted(r.slice_id for r in pool)).encode()).hexdigest()
        key = (ids, self.samples, size, self.seed, exclude, backend.options.get("channels"))
        cache = _CACHE.setdefault(backend, OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        sets = self.support_sets(backend, exclude)
        loaded = {r.slice_id: load_slice(r) for s in sets for r in s}
        out = [tuple(t.to(backend.device) for t in backend.support_for([loaded[r.slice_id] for r in s])) for s in sets]
        cache[key] = out
        while len(cache) > _CACHE_ENTRIES:
            cache.popitem(last=False)
        return out

    def sample_logits(self, backend, x: SliceInput) -> torch.Tensor:
        if not self.supports(backend):
            raise ValueError(f"support_resample needs an in-context backend with a support set; '{backend.name}' has none")
        supports = self._tensors(backend, _train_patient(x.slice_id, self._pool(backend)))
        return torch.cat([backend.logits_with_supports(x.image, supports[c]) for c in chunks(len(supports), self.batch_size)])
