"""``tta``: test-time augmentation, y_i = T_i⁻¹ f(T_i(x)) (paper §3.2; Moshkov et al. 2020).

Two sets of 30 = flip {no, yes} × scale {0.5, 1, 2} × 5 intensity views (``--tta-set``):

- ``default``: intensity = **gamma** x' = 255·(x/255)^γ, γ ∈ {0.8, 0.9, 1.0, 1.1, 1.2} (the
  paper's five factors as exponents). Every backend normalises each image (z-score per
  channel, or min–max), which undoes any gain: a gamma changes the contrast *after*
  normalisation too, so all 30 views reach the model as different inputs.
- ``paper``: the literal set (as the authors built it with ttach): intensity = **gain**, the
  raw image multiplied by {0.8, 0.9, 1.0, 1.1, 1.2} and clipped to 0..255. After per-image
  normalisation a gain is a no-op (unless it saturates bright pixels): on a real slice the
  30 views are 6 distinct model inputs × 5 copies.

Views whose preprocessed model inputs (and boxes) are identical (max |Δ| ≤ 1e-5 of the
input's scale) are computed once and counted with their multiplicity: the T = 30 samples
hold the copies, so mean and uncertainty maps equal those of running all 30 (paper set:
6 forward passes instead of 30 on a slice without saturation).

- scale s resizes the whole slice to s·H × s·W (bilinear); the model runs at that size
  (fully convolutional U-Net) or resizes to its own input size (MedSAM family, UniverSeg:
  then s acts as a resolution change). The logits are resized back to H × W.
- flip: mirrored image in, mirrored prediction back.
- rotation k·90° (``rotations``, default (0,)): the paper preset's set for the MedSAM family and
  UniverSeg is flip × rot90 (2 × 4 = 8 views, as the authors' ttach ``d4``-style transforms).
- box prompts are transformed with the image (scaled, mirrored, rotated).

Transforms of one scale (and, on a non-square slice, of one rotation parity) share an image size
and go through the model as one batch.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from .._torch import F, torch

from .base import MODES, Mode, SliceInput, chunks, step

DEFAULT_FLIPS = (False, True)
DEFAULT_SCALES = (0.5, 1.0, 2.0)
DEFAULT_INTENSITIES = (0.8, 0.9, 1.0, 1.1, 1.2)
#: how the intensity factors act: ``gamma`` (default set) or ``gain`` (the paper's set)
INTENSITY_OPS = ("gamma", "gain")
#: preprocessed inputs within this fraction of their scale count as identical
DEDUP_RTOL = 1e-5


@dataclass(frozen=True)
class Transform:
    flip: bool
    scale: float
    intensity: float
    op: str = "gain"
    rot: int = 0  # quarter turns (torch.rot90 over H, W), applied after the flip


def transforms(flips=DEFAULT_FLIPS, scales=DEFAULT_SCALES, intensities=DEFAULT_INTENSITIES,
               op: str = "gain", rotations=(0,)) -> list[Transform]:
    if op not in INTENSITY_OPS:
        raise ValueError(f"unknown TTA intensity op {op!r}; expected one of {INTENSITY_OPS}")
    if any(int(k) != k or not 0 <= k < 4 for k in rotations):
        raise ValueError(f"TTA rotations are quarter turns 0..3, got {list(rotations)}")
    return [Transform(f, float(s), float(i), op, int(k))
            for f, s, k, i in itertools.product(flips, scales, rotations, intensities)]


def _rot(x: torch.Tensor, ts: list[Transform], sign: int = 1) -> torch.Tensor:
    """Rotate each of the ``n`` leading items by its transform's quarter turns (× ``sign``)."""
    if all(t.rot == 0 for t in ts):
        return x
    return torch.stack([torch.rot90(x[i], sign * t.rot, dims=(-2, -1)) for i, t in enumerate(ts)])


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
    x = _rot(torch.where(flips, x.flip(-1), x), ts)
    factors = torch.tensor([t.intensity for t in ts], device=image.device, dtype=image.dtype).view(-1, 1, 1, 1)
    if all(t.op == "gamma" for t in ts):
        return 255.0 * (x.clamp(0.0, 255.0) / 255.0) ** factors
    if all(t.op == "gain" for t in ts):
        return (x * factors).clamp(0.0, 255.0)
    raise ValueError("transforms of one batch must share an intensity op")


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
        for _ in range(t.rot):  # torch.rot90 over (H, W): pixel (x, y) of a w-wide image goes to (y, w - 1 - x)
            xs, ys = ys, [w - 1 - x for x in xs]
            h, w = w, h
        out.append([max(0.0, min(xs)), max(0.0, min(ys)), min(w - 1.0, max(xs)), min(h - 1.0, max(ys))])
    return torch.tensor(out, dtype=torch.float32, device=box.device)


