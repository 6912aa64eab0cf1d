"""The Compare page in Streamlit's AppTest on the real fixture store: deep link, one panel per backend ×
mode (uncertainty over the anatomy), stepping, ordering, maps that do not apply, focus on one mode and
the linked backend filter."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest_app import MODES, app_env, app_store  # noqa: F401
from tests.test_app import assert_clean, n_images, open_page, store_frame

pytestmark = pytest.mark.app


def _labels(at) -> list[str]:
    return [m.value for m in at.markdown if m.value in ("**U-Net**", "**LiteMedSAM**")]


def test_compare_deep_link_grid_and_stepping(app_env, app_store):
    df = store_frame(app_store)
    slices = sorted(df["slice_id"].unique(), key=lambda s: int(s.rsplit("_", 1)[1]))
    at = open_page("compare", query={"slice": slices[1], "focus": "unet:tta"})
    assert_clean(at)
    assert at.selectbox(key="cmp_slice").value == slices[1]
    assert n_images(at) == 2 * len(MODES)  # one panel per backend × mode: the uncertainty over the anatomy
    assert _labels(at) == ["**U-Net**", "**LiteMedSAM**"]
    table = at.dataframe[0].value
    expect = df[df["slice_id"] == slices[1]]
    assert len(table) == len(expect) == 2 * len(MODES)
    got = {(b, str(m)): v for b, m, v in zip(table["backend"], table["mode"], table["Dice"])}
    ref = {(b, m): v for b, m, v in zip(expect["backend"], expect["mode"], expect["dice"])}
    assert got.keys() == ref.keys()
    np.testing.assert_allclose([got[k] for k in ref], list(ref.values()))
    assert at.query_params["slice"] == [slices[1]] or at.query_params["slice"] == slices[1]

    at.button(key="cmp_next").click().run()
    assert at.selectbox(key="cmp_slice").value == slices[2]
    at.button(key="cmp_next").click().run()
    assert at.selectbox(key="cmp_slice").value == slices[0]  # wraps around
    at.button(key="cmp_prev").click().run()
    assert at.selectbox(key="cmp_slice").value == slices[2]
    assert_clean(at)

    # worst Dice of U-Net normal first
    at.selectbox(key="cmp_sort").set_value("dice_asc").run()
    at.selectbox(key="cmp_ref_backend").set_value("unet").run()
    at.selectbox(key="cmp_ref_mode").set_value("normal").run()
    dice = df[(df["backend"] == "unet") & (df["mode"] == "normal")].set_index("slice_id")["dice"]
    order = at.selectbox(key="cmp_slice").options
    ranked = [o.split("  ·")[0] for o in order]
    assert ranked == sorted(dice.index, key=lambda s: (dice[s], int(s.rsplit("_", 1)[1])))

    at.selectbox(key="cmp_map").set_value("mutual_information").run()
    assert_clean(at)
    notes = [m.value for m in at.markdown if "<div class='seg-na'>" in m.value]
    assert sum("n/a" in n for n in notes) == 2  # Normal of each backend: no MI map, its reason instead
    assert sum("the fusion's map" in n for n in notes) == 2  # CRF of each backend: says whose MI it shows
    at.radio(key="cmp_show").set_value("both").run()
    assert n_images(at) == 2 * 2 * len(MODES)  # uncertainty and prediction vs truth per panel
    at.selectbox(key="cmp_only").set_value("tta").run()  # focus: one mode, large, both views
    assert_clean(at)
    assert n_images(at) == 2 * 2


def test_compare_filters_to_linked_backend(app_env):
    at = open_page("compare", query={"backend": "litemedsam", "mode": "normal,crf"})
    assert_clean(at)
    assert n_images(at) == 2
    assert not _labels(at)  # one backend: no backend label rows
    assert sorted(at.selectbox(key="cmp_ref_backend").options) == ["litemedsam"]
