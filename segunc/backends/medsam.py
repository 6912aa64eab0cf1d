"""MedSAM (Ma et al., "Segment anything in medical images", Nat. Commun. 15, 654, 2024):
SAM ViT-B (Kirillov et al., "Segment Anything", ICCV 2023) fine-tuned on 1.5 M medical
image-mask pairs, prompted by a bounding box. Built with ``segment_anything``'s
``sam_model_registry["vit_b"]``; weights ``medsam_vit_b.pth`` (the MedSAM authors' plain
SAM state dict) are loaded strictly, so a wrong or broken file is a clear ``WeightsError``.

Preprocessing follows the authors' ``MedSAM_Inference.py``: image resized to 1024 x 1024,
min-max normalised to [0, 1] per image (``(x - min) / max(max - min, 1e-8)``), fed to the
image encoder directly (no SAM mean/std); the box is scaled from slice pixels to the
1024 frame; single-mask output; the low-res 256 x 256 logits are resized bilinearly to the
slice. Two deliberate differences, both small: the resize is bilinear (the script uses
bicubic on a uint8 copy), and the **logits** are resized (the script resizes
probabilities) so temperature scaling can act before the sigmoid.

Channel policy (``channels``): ``flair3`` (default for the MedSAM family: the FLAIR channel
replicated to 3) or ``rgb`` (the three MRI channels as RGB, as the paper did).
A slice without a box (empty ground-truth mask, so no prompt) gets a constant logit of
:data:`NO_PROMPT_LOGIT` (-20, probability ~2e-9): no prompt, no prediction — and no
encoder pass.

MC-dropout scopes: ``all`` (the whole SAM; one encoder pass per sample) or ``decoder``
(prompt encoder + mask decoder; one encoder pass per slice, see :meth:`MedSAMBackend.decode`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import BACKENDS
from .base import Backend, WeightsError, box_from_mask, load_state_dict_file

NO_PROMPT_LOGIT = -20.0
CHANNEL_POLICIES = ("flair3", "rgb")
INPUT_SIZE = 1024


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


def as_boxes(boxes, device) -> torch.Tensor | None:
    """Boxes (tensor / array / list of xyxy) → float32 ``T 4`` on ``device``; None stays None."""
    if boxes is None:
        return None
    if isinstance(boxes, (list, tuple)) and any(b is None for b in boxes):
        return None
    if isinstance(boxes, (list, tuple)):
        boxes = np.stack([np.asarray(b, dtype=np.float32) for b in boxes])
    return torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4)


@BACKENDS.register("medsam")
class MedSAMBackend(Backend):
    """MedSAM ViT-B at 1024 x 1024 with a box prompt per slice."""

    needs_box = True
    two_stage = True
    weight_files = ("medsam_vit_b.pth",)
    weights_hint = (
        "MedSAM ViT-B weights (medsam_vit_b.pth) are published by the MedSAM authors (Zenodo / Google Drive "
        "links in the README of github.com/bowang-lab/MedSAM): run `python -m segunc fetch medsam` "
        "or put the file in the weights folder."
    )
    input_size = INPUT_SIZE

    def __init__(self, weights=None, device="cpu", channels: str = "flair3", box_margin: int = 0, **options: Any):
        if channels not in CHANNEL_POLICIES:
            raise ValueError(f"unknown channel policy {channels!r}; expected one of {CHANNEL_POLICIES}")
        super().__init__(weights, device, channels=channels, box_margin=int(box_margin), **options)

    def build(self) -> nn.Module:
        try:
            from segment_anything import sam_model_registry
        except ImportError as exc:
            raise WeightsError(None, f"MedSAM needs the package segment-anything ({exc})") from None
        path = self.resolve_weights()  # fail fast, before building the 94 M-parameter model
        net = sam_model_registry["vit_b"](checkpoint=None)
        load_state_dict_file(path, net)
        return net

    # -- stages ---------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``B 3 H W`` (0..255) → ``B 3 1024 1024`` in [0, 1]."""
        policy = self.options["channels"]
        if policy not in CHANNEL_POLICIES:
            raise ValueError(f"unknown channel policy {policy!r}; expected one of {CHANNEL_POLICIES}")
        x = images.float()
        x = x[:, 1:2] if policy == "flair3" else x  # resize one channel, replicate after
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = minmax01(x)
        return x.expand(-1, 3, -1, -1).contiguous() if policy == "flair3" else x.contiguous()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``B 3 H W`` → image embedding ``B 256 64 64``."""
        return self.model.image_encoder(self.preprocess(images.to(self.device)))

    def _scale_boxes(self, boxes: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        h, w = out_hw
        return boxes * boxes.new_tensor([self.input_size / w, self.input_size / h] * 2)

    def decode(self, embedding: torch.Tensor, boxes, out_hw: tuple[int, int]) -> torch.Tensor:
        """Embedding ``1|T 256 64 64`` + boxes ``T 4`` (xyxy, slice pixels) → logits ``T H W``.

        A single embedding is shared by all T box prompts (box jitter, decoder-only dropout);
        T embeddings pair one-to-one with T boxes. ``boxes=None`` → :data:`NO_PROMPT_LOGIT`.
        """
        out_hw = tuple(int(v) for v in out_hw)
        boxes = as_boxes(boxes, embedding.device)
        if boxes is None:
            return torch.full((embedding.shape[0], *out_hw), NO_PROMPT_LOGIT, device=embedding.device)
        n_emb, n_box = embedding.shape[0], boxes.shape[0]
        if n_emb not in (1, n_box):
            raise ValueError(f"{n_emb} embeddings for {n_box} boxes (need 1 or {n_box})")
        sparse, dense = self.model.prompt_encoder(points=None, boxes=self._scale_boxes(boxes, out_hw)[:, None, :], masks=None)
        pe = self.model.prompt_encoder.get_dense_pe()
        if n_emb == 1:
            # segment_anything's decoder repeats one image embedding for every prompt
            low_res, _ = self.model.mask_decoder(
                image_embeddings=embedding, image_pe=pe, sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense, multimask_output=False,
            )
        else:
            # the pip decoder would pair every embedding with every prompt (T x T), so pair
            # them one by one as MedSAM's own fork does
            low_res = torch.cat([
                self.model.mask_decoder(
                    image_embeddings=embedding[i:i + 1], image_pe=pe, sparse_prompt_embeddings=sparse[i:i + 1],
                    dense_prompt_embeddings=dense[i:i + 1], multimask_output=False,
                )[0]
                for i in range(n_box)
            ])
        return F.interpolate(low_res, size=out_hw, mode="bilinear", align_corners=False)[:, 0]

    def forward(self, x: torch.Tensor, boxes, out_hw: tuple[int, int]) -> torch.Tensor:
        """Preprocessed ``1|B 3 1024 1024`` + boxes ``B 4`` → logits ``B H W``."""
        boxes = as_boxes(boxes, x.device)
        if boxes is None:
            return torch.full((x.shape[0], *out_hw), NO_PROMPT_LOGIT, device=x.device)
        return self.decode(self.model.image_encoder(x), boxes, out_hw)

    def logits(self, images: torch.Tensor, boxes=None) -> torch.Tensor:
        """Raw ``B 3 H W`` + boxes ``B 4`` → logits ``B H W``; no boxes: constant, no encoder pass."""
        if as_boxes(boxes, self.device) is None:
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
        (default: the backend's ``box_margin`` option); None for an empty mask."""
        margin = self.options["box_margin"] if box_margin is None else int(box_margin)
        return {"box": box_from_mask(slice_.mask, margin)}
