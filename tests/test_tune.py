"""``tune``: post-processing chosen on val from stored samples (real U-Net, 3 real val slices);
``evaluate --tuned`` applies it through the config, hence the result keys.

To stay fast on a CPU the fusion here fuses the T = 3 MC-dropout samples (``--fusion-source samples``,
3 forward passes per slice); the default source (mc_dropout + 30-view TTA + noisy) goes through the
same code with three stored modes instead of one."""
import json

import pytest

from segunc.cli import main

pytestmark = pytest.mark.integration

ARGS = ["--backend", "unet", "--split", "val", "--limit", "3", "--spread", "--samples", "3", "--fusion-source", "samples"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, lgg_root, unet_weights):
    tmp = tmp_path_factory.mktemp("tune")
    store, out = tmp / "store", tmp / "tuned.json"
    rc = main(["tune", *ARGS, "--weights", str(unet_weights), "--data", str(lgg_root), "--cache", str(store),
               "--out", str(out)])
    assert rc == 0
    return {"store": store, "out": out, "doc": json.loads(out.read_text()), "lgg": lgg_root, "weights": unet_weights}


def test_tune_writes_every_field(tuned, unet_weights):
    from segunc.backends.base import file_sha256
    from segunc.runner.tune import CRF_CANDIDATES, TEMPERATURES, THRESHOLDS, WEIGHTINGS

    doc = tuned["doc"]
    assert doc["backend"] == "unet" and doc["split"] == "val" and doc["profile"] == "tuned on val"
    assert doc["weights_sha256"] == file_sha256(unet_weights)
    assert len(doc["slices"]) == 3 and len(set(doc["slices"])) == 3
    s = doc["settings"]
    assert s["temperature"] in TEMPERATURES and s["fusion"]["weighting"] in {w for w, _ in WEIGHTINGS}
    assert s["fusion"]["threshold"] in {m for m, _ in THRESHOLDS} and set(s["crf"]) >= {"compat_bilateral", "iterations"}
    steps = [c["step"] for c in doc["candidates"]]
    assert steps.count("temperature") == len(TEMPERATURES) and steps.count("weighting") == len(WEIGHTINGS)
    assert steps.count("threshold") == len(THRESHOLDS) and 2 <= steps.count("crf") <= len(CRF_CANDIDATES)
    for c in doc["candidates"]:
        assert 0 <= c["dice"] <= 1 and c["nll"] > 0 and 0 <= c["certainty"] <= 1
    for step in ("temperature", "weighting", "threshold", "crf"):  # one winner per step, by the documented objective
        cands = [c for c in doc["candidates"] if c["step"] == step]
        win = [c for c in cands if c["chosen"]]
        assert len(win) == 1
        if step == "temperature":
            assert win[0]["nll"] == min(c["nll"] for c in cands)
            continue
        top = max(c["dice"] for c in cands)
        assert win[0]["dice"] >= top - 0.002
        assert win[0]["nll"] == min(c["nll"] for c in cands if c["dice"] >= top - 0.002)
    assert doc["sweep"]["computed"] == 3 and doc["sampling"]["modes"] == ["mc_dropout"]  # 3 slices × mc_dropout


