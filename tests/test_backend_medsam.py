"""MedSAM backend: strict weight loading, clear errors for bad files, two-stage consistency.

The official ``medsam_vit_b.pth`` cannot be downloaded here; a seeded random-init SAM
ViT-B saved as a plain state dict (the official file's layout) stands in for it. ViT-B at
1024 x 1024 costs ~25 s per encoder pass on this CPU, so the whole file runs exactly two
(the shared ``embedding`` fixture and one ``logits`` call).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segunc.backends import BACKENDS, WeightsError, box_from_mask
from segunc.backends._sam_family import NO_PROMPT_LOGIT
from segunc.backends.medsam import MedSAMBackend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def medsam_weights(tmp_path_factory):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    net = sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path_factory.mktemp("medsam") / "medsam_vit_b.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def backend(medsam_weights):
    return MedSAMBackend(weights=medsam_weights)


@pytest.fixture(scope="module")
def tumour(val_slices):
    s = val_slices[0]
    assert s.has_tumour
    return s


@pytest.fixture(scope="module")
def image(tumour) -> torch.Tensor:
    return torch.from_numpy(tumour.image).permute(2, 0, 1)[None].float()


@pytest.fixture(scope="module")
def boxes_t(backend, tumour) -> torch.Tensor:
    """Three box prompts: the tight box and two jittered ones (T = 3)."""
    box = backend.prepare_slice(tumour)["box"]
    return torch.as_tensor(np.stack([box, box + [-6, -4, 5, 7], box + [3, 2, -2, -3]]), dtype=torch.float32)


@pytest.fixture(scope="module")
def embedding(backend, image):  # encoder pass 1 of 2
    with torch.inference_mode():
        return backend.encode(image)


def test_registered_contract():
    assert BACKENDS.get("medsam") is MedSAMBackend
    assert MedSAMBackend.needs_box and MedSAMBackend.two_stage
    assert MedSAMBackend.weight_files == ("medsam_vit_b.pth",)
    assert "fetch medsam" in MedSAMBackend.weights_hint


def test_checkpoint_loads_strictly(backend, medsam_weights):
    saved = torch.load(medsam_weights, weights_only=True)
    own = backend.model.state_dict()
    assert set(own) == set(saved)
    for k in ("image_encoder.patch_embed.proj.weight", "mask_decoder.iou_token.weight"):
        assert torch.equal(own[k], saved[k])
    s = backend.settings()
    assert s == {"backend": "medsam", "box_margin": 0, "channels": "flair3"}


def _expect_weights_error(path, *fragments):
    with pytest.raises(WeightsError) as err:
        MedSAMBackend(weights=path)
    assert err.value.path == path and str(path) in str(err.value)
    for f in fragments:
        assert f in str(err.value)


def test_bad_checkpoints_raise_weights_error(medsam_weights, tmp_path):
    sd = torch.load(medsam_weights, weights_only=True)
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in sd.items() if k != "mask_decoder.iou_token.weight"}, missing)
    _expect_weights_error(missing, "missing", "mask_decoder.iou_token.weight")
    missing.unlink()

    shaped = tmp_path / "shape.pth"
    sd["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 128)
    torch.save(sd, shaped)
    del sd
    _expect_weights_error(shaped, "shape", "prompt_encoder.no_mask_embed.weight")
    shaped.unlink()

    truncated = tmp_path / "truncated.pth"
    with open(medsam_weights, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read(medsam_weights.stat().st_size // 2))
    _expect_weights_error(truncated, "truncated")
    truncated.unlink()

    _expect_weights_error(tmp_path / "nope.pth", "not found")


def test_missing_weights_hint(tmp_path):
    with pytest.raises(WeightsError, match="fetch medsam"):
        MedSAMBackend(weights_dir=tmp_path)


def test_logits_real_tumour_slice_and_two_stage_consistency(backend, image, boxes_t, embedding):
    assert embedding.shape == (1, 256, 64, 64)
    with torch.inference_mode():
        single = backend.logits(image, boxes_t[:1])  # encoder pass 2 of 2
        many = backend.decode(embedding, boxes_t, (256, 256))
        per_box = torch.cat([backend.decode(embedding, boxes_t[i:i + 1], (256, 256)) for i in range(3)])
        paired = backend.decode(embedding.expand(2, -1, -1, -1), boxes_t[:2], (256, 256))
    assert single.shape == (1, 256, 256) and single.dtype == torch.float32
    assert torch.isfinite(single).all()
    assert many.shape == (3, 256, 256) and many.dtype == torch.float32
    torch.testing.assert_close(many[:1], single, atol=1e-4, rtol=0)
    torch.testing.assert_close(many, per_box, atol=1e-4, rtol=0)
    torch.testing.assert_close(paired, many[:2], atol=1e-4, rtol=0)  # T embeddings pair with T boxes
    assert not torch.allclose(many[0], many[1])  # the prompt matters


def test_no_prompt_gives_constant_logit(backend, val_slices):
    empty = val_slices[2]
    assert not empty.has_tumour
    assert backend.prepare_slice(empty)["box"] is None
    img = torch.from_numpy(empty.image).permute(2, 0, 1)[None].float()
    out = backend.logits(img, None)
    assert out.shape == (1, 256, 256) and torch.all(out == NO_PROMPT_LOGIT)
    assert torch.all(backend.decode(torch.zeros(2, 256, 64, 64), None, (256, 256)) == NO_PROMPT_LOGIT)


def test_prepare_slice_box(backend, tumour):
    box = backend.prepare_slice(tumour)["box"]
    assert box.dtype == np.float32
    np.testing.assert_array_equal(box, box_from_mask(tumour.mask, 0))
    np.testing.assert_array_equal(backend.prepare_slice(tumour, box_margin=5)["box"], box_from_mask(tumour.mask, 5))


def test_dropout_scope(backend):
    assert backend.dropout_scope("all") == [backend.model]
    assert backend.dropout_scope("decoder") == [backend.model.prompt_encoder, backend.model.mask_decoder]
    with pytest.raises(ValueError):
        backend.dropout_scope("bogus")


def test_channel_policies(backend, image):
    x = backend.preprocess(image)
    assert x.shape == (1, 3, 1024, 1024)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert float(x.min()) == 0.0 and abs(float(x.max()) - 1.0) < 1e-6
    backend.options["channels"] = "rgb"
    try:
        y = backend.preprocess(image)
    finally:
        backend.options["channels"] = "flair3"
    assert y.shape == (1, 3, 1024, 1024) and not torch.equal(y[:, 0], y[:, 1])
    with pytest.raises(ValueError):
        MedSAMBackend(channels="bogus")
