"""UniverSeg backend: official state-dict layout, weights errors, support drawing, forward.

The official checkpoint cannot be downloaded here, so a random-init model saved in the
official layout (a plain ``state_dict``) stands in for it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segunc.backends import BACKENDS, WeightsError
from segunc.backends.universeg import (UniverSegBackend, draw_support, prepare_images, prepare_labels,
                                       select_channel)
from segunc.backends.universeg_net import UniverSeg, universeg_v1
from segunc.data import load_slice, select

pytestmark = pytest.mark.integration

#: parameter count of the official v1 model (encoder_blocks=[64]*4), from universeg/model.py:
#: enc0 3->64 cross + 2 x 64->64 convs, enc1..3 128->64 cross + 2 convs, dec0..2 256->64 cross
#: + 2 convs, out_conv 64->1 (1x1); paper: "1.18M".
OFFICIAL_V1_PARAMS = 1_182_785


def official_v1_layout() -> dict[str, tuple[int, ...]]:
    """Key → shape of the official v1 state dict, written out from the official source's
    module names (CrossBlock: cross.cross_conv, target/support = Vmap(ConvOp).vmapped.conv)."""
    layout = {}
    cross_in = {("enc", 0): 1 + 2, ("enc", 1): 128, ("enc", 2): 128, ("enc", 3): 128,
                ("dec", 0): 256, ("dec", 1): 256, ("dec", 2): 256}
    for (part, i), cin in cross_in.items():
        p = f"{part}_blocks.{i}"
        layout[f"{p}.cross.cross_conv.weight"] = (64, cin, 3, 3)
        layout[f"{p}.cross.cross_conv.bias"] = (64,)
        for side in ("target", "support"):
            layout[f"{p}.{side}.vmapped.conv.weight"] = (64, 64, 3, 3)
            layout[f"{p}.{side}.vmapped.conv.bias"] = (64,)
    layout["out_conv.conv.weight"] = (1, 64, 1, 1)
    layout["out_conv.conv.bias"] = (1,)
    return layout


@pytest.fixture(scope="module")
def uvs_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("uvs") / "universeg_v1_nf64_ss64_STA.pt"
    torch.save(universeg_v1().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def backend(uvs_weights, lgg_refs):
    b = UniverSegBackend(weights=uvs_weights, support_size=4, support_seed=0)
    b.set_support_from_refs(lgg_refs)
    return b


def _images(slices) -> torch.Tensor:
    return torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() for s in slices])


# -- network ----------------------------------------------------------------------------
def test_state_dict_matches_official_layout():
    sd = universeg_v1().state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_v1_layout()
    assert list(sd) == list(official_v1_layout())  # same order as the official module tree
    assert sum(v.numel() for v in sd.values()) == OFFICIAL_V1_PARAMS
    assert sum(p.numel() for p in universeg_v1().parameters()) == OFFICIAL_V1_PARAMS


def _reference_forward(m: UniverSeg, ti, si, sl):
    """The official forward written literally: every (target, support) pair concatenated
    along channels and convolved; mean over the support; LeakyReLU per-image convs."""

    def vm(f, x):
        b, s = x.shape[:2]
        y = f(x.reshape(b * s, *x.shape[2:]))
        return y.reshape(b, s, *y.shape[1:])

    def block(blk, t, s):
        sy = s.shape[1]
        xy = torch.cat([t.expand(-1, sy, -1, -1, -1), s], dim=2)  # Sx = 1
        conv = blk.cross.cross_conv
        inter = vm(lambda z: F.conv2d(z, conv.weight, conv.bias, padding=1), xy)
        t = inter.mean(1, keepdim=True)
        ct, cs = blk.target.vmapped.conv, blk.support.vmapped.conv
        t = vm(lambda z: F.leaky_relu(F.conv2d(z, ct.weight, ct.bias, padding=1)), t)
        s = vm(lambda z: F.leaky_relu(F.conv2d(z, cs.weight, cs.bias, padding=1)), inter)
        return t, s

    t, s, skips = ti[:, None], torch.cat([si, sl], 2), []
    for i, blk in enumerate(m.enc_blocks):
        t, s = block(blk, t, s)
        if i < len(m.enc_blocks) - 1:
            skips.append((t, s))
            t, s = vm(lambda z: F.max_pool2d(z, 2), t), vm(lambda z: F.max_pool2d(z, 2), s)
    up = lambda z: F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=True)  # noqa: E731
    for blk in m.dec_blocks:
        ts, ss = skips.pop()
        t, s = block(blk, torch.cat([vm(up, t), ts], 2), torch.cat([vm(up, s), ss], 2))
    return F.conv2d(t[:, 0], m.out_conv.conv.weight, m.out_conv.conv.bias)


def test_forward_matches_literal_pairwise_reference():
    torch.manual_seed(1)
    m = universeg_v1().eval()
    ti = torch.rand(2, 1, 32, 32)
    si = torch.rand(2, 3, 1, 32, 32)
    sl = (torch.rand(2, 3, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        out = m(ti, si, sl)
        ref = _reference_forward(m, ti, si, sl)
    assert out.shape == (2, 1, 32, 32)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_forward_shape_errors():
    m = universeg_v1()
    with pytest.raises(ValueError, match="B S 1 H W"):
        m(torch.rand(1, 1, 32, 32), torch.rand(1, 2, 1, 32, 32), torch.rand(1, 3, 1, 32, 32))


# -- weights --------------------------------------------------------------------------
def test_registered():
    assert BACKENDS.get("universeg") is UniverSegBackend
    assert UniverSegBackend.needs_support and not UniverSegBackend.needs_box
    assert "research" in UniverSegBackend.weights_hint and "fetch universeg" in UniverSegBackend.weights_hint


def test_official_layout_checkpoint_loads_strictly(uvs_weights):
    b = UniverSegBackend(weights=uvs_weights)
    saved = torch.load(uvs_weights, weights_only=True)
    for k, v in b.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert b.dropout_scope("all") == [b.model]
    with pytest.raises(ValueError):
        b.dropout_scope("decoder")


def test_renamed_key_raises_weights_error(uvs_weights, tmp_path):
    sd = torch.load(uvs_weights, weights_only=True)
    sd["enc_blocks.0.cross.conv.weight"] = sd.pop("enc_blocks.0.cross.cross_conv.weight")
    bad = tmp_path / "renamed.pt"
    torch.save(sd, bad)
    with pytest.raises(WeightsError) as err:
        UniverSegBackend(weights=bad)
    assert err.value.path == bad and str(bad) in str(err.value)
    assert "cross_conv" in str(err.value)


def test_missing_weights_hint(tmp_path):
    with pytest.raises(WeightsError, match="fetch universeg"):
        UniverSegBackend(weights_dir=tmp_path)


# -- support set ------------------------------------------------------------------------
def test_draw_support_deterministic_train_only_patient_disjoint(lgg_refs):
    a = draw_support(lgg_refs, 16, seed=0)
    assert [r.slice_id for r in a] == [r.slice_id for r in draw_support(lgg_refs, 16, seed=0)]
    b = draw_support(lgg_refs, 16, seed=1)
    assert [r.slice_id for r in a] != [r.slice_id for r in b]
    val_test = {r.patient_id for r in lgg_refs if r.split != "train"}
    for drawn in (a, b):
        assert len(drawn) == 16
        assert all(r.split == "train" for r in drawn)
        assert len({r.patient_id for r in drawn}) == 16  # one slice per patient
        assert not val_test & {r.patient_id for r in drawn}
        assert all(load_slice(r).has_tumour for r in drawn[:4])


def test_draw_support_exclusions_reuse_and_shortage(lgg_refs):
    first = draw_support(lgg_refs, 4, seed=0)
    gone = {r.patient_id for r in first}
    again = draw_support(lgg_refs, 4, seed=0, exclude_patients=gone)
    assert not gone & {r.patient_id for r in again}
    # two patients only: slices are reused per patient once patients run out, never repeated
    pids = sorted({r.patient_id for r in lgg_refs if r.split == "train"})[:2]
    two = [r for r in lgg_refs if r.patient_id in pids]
    drawn = draw_support(two, 5, seed=3)
    assert len({r.slice_id for r in drawn}) == 5 and {r.patient_id for r in drawn} == set(pids)
    counts = [sum(r.patient_id == p for r in drawn) for p in pids]
    assert sorted(counts) == [2, 3]
    with pytest.raises(ValueError, match="only"):
        draw_support(two, 1000, seed=0)
    with pytest.raises(ValueError):
        draw_support([r for r in lgg_refs if r.split == "val"], 1, seed=0)  # no train refs at all


def test_settings_record_support(backend, uvs_weights, lgg_refs):
    s = backend.settings()
    assert s["backend"] == "universeg" and s["channels"] == "flair" and s["support_size"] == 4
    assert s["support_ids"] == [r.slice_id for r in draw_support(lgg_refs, 4, seed=0)]
    other = UniverSegBackend(weights=uvs_weights, support_size=4, support_seed=1)
    other.set_support_from_refs(lgg_refs)
    assert other.settings()["support_ids"] != s["support_ids"]
    assert backend.prepare_slice(object()) == {}


# -- inference ------------------------------------------------------------------------
def test_no_support_is_a_clear_error(uvs_weights, val_slices):
    b = UniverSegBackend(weights=uvs_weights)
    with pytest.raises(RuntimeError, match="support"):
        b.logits(_images(val_slices[:1]))


def test_logits_on_real_val_slices(backend, val_slices, lgg_refs):
    support_patients = {r.patient_id for r in lgg_refs if r.slice_id in set(backend.options["support_ids"])}
    assert len(support_patients) == 4
    assert not support_patients & {r.patient_id for r in select(lgg_refs, "val")}
    assert not support_patients & {s.patient_id for s in val_slices}
    x = _images(val_slices[:1])
    with torch.no_grad():
        out = backend.logits(x)
        both = backend.logits(_images(val_slices[:2]))
    assert out.shape == (1, 256, 256) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(both[:1], out, atol=1e-5, rtol=1e-5)  # support broadcast to the batch
    # boxes are ignored
    with torch.no_grad():
        torch.testing.assert_close(backend.logits(x, torch.tensor([[1.0, 2.0, 3.0, 4.0]])), out)


def test_logits_with_supports(backend, val_slices, lgg_refs):
    own = (backend.support_images[0], backend.support_labels[0])
    other = backend.support_for([load_slice(r) for r in draw_support(lgg_refs, 4, seed=7)])
    assert other[0].shape == other[1].shape == (4, 1, 128, 128)
    x = _images(val_slices[:1])
    with torch.no_grad():
        k = backend.logits_with_supports(x, [own, other, own])
        ref = backend.logits(x)
    assert k.shape == (3, 256, 256)
    torch.testing.assert_close(k[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k[2], ref[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(k[1], k[0])
    with pytest.raises(ValueError, match="same shape"):
        backend.logits_with_supports(x, [own, (other[0][:3], other[1][:3])])


def test_preprocessing_policies():
    img = torch.randint(0, 256, (2, 3, 256, 256)).float()
    flair = prepare_images(img, "flair")
    lum = prepare_images(img, "luminance")
    for p in (flair, lum):
        assert p.shape == (2, 1, 128, 128)
        assert float(p.min()) == 0.0 and abs(float(p.max()) - 1.0) < 1e-6
    torch.testing.assert_close(select_channel(img, "flair"), img[:, 1:2])
    torch.testing.assert_close(select_channel(img, "luminance")[:, 0],
                               0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2])
    with pytest.raises(ValueError):
        select_channel(img, "bogus")
    with pytest.raises(ValueError):
        UniverSegBackend(channels="rgb")


def test_label_downsampling_keeps_small_tumours():
    m = torch.zeros(2, 256, 256, dtype=torch.bool)
    m[0, 100:140, 60:90] = True
    m[1, 11, 11] = True  # one pixel: would vanish under area >= 0.5
    lab = prepare_labels(m)
    assert lab.shape == (2, 1, 128, 128) and set(np.unique(lab.numpy())) <= {0.0, 1.0}
    assert float(lab[0].sum()) == 20 * 15
    assert float(lab[1].sum()) == 1.0
