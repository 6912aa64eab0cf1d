"""A store written before the config / post-processing restructure is read after it with the same keys.

The expected hex strings below are recorded outputs of the code at commit c89c8bf (before the
restructure), computed by running the same settings through that commit's
``pipeline.result_key_material`` / ``store.keys.settings_id`` / ``runner.jobs.config_to_dict``.
``fixtures/old_store`` is a real store written by that commit:
``python -m segunc run --backend unet --weights ../shared/weights/unet_lgg_f32.pt
--data ../shared/lgg/kaggle_3m --modes normal --split val --limit 1 --cache <dir>``.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segunc.backends import BACKENDS
from segunc.config import FusionConfig, PipelineConfig
from segunc.pipeline import evaluate_slice, result_key_material
from segunc.refine.crf import CRFParams
from segunc.store import ResultStore, canonical_json, image_relpath, result_key, settings_id
from segunc.store.keys import sha256_hex
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

OLD_STORE = Path(__file__).parent / "fixtures" / "old_store"


#: the former CRF defaults (bilateral 10 + Gaussian 3)
OLD_CRF = dict(compat_bilateral=10.0, compat_gaussian=3.0)


def configs() -> dict[str, PipelineConfig]:
    return {name: dataclasses.replace(c, tta_set="paper", crf=dataclasses.replace(c.crf, **OLD_CRF))
            for name, c in _configs().items()}


def _configs() -> dict[str, PipelineConfig]:
    return {
        "default": PipelineConfig(),
        "fusion_exp_percentile": PipelineConfig(fusion=FusionConfig(weighting="exponential", lam=5.0, threshold="percentile",
                                                                    threshold_params={"q": 90.0})),
        "fusion_samples_power_fixed": PipelineConfig(samples=10, fusion=FusionConfig(
            source="samples", sample_mode="noisy", weighting="power", alpha=2.0, threshold="fixed",
            threshold_params={"value": 0.4})),
        "crf_custom_meanstd": PipelineConfig(crf=CRFParams(sdims=3.0, iterations=10), fusion=FusionConfig(
            sources=("mc_dropout", "tta"), uncertainty="variance", threshold="mean_std", threshold_params={"k": 0.5})),
        "temperature_dropout": PipelineConfig(samples=10, p=0.05, seed=3, temperature=1.7),
        "tta_custom": PipelineConfig(tta_flips=(False,), tta_scales=(1.0, 2.0), tta_intensities=(0.9, 1.1), sigma=0.05),
    }


# settings_id per "config/backend/mode", recorded with the code of commit c89c8bf
OLD_SETTINGS_IDS = {
    "default/unet/normal": "f51cb13d5a1a40b17c6dd8e3ec794984da7dbc9c7fb59dcb0f9eb5b1e2ed9ac6",
    "default/unet/mc_dropout": "dddfb905bbc86661e46e82ed86593b506f5a5412d11c956b32d3a41f899288a9",
    "default/unet/tta": "e513fec56aecd2aa04af87289c36d9c2bd622956211b630794708965abd8276b",
    "default/unet/noisy": "468a6bc8fbbb092f5fbf5c79cecd8ae5a990a4dcbfadf301a42c0b9d1df2652d",
    "default/unet/fusion": "0e84dc1be5d354dcf10bbdd4657061d2c67bd6a00e4109c068bc5f2e2b363bfa",
    "default/unet/crf": "468b8f9129485cbfbca7fd6625ae36c487212b6429fe0efe2ddd4f3ecd6341ad",
    "fusion_exp_percentile/unet/fusion": "7d4c020a5a7d81469dde640a4afe14448b2e5952e84ab7484966015f74b010e6",
    "fusion_exp_percentile/unet/crf": "7eb6447f4475c4c768c4c6473c0ca8cfab79d2fd3eb46695ea36ae5449760a95",
    "fusion_samples_power_fixed/unet/fusion": "5177b5f0807bfb17fa22feec5a93b37f808424edcabfd589bef2f59d19fc18c8",
    "fusion_samples_power_fixed/unet/crf": "f27545770e8fb9991b930738d77d126e0c4f5b5a11f0a103e16e1f058415e11a",
    "crf_custom_meanstd/unet/crf": "4dfb09ef9527b46ee37540de70034ab7ba5e389c64ef4d2a2c30d414ee097d61",
    "temperature_dropout/unet/mc_dropout": "a675b5d36de114401cc4d9dfdf40853ce878e1e075e371cc6f3b7a0c5e80094d",
    "temperature_dropout/unet/fusion": "ae8ef2f4e10a6a2f1e68a6414dba5e987af9fe8394204692d0af8b2f08f4b678",
    "tta_custom/unet/tta": "6339376801308ff1917702aeaa2eaaeaa1f956601f3af6fe61fe9d78aa45096f",
    "tta_custom/unet/noisy": "cb6ef0c13233ef1589423512b7d6eb805e407606948e95f74ac74e0e873bf16f",
    "default/litemedsam/normal": "35fba9ad5c6428bc41295e47c5af969638ce41337a31567b045b56f7cc5b1c22",
    "default/litemedsam/box_jitter": "e5c3faa69f503283bae8f8e0b952b3cc56c70df9020d43cdb23aed25ddbfbb37",
    "default/litemedsam/crf": "3e3e721fb7572270687a0cd074349b2cadef8f37bfd9401b3c501d879287b39b",
}
# result_key of default/unet/crf for slice TCGA_CS_4941_19960909_12, same commit
OLD_CRF_KEY = "624cae26ba6125e0fe6c1d7b0f134f89091fca428373d8ab6f57c02c58041d60"
# sha256(canonical_json(config_to_dict(config))) (the config part of a job id), same commit
OLD_CONFIG_HASHES = {
    "default": "3bf11ff13a4e79efc00a0f2a757087a839bed11d78056daf0e0df04af6a8931f",
    "fusion_exp_percentile": "2c6a024cf18584f8e4223caf558b61dcd075976aa201f7537180befd4c712d33",
    "fusion_samples_power_fixed": "dcad866761e51f81d8c173686a55ee6440c2219be8338da8de0d72e15a8cd08d",
    "crf_custom_meanstd": "684052c4f96e1be38eb84cf11c7424e1ce3554dd68739bc758ff76ea4a14ba47",
    "temperature_dropout": "2a17c3b3ee07d41a5b83687062e9980c2424ce4c82b912ad7a5359c6bbfca419",
    "tta_custom": "41fb3874b486521c8ad1dc1af91782e1f6b8d0e2871dca88a705fccf5a6d23c4",
}


@pytest.fixture(scope="module")
def litemedsam():
    """The real LiteMedSAM backend class and options (channels rgb, box margin 4) without its network:
    key material needs only the backend's settings (no weights file: sha 'none')."""
    class NoNetwork(BACKENDS.get("litemedsam")):
        def build(self):
            return torch.nn.Identity()

    return NoNetwork(channels="rgb", box_margin=4)


