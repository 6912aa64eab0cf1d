"""Shared MedSAM-family logic (MedSAM ViT-B, LiteMedSAM): box prompts, per-image min-max
preprocessing, channel policy, embedding reuse and decoder-only dropout scope.

Channel policy (``channels``): ``flair3`` (default; the FLAIR channel replicated — Dice
0.861 vs 0.827 on 228 val slices with LiteMedSAM) or ``rgb`` (the three MRI channels as
RGB, as the paper). A slice without a box (empty ground-truth mask) gets a constant logit
of :data:`NO_PROMPT_LOGIT`: no prompt, no prediction, and no encoder pass.

MC-dropout scopes: ``all`` (whole model: one encoder pass per sample) or ``decoder``
(prompt encoder + mask decoder: one encoder pass per slice).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._torch import F, nn, torch
from .base import Backend, box_from_mask, minmax01, sub_batch

NO_PROMPT_LOGIT = -20.0
CHANNEL_POLICIES = ("flair3", "rgb")


def select_channels(images: torch.Tensor, policy: str) -> torch.Tensor:
    """``B 3 H W`` LGG channels → ``B 3 H W`` model RGB by policy (``flair3`` or ``rgb``)."""
    if policy == "rgb":
        return images
    if policy == "flair3":
        return images[:, 1:2].expand(-1, 3, -1, -1)
    raise ValueError(f"unknown channel policy {policy!r}; expected one of {CHANNEL_POLICIES}")


class SamFamilyBackend(Backend):
    """Shared MedSAM-family logic: box prompts, embedding reuse, decoder-only dropout.

    Subclasses set ``input_size`` (model input side) and build ``self.model`` with
    ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` attributes.
    """

    needs_box = True
    two_stage = True
    input_size = 256
    #: 2: masks in a fixed logical order, one drop per activation (TinyViT GELU + Dropout(0))
    dropout_version = 2

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
        with self.autocast():
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
        boxes = torch.as_tensor(np.asarray(boxes) if not torch.is_tensor(boxes) else boxes,
                                dtype=torch.float32, device=embedding.device).reshape(-1, 4)
        if embedding.shape[0] == 1 and boxes.shape[0] > 1:
            embedding = embedding.expand(boxes.shape[0], -1, -1, -1)  # a view: no copy
        elif embedding.shape[0] != boxes.shape[0]:
            raise ValueError(f"{embedding.shape[0]} embeddings for {boxes.shape[0]} boxes")
        with self.autocast():
            sparse, dense = self.model.prompt_encoder(points=None, boxes=self._scale_boxes(boxes, out_hw)[:, None, :], masks=None)
            low_res = self._mask_decoder(embedding, sparse, dense)
        return F.interpolate(low_res.float(), size=out_hw, mode="bilinear", align_corners=False)[:, 0]

    def _mask_decoder(self, embedding: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Single-mask low-res logits ``B 1 256 256`` for paired embeddings and prompts. ``B`` distinct
        embeddings (a whole-model pass) are decoded one at a time, so a sample's decoder batch, and with
        it its float rounding, never depends on the encoder batch (the decoder's GEMMs round differently
        per batch shape: up to 2.2e-6 on a LiteMedSAM probability between encoder batch 1 and 3);
        one shared (expanded) embedding takes all its prompts in one call."""
        if embedding.shape[0] > 1 and embedding.stride(0) != 0:
            parts = []
            for i in range(embedding.shape[0]):
                with sub_batch(slice(i, i + 1)):
                    parts.append(self._decode_batch(embedding[i:i + 1], sparse[i:i + 1], dense[i:i + 1]))
            return torch.cat(parts)
        return self._decode_batch(embedding, sparse, dense)

    def _decode_batch(self, embedding: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """The mask decoder on one embedding (or ``B`` expanded copies of one) and ``B`` prompts."""
        low_res, _ = self.model.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low_res

    def forward(self, x, boxes, out_hw):
        if boxes is None:
            return torch.full((x.shape[0], *out_hw), NO_PROMPT_LOGIT, device=x.device)
        step = self.encoder_batch()
        parts = []
        for i in range(0, x.shape[0], step):
            with sub_batch(slice(i, min(i + step, x.shape[0]))):
                parts.append(self.model.image_encoder(x[i:i + step]))
        return self.decode(torch.cat(parts), boxes, out_hw)

    def encoder_batch(self) -> int:
        """Images per encoder call: 1 on CPU, where batching the ViT encoder is slower per
        image (measured on LiteMedSAM: 8 images took 84 s at batch 1, 119 s at batch 2 on a
        loaded 2-core CPU), 16 on GPU."""
        return int(self.options.get("encoder_batch", 16 if self.device.type == "cuda" else 1))

    def max_batch(self) -> int | None:
        return self.encoder_batch()  # a full pass runs the encoder: its batch is the one that matters

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

    def prepare_slice(self, slice_, box_margin: int | None = None, **context: Any) -> dict[str, Any]:
        """Box prompt = bounding box of the ground-truth mask grown by ``box_margin`` pixels
        (default: the backend's option); None for an empty mask."""
        margin = self.options["box_margin"] if box_margin is None else int(box_margin)
        return {"box": box_from_mask(slice_.mask, margin)}
