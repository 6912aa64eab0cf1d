"""Labels of results computed with a settings profile (tuned on val, paper preset) and the tuned
profiles the Run page offers: pure functions on strings, frames and small files."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from segunc.analysis import profiles, stats
from segunc.runner.tune import TUNED_FOLDER, find_tuned, tuned_label

pytestmark = pytest.mark.unit

SETTINGS = {"temperature": 1.25,
            "fusion": {"weighting": "exponential", "lam": 5.0, "alpha": 1.0, "threshold": "percentile",
                       "threshold_params": {"q": 90.0}},
            "crf": {"compat_bilateral": 3.0, "compat_gaussian": 0.0, "iterations": 5}}


def test_profile_labels_of_recorded_profiles():
    assert profiles.profile_label(None) == profiles.profile_label("") == ""
    assert profiles.profile_label("preset:paper") == "paper preset"
    assert profiles.profile_label(tuned_label("/x/unet_val.json")) == "tuned on val"
    assert tuned_label("/x/unet_val.json") == "tuned on val (unet_val.json)"
    assert profiles.profile_label("preset:paper + tuned on val (t.json)") == "paper preset + tuned on val"
    assert profiles.profile_label("preset:fast") == "fast preset"


def test_rows_of_profiled_runs_become_their_own_modes():
    runs = pd.DataFrame({"run_id": ["a", "b", "c", "d"],
                         "settings_json": [json.dumps({"config": {}}), json.dumps({"profile": "tuned on val (t.json)"}),
                                           json.dumps({"profile": "preset:paper"}), "not json"]})
    labels = profiles.run_profiles(runs)
    assert labels == {"a": "", "b": "tuned on val", "c": "paper preset", "d": ""}
    df = pd.DataFrame({"run_id": ["a", "b", "c", "a", "b"], "backend": "unet", "slice_id": ["s1", "s1", "s1", "s2", "s2"],
                       "mode": ["fusion", "fusion", "fusion", "normal", "normal"], "dice": [0.8, 0.9, 0.7, 0.6, 0.65]})
    out = profiles.with_profiles(df, labels)
    assert out["mode"].tolist() == ["fusion", "fusion@tuned on val", "fusion@paper preset", "normal", "normal@tuned on val"]
    assert out["profile"].tolist() == ["", "tuned on val", "paper preset", "", "tuned on val"]
    assert df["mode"].tolist()[1] == "fusion"  # the input is left alone
    # display: each profiled mode right after its mode, named so it cannot pass for the default
    assert stats.order_modes(out["mode"]) == ["normal", "normal@tuned on val", "fusion", "fusion@paper preset",
                                              "fusion@tuned on val"]
    assert stats.mode_label("fusion@tuned on val") == "Fusion (tuned on val)"
    assert stats.mode_label("mc_dropout@paper preset") == "MC dropout (paper preset)"
    assert stats.mode_label("mc_dropout") == "MC dropout"
    # statistics keep them apart, and the table splits them back into mode + profile
    desc = profiles.profile_column(stats.describe(out, ["dice"], n_resamples=200))
    assert list(desc.columns[:3]) == ["backend", "mode", "profile"]
    tuned = desc[(desc["mode"] == "fusion") & (desc["profile"] == "tuned on val")]
    assert len(tuned) == 1 and tuned["median"].iloc[0] == pytest.approx(0.9)
    assert len(desc[desc["mode"] == "fusion"]) == 3
    plain = stats.describe(df, ["dice"], n_resamples=200)
    assert profiles.profile_column(plain).equals(plain)  # no profile: unchanged
    assert profiles.with_profiles(df, {})["mode"].tolist() == df["mode"].tolist()


def test_profile_note_says_what_is_not_default():
    assert profiles.profile_note(["", ""]) == ""
    note = profiles.profile_note(["", "tuned on val", "paper preset"])
    assert note.startswith("Not segunc's defaults") and "segunc tune" in note and "--preset paper" in note


def test_tuned_choice_and_settings_text():
    doc = {"backend": "unet", "split": "val", "slices": ["a", "b", "c"], "settings": SETTINGS}
    label = profiles.tuned_choice_label("unet_val.json", doc, 1764614400.0)  # 2025-12-01 18:40 UTC
    assert label == "unet_val.json — unet, tuned 2025-12-01 18:40 UTC on 3 val slices"
    text = profiles.tuned_settings_text(doc)
    assert text == ("temperature 1.25 · fusion exponential (lam 5) · threshold percentile (q 90) · "
                    "CRF compat_bilateral 3, compat_gaussian 0, iterations 5")


def test_find_tuned_lists_valid_profiles_newest_first(tmp_path):
    store = tmp_path / "cache"
    (store / TUNED_FOLDER).mkdir(parents=True)
    old = {"backend": "unet", "settings": SETTINGS, "tuned_at": 1000.0}
    new = {"backend": "litemedsam", "settings": SETTINGS, "tuned_at": 2000.0}
    (store / TUNED_FOLDER / "old.json").write_text(json.dumps(old))
    (store / TUNED_FOLDER / "new.json").write_text(json.dumps(new))
    (store / TUNED_FOLDER / "broken.json").write_text("{not json")
    (store / TUNED_FOLDER / "other.json").write_text(json.dumps({"settings": {"temperature": 1}}))
    beside = tmp_path / "tuned_beside.json"
    beside.write_text(json.dumps({"backend": "unet", "settings": SETTINGS}))  # no tuned_at: its mtime
    os.utime(beside, (1500.0, 1500.0))
    (tmp_path / "results.json").write_text(json.dumps({"backend": "unet", "settings": SETTINGS}))  # not tuned*.json
    found = find_tuned(store)
    assert [e["path"].name for e in found] == ["new.json", "tuned_beside.json", "old.json"]
    assert [e["tuned_at"] for e in found] == [2000.0, 1500.0, 1000.0]
    assert found[0]["doc"]["backend"] == "litemedsam"
    assert [e["path"].name for e in find_tuned(tmp_path / "missing")] == ["tuned_beside.json"]  # no store folder yet


def test_a_result_shared_by_runs_of_two_profiles_is_a_row_of_each():
    """--preset paper computes Normal exactly as the defaults do (one key): whichever sweep ran first,
    Normal is a default row and a paper-preset row, and a tuned-only result stays tuned-only."""
    labels = {"d": "", "p": "paper preset", "t": "tuned on val"}
    df = pd.DataFrame({"key": ["k1", "k2", "k3"], "run_id": ["p", "p", "t"], "backend": "unet", "slice_id": "s1",
                       "mode": ["normal", "tta", "fusion"], "dice": [0.8, 0.7, 0.9]})
    links = pd.DataFrame({"key": ["k1", "k1", "k2", "k3", "k9"], "run_id": ["p", "d", "p", "t", "d"]})
    out = profiles.with_profiles(df, labels, links)
    assert out["mode"].tolist() == ["normal@paper preset", "normal", "tta@paper preset", "fusion@tuned on val"]
    assert out["key"].tolist() == ["k1", "k1", "k2", "k3"]  # k9: not among the rows, not added
    assert out["dice"].tolist() == [0.8, 0.8, 0.7, 0.9]
    # the same rows whichever run computed k1 first
    first_d = profiles.with_profiles(df.assign(run_id=["d", "p", "t"]), labels, links)
    assert sorted(first_d["mode"]) == sorted(out["mode"])
    # two default runs sharing a result: still one row
    assert len(profiles.with_profiles(df, labels, pd.DataFrame({"key": ["k1", "k1"], "run_id": ["p", "p"]}))) == 3
    assert profiles.with_profiles(df, labels, links.iloc[:0])["mode"].tolist() == profiles.with_profiles(df, labels)["mode"].tolist()


def test_a_result_is_labelled_only_when_no_default_run_asked_for_it():
    labels = {"d": "", "p": "paper preset", "t": "tuned on val"}
    df = pd.DataFrame({"key": ["k1", "k2", "k3", "k4"], "run_id": ["p", "p", "t", "p"]})
    links = pd.DataFrame({"key": ["k1", "k1", "k2", "k3", "k4", "k4"], "run_id": ["p", "d", "p", "t", "p", "t"]})
    assert profiles.result_labels(df, labels, links).tolist() == ["", "paper preset", "tuned on val",
                                                                  "paper preset / tuned on val"]
    assert profiles.result_labels(df, labels).tolist() == ["paper preset", "paper preset", "tuned on val", "paper preset"]
