"""UniverSeg network (Butoi, Gonzalez Ortiz et al., "UniverSeg: Universal Medical Image
Segmentation", ICCV 2023, arXiv:2304.06131), written from the description of the official
``universeg`` package (github.com/JJGO/UniverSeg, ``universeg/model.py`` and
``universeg/nn/*.py``) so that its released state dict loads with ``strict=True``.

Shapes use ``B`` = batch, ``S`` = support size, ``C`` = channels. A *CrossConv* scores
every (target, support) pair with one shared convolution of the channel-concatenated
pair; the target is then the mean over the support axis (the paper's CrossBlock, Eq. 2-3).
The v1 model is a 4-level U-Net of CrossBlocks with 64 features everywhere
(``encoder_blocks=(64, 64, 64, 64)``; decoder = the encoder reversed minus the bottom),
LeakyReLU after every per-image conv, no activation after the cross convs or the final
1x1 conv (the output is a logit), 2x2 max-pool down, bilinear (``align_corners=True``)
up-sampling. 1,182,785 parameters, 44 tensors.

Module and parameter names mirror the official ones exactly
(``enc_blocks.0.cross.cross_conv.weight``, ``enc_blocks.0.target.vmapped.conv.weight``,
``dec_blocks.2.support.vmapped.conv.bias``, ``out_conv.conv.weight`` ...).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Size2 = int | tuple[int, int]


def as_2tuple(v: Size2) -> tuple[int, int]:
    """``c`` → ``(c, c)``; a pair stays a pair (target channels, support channels)."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v!r}")
    return v  # type: ignore[return-value]


