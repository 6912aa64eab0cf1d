"""``normal``: one deterministic forward pass, y = f(x) (paper §3.2)."""
from __future__ import annotations

import torch

from . import MODES
from .base import Mode, SliceInput


@MODES.register("normal")
class Normal(Mode):
    stochastic = False

    def __init__(self, samples: int = 1, seed: int = 0, batch_size: int = 16, **params):
        super().__init__(1, seed, batch_size, **params)

    def params(self):
        return {"mode": self.name}

    def sample_logits(self, backend, x: SliceInput) -> torch.Tensor:
        return backend.logits(x.image, x.box)