def invert_logits(logits: torch.Tensor, ts: list[Transform], hw: tuple[int, int]) -> torch.Tensor:
    """``n h w`` logits in the transformed frames → ``n H W`` on the original grid."""
    logits = _rot(logits, ts, sign=-1)
    flips = torch.tensor([t.flip for t in ts], device=logits.device).view(-1, 1, 1)
    x = torch.where(flips, logits.flip(-1), logits)
    if tuple(x.shape[-2:]) != tuple(hw):
        x = F.interpolate(x[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
    return x


def distinct_views(backend, images: torch.Tensor, boxes: torch.Tensor | None) -> list[int]:
    """For each of ``n`` raw views, the index of the first view with the same preprocessed model
    input (and box); a view is its own representative when it differs from all earlier ones."""
    with torch.inference_mode():
        pre = backend.preprocess(images.to(backend.device)).float()
    rep: list[int] = []
    for i in range(pre.shape[0]):
        tol = DEDUP_RTOL * max(1.0, float(pre[i].abs().max()))
        same = next((r for r in dict.fromkeys(rep) if (pre[i] - pre[r]).abs().max() <= tol
                     and (boxes is None or torch.equal(boxes[i], boxes[r]))), None)
        rep.append(i if same is None else same)
    return rep


@MODES.register("tta")
class TTA(Mode):
    stochastic = True

    def __init__(self, samples: int = 30, seed: int = 0, batch_size: int = 16, flips=DEFAULT_FLIPS,
                 scales=DEFAULT_SCALES, intensities=DEFAULT_INTENSITIES, intensity_op: str = "gamma",
                 rotations=(0,)):
        ts = transforms(flips, scales, intensities, intensity_op, rotations)
        # The transform set defines T; ``samples`` is accepted for a uniform CLI but not used.
        params = dict(flips=[bool(f) for f in flips], scales=[float(s) for s in scales],
                      intensities=[float(i) for i in intensities])
        if intensity_op != "gain":  # the paper's set keeps the key it always had
            params["intensity_op"] = intensity_op
        if tuple(rotations) != (0,):  # keys without rotations stay as they were
            params["rotations"] = [int(k) for k in rotations]
        super().__init__(len(ts), seed, batch_size, **params)
        self.transforms = ts
        #: model forward passes of the last slice (distinct views)
        self.last_forwards = 0

    def params(self):
        return {"mode": self.name, **self.extra}

    def sample_logits(self, backend, x: SliceInput) -> torch.Tensor:
        out: list[torch.Tensor | None] = [None] * len(self.transforms)
        self.last_forwards = 0
        square = x.hw[0] == x.hw[1]
        group = lambda t: (t.scale, 0 if square else t.rot % 2)  # noqa: E731 - views of one input size
        for g in dict.fromkeys(group(t) for t in self.transforms):
            idx = [i for i, t in enumerate(self.transforms) if group(t) == g]
            ts = [self.transforms[i] for i in idx]
            imgs = forward_images(x.image, ts)
            boxes = None if x.box is None else forward_boxes(x.box, ts, x.hw)
            rep = distinct_views(backend, imgs, boxes)
            uniq = list(dict.fromkeys(rep))
            self.last_forwards += len(uniq)
            lg_of: dict[int, torch.Tensor] = {}
            for c in chunks(len(uniq), step(self.batch_size, backend)):
                part = uniq[c]
                sub_ts = [ts[j] for j in part]
                sub_boxes = None if boxes is None else boxes[part]
                for j, lg in zip(part, invert_logits(backend.logits(imgs[part], sub_boxes), sub_ts, x.hw)):
                    lg_of[j] = lg
            for j, i in enumerate(idx):
                out[i] = lg_of[rep[j]]  # a copy counts with its multiplicity
        return torch.stack(out)  # in transform order
