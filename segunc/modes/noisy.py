"""``noisy``: Gaussian input noise, y_i = f(x + ε_i), ε_i ~ N(0, σ_n²) (paper §3.2), T = 30.

σ_n = ``sigma`` × the image's dynamic range (max − min over all channels), so ``sigma``
is relative to the intensity scale whatever the encoding (default 0.01: on 8 val
slices, U-Net mean Dice 0.694 at 0.01 vs 0.697 noise-free, 0.672 at 0.02, 0.417 at 0.05).
"""
from __future__ import annotations

import torch

from .base import MODES, Mode, SliceInput, chunks, step


@MODES.register("noisy")
class Noisy(Mode):
    def __init__(self, samples: int = 30, seed: int = 0, batch_size: int = 16, sigma: float = 0.01):
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        super().__init__(samples, seed, batch_size, sigma=float(sigma))

    def sample_logits(self, backend, x: SliceInput) -> torch.Tensor:
        g = self.generator(backend, x)
        scale = float(x.image.max() - x.image.min()) * self.extra["sigma"]
        out = []
        for c in chunks(self.samples, step(self.batch_size, backend)):
            n = c.stop - c.start
            noise = torch.randn((n, *x.image.shape[1:]), generator=g).to(x.image.device) * scale  # CPU: same for any chunking
            box = None if x.box is None else x.box.expand(n, -1)
            out.append(backend.logits(x.image + noise, box))
        return torch.cat(out)
