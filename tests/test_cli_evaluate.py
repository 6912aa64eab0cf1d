"""`python -m segunc evaluate` end to end on real slices (a real subprocess)."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from segunc.data import select, tumour_only
from segunc.metrics import METRIC_NAMES

from .conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_evaluate_writes_rows_and_summary(lgg_root, unet_weights, tmp_path):
    out = tmp_path / "m.csv"
    r = run_cli("evaluate", "--data", lgg_root, "--backend", "unet", "--weights", unet_weights, "--modes",
                "normal,mc_dropout,noisy,fusion", "--limit", "2", "--samples", "2", "--out", out,
                "--cache", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    for col in ["patient_id", "slice_id", "backend", "mode", *METRIC_NAMES, "seconds"]:
        assert col in df.columns
    assert len(df) == 2 * 4 and set(df["mode"]) == {"normal", "mc_dropout", "noisy", "fusion"}
    assert df[list(METRIC_NAMES)].notna().all().all()
    assert "median / mean" in r.stdout and "unet/fusion" in r.stdout


def test_evaluate_goes_on_after_a_bad_slice(lgg_refs, unet_weights, tmp_path):
    refs = tumour_only(select(lgg_refs, "val"))[:3]
    folder = tmp_path / "data" / refs[0].patient_folder
    folder.mkdir(parents=True)
    for r in refs:
        shutil.copy(r.image_path, folder / r.image_path.name)
        shutil.copy(r.mask_path, folder / r.mask_path.name)
    bad = folder / refs[1].image_path.name
    bad.write_bytes(bad.read_bytes()[:500])  # truncated TIFF
    out = tmp_path / "m.csv"
    r = run_cli("evaluate", "--data", tmp_path / "data", "--backend", "unet", "--weights", unet_weights,
                "--modes", "normal", "--split", "all", "--out", out, "--cache", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert sorted(df["slice_id"]) == sorted([refs[0].slice_id, refs[2].slice_id])
    assert str(bad) in r.stdout + r.stderr and "unreadable TIFF" in r.stdout + r.stderr


def test_evaluate_clear_errors(tmp_path, unet_weights):
    r = run_cli("evaluate", "--data", tmp_path / "missing", "--backend", "unet", "--out", tmp_path / "x.csv")
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_cli("evaluate", "--data", tmp_path / "empty", "--backend", "unet", "--out", tmp_path / "x.csv")
    assert r.returncode == 2 and "empty" in r.stderr
    r = run_cli("evaluate", "--data", tmp_path / "empty", "--backend", "nope", "--out", tmp_path / "x.csv")
    assert r.returncode == 2


def test_temperature_option_scales_logits_and_rejects_nonsense(lgg_root, unet_weights, tmp_path):
    """--temperature T divides every logit by T before averaging: the mask (Dice) stays, NLL moves;
    a non-positive or non-numeric value is a clear error (exit 2)."""
    base = ["evaluate", "--data", lgg_root, "--backend", "unet", "--weights", unet_weights, "--modes", "normal",
            "--limit", "2", "--cache", tmp_path / "cache"]
    frames = {}
    for t in ("1", "2.5"):
        r = run_cli(*base, "--temperature", t, "--out", tmp_path / f"t{t}.csv")
        assert r.returncode == 0, r.stderr
        frames[t] = pd.read_csv(tmp_path / f"t{t}.csv").set_index("slice_id")
    assert (frames["1"]["dice"] == frames["2.5"]["dice"]).all()
    assert (frames["1"]["nll"] != frames["2.5"]["nll"]).all()
    for bad in ("0", "hot"):
        r = run_cli(*base, "--temperature", bad, "--out", tmp_path / "bad.csv")
        assert r.returncode == 2 and "--temperature must be" in r.stderr, r.stderr
