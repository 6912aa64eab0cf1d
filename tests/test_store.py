"""Results store on real U-Net outputs: keys, map files, integrity, crash leftovers, export."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pandas as pd
import pytest

from segunc.config import PipelineConfig
from segunc.metrics import reliability_bins
from segunc.pipeline import MAP_NAMES, evaluate_slice, result_key_material
from segunc.store import FRAME_COLUMNS, ResultStore, image_relpath, result_key, settings_id
from segunc.store import maps as mapfile

pytestmark = pytest.mark.integration

MODES = ["normal", "mc_dropout"]
CFG = PipelineConfig(samples=2, keep_samples=True)


@pytest.fixture(scope="module")
def computed(unet, val_slices, lgg_root):
    """[(slice, image relpath, {mode: (key, settings_id, ModeResult)})] for the two tumour slices."""
    out = []
    for s in val_slices[:2]:
        res = evaluate_slice(unet, s, MODES, CFG)
        image = image_relpath(s.ref.image_path, lgg_root)
        items = {}
        for m in MODES:
            mat = result_key_material(unet, CFG, m)
            items[m] = (result_key(mat, s.slice_id, image), settings_id(mat), res[m])
        out.append((s, image, items))
    return out


def fill(store: ResultStore, computed, run_id="r1", keep_samples=False) -> list[str]:
    keys = []
    for s, image, items in computed:
        store.put_slice(run_id, list(items.values()), ref=s.ref, image=image, target=s.mask, backend="unet",
                        keep_samples=keep_samples)
        keys += [k for k, _, _ in items.values()]
    return keys


def tolerance(maps: dict, name: str, bits: int = 8) -> float:
    return mapfile.max_error(name, maps[name], bits) * 1.001 + 1e-7


def test_map_names_match_the_pipeline():
    assert mapfile.MAP_NAMES == MAP_NAMES


def test_key_changes_with_every_input(unet, monkeypatch):
    base = result_key_material(unet, CFG, "mc_dropout")
    k = result_key(base, "S_1", "P/P_1.tif")
    assert k == result_key(result_key_material(unet, dataclasses.replace(CFG), "mc_dropout"), "S_1", "P/P_1.tif")
    assert k == result_key(base, "S_1", "P/P_1.tif") and len(k) == 64
    variants = [
        result_key(base, "S_2", "P/P_1.tif"),
        result_key(base, "S_1", "Q/P_1.tif"),
        result_key(result_key_material(unet, CFG, "normal"), "S_1", "P/P_1.tif"),
    ]
    for change in ({"samples": 3}, {"seed": 1}, {"p": 0.02}, {"temperature": 2.0}):
        variants.append(result_key(result_key_material(unet, dataclasses.replace(CFG, **change), "mc_dropout"), "S_1", "P/P_1.tif"))
    monkeypatch.setattr(unet, "_sha", "0" * 64)
    variants.append(result_key(result_key_material(unet, CFG, "mc_dropout"), "S_1", "P/P_1.tif"))
    monkeypatch.undo()
    # batch size and keep_samples do not change results, so they do not change keys
    same = dataclasses.replace(CFG, batch_size=3, keep_samples=False)
    assert result_key(result_key_material(unet, same, "mc_dropout"), "S_1", "P/P_1.tif") == k
    import segunc.pipeline as pipeline

    monkeypatch.setattr(pipeline, "PIPELINE_VERSION", "test-bump")
    variants.append(result_key(result_key_material(unet, CFG, "mc_dropout"), "S_1", "P/P_1.tif"))
    assert len({k, *variants}) == len(variants) + 1


def test_roundtrip_size_frame_and_reliability(tmp_path, computed):
    store = ResultStore(tmp_path / "c")
    keys = fill(store, computed)
    assert store.stats()["results"] == 4
    for s, _, items in computed:
        for key, _, res in items.values():
            got = store.load_maps(key)
            assert set(got) == {*MAP_NAMES, "mask"}
            for name in MAP_NAMES:
                assert got[name].dtype == np.float32 and got[name].shape == (256, 256)
                np.testing.assert_allclose(got[name], res.maps[name], rtol=0, atol=tolerance(res.maps, name))
            np.testing.assert_array_equal(got["mask"], res.maps["mask"])
    assert store.stats()["mean_map_bytes"] <= 100_000

    df = store.metrics_frame()
    assert list(df.columns) == list(FRAME_COLUMNS) and len(df) == 4
    s, _, items = computed[0]
    key, _, res = items["mc_dropout"]
    row = df.set_index("key").loc[key]
    for m, v in res.metrics.items():
        assert row[m] == pytest.approx(v, rel=1e-12)
    assert row["mean_entropy"] == pytest.approx(float(res.maps["entropy"].mean()), rel=1e-6)
    assert row["split"] == "val" and row["run_id"] == "r1" and row["pred_px"] == int(res.maps["mask"].sum())
    assert len(store.metrics_frame(modes=["normal"], slice_ids=[s.slice_id])) == 1
    assert len(store.metrics_frame(run_ids=["other"])) == 0
    runs_df = store.runs()
    assert list(runs_df.columns) == ["run_id", "backend", "modes", "settings_json", "weights_sha256", "n_slices", "created_at"]

    pooled = store.reliability(keys)
    want = [reliability_bins(r.maps["mean"], sl.mask) for sl, _, it in computed for _, _, r in it.values()]
    np.testing.assert_array_equal(pooled["counts"], sum(w[0] for w in want))
    np.testing.assert_allclose(pooled["sum_confidence"], sum(w[1] for w in want))
    np.testing.assert_allclose(pooled["sum_correct"], sum(w[2] for w in want))
    assert pooled["n_results"] == 4
    one = store.reliability([key])
    assert one["ece"] == pytest.approx(res.metrics["ece"], abs=1e-9)


def test_keep_samples_stores_the_T_maps(tmp_path, computed):
    store = ResultStore(tmp_path / "c")
    fill(store, computed[:1])
    key, _, res = computed[0][2]["mc_dropout"]
    with pytest.raises(KeyError, match="without samples"):
        store.load_samples(key)
    assert key not in store.valid_keys([key], need_samples=True)
    fill(store, computed[:1], keep_samples=True)  # upgrades the row, keeps one row per key
    assert store.stats()["results"] == 2
    got = store.load_samples(key)
    assert got.shape == (2, 256, 256)
    np.testing.assert_allclose(got, res.samples, rtol=1e-3, atol=1e-4)
    assert store.load_maps(key)["mask"].sum() == res.maps["mask"].sum()


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corruption_is_detected_and_never_served(tmp_path, computed):
    store = ResultStore(tmp_path / "c")
    keys = fill(store, computed)
    rows = {r["key"]: r for r in store.con.execute("SELECT key, map_file FROM results")}
    # flipped byte, truncated file, missing file
    _corrupt(store.root / rows[keys[0]]["map_file"])
    (store.root / rows[keys[1]]["map_file"]).write_bytes(b"PK\x03\x04 not a zip")
    (store.root / rows[keys[2]]["map_file"]).unlink()
    for k in keys[:3]:
        with pytest.raises(KeyError, match="corrupt"):
            store.load_maps(k)
    assert store.valid_keys(keys) == {keys[3]}
    # NaN metric in the row (SQLite stores NaN as NULL) -> not in the frame, not valid
    store.con.execute("UPDATE results SET dice = NULL WHERE key = ?", (keys[3],))
    assert keys[3] not in set(store.metrics_frame()["key"])
    assert store.valid_keys(keys) == set()
    with pytest.raises(KeyError):
        store.load_maps(keys[3])
    # a well-formed file of the wrong shape whose checksum was (wrongly) recorded
    fill(store, computed[:1])
    s, _, items = computed[0]
    key, _, res = items["normal"]
    small = {n: v[:128, :128] for n, v in res.maps.items()}
    data = mapfile.encode_maps(small)
    rel = store.con.execute("SELECT map_file FROM results WHERE key = ?", (key,)).fetchone()[0]
    (store.root / rel).write_bytes(data)
    from segunc.store.keys import sha256_hex

    store.con.execute("UPDATE results SET map_sha256 = ?, map_bytes = ? WHERE key = ?", (sha256_hex(data), len(data), key))
    with pytest.raises(KeyError, match="128x128"):
        store.load_maps(key)
    assert key not in store.valid_keys([key])


def test_crash_leftovers_are_invisible_and_collected(tmp_path, computed):
    store = ResultStore(tmp_path / "c")
    fill(store, computed[:1])
    s, image, items = computed[1]
    key = items["normal"][0]
    # a crash after the file was renamed into place but before its row: an orphan
    orphan = store._write_file(key, mapfile.encode_maps(items["normal"][2].maps))
    # a crash in the middle of writing the temporary file
    tmp = store.root / "maps" / key[:2] / f".{key}.dead.tmp"
    tmp.write_bytes(b"half a file")
    assert key not in store.valid_keys([key]) and len(store.metrics_frame()) == 2
    with pytest.raises(KeyError):
        store.load_maps(key)
    assert store.gc(grace_s=3600)["orphan_files"] == 0  # too young: could be a write in flight
    report = store.gc(grace_s=0)
    assert report["orphan_files"] == 1 and report["temp_files"] == 1
    assert not (store.root / orphan).exists() and not tmp.exists()
    for k, _, _ in computed[0][2].values():
        store.load_maps(k)  # referenced files are kept


def test_concurrent_writers_keep_one_row(tmp_path, computed):
    store = ResultStore(tmp_path / "c")
    s, image, items = computed[0]
    barrier = threading.Barrier(4)

    def write():
        barrier.wait()
        store.put_slice("r", list(items.values()), ref=s.ref, image=image, target=s.mask, backend="unet")

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.stats()["results"] == 2
    files = [f for f in (store.root / "maps").glob("*/*.npz")]
    assert len(files) == 2  # the losers removed their files


def test_export_csv_and_parquet_roundtrip(tmp_path, computed):
    store = ResultStore(tmp_path / "c")
    fill(store, computed)
    df = store.metrics_frame()
    assert store.export(tmp_path / "m.csv") == 4
    assert store.export(tmp_path / "m.parquet") == 4
    pq = pd.read_parquet(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(pq, df, check_dtype=False)
    csv = pd.read_csv(tmp_path / "m.csv")
    csv["created_at"] = pd.to_datetime(csv["created_at"], utc=True)
    pd.testing.assert_frame_equal(csv, df, check_dtype=False)
    assert store.export(tmp_path / "n.csv", modes=["normal"]) == 2
    with pytest.raises(ValueError):
        store.export(tmp_path / "m.xlsx")
