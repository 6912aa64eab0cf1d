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

Channel policy, no-prompt handling and dropout scopes: see :mod:`._sam_family`.
"""
from __future__ import annotations

from ._sam_family import SamFamilyBackend
from .._torch import F, nn, torch
from .base import BACKENDS, WeightsError, load_state_dict_file, minmax01


@BACKENDS.register("medsam")
class MedSAMBackend(SamFamilyBackend):
    """MedSAM ViT-B at 1024 x 1024 with a box prompt per slice."""

    weight_files = ("medsam_vit_b.pth",)
    weights_hint = (
        "MedSAM ViT-B weights (medsam_vit_b.pth) are published by the MedSAM authors (Zenodo / Google Drive "
        "links in the README of github.com/bowang-lab/MedSAM): run `python -m segunc fetch medsam` "
        "or put the file in the weights folder."
    )
    input_size = 1024

    def build(self) -> nn.Module:
        try:
            from segment_anything import sam_model_registry
        except ImportError as exc:
            raise WeightsError(None, f"MedSAM needs the package segment-anything ({exc})") from None
        path = self.resolve_weights()  # fail fast, before building the 94 M-parameter model
        net = sam_model_registry["vit_b"](checkpoint=None)
        load_state_dict_file(path, net)
        return net

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Raw ``B 3 H W`` (0..255) → ``B 3 1024 1024`` in [0, 1] (flair3: resize one channel, then replicate)."""
        flair3 = self.options["channels"] == "flair3"
        x = images.float()[:, 1:2] if flair3 else images.float()
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = minmax01(x)
        return x.expand(-1, 3, -1, -1).contiguous() if flair3 else x.contiguous()

    def _decode_batch(self, embedding, sparse, dense):
        """segment_anything's pip decoder repeats every image embedding once per prompt, so B
        (expanded) copies with B prompts would become B x B: pass the one embedding."""
        return super()._decode_batch(embedding[:1], sparse, dense)