def test_settings_ids_match_the_old_code(unet, litemedsam):
    backends = {"unet": unet, "litemedsam": litemedsam}
    cfgs = configs()
    got = {}
    for label in OLD_SETTINGS_IDS:
        name, backend, mode = label.split("/")
        got[label] = settings_id(_without_later_markers(result_key_material(backends[backend], cfgs[name], mode),
                                                        backend))
    assert got == OLD_SETTINGS_IDS
    material = result_key_material(unet, cfgs["default"], "crf")
    assert result_key(material, "TCGA_CS_4941_19960909_12",
                      "TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.tif") == OLD_CRF_KEY


def _without_later_markers(material: dict, backend: str) -> dict:
    """Key material without the ``binarize: strict`` marker of data-derived thresholds and the
    ``dropout_version: 2`` of the MedSAM family's MC dropout, each checked to be there exactly where
    it must be."""
    material = json_copy(material)
    for name, params in material["modes"].items():
        if params.get("mode") == "fusion":
            strict = params.pop("binarize", None)
            assert (strict == "strict") == (params["threshold"] != "fixed"), params
        if name == "mc_dropout":
            version = params.pop("dropout_version", 1)
            assert version == (2 if backend == "litemedsam" else 1), (backend, version)
    return material


def json_copy(obj):
    import json

    return json.loads(canonical_json(obj))


def test_config_dict_matches_the_old_job_form():
    """Job ids hash the config's dict: apart from the later ``tta_set`` field it is byte-identical to
    the old ``config_to_dict``."""
    got = {}
    for name, c in configs().items():
        d = c.to_dict()
        assert d.pop("tta_set") == "paper"
        got[name] = sha256_hex(canonical_json(d))
    assert got == OLD_CONFIG_HASHES


def test_old_store_is_read_with_the_new_keys(tmp_path, unet, unet_weights, lgg_root):
    from segunc.runner.sweep import select_slices

    root = tmp_path / "store"
    shutil.copytree(OLD_STORE, root)
    ref = select_slices(lgg_root, "val", limit=1)[0]
    key = result_key(result_key_material(unet, PipelineConfig(), "normal"), ref.slice_id,
                     image_relpath(ref.image_path, lgg_root))
    store = ResultStore(root)
    assert store.valid_keys([key]) == {key}
    frame = store.metrics_frame()
    assert list(frame["key"]) == [key] and list(frame["slice_id"]) == [ref.slice_id]
    from segunc.data import load_slice

    fresh = evaluate_slice(unet, load_slice(ref), ["normal"], PipelineConfig())["normal"]
    stored = store.load_maps(key)
    for name in ("mean", "entropy"):  # the store keeps 8-bit codes of each map's range: |error| <= range / 510
        m = fresh.maps[name]
        bound = (max(float(m.max()), 0.05) - min(0.0, float(m.min()))) / 510 + 1e-6
        np.testing.assert_allclose(stored[name], m, rtol=0, atol=bound)
    np.testing.assert_array_equal(stored["mask"], fresh.maps["mask"])

    r = run_cli("run", "--backend", "unet", "--weights", unet_weights, "--data", lgg_root, "--modes", "normal",
                "--split", "val", "--limit", "1", env={"SEGUNC_CACHE": str(root)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "DONE computed=0 skipped=1 failed=0", r.stdout + r.stderr