def vmap(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a per-image op to ``B S ...`` by folding ``S`` into the batch: ``(B S) ...``."""
    b, s = x.shape[:2]
    y = fn(x.reshape(b * s, *x.shape[2:]))
    return y.reshape(b, s, *y.shape[1:])


class Vmap(nn.Module):
    """Module wrapper for :func:`vmap`; the wrapped module is ``.vmapped`` (official name)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.vmapped = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vmap(self.vmapped, x)


def _init_conv(conv: nn.Conv2d, nonlinearity: str | None) -> None:
    """Kaiming-normal weights (gain of the following nonlinearity), zero bias — the official init."""
    nn.init.kaiming_normal_(conv.weight, nonlinearity="leaky_relu" if nonlinearity == "LeakyReLU" else "linear")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class CrossConv2d(nn.Conv2d):
    """Pairwise convolution of every target with every support entry.

    ``x`` ``B Sx Cx H W`` and ``y`` ``B Sy Cy H W`` → ``B Sx Sy Co H W``, the output for a
    pair being ``conv(cat([x_i, y_j], channel))``. The weight is one ``Conv2d`` over
    ``Cx + Cy`` input channels (as in the official layout). Because a convolution is linear
    in its input channels, this is computed as ``conv_x(x_i) + conv_y(y_j)`` with the weight
    split along input channels — equal to the concatenated form (zero padding is per
    channel) without materialising the ``Sx * Sy`` pairs or repeating the target's half.
    """

    def __init__(self, in_channels: Size2, out_channels: int, kernel_size: int = 3, padding: int = 1):
        self.in_pair = as_2tuple(in_channels)
        super().__init__(sum(self.in_pair), out_channels, kernel_size=kernel_size, padding=padding, bias=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, sx, cx = x.shape[:3]
        _, sy, cy = y.shape[:3]
        if (cx, cy) != self.in_pair:
            raise ValueError(f"CrossConv2d expects ({self.in_pair[0]}, {self.in_pair[1]}) channels, got ({cx}, {cy})")
        wx, wy = self.weight[:, :cx], self.weight[:, cx:]
        pad = self.padding
        ox = F.conv2d(x.reshape(b * sx, *x.shape[2:]), wx, self.bias, padding=pad)
        oy = F.conv2d(y.reshape(b * sy, *y.shape[2:]), wy, None, padding=pad)
        ox = ox.reshape(b, sx, 1, *ox.shape[1:])
        oy = oy.reshape(b, 1, sy, *oy.shape[1:])
        return ox + oy


class ConvOp(nn.Sequential):
    """``conv`` (k x k, same padding, bias) then ``nonlin`` (absent when ``nonlinearity=None``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, nonlinearity: str | None = "LeakyReLU"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2, bias=True)
        if nonlinearity is not None:
            self.nonlin = getattr(nn, nonlinearity)()
        _init_conv(self.conv, nonlinearity)


class CrossOp(nn.Module):
    """CrossConv + optional nonlinearity, then the target update = mean over the support.

    ``target`` ``B 1 Ct H W``, ``support`` ``B S Cs H W`` →
    (new target ``B 1 Co H W``, interaction ``B S Co H W``).
    """

    def __init__(self, in_channels: Size2, out_channels: int, kernel_size: int = 3, nonlinearity: str | None = "LeakyReLU"):
        super().__init__()
        self.cross_conv = CrossConv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
        self.nonlinearity = nonlinearity
        if nonlinearity is not None:
            self.nonlin = getattr(nn, nonlinearity)()
        _init_conv(self.cross_conv, nonlinearity)

    def forward(self, target: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        interaction = self.cross_conv(target, support).squeeze(1)  # B S Co H W (one target)
        if self.nonlinearity is not None:
            interaction = vmap(self.nonlin, interaction)
        return interaction.mean(dim=1, keepdim=True), interaction


class CrossBlock(nn.Module):
    """``cross`` (CrossOp) then separate per-image convs for the target and the support.

    ``target`` ``B 1 Ct H W``, ``support`` ``B S Cs H W`` → ``B 1 F H W``, ``B S F H W``.
    """

    def __init__(self, in_channels: Size2, cross_features: int, conv_features: int | None = None,
                 cross_nonlinearity: str | None = None):
        super().__init__()
        conv_features = conv_features or cross_features
        self.cross = CrossOp(in_channels, cross_features, nonlinearity=cross_nonlinearity)
        self.target = Vmap(ConvOp(cross_features, conv_features))
        self.support = Vmap(ConvOp(cross_features, conv_features))

    def forward(self, target: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target, support = self.cross(target, support)
        return self.target(target), self.support(support)


class UniverSeg(nn.Module):
    """UniverSeg: target ``B 1 H W`` + support images ``B S 1 H W`` + support labels
    ``B S 1 H W`` (all in [0, 1]; H, W divisible by 2**(levels-1), 128 x 128 in the paper)
    → foreground logits ``B 1 H W``."""

    def __init__(self, encoder_blocks: Sequence[Size2] = (64, 64, 64, 64), decoder_blocks: Sequence[Size2] | None = None):
        super().__init__()
        self.encoder_blocks = [as_2tuple(b) for b in encoder_blocks]
        dec = [as_2tuple(b) for b in decoder_blocks] if decoder_blocks else self.encoder_blocks[-2::-1]
        self.downsample = nn.MaxPool2d(2, 2)
        self.upsample = nn.UpsamplingBilinear2d(scale_factor=2)
        self.enc_blocks = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()

        in_ch: Size2 = (1, 2)  # target: image; support: image + label
        skips = []
        for cross_ch, conv_ch in self.encoder_blocks:
            self.enc_blocks.append(CrossBlock(in_ch, cross_ch, conv_ch))
            in_ch = conv_ch
            skips.append(conv_ch)
        for (cross_ch, conv_ch), skip_ch in zip(dec, skips[-2::-1]):
            self.dec_blocks.append(CrossBlock(in_ch + skip_ch, cross_ch, conv_ch))
            in_ch = conv_ch
        self.out_conv = ConvOp(in_ch, 1, kernel_size=1, nonlinearity=None)

    def forward(self, target_image: torch.Tensor, support_images: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        if target_image.ndim != 4 or target_image.shape[1] != 1:
            raise ValueError(f"target_image must be B 1 H W, got {tuple(target_image.shape)}")
        if support_images.ndim != 5 or support_images.shape != support_labels.shape:
            raise ValueError(
                f"support images/labels must both be B S 1 H W, got {tuple(support_images.shape)} and {tuple(support_labels.shape)}"
            )
        target = target_image.unsqueeze(1)  # B 1 1 H W
        support = torch.cat([support_images, support_labels], dim=2)  # B S 2 H W

        skips = []
        last = len(self.enc_blocks) - 1
        for i, block in enumerate(self.enc_blocks):
            target, support = block(target, support)
            if i < last:
                skips.append((target, support))
                target = vmap(self.downsample, target)
                support = vmap(self.downsample, support)
        for block in self.dec_blocks:
            t_skip, s_skip = skips.pop()
            target = torch.cat([vmap(self.upsample, target), t_skip], dim=2)
            support = torch.cat([vmap(self.upsample, support), s_skip], dim=2)
            target, support = block(target, support)
        return self.out_conv(target[:, 0])


def universeg_v1() -> UniverSeg:
    """The released v1 configuration (``universeg_v1_nf64_ss64_STA.pt``): 4 x 64 features."""
    return UniverSeg(encoder_blocks=(64, 64, 64, 64))
