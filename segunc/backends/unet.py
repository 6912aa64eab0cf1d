"""Task-specific U-Net (Ronneberger et al. 2015) in the brain-segmentation-pytorch layout
(Buda et al. 2019): 3 → 1 channels, 32 initial features, 4 levels, BatchNorm + ReLU blocks.

Checkpoint keys match that project's ``unet.pt`` (``encoder1.enc1conv1.weight`` … ``conv.bias``),
so its release checkpoint and ``unet_lgg_f32.pt`` load alike. Preprocessing: per image and
per channel standardisation ``(x - mean_hw) / std_hw`` (std 0 → 1). The original network
ends in a sigmoid; here it returns the logit and the caller applies the sigmoid.

MC-dropout sites: the output of every ReLU (two per block, 18 in all).
"""
from __future__ import annotations

from .._torch import nn, torch
from .base import BACKENDS, Backend, load_state_dict_file


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Per image, per channel ``(x - mean_hw) / std_hw`` with std 0 → 1 (``B C H W``)."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    std = images.std(dim=(-2, -1), keepdim=True, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (images - mean) / std


@BACKENDS.register("unet")
class UNetBackend(Backend):
    """brain-segmentation-pytorch U-Net trained on LGG (task-specific baseline of the paper)."""

    weight_files = ("unet.pt", "unet_lgg_f32.pt")
    weights_hint = (
        "Download the brain-segmentation-pytorch checkpoint with `python -m segunc fetch unet`, "
        "or point --weights / $SEGUNC_WEIGHTS at a compatible unet .pt file."
    )

    def build(self) -> nn.Module:
        from .unet_net import UNet

        net = UNet(3, 1, 32)
        load_state_dict_file(self.resolve_weights(), net)
        return net.to(memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN) and GPU

    def max_batch(self) -> int | None:
        """1 on CPU: per image, batch 1 is fastest there (2-core CPU, 256×256: 5.3 img/s at batch 1, 4.4 at 4,
        3.8 at 8, 3.2 at 16 — larger activations fall out of cache); no cap on GPU."""
        return int(self.options.get("max_batch", 1)) if self.device.type == "cpu" else None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return standardize(images.float()).contiguous(memory_format=torch.channels_last)

    def forward(self, x, boxes, out_hw):
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:  # the U-Net needs sizes divisible by 16
            x = nn.functional.pad(x, (0, pw, 0, ph))
        out = self.model(x)[:, 0, :h, :w]
        if tuple(out.shape[-2:]) != tuple(out_hw):
            out = nn.functional.interpolate(out[:, None], size=out_hw, mode="bilinear", align_corners=False)[:, 0]
        return out
