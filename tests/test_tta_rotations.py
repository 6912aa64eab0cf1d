"""TTA rotations (the paper preset's flip × rot90 set): images, boxes and logits map consistently."""
import numpy as np
import pytest
import torch

from segunc.config import PipelineConfig
from segunc.modes.tta import forward_boxes, forward_images, invert_logits, transforms
from segunc.presets import apply_preset

pytestmark = pytest.mark.unit


def _image(h=40, w=56):
    x = torch.zeros(1, 3, h, w)
    x[..., 5:12, 30:50] = 200.0  # an off-centre, non-square bright block (its box: x 30..49, y 5..11)
    return x, torch.tensor([[30.0, 5.0, 49.0, 11.0]])


def _bbox(img: torch.Tensor) -> list[float]:
    ys, xs = np.nonzero(img[0].numpy() > 100)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("rot", [0, 1, 2, 3])
def test_box_follows_the_rotated_flipped_image(flip, rot):
    x, box = _image()
    ts = transforms([flip], [1.0], [1.0], "gain", [rot])
    out = forward_images(x, ts)
    assert _bbox(out[0]) == forward_boxes(box, ts, tuple(x.shape[-2:]))[0].tolist()
    assert out.shape[-2:] == (x.shape[-2:] if rot % 2 == 0 else x.shape[-2:][::-1])


@pytest.mark.parametrize("hw,groups", [((48, 48), [[0, 1, 2, 3]]), ((40, 56), [[0, 2], [1, 3]])])
def test_inverse_restores_the_original_grid_for_every_view(hw, groups):
    x, _ = _image(*hw)
    for rots in groups:  # a non-square slice: views of one rotation parity share a shape (one batch)
        ts = transforms([False, True], [1.0], [1.0], "gain", rots)
        out = forward_images(x, ts)[:, 0]  # a "logit" map that is the transformed image itself
        back = invert_logits(out, ts, tuple(x.shape[-2:]))
        assert torch.equal(back, x[0, 0].expand(len(ts), -1, -1))


def test_rotations_must_be_quarter_turns():
    with pytest.raises(ValueError, match="quarter turns"):
        transforms([False], [1.0], [1.0], "gain", [4])


def test_key_without_rotations_is_unchanged_and_paper_sam_set_is_flip_x_rot90():
    plain = PipelineConfig().mode_params("tta")
    from segunc.modes import get_mode

    assert "rotations" not in get_mode("tta", **plain).params()
    c, _ = apply_preset("paper", "litemedsam", PipelineConfig(), {})
    tta = get_mode("tta", **c.mode_params("tta"))
    assert tta.samples == 8 and tta.params()["rotations"] == [0, 1, 2, 3]
    assert {(t.flip, t.rot) for t in tta.transforms} == {(f, k) for f in (False, True) for k in range(4)}
    u, _ = apply_preset("paper", "unet", PipelineConfig(), {})
    assert get_mode("tta", **u.mode_params("tta")).samples == 30  # U-Net: the literal flip × scale × gain set


def test_unit_noise_is_the_authors_clamped_form():
    from segunc.modes import SliceInput, get_mode

    class _B:  # records what the model would see
        device = "cpu"
        seen = []

        def max_batch(self):
            return 64

        def logits(self, images, boxes=None):
            self.seen.append(images.clone())
            return torch.zeros(images.shape[0], *images.shape[-2:])

    x = SliceInput("s", torch.full((1, 3, 16, 16), 250.0), None)
    x.image[..., :8] = 100.0
    b = _B()
    c, _ = apply_preset("paper", "litemedsam", PipelineConfig(samples=4, batch_size=4), {})
    mode = get_mode("noisy", samples=4, batch_size=4, **{k: v for k, v in c.mode_params("noisy").items()
                                                         if k != "samples"})
    assert mode.params()["scale"] == "unit" and mode.params()["sigma"] == 0.2
    mode.sample_logits(b, x)
    seen = torch.cat(b.seen)
    assert float(seen.max()) == 255.0 and float(seen.min()) >= 0.0  # clamped to the 8-bit range
    assert 0.15 * 255 < float((seen - x.image).std()) < 0.25 * 255  # σ on the [0, 1] scale
    assert "scale" not in get_mode("noisy", **PipelineConfig().mode_params("noisy")).params()  # old keys kept
