"""The mode contract: (backend, one slice) → ``T H W`` logits, computed in batches.

A NaN in a sample means "pixel not observed by that sample" (TTA zoom-ins); every
reduction downstream is NaN-aware. Randomness comes from a ``torch.Generator`` seeded by
(seed, slice id, mode), so a slice's samples do not depend on which other slices or modes
ran before it.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np
from .._torch import torch

from ..backends.base import Backend
from ..registry import Registry


@dataclass
class SliceInput:
    """One slice ready for a model: raw image ``1 3 H W`` (0..255 float) and optional box ``1 4``."""

    slice_id: str
    image: torch.Tensor
    box: torch.Tensor | None = None

    @classmethod
    def from_slice(cls, slice_, backend: Backend, box=None) -> "SliceInput":
        """``box`` (xyxy pixels) replaces the backend's own prompt (the mask's bounding box), e.g. a typed box."""
        image = torch.from_numpy(np.ascontiguousarray(slice_.image)).permute(2, 0, 1)[None].float()
        extras = backend.prepare_slice(slice_)
        box = extras.get("box") if box is None else box
        box_t = None if box is None else torch.as_tensor(box, dtype=torch.float32).reshape(1, 4)
        return cls(slice_.slice_id, image.to(backend.device), None if box_t is None else box_t.to(backend.device))

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])  # type: ignore[return-value]


def slice_generator(seed: int, slice_id: str, mode: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by sha256(seed, slice id, mode): reproducible per slice."""
    digest = hashlib.sha256(f"{seed}|{slice_id}|{mode}".encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return g


#: prompts per mask-decoder call on one shared embedding (MC dropout with ``placement='decoder'``, box
#: jitter), fixed whatever ``batch_size``: the decoder's batched GEMMs round differently per batch shape
#: (LiteMedSAM: a sample moved by up to 6.3e-6 between batch 1 and 3 or 30), so the batch must not be the
#: user's. 16 = the default ``--batch-size``, so results stored before keep their keys; one call per sample
#: instead would cost 2.8x (LiteMedSAM, T = 30: 42 s vs 15 s per slice on a loaded 2-core CPU).
DECODE_BATCH = 16


def step(batch_size: int, backend) -> int:
    """Samples per full forward pass: the configured batch, capped by ``backend.max_batch()``."""
    cap = backend.max_batch()
    return max(1, min(batch_size, cap) if cap else batch_size)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Index slices ``[0:size], [size:2size], ...`` covering ``range(n)``."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


class Mode(ABC):
    """Draws T stochastic logit maps for one slice. Parameters are recorded in ``params()``."""

    name: ClassVar[str]
    stochastic: ClassVar[bool] = True
    #: only for backends with a box prompt
    needs_box: ClassVar[bool] = False

    def __init__(self, samples: int = 30, seed: int = 0, batch_size: int = 16, **params: Any):
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.samples = int(samples)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.extra = dict(params)

    def params(self) -> dict[str, Any]:
        """Everything that changes this mode's output (batch size excluded)."""
        return {"mode": self.name, "samples": self.samples, "seed": self.seed, **self.extra}

    def key_params(self, backend: Backend) -> dict[str, Any]:
        """What enters the result key for this backend (default: ``params()``)."""
        return self.params()

    def supports(self, backend: Backend) -> bool:
        return backend.needs_box or not self.needs_box

    def generator(self, backend: Backend, x: SliceInput) -> torch.Generator:
        """A CPU generator for this slice: draws are made on the CPU and moved to the backend's
        device, so samples do not depend on the device (CUDA generators give other numbers)."""
        return slice_generator(self.seed, x.slice_id, self.name, "cpu")

    @abstractmethod
    def sample_logits(self, backend: Backend, x: SliceInput) -> torch.Tensor:
        """``T H W`` logits (NaN = unobserved pixel) for one slice."""


#: name → mode class; each mode module registers itself with ``@MODES.register(name)``
MODES: Registry[Mode] = Registry("mode")


def get_mode(name: str, **params) -> Mode:
    """Instantiate a registered mode by name with its parameters."""
    return MODES.get(name)(**params)
