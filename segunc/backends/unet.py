"""Task-specific U-Net (Ronneberger et al. 2015) in the brain-segmentation-pytorch layout
(Buda et al. 2019): 3 → 1 channels, 32 initial features, 4 levels, BatchNorm + ReLU blocks.

Checkpoint keys match that project's ``unet.pt`` (``encoder1.enc1conv1.weight`` … ``conv.bias``),
so its release checkpoint and ``unet_lgg_f32.pt`` load alike. Preprocessing: per image and
per channel standardisation ``(x - mean_hw) / std_hw`` (std 0 → 1). The original network
ends in a sigmoid; here it returns the logit and the caller applies the sigmoid.

MC-dropout sites: the output of every ReLU (two per block, 18 in all).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .base import BACKENDS, Backend, load_state_dict_file


def _block(in_channels: int, features: int, name: str) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                (name + "conv1", nn.Conv2d(in_channels, features, kernel_size=3, padding=1, bias=False)),
                (name + "norm1", nn.BatchNorm2d(features)),
                (name + "relu1", nn.ReLU(inplace=False)),
                (name + "conv2", nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False)),
                (name + "norm2", nn.BatchNorm2d(features)),
                (name + "relu2", nn.ReLU(inplace=False)),
            ]
        )
    )


class UNet(nn.Module):
    """``B 3 H W`` standardised image → ``B 1 H W`` logits (H, W divisible by 16)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, init_features: int = 32):
        super().__init__()
        f = init_features
        self.encoder1 = _block(in_channels, f, "enc1")
        self.pool1 = nn.MaxPool2d(2, 2)
        self.encoder2 = _block(f, f * 2, "enc2")
        self.pool2 = nn.MaxPool2d(2, 2)
        self.encoder3 = _block(f * 2, f * 4, "enc3")
        self.pool3 = nn.MaxPool2d(2, 2)
        self.encoder4 = _block(f * 4, f * 8, "enc4")
        self.pool4 = nn.MaxPool2d(2, 2)
        self.bottleneck = _block(f * 8, f * 16, "bottleneck")
        self.upconv4 = nn.ConvTranspose2d(f * 16, f * 8, kernel_size=2, stride=2)
        self.decoder4 = _block(f * 16, f * 8, "dec4")
        self.upconv3 = nn.ConvTranspose2d(f * 8, f * 4, kernel_size=2, stride=2)
        self.decoder3 = _block(f * 8, f * 4, "dec3")
        self.upconv2 = nn.ConvTranspose2d(f * 4, f * 2, kernel_size=2, stride=2)
        self.decoder2 = _block(f * 4, f * 2, "dec2")
        self.upconv1 = nn.ConvTranspose2d(f * 2, f, kernel_size=2, stride=2)
        self.decoder1 = _block(f * 2, f, "dec1")
        self.conv = nn.Conv2d(f, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.encoder1(x)
        e2 = self.encoder2(self.pool1(e1))
        e3 = self.encoder3(self.pool2(e2))
        e4 = self.encoder4(self.pool3(e3))
        b = self.bottleneck(self.pool4(e4))
        d4 = self.decoder4(torch.cat((self.upconv4(b), e4), dim=1))
        d3 = self.decoder3(torch.cat((self.upconv3(d4), e3), dim=1))
        d2 = self.decoder2(torch.cat((self.upconv2(d3), e2), dim=1))
        d1 = self.decoder1(torch.cat((self.upconv1(d2), e1), dim=1))
        return self.conv(d1)


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
