"""Which maps and slice scores apply to which mode: a single deterministic pass has no variance and
no mutual information, so the Review page leaves those combinations out, as Compare does."""
from __future__ import annotations

import pandas as pd
import pytest

from segunc.analysis import UNCERTAINTY_MAPS, applicable_rows, applies, map_applies, score_map, slice_scores
from segunc.analysis.stored import SCALARS
from segunc import viz

pytestmark = pytest.mark.unit

MODES = ("normal", "mc_dropout", "tta", "noisy", "fusion", "crf")


def test_single_pass_has_no_sample_maps():
    assert not map_applies("normal", "variance") and not map_applies("normal", "mutual_information")
    assert map_applies("normal", "entropy") and map_applies("normal", "mean")
    for mode in MODES[1:]:
        assert all(map_applies(mode, m) for m in UNCERTAINTY_MAPS), mode


@pytest.mark.parametrize("name,expected", [
    ("mean_entropy", "entropy"), ("mean_variance", "variance"), ("mean_mi", "mutual_information"),
    ("entropy_near", "entropy"), ("variance_in", "variance"), ("mutual_information_near", "mutual_information"),
    ("mutual_information_auroc", "mutual_information"), ("variance_error_dice", "variance"),
    ("variance_image", "variance"), ("entropy", "entropy"), ("expected_entropy", "expected_entropy"),
    ("dice", None), ("fp_auroc", None), ("seconds", None), ("mean_dice", None)])
def test_score_map(name, expected):
    assert score_map(name) == expected


def test_every_review_score_maps_to_its_map():
    """Each slice score the Review page offers, and each stored error statistic, is traced to a map."""
    cols = ["mean_entropy", "mean_variance", "mean_mi", *SCALARS]
    for name in slice_scores(cols):
        assert score_map(name) in UNCERTAINTY_MAPS, name
    for name in SCALARS:
        if name not in ("error_px", "error_frac"):
            assert score_map(name) in UNCERTAINTY_MAPS, name


def test_applies_and_rows():
    assert not applies("normal", "mean_mi") and not applies("normal", "variance_near")
    assert applies("normal", "entropy_in") and applies("normal", "dice")
    assert applies("mc_dropout", "mean_mi") and applies("crf", "variance_near")
    rows = pd.DataFrame([(b, m, s) for b in ("unet", "litemedsam") for m in MODES
                         for s in ("mean_entropy", "mean_variance", "mean_mi", "entropy_near", "variance_near")],
                        columns=["backend", "mode", "score"])
    kept = applicable_rows(rows, "score")
    assert len(kept) == len(rows) - 2 * 3  # per backend: Normal × (mean_variance, mean_mi, variance_near)
    assert set(kept.loc[kept["mode"] == "normal", "score"]) == {"mean_entropy", "entropy_near"}
    assert (kept.loc[kept["mode"] != "normal"].groupby(["backend", "mode"]).size() == 5).all()
    pooled = pd.DataFrame({"mode": ["normal"] * 3 + ["tta"] * 3, "map": list(UNCERTAINTY_MAPS) * 2})
    assert applicable_rows(pooled, "map")["map"].tolist() == ["entropy", *UNCERTAINTY_MAPS]
    assert applicable_rows(pooled.iloc[:0], "map").empty
    assert applicable_rows(pooled, "missing_column").equals(pooled)  # nothing to decide on: unchanged


def test_compare_and_review_agree():
    """The Compare page's note (viz.map_note) and the Review page's filter come from the same rule."""
    for mode in MODES:
        for m in UNCERTAINTY_MAPS:
            assert (viz.map_note(mode, m) is None) == map_applies(mode, m), (mode, m)
