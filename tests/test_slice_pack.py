"""A snapshot stands alone: it carries the slices behind its results (image channels + mask) and the
precomputed analyses; after import on a machine without the data folder the slices load from the
pack, pixel-identical, and the Review error stats and Metrics tests are read from the cache."""
from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pandas as pd

from segunc.analysis import stats
from segunc.analysis.precompute import (CALIBRATION_METRICS, cached_describe, cached_tests, default_selections,
                                        export_snapshot_with_analyses)
from segunc.analysis.stored import BUNDLE, CACHE_VERSION, stored_error_stats
from segunc.data import load_image, load_mask
from segunc.data.sample import sample_data_dir
from segunc.runner.jobs import JobSpec
from segunc.runner.worker import run_sweep
from segunc.store.snapshot import import_snapshot, read_manifest
from segunc.store import ResultStore
from segunc.data.slice_pack import PACK_NAME, SlicePack, load_stored_slice, write_pack
import pytest

pytestmark = pytest.mark.integration


def test_snapshot_carries_slices_and_cached_analyses(unet_weights, tmp_path):
    data = tmp_path / "lgg" / "kaggle_3m"
    shutil.copytree(sample_data_dir(), data)
    store = ResultStore(tmp_path / "cache")
    spec = JobSpec(data=data, backend="unet", weights=unet_weights, modes=["normal", "mc_dropout"], split="val",
                   limit=3, samples=2, seed=0)
    run_sweep(store, spec, progress=False)
    df = store.metrics_frame()
    images = sorted(r[0] for r in store.con.execute("SELECT DISTINCT image FROM results"))
    assert len(df) == 6 and len(images) == 3
    originals = {im: (load_image(data / im), load_mask((data / im).with_name((data / im).stem + "_mask.tif")))
                 for im in images}

    m = export_snapshot_with_analyses(tmp_path / "snap.tar.gz", store.root)
    assert m["slices"] == 3 and m["slices_missing"] == 0 and m["analysis_files"] > 6
    assert m["precomputed"]["error_stats"] == 6 and m["precomputed"]["tests"] > 0
    with tarfile.open(tmp_path / "snap.tar.gz") as tar:
        names = tar.getnames()
    assert PACK_NAME in names and any(n.startswith("analysis/significance-v1/") for n in names)

    shutil.rmtree(tmp_path / "lgg")  # the demo machine has no data folder
    res = import_snapshot(tmp_path / "snap.tar.gz", tmp_path / "demo")
    demo = ResultStore(res["root"])
    pack = SlicePack(demo.root / PACK_NAME)
    assert sorted(pack.images) == images
    for im, (img, mask) in originals.items():
        got = load_stored_slice(demo.root, im, data_root=tmp_path / "lgg" / "kaggle_3m")  # folder gone: from the pack
        assert got is not None and np.array_equal(got[0], img) and np.array_equal(got[1], mask)
    assert load_stored_slice(demo.root, "nope/nope_1.tif") is None
    entries = pack.entries()  # what the Dataset page browses in a demo: LGG names, split, ground-truth size
    assert sorted(e["image"] for e in entries) == images
    assert entries == sorted(entries, key=lambda e: (e["patient_folder"], e["index"]))
    for e in entries:
        assert f"{e['patient_folder']}/{e['slice_id']}.tif" == e["image"] and e["split"] == "val"
        assert e["tumour_px"] == int(originals[e["image"]][1].sum()) > 0
        assert np.array_equal(pack.mask(e["image"]), originals[e["image"]][1])

    ddf = demo.metrics_frame()
    # the pages' default selections were described at export: read back, equal to a fresh computation
    assert m["precomputed"]["described"] >= 3
    sel = default_selections(demo)["all"]
    got, hit = cached_describe(demo.root, sel, CALIBRATION_METRICS, write=False)
    assert hit
    pd.testing.assert_frame_equal(got, stats.describe(sel, CALIBRATION_METRICS), check_exact=True)
    got, hit = cached_describe(demo.root, sel, None, per_patient=True, write=False)
    assert hit
    pd.testing.assert_frame_equal(got, stats.describe(sel, per_patient=True), check_exact=True)
    err = stored_error_stats(demo, ddf["key"].tolist(), None)
    assert not err.missing and err.cached == 6 and err.computed == 0  # read, not recomputed
    bundle = demo.root / "analysis" / CACHE_VERSION / BUNDLE
    assert bundle.is_file() and m["precomputed"]["bundled"] == 6
    singles = [p for p in bundle.parent.rglob("*.npz") if p != bundle]
    for p in singles:  # the bundle alone serves them
        p.unlink()
    err_b = stored_error_stats(demo, ddf["key"].tolist(), None)
    assert not err_b.missing and err_b.cached == 6 and len(singles) == 6
    assert np.array_equal(err_b.frame.set_index("key").sort_index().to_numpy(float),
                          err.frame.set_index("key").sort_index().to_numpy(float), equal_nan=True)
    assert all(np.array_equal(err_b.hists[k][mp][i], err.hists[k][mp][i]) for k in err.hists for mp in err.hists[k]
               for i in (0, 1))
    pd.testing.assert_frame_equal(err_b.pooled(ddf), err.pooled(ddf), check_exact=True)
    shutil.rmtree(demo.root / "analysis")
    err2 = stored_error_stats(demo, ddf["key"].tolist(), None)  # recomputed from the packed masks
    assert not err2.missing and err2.computed == 6
    assert np.allclose(err2.frame.set_index("key").sort_index().to_numpy(float),
                       err.frame.set_index("key").sort_index().to_numpy(float), equal_nan=True)

    # significance tests: computed once, then read from the cache (same values → same answer)
    a = cached_tests(store.root, df, "dice", "unet")
    b = cached_tests(store.root, df, "dice", "unet")
    assert a["cached"] and b["cached"] and b["friedman"]["n_blocks"] == 3
    c = cached_tests(demo.root, ddf, "dice", "unet", alpha=0.01)
    assert not c["cached"] and cached_tests(demo.root, ddf, "dice", "unet", alpha=0.01)["cached"]
    assert list(b["pairs"]["mode_a"]) == list(c["pairs"]["mode_a"]) and "caution" in b["pairs"].columns

    # the local store gets a pack too
    s = write_pack(store.root, [data])
    assert s["slices"] == 0 and len(s["missing"]) == 3  # data folder gone: listed, not fatal


