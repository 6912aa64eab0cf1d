"""TTA views on real slices: the default set's 30 views are 30 distinct model inputs for every
backend; the paper's literal set (gains, undone by per-image normalisation) is deduplicated
to its distinct views with the same mean maps as running all 30. Real U-Net and LiteMedSAM
weights; MedSAM and UniverSeg in their official architecture and checkpoint format with seeded
random weights (preprocessing does not depend on the weights)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from segunc.backends import BACKENDS
from segunc.backends.medsam import MedSAMBackend
from segunc.backends.universeg import UniverSegBackend
from segunc.backends.universeg_net import universeg_v1
from segunc.config import PipelineConfig
from segunc.modes import SliceInput, get_mode
from segunc.modes.tta import distinct_views, forward_boxes, forward_images, invert_logits
from segunc.pipeline import make_mode, result_key_material

pytestmark = pytest.mark.integration


def _unet(unet_weights):
    return BACKENDS.get("unet")(weights=unet_weights)


def _medsam(tmp_path):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = tmp_path / "medsam_vit_b.pth"
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)
    return MedSAMBackend(weights=path)


def _universeg(tmp_path, lgg_refs):
    torch.manual_seed(0)
    path = tmp_path / "universeg_v1_nf64_ss64_STA.pt"
    torch.save(universeg_v1().state_dict(), path)
    b = UniverSegBackend(weights=path, support_size=2, support_seed=0)
    b.set_support_from_refs(lgg_refs)
    return b


@pytest.mark.parametrize("name", ["unet", "litemedsam", "medsam", "universeg"])
def test_default_set_views_are_distinct_model_inputs(name, unet_weights, lgg_refs, val_slices, tmp_path):
    backend = {"unet": lambda: _unet(unet_weights), "litemedsam": lambda: BACKENDS.get("litemedsam")(),
               "medsam": lambda: _medsam(tmp_path), "universeg": lambda: _universeg(tmp_path, lgg_refs)}[name]()
    mode = make_mode("tta", PipelineConfig())
    assert len(mode.transforms) == 30 and {t.op for t in mode.transforms} == {"gamma"}
    x = SliceInput.from_slice(val_slices[1], backend)
    pre, boxes = [], []
    for scale in dict.fromkeys(t.scale for t in mode.transforms):
        ts = [t for t in mode.transforms if t.scale == scale]
        imgs = forward_images(x.image, ts)
        b = None if x.box is None else forward_boxes(x.box, ts, x.hw)
        assert distinct_views(backend, imgs, b) == list(range(len(ts)))  # no view is a copy of another
        with torch.inference_mode():
            pre += list(backend.preprocess(imgs).float())
        boxes += [None] * len(ts) if b is None else list(b)
    assert len(pre) == 30
    for i, j in itertools.combinations(range(30), 2):  # pairwise distinct, across scales too
        if pre[i].shape == pre[j].shape and (boxes[i] is None or torch.equal(boxes[i], boxes[j])):
            assert (pre[i] - pre[j]).abs().max() > 1e-3, (name, mode.transforms[i], mode.transforms[j])


def _naive(backend, mode, x) -> torch.Tensor:
    """All 30 views, one forward pass each (the paper's loop)."""
    out = []
    for t in mode.transforms:
        b = None if x.box is None else forward_boxes(x.box, [t], x.hw)
        out.append(invert_logits(backend.logits(forward_images(x.image, [t]), b), [t], x.hw)[0])
    return torch.stack(out)


#: a val tumour slice whose brightest pixel is below 255 / 1.2: no gain of the paper's set saturates
UNSATURATED = "TCGA_DU_5854_19951104_24"


def test_paper_set_dedup_same_maps_as_naive_30_with_6_forwards(unet_weights, lgg_refs):
    from segunc.data import load_slice

    unet = _unet(unet_weights)
    mode = make_mode("tta", PipelineConfig(tta_set="paper"))
    assert {t.op for t in mode.transforms} == {"gain"}
    x = SliceInput.from_slice(load_slice(next(r for r in lgg_refs if r.slice_id == UNSATURATED)), unet)
    assert float(x.image.max()) * 1.2 <= 255  # a gain is a pure no-op after standardisation
    with torch.inference_mode():
        dedup = torch.sigmoid(mode.sample_logits(unet, x)).numpy()
        naive = torch.sigmoid(_naive(unet, mode, x)).numpy()
    assert mode.last_forwards == 6  # 2 flips × 3 scales
    assert dedup.shape == naive.shape == (30, 256, 256)
    # the naive copies differ only by float rounding of the standardisation (measured ≤ 1.5e-6)
    assert np.abs(dedup.mean(0) - naive.mean(0)).max() <= 1e-5
    assert np.abs(dedup.var(0) - naive.var(0)).max() <= 1e-5
    # the default set really uses 30 forward passes and differs from the paper's
    default = make_mode("tta", PipelineConfig())
    with torch.inference_mode():
        d = torch.sigmoid(default.sample_logits(unet, x)).numpy()
    assert default.last_forwards == 30 and np.abs(d.mean(0) - naive.mean(0)).max() > 1e-3


def test_saturating_gain_is_not_merged(unet_weights, val_slices):
    """A gain that clips bright pixels changes the normalised input: that view is computed
    (val_slices[1] peaks at 242: gains 1.1 and 1.2 saturate a few pixels)."""
    unet = _unet(unet_weights)
    x = SliceInput.from_slice(val_slices[1], unet)
    assert 255 / 1.1 < float(x.image.max()) < 255
    mode = get_mode("tta", flips=(False,), scales=(1.0,), intensities=(0.8, 0.9, 1.0, 1.1, 1.2), intensity_op="gain")
    with torch.inference_mode():
        mode.sample_logits(unet, x)
    assert mode.last_forwards == 3  # 0.8 ≡ 0.9 ≡ 1.0 after standardisation; 1.1 and 1.2 saturate


def test_keys_paper_set_keeps_its_key_default_set_new():
    class _B:  # result_key_material needs only these of a backend
        weights_sha256 = "x"

        def settings(self):
            return {"backend": "unet"}

    paper = result_key_material(_B(), PipelineConfig(tta_set="paper"), "tta")["modes"]["tta"]
    assert paper == {"mode": "tta", "flips": [False, True], "scales": [0.5, 1.0, 2.0],
                     "intensities": [0.8, 0.9, 1.0, 1.1, 1.2]}  # exactly the key of the results stored so far
    default = result_key_material(_B(), PipelineConfig(), "tta")["modes"]["tta"]
    assert default == {**paper, "intensity_op": "gamma"}
    with pytest.raises(ValueError, match="unknown TTA set"):
        PipelineConfig(tta_set="bogus").mode_params("tta")


def test_cli_tta_set_flag():
    from segunc.cli import build_parser
    from segunc.cli.common import config_from_args

    args = build_parser().parse_args(["evaluate", "--tta-set", "paper", "--backend", "unet", "--out", "x.csv"])
    assert config_from_args(args).tta_set == "paper"
    args = build_parser().parse_args(["evaluate", "--backend", "unet", "--out", "x.csv"])
    assert config_from_args(args).mode_params("tta")["intensity_op"] == "gamma"
