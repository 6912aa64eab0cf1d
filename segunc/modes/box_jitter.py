"""``box_jitter``: prompt uncertainty for box-prompted models (MedSAM family). Each of the
T samples perturbs every box coordinate by an integer offset drawn uniformly from
[-N, N] pixels (default N = 10, T = 30). The image embedding is computed once per slice
and reused by all T decoder passes, :data:`~.base.DECODE_BATCH` prompts per call whatever the
batch size (the decoder rounds differently per batch shape).
"""
from __future__ import annotations

from .._torch import torch

from .base import DECODE_BATCH, MODES, Mode, SliceInput, chunks


def jitter_boxes(box: torch.Tensor, n: int, max_px: float, hw: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """``1 4`` xyxy box → ``n 4`` jittered boxes, clipped to the image and kept ordered."""
    offsets = torch.randint(-int(max_px), int(max_px) + 1, (n, 4), generator=generator).to(box.device).float()
    b = box.expand(n, -1) + offsets
    h, w = hw
    x0, x1 = torch.minimum(b[:, 0], b[:, 2]).clamp(0, w - 1), torch.maximum(b[:, 0], b[:, 2]).clamp(0, w - 1)
    y0, y1 = torch.minimum(b[:, 1], b[:, 3]).clamp(0, h - 1), torch.maximum(b[:, 1], b[:, 3]).clamp(0, h - 1)
    return torch.stack([x0, y0, x1, y1], dim=1)


@MODES.register("box_jitter")
class BoxJitter(Mode):
    needs_box = True

    def __init__(self, samples: int = 30, seed: int = 0, batch_size: int = 16, max_px: int = 10):
        super().__init__(samples, seed, batch_size, max_px=int(max_px))

    def sample_logits(self, backend, x: SliceInput) -> torch.Tensor:
        if not backend.needs_box:
            raise ValueError(f"box_jitter needs a box-prompted backend; '{backend.name}' takes no box")
        if x.box is None:
            return backend.logits(x.image, None).expand(self.samples, -1, -1)
        boxes = jitter_boxes(x.box, self.samples, self.extra["max_px"], x.hw, self.generator(backend, x))
        emb = backend.encode(x.image)
        return torch.cat([backend.decode(emb, boxes[c], x.hw) for c in chunks(self.samples, DECODE_BATCH)])
