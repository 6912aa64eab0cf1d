"""``normal``: one deterministic forward pass, y = f(x) (paper §3.2)."""
from __future__ import annotations

from .._torch import torch

from .base import MODES, Mode, SliceInput, step


@MODES.register("normal")
class Normal(Mode):
    stochastic = False

    def __init__(self, samples: int = 1, seed: int = 0, batch_size: int = 16, **params):
        super().__init__(1, seed, batch_size, **params)

    def params(self):
        return {"mode": self.name}

    def sample_logits(self, backend, x: SliceInput) -> torch.Tensor:
        return backend.logits(x.image, x.box)

    def sample_logits_many(self, backend, xs: list[SliceInput]) -> list[torch.Tensor]:
        """One pass for several slices: their images (and boxes) in batches of ``batch_size``;
        the same logits as :meth:`sample_logits` slice by slice (the model is deterministic)."""
        out: list[torch.Tensor] = []
        n = step(self.batch_size, backend)
        for i in range(0, len(xs), n):
            part = xs[i:i + n]
            boxes = None if part[0].box is None else torch.cat([x.box for x in part])
            out.extend(backend.logits(torch.cat([x.image for x in part]), boxes).split(1))
        return out
