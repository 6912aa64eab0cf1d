"""``--preset paper``: the authors' settings as data, applied before explicit flags, part of the key."""
import dataclasses

import pytest

from segunc.cli import build_parser
from segunc.cli.common import backend_options, config_from_args, spec_from_args
from segunc.config import PipelineConfig
from segunc.presets import apply_preset, explicit_flags, preset_overrides

pytestmark = pytest.mark.unit


def _args(argv):
    args = build_parser().parse_args(argv)
    args.explicit = explicit_flags(argv)
    return args


@pytest.mark.parametrize("backend,sigma", [("unet", 0.01), ("litemedsam", 0.2), ("medsam", 0.2), ("universeg", 0.1)])
def test_paper_preset_per_backend(backend, sigma):
    c, opts = apply_preset("paper", backend, PipelineConfig(), {})
    assert c.sigma == sigma
    assert c.crf.compat_gaussian == 0.0 and c.crf.compat_bilateral == 10.0  # bilateral-only CRF
    assert c.fusion.lam == 1.0
    assert opts == ({"channels": "rgb"} if backend in ("litemedsam", "medsam") else {})
    if "tta_set" in {f.name for f in dataclasses.fields(PipelineConfig)}:
        assert c.tta_set == "paper"


@pytest.mark.parametrize("method,params", [("percentile", {"q": 50.0}), ("mean_std", {"k": 0.5}), ("otsu", {}),
                                           ("fixed", {})])
def test_paper_threshold_parameter_follows_the_method(method, params):
    args = _args(["evaluate", "--out", "x.csv", "--preset", "paper", "--fusion-threshold", method])
    assert config_from_args(args).fusion.threshold_kwargs() == params


def test_explicit_flags_win_over_the_preset():
    args = _args(["run", "--backend", "litemedsam", "--preset", "paper", "--sigma", "0.05", "--channels", "flair3",
                  "--crf-iterations=8"])
    c = config_from_args(args)
    assert c.sigma == 0.05 and c.crf.iterations == 8 and c.crf.compat_gaussian == 0.0
    assert backend_options(args)["channels"] == "flair3"
    # without the explicit flags the preset's values apply
    args = _args(["run", "--backend", "litemedsam", "--preset", "paper"])
    assert config_from_args(args).sigma == 0.2 and backend_options(args)["channels"] == "rgb"


def test_preset_changes_the_affected_keys_and_is_recorded(tmp_path):
    from segunc.pipeline import required_modes

    plain = config_from_args(_args(["run"]))
    paper = config_from_args(_args(["run", "--preset", "paper"]))
    assert plain.crf != paper.crf and plain.crf.as_dict() != paper.crf.as_dict()
    assert plain.mode_params("mc_dropout") == paper.mode_params("mc_dropout")  # U-Net MC dropout: same key
    assert plain.sigma == paper.sigma == 0.01  # U-Net σ 0.01 in both, but on the authors' clamped [0, 1] scale
    assert (plain.noise_scale, paper.noise_scale) == ("range", "unit")
    assert "crf" in required_modes(["crf"], paper)
    spec = spec_from_args(_args(["run", "--preset", "paper", "--data", str(tmp_path)]))
    assert spec.profile == "preset:paper"
    assert spec_from_args(_args(["run", "--data", str(tmp_path)])).profile is None


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset 'nope'; available: paper"):
        preset_overrides("nope", "unet")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--preset", "nope"])


def test_paper_power_weighting_is_the_authors_certainty_power():
    import numpy as np

    from segunc.fusion import fuse, normalized_weights

    c = config_from_args(_args(["run", "--preset", "paper", "--fusion-weighting", "power"]))
    assert c.fusion.weighting == "certainty_power" and c.fusion.weighting_params() == {"alpha": 1.0}
    assert config_from_args(_args(["run", "--fusion-weighting", "power"])).fusion.weighting == "power"
    u = np.array([[[0.1]], [[0.5]], [[np.nan]]])
    w = normalized_weights(u, "certainty_power", alpha=2.0)
    np.testing.assert_allclose(w[:, 0, 0], [0.81 / 1.06, 0.25 / 1.06, 0.0])  # (1 − u)², unobserved → 0
    p = np.array([[[0.9]], [[0.2]], [[0.5]]])
    assert abs(float(fuse(p[:2], u[:2], "certainty_power", alpha=1.0)[0, 0]) - (0.9 * 0.9 + 0.2 * 0.5) / 1.4) < 1e-6