def test_snapshot_leaves_kept_samples_out_unless_asked(unet_weights, tmp_path, capsys):
    """A store run with --keep-samples exports without the T samples by default (the maps, the
    mask and the cached error stats unchanged, the rows' sha256 / size following the new files);
    ``--with-samples`` keeps them."""
    from segunc.cli import main

    data = tmp_path / "lgg" / "kaggle_3m"
    shutil.copytree(sample_data_dir(), data)
    store = ResultStore(tmp_path / "cache")
    spec = JobSpec(data=data, backend="unet", weights=unet_weights, modes=["normal", "mc_dropout"], split="val",
                   limit=2, samples=4, seed=0, keep_samples=True)
    run_sweep(store, spec, progress=False)
    keys = store.metrics_frame()["key"].tolist()
    assert len(keys) == 4
    source_bytes = sum(r[0] for r in store.con.execute("SELECT map_bytes FROM results"))

    lean = tmp_path / "lean.tar.gz"
    assert main(["snapshot", "export", "--cache", str(store.root), "--out", str(lean)]) == 0
    assert "left out the kept samples of 4 result(s)" in capsys.readouterr().out
    m = read_manifest(lean)
    assert m["samples_left_out"] == 4 and m["dropped_results"] == [] and m["precomputed"]["bundled"] == 4
    assert m["map_bytes"] < source_bytes / 3
    demo = ResultStore(import_snapshot(lean, tmp_path / "demo")["root"])
    assert [r[0] for r in demo.con.execute("SELECT DISTINCT has_samples FROM results")] == [0]
    for key in keys:
        a, b = store.load_maps(key), demo.load_maps(key)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        with pytest.raises(KeyError):
            demo.load_samples(key)
    err = stored_error_stats(demo, keys, None, cache=False)  # the reference: computed from the new files
    got = stored_error_stats(demo, keys, None)
    assert got.cached == 4 and got.computed == 0  # the bundle, under the new sha256
    pd.testing.assert_frame_equal(got.frame.set_index("key").loc[keys], err.frame.set_index("key").loc[keys])
    (demo.root / "analysis" / CACHE_VERSION / BUNDLE).unlink()
    again = stored_error_stats(demo, keys, None)
    assert again.cached == 4 and again.computed == 0  # the per-result files, renamed for the new sha256

    full = tmp_path / "full.tar.gz"
    assert main(["snapshot", "export", "--cache", str(store.root), "--out", str(full), "--with-samples"]) == 0
    assert read_manifest(full)["samples_left_out"] == 0
    kept = ResultStore(import_snapshot(full, tmp_path / "kept")["root"])
    for key in keys:
        assert np.array_equal(kept.load_samples(key), store.load_samples(key))
