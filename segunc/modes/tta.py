"""``tta``: test-time augmentation, y_i = T_i⁻¹ f(T_i(x)) (paper §3.2; Moshkov et al. 2020).

Default set (paper, as its scripts built it with ttach): horizontal flip {no, yes} ×
scale {0.5, 1, 2} × intensity {0.8, 0.9, 1.0, 1.1, 1.2} = 30 transforms.

- scale s resizes the whole slice to s·H × s·W (bilinear); the model runs at that size
  (fully convolutional U-Net) or resizes to its own input size (MedSAM family, UniverSeg:
  then s acts as a resolution change). The logits are resized back to H × W.
- intensity: the raw image is multiplied by the factor and clipped to the 0..255 range of
  the TIFFs (models that normalise per image see the change only through saturation).
- flip: mirrored image in, mirrored prediction back.
- box prompts are transformed with the image (scaled, mirrored).

Transforms of one scale share an image size and go through the model as one batch.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import MODES, Mode, SliceInput, chunks, step

DEFAULT_FLIPS = (False, True)
DEFAULT_SCALES = (0.5, 1.0, 2.0)
DEFAULT_INTENSITIES = (0.8, 0.9, 1.0, 1.1, 1.2)


@dataclass(frozen=True)
class Transform:
    flip: bool
    scale: float
    intensity: float


def transforms(flips=DEFAULT_FLIPS, scales=DEFAULT_SCALES, intensities=DEFAULT_INTENSITIES) -> list[Transform]:
    return [Transform(f, float(s), float(i)) for f, s, i in itertools.product(flips, scales, intensities)]


def scaled_hw(hw: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def forward_images(image: torch.Tensor, ts: list[Transform]) -> torch.Tensor:
    """``1 3 H W`` raw image → ``n 3 h w`` transformed images (all ``ts`` share one scale)."""
    scale = ts[0].scale
    assert all(t.scale == scale for t in ts), "transforms of one batch must share a scale"
    x = image
    if scale != 1.0:
        x = F.interpolate(x, size=scaled_hw(tuple(image.shape[-2:]), scale), mode="bilinear", align_corners=False)
    x = x.expand(len(ts), -1, -1, -1)
    flips = torch.tensor([t.flip for t in ts], device=image.device).view(-1, 1, 1, 1)
    x = torch.where(flips, x.flip(-1), x)
    gains = torch.tensor([t.intensity for t in ts], device=image.device, dtype=image.dtype).view(-1, 1, 1, 1)
    return (x * gains).clamp(0.0, 255.0)


def forward_boxes(box: torch.Tensor, ts: list[Transform], hw: tuple[int, int]) -> torch.Tensor:
    """``1 4`` xyxy box (pixels) → ``n 4`` boxes in each transformed frame (pixel centres
    map as x' = (x + 0.5)·s − 0.5, the ``align_corners=False`` convention)."""
    out = []
    for t in ts:
        h, w = scaled_hw(hw, t.scale)
        sx, sy = w / hw[1], h / hw[0]
        x0, y0, x1, y1 = box[0].tolist()
        xs = [(x + 0.5) * sx - 0.5 for x in (x0, x1)]
        ys = [(y + 0.5) * sy - 0.5 for y in (y0, y1)]
        if t.flip:
            xs = [w - 1 - x for x in xs]
        out.append([max(0.0, min(xs)), max(0.0, min(ys)), min(w - 1.0, max(xs)), min(h - 1.0, max(ys))])
    return torch.tensor(out, dtype=torch.float32, device=box.device)


def invert_logits(logits: torch.Tensor, ts: list[Transform], hw: tuple[int, int]) -> torch.Tensor:
    """``n h w`` logits in the transformed frames → ``n H W`` on the original grid."""
    flips = torch.tensor([t.flip for t in ts], device=logits.device).view(-1, 1, 1)
    x = torch.where(flips, logits.flip(-1), logits)
    if tuple(x.shape[-2:]) != tuple(hw):
        x = F.interpolate(x[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
    return x


@MODES.register("tta")
class TTA(Mode):
    stochastic = True

    def __init__(self, samples: int = 30, seed: int = 0, batch_size: int = 16, flips=DEFAULT_FLIPS,
                 scales=DEFAULT_SCALES, intensities=DEFAULT_INTENSITIES):
        ts = transforms(flips, scales, intensities)
        # The transform set defines T; ``samples`` is accepted for a uniform CLI but not used.
        super().__init__(len(ts), seed, batch_size, flips=[bool(f) for f in flips],
                         scales=[float(s) for s in scales], intensities=[float(i) for i in intensities])
        self.transforms = ts

    def params(self):
        return {"mode": self.name, **self.extra}

    def sample_logits(self, backend, x: SliceInput) -> torch.Tensor:
        out: list[torch.Tensor | None] = [None] * len(self.transforms)
        for scale in dict.fromkeys(t.scale for t in self.transforms):
            idx = [i for i, t in enumerate(self.transforms) if t.scale == scale]
            for c in chunks(len(idx), step(self.batch_size, backend)):
                ts = [self.transforms[i] for i in idx[c]]
                imgs = forward_images(x.image, ts)
                boxes = None if x.box is None else forward_boxes(x.box, ts, x.hw)
                for i, lg in zip(idx[c], invert_logits(backend.logits(imgs, boxes), ts, x.hw)):
                    out[i] = lg
        return torch.stack(out)  # in transform order