def test_second_tune_reuses_the_store(tuned, tmp_path, monkeypatch):
    from segunc.backends.unet import UNetBackend

    calls = []
    orig = UNetBackend.logits
    monkeypatch.setattr(UNetBackend, "logits", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    out = tmp_path / "again.json"
    rc = main(["tune", *ARGS, "--weights", str(tuned["weights"]), "--data", str(tuned["lgg"]),
               "--cache", str(tuned["store"]), "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert calls == [] and doc["sweep"]["computed"] == 0 and doc["sweep"]["skipped"] == 3
    assert doc["settings"] == tuned["doc"]["settings"]  # same samples, same choice


def test_tune_refuses_test_split(tuned, tmp_path, capsys):
    rc = main(["tune", "--backend", "unet", "--split", "test", "--data", str(tuned["lgg"]), "--cache", str(tmp_path),
               "--out", str(tmp_path / "t.json")])
    assert rc == 2
    assert "tune only runs on --split val" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_evaluate_tuned_applies_the_settings(tuned, tmp_path):
    from segunc.cli import build_parser
    from segunc.cli.common import config_from_args
    from segunc.runner.tune import apply_tuned
    from segunc.store import ResultStore

    out = tmp_path / "tuned.csv"
    argv = ["evaluate", *ARGS, "--modes", "fusion,crf", "--weights", str(tuned["weights"]), "--data", str(tuned["lgg"]),
            "--cache", str(tuned["store"]), "--out", str(out), "--tuned", str(tuned["out"])]
    assert main(argv) == 0
    doc = tuned["doc"]
    store = ResultStore(tuned["store"])
    run = store.runs()
    spec = json.loads(run[run["modes"].str.contains("crf")]["settings_json"].iloc[-1])
    assert spec["profile"] == "tuned on val (tuned.json)"
    assert spec["config"]["temperature"] == doc["settings"]["temperature"]
    assert spec["config"]["crf"] == doc["settings"]["crf"]
    assert spec["config"]["fusion"]["threshold"] == doc["settings"]["fusion"]["threshold"]
    # the result keys follow the settings: stored materials are the tuned ones
    mats = [json.loads(m) for (m,) in store.con.execute("SELECT material FROM settings")]
    crf = [m for m in mats if m["mode"] == "crf"]
    assert any(m["modes"]["crf"]["compat_bilateral"] == doc["settings"]["crf"]["compat_bilateral"]
               and m["temperature"] == doc["settings"]["temperature"] for m in crf)
    base = config_from_args(build_parser().parse_args(argv[:-2]))
    tuned_cfg = config_from_args(build_parser().parse_args(argv))
    assert tuned_cfg == apply_tuned(base, doc)
    same = tuned_cfg.temperature == base.temperature and tuned_cfg.fusion == base.fusion and tuned_cfg.crf == base.crf
    assert (tuned_cfg.crf.as_dict(), tuned_cfg.temperature) != (base.crf.as_dict(), base.temperature) or same


def test_tuned_for_another_model_is_refused(tuned):
    from segunc.config import PipelineConfig
    from segunc.runner.tune import apply_tuned, load_tuned

    doc = load_tuned(tuned["out"])
    with pytest.raises(ValueError, match="tuned for backend 'unet', not 'litemedsam'"):
        apply_tuned(PipelineConfig(), doc, backend="litemedsam")
    with pytest.raises(ValueError, match="tuned for other weights"):
        apply_tuned(PipelineConfig(), doc, backend="unet", weights_sha256="0" * 64)
    changed = {**doc, "settings": {**doc["settings"], "fusion": {**doc["settings"]["fusion"], "threshold": "otsu",
                                                                 "threshold_params": {}}}}
    assert apply_tuned(PipelineConfig(), changed).fusion.params() != PipelineConfig().fusion.params()


def test_bad_tuned_file_is_a_clear_error(tmp_path, capsys, lgg_root):
    bad = tmp_path / "bad.json"
    bad.write_text('{"settings": {"temperature": 1}}')
    rc = main(["evaluate", "--backend", "unet", "--data", str(lgg_root), "--limit", "1", "--cache", str(tmp_path / "s"),
               "--out", str(tmp_path / "o.csv"), "--tuned", str(bad)])
    assert rc == 2
    assert f"{bad}: not a tuned.json" in capsys.readouterr().err


def test_settings_tuned_on_tumour_slices_warn_before_whole_volumes(tuned, tmp_path, capsys):
    """A data-derived threshold tuned on tumour slices marks background on a slice without tumour:
    `run --tuned --all-slices` says so (the run still goes ahead); tuned with --all-slices, no warning."""
    from segunc.cli.common import spec_from_args
    from segunc.cli import build_parser
    from segunc.runner.tune import whole_volume_caveat

    doc = tuned["doc"]
    assert doc["all_slices"] is False
    otsu = {**doc, "settings": {**doc["settings"], "fusion": {**doc["settings"]["fusion"], "threshold": "otsu",
                                                              "threshold_params": {}}}}
    fixed = {**otsu, "settings": {**otsu["settings"], "fusion": {**otsu["settings"]["fusion"], "threshold": "fixed",
                                                                 "threshold_params": {"value": 0.5}}}}
    assert "'otsu' threshold" in whole_volume_caveat(otsu) and "--all-slices" in whole_volume_caveat(otsu)
    assert whole_volume_caveat(fixed) is None and whole_volume_caveat({**otsu, "all_slices": True}) is None
    path = tmp_path / "tuned_otsu.json"
    path.write_text(json.dumps(otsu))
    base = ["run", "--backend", "unet", "--weights", str(tuned["weights"]), "--data", str(tuned["lgg"]),
            "--tuned", str(path)]
    spec_from_args(build_parser().parse_args(base + ["--all-slices"]))
    assert f"warning: {path}: these settings were tuned on tumour slices only" in capsys.readouterr().err
    spec_from_args(build_parser().parse_args(base))  # tumour slices: as tuned, nothing to say
    assert capsys.readouterr().err == ""


def test_ties_on_nll_go_to_the_higher_dice():
    """LiteMedSAM, 40 val slices: every threshold candidate has the fused map's NLL (0.0160), and
    fixed 0.4 (Dice 0.8819, within DICE_TOL of Otsu's 0.8839) won by list order before this rule."""
    from segunc.runner.tune import _best

    cands = [{"name": "fixed 0.4", "dice": 0.8819, "nll": 0.016}, {"name": "fixed 0.5", "dice": 0.8836, "nll": 0.016},
             {"name": "otsu", "dice": 0.8839, "nll": 0.016}, {"name": "p50", "dice": 0.1203, "nll": 0.015}]
    assert _best(cands)["name"] == "otsu"
    cands[1]["nll"] = 0.0159  # a lower NLL among the tied still wins over a higher Dice
    assert _best(cands)["name"] == "fixed 0.5"
    assert _best(cands, objective="nll")["name"] == "p50"
