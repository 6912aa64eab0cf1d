"""Inference modes on real slices with the real U-Net and LiteMedSAM."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segunc.backends import BACKENDS
from segunc.modes import MODES, SliceInput, get_mode
from segunc.modes.box_jitter import jitter_boxes
from segunc.modes.mc_dropout import dropout_sites, inject_dropout
from segunc.modes.tta import forward_boxes, forward_images, invert_logits, transforms

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lite():
    return BACKENDS.get("litemedsam")()


@pytest.fixture(scope="module")
def x_unet(unet, val_slices):
    return SliceInput.from_slice(val_slices[1], unet)


def test_registry_lists_modes():
    assert MODES.names() == ["normal", "mc_dropout", "tta", "noisy", "box_jitter", "support_resample"]
    with pytest.raises(KeyError, match="unknown mode 'bogus'"):
        MODES.get("bogus")


def test_dropout_sites_unet(unet):
    sites = dropout_sites(unet.dropout_scope("all"))
    assert len(sites) == 18 and all(isinstance(m, torch.nn.ReLU) for m in sites)


def test_dropout_injected_and_removed(unet, x_unet):
    with torch.inference_mode():
        before = unet.logits(x_unet.image)
        with inject_dropout(unet.dropout_scope(), 0.2, torch.Generator().manual_seed(0)) as n:
            assert n == 18
            dropped = unet.logits(x_unet.image)
        after = unet.logits(x_unet.image)
    assert not torch.allclose(before, dropped)
    assert torch.equal(before, after)  # hooks removed: model unchanged for the next mode
    assert all(not m._forward_hooks for m in unet.model.modules())


def test_mc_dropout_samples_vary_and_are_seeded(unet, x_unet):
    with torch.inference_mode():
        a = get_mode("mc_dropout", samples=4, seed=1, p=0.05).sample_logits(unet, x_unet)
        b = get_mode("mc_dropout", samples=4, seed=1, p=0.05).sample_logits(unet, x_unet)
        c = get_mode("mc_dropout", samples=4, seed=2, p=0.05).sample_logits(unet, x_unet)
        zero = get_mode("mc_dropout", samples=2, seed=1, p=0.0).sample_logits(unet, x_unet)
        normal = get_mode("normal").sample_logits(unet, x_unet)
    assert a.shape == (4, 256, 256)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert (a[0] - a[1]).abs().max() > 0  # samples differ from each other
    assert torch.allclose(zero[0], normal[0], atol=1e-4)


def test_mc_dropout_independent_of_batch_size(unet, x_unet, monkeypatch):
    monkeypatch.setitem(unet.options, "max_batch", 64)  # really batch 4 (the CPU default is one image per pass)
    with torch.inference_mode():
        big = get_mode("mc_dropout", samples=4, seed=3, p=0.05, batch_size=4).sample_logits(unet, x_unet)
        small = get_mode("mc_dropout", samples=4, seed=3, p=0.05, batch_size=1).sample_logits(unet, x_unet)
    assert (torch.sigmoid(big) - torch.sigmoid(small)).abs().max() <= 1e-6


def test_mc_dropout_rejects_bad_p(unet, x_unet):
    with pytest.raises(ValueError, match="dropout probability"):
        get_mode("mc_dropout", samples=2, p=1.0).sample_logits(unet, x_unet)


def test_tta_identity_transform_equals_normal(unet, x_unet):
    with torch.inference_mode():
        tta = get_mode("tta").sample_logits(unet, x_unet)
        normal = unet.logits(x_unet.image)
    assert tta.shape == (30, 256, 256) and torch.isfinite(tta).all()
    ident = [i for i, t in enumerate(transforms()) if not t.flip and t.scale == 1.0 and t.intensity == 1.0][0]
    assert torch.allclose(tta[ident], normal[0], atol=1e-3)


def test_tta_inversion_maps_back_to_original_grid():
    # a smooth image survives forward + inverse up to interpolation error; flips exactly
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    img = (100 + 80 * torch.sin(3 * xx) * torch.cos(2 * yy))[None, None].expand(1, 3, 64, 64)
    for t in transforms(intensities=(1.0,)):
        fwd = forward_images(img, [t])[:, 0]
        back = invert_logits(fwd, [t], (64, 64))[0]
        tol = 1e-4 if t.scale == 1.0 else 2.0
        assert (back - img[0, 0]).abs()[4:-4, 4:-4].max() < tol, t


def test_tta_boxes_follow_the_image(val_slices):
    s = val_slices[0]
    mask = torch.from_numpy(s.mask.astype(np.float32))[None, None].expand(1, 3, -1, -1) * 255
    ys, xs = np.nonzero(s.mask)
    box = torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)
    for t in transforms(intensities=(1.0,)):
        moved = forward_images(mask, [t])[0, 0] > 127
        my, mx = torch.nonzero(moved, as_tuple=True)
        got = forward_boxes(box, [t], (256, 256))[0]
        want = torch.tensor([mx.min(), my.min(), mx.max(), my.max()], dtype=torch.float32)
        assert (got - want).abs().max() <= 1.5, (t, got, want)


def test_noisy_seeded_and_sigma_zero_is_normal(unet, x_unet):
    with torch.inference_mode():
        a = get_mode("noisy", samples=3, seed=0).sample_logits(unet, x_unet)
        b = get_mode("noisy", samples=3, seed=0).sample_logits(unet, x_unet)
        z = get_mode("noisy", samples=2, sigma=0.0).sample_logits(unet, x_unet)
        n = unet.logits(x_unet.image)
    assert torch.equal(a, b) and (a[0] - a[1]).abs().max() > 0
    assert torch.allclose(z[1], n[0], atol=1e-4)


def test_batch_size_does_not_change_deterministic_modes(unet, x_unet, monkeypatch):
    monkeypatch.setitem(unet.options, "max_batch", 64)
    with torch.inference_mode():
        big = get_mode("tta", batch_size=30).sample_logits(unet, x_unet)
        small = get_mode("tta", batch_size=4).sample_logits(unet, x_unet)
    assert (torch.sigmoid(big) - torch.sigmoid(small)).abs().max() <= 1e-6


def test_box_jitter_bounds(val_slices):
    box = torch.tensor([[100.0, 120.0, 140.0, 150.0]])
    b = jitter_boxes(box, 200, 10, (256, 256), torch.Generator().manual_seed(0))
    assert b.shape == (200, 4)
    assert (b - box).abs().max() <= 10 and (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
    edge = jitter_boxes(torch.tensor([[0.0, 0.0, 255.0, 255.0]]), 50, 10, (256, 256), torch.Generator().manual_seed(0))
    assert edge.min() >= 0 and edge.max() <= 255


def test_litemedsam_modes_reuse_one_embedding(lite, val_slices):
    x = SliceInput.from_slice(val_slices[0], lite)
    calls = []
    hook = lite.model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        with torch.inference_mode():
            jit = get_mode("box_jitter", samples=6, seed=0).sample_logits(lite, x)
            dec = get_mode("mc_dropout", samples=6, seed=0, p=0.05, placement="decoder").sample_logits(lite, x)
            normal = lite.logits(x.image, x.box)
    finally:
        hook.remove()
    assert calls == [1, 1, 1]  # one encoder pass per slice for both modes
    assert jit.shape == dec.shape == (6, 256, 256)
    assert (dec[0] - dec[1]).abs().max() > 0
    # box jitter with 0 px equals the normal prediction
    with torch.inference_mode():
        zero = get_mode("box_jitter", samples=2, max_px=0).sample_logits(lite, x)
    assert torch.allclose(zero[0], normal[0], atol=1e-3)


def test_litemedsam_dice_on_real_slice(lite, val_slices):
    s = val_slices[1]
    x = SliceInput.from_slice(s, lite)
    with torch.inference_mode():
        p = torch.sigmoid(lite.logits(x.image, x.box))[0].numpy() >= 0.5
    dice = 2 * (p & s.mask).sum() / (p.sum() + s.mask.sum())
    assert dice > 0.7, dice


def test_no_box_means_no_prediction(lite, val_slices):
    empty = val_slices[2]
    x = SliceInput.from_slice(empty, lite)
    assert x.box is None
    with torch.inference_mode():
        out = get_mode("tta").sample_logits(lite, x)
    assert torch.all(torch.sigmoid(out) < 1e-6)


def test_box_jitter_rejects_unprompted_backend(unet, x_unet):
    assert not get_mode("box_jitter").supports(unet)
