"""The brain-segmentation-pytorch U-Net backend on the real shared checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segunc.backends import BACKENDS, WeightsError
from segunc.backends.unet import standardize
from segunc.backends.unet_net import UNet
from segunc.data import load_slice, select, tumour_only

pytestmark = pytest.mark.integration


def test_checkpoint_layout_and_hash(unet, unet_weights):
    n = sum(p.numel() for p in unet.model.parameters())
    assert n == 7_763_041
    assert unet.weights_sha256 == "bfdbbb8cf7a33921fddb57872a6c593912a7caa818fa16b782e5d1a33d0b6eed"


def test_standardize_per_image_per_channel():
    x = torch.rand(2, 3, 8, 8) * 255
    x[1, 2] = 7.0  # constant channel: std 0 → 1
    y = standardize(x)
    assert torch.allclose(y[0].mean(dim=(-2, -1)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y[0].std(dim=(-2, -1), unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.all(y[1, 2] == 0)


def test_batch_equals_single(unet, val_slices):
    imgs = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() for s in val_slices])
    with torch.inference_mode():
        batch = unet.logits(imgs)
        single = torch.cat([unet.logits(imgs[i:i + 1]) for i in range(len(imgs))])
    assert batch.shape == (3, 256, 256)
    assert torch.allclose(batch, single, atol=1e-3)


def test_val_dice_matches_reference_figure(unet, lgg_refs):
    """All 229 val tumour slices, threshold 0.5: Dice mean within 0.005 of the README's 0.803."""
    refs = tumour_only(select(lgg_refs, "val"))
    assert len(refs) == 229
    dices = []
    with torch.inference_mode():
        for i in range(0, len(refs), 16):
            slices = [load_slice(r) for r in refs[i:i + 16]]
            imgs = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() for s in slices])
            pred = (torch.sigmoid(unet.logits(imgs)) >= 0.5).numpy()
            for s, p in zip(slices, pred):
                inter = (p & s.mask).sum()
                dices.append(2 * inter / (p.sum() + s.mask.sum()))
    assert abs(np.mean(dices) - 0.803) < 0.005, np.mean(dices)
    assert abs(np.median(dices) - 0.892) < 0.01, np.median(dices)


def test_bad_checkpoints_are_named(tmp_path, unet_weights):
    sd = torch.load(unet_weights, map_location="cpu")
    renamed = dict(sd)
    renamed["encoder1.enc1conv1.w"] = renamed.pop("encoder1.enc1conv1.weight")
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(WeightsError, match="renamed.pt: weights of the wrong model: 1 missing keys"):
        BACKENDS.get("unet")(weights=tmp_path / "renamed.pt")

    small = UNet(3, 1, 16).state_dict()
    torch.save(small, tmp_path / "unet16.pt")
    with pytest.raises(WeightsError, match="shape mismatches"):
        BACKENDS.get("unet")(weights=tmp_path / "unet16.pt")

    (tmp_path / "trunc.pt").write_bytes(unet_weights.read_bytes()[: 1 << 20])
    with pytest.raises(WeightsError, match="trunc.pt: not a readable PyTorch checkpoint"):
        BACKENDS.get("unet")(weights=tmp_path / "trunc.pt")

    with pytest.raises(WeightsError, match="weights file not found"):
        BACKENDS.get("unet")(weights=tmp_path / "absent.pt")


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(WeightsError, match="fetch unet"):
        BACKENDS.get("unet")(weights_dir=tmp_path)


def test_weights_folder_lookup(tmp_path, unet_weights):
    (tmp_path / "unet_lgg_f32.pt").symlink_to(unet_weights)
    b = BACKENDS.get("unet")(weights_dir=tmp_path)
    assert b.weights_path == tmp_path / "unet_lgg_f32.pt"
