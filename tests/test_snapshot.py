"""`segunc snapshot export|import`: round trip of a store holding real U-Net results, refusal to
overwrite, locks, damaged / hostile archives, consistency while a writer is mid-transaction."""
from __future__ import annotations

import io
import json
import sqlite3
import tarfile
import time

import numpy as np
import pandas as pd
import pytest

from segunc import PIPELINE_VERSION, __version__
from segunc.backends import BACKENDS
from segunc.cli import main
from segunc.config import PipelineConfig
from segunc.pipeline import evaluate_slice, result_key_material
from segunc.store.snapshot import SnapshotError, export_snapshot, import_snapshot, read_manifest
from segunc.store import ResultStore, image_relpath, result_key, settings_id
from segunc.store.locks import FileLock

pytestmark = pytest.mark.integration

MODES = ["normal", "mc_dropout"]
CFG = PipelineConfig(samples=2)


@pytest.fixture(scope="module")
def computed(unet_weights, val_slices, lgg_root):
    unet = BACKENDS.get("unet")(weights=unet_weights)
    out = []
    for s in val_slices[:2]:
        res = evaluate_slice(unet, s, MODES, CFG)
        image = image_relpath(s.ref.image_path, lgg_root)
        items = []
        for m in MODES:
            mat = result_key_material(unet, CFG, m)
            items.append((result_key(mat, s.slice_id, image), settings_id(mat), res[m]))
        out.append((s, image, items))
    return out


@pytest.fixture
def store(computed, tmp_path) -> ResultStore:
    st = ResultStore(tmp_path / "a")
    st.add_run("r1", "unet", MODES, "{}", "sha", len(computed))
    for s, image, items in computed:
        st.put_slice("r1", items, ref=s.ref, image=image, target=s.mask, backend="unet")
    return st


def frame(st: ResultStore) -> pd.DataFrame:
    return st.metrics_frame().sort_values("key").reset_index(drop=True)


def test_round_trip(store, tmp_path, capsys):
    arch = tmp_path / "snap.tar.gz"
    assert main(["snapshot", "export", "--cache", str(store.root), "--out", str(arch)]) == 0
    assert "4 results" in capsys.readouterr().out
    m = read_manifest(arch)
    assert (m["format"], m["segunc_version"], m["pipeline_version"]) == ("segunc-snapshot", __version__, PIPELINE_VERSION)
    assert m["results"] == 4 and m["map_files"] == 4 and m["runs"] == 1 and m["dropped_results"] == []
    with tarfile.open(arch) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json" and "store.sqlite" in names and sum(n.startswith("maps/") for n in names) == 4

    target = tmp_path / "b"
    assert main(["snapshot", "import", str(arch), "--cache", str(target)]) == 0
    b = ResultStore(target)
    pd.testing.assert_frame_equal(frame(store), frame(b))
    pd.testing.assert_frame_equal(store.runs(), b.runs())
    for key in frame(store)["key"]:
        x, y = store.load_maps(key), b.load_maps(key)
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    assert (target / "locks").is_dir() and not list(tmp_path.glob(".b.*"))  # no staging left


def test_refuses_to_overwrite_without_force(store, tmp_path, capsys):
    arch = tmp_path / "snap.tar.gz"
    export_snapshot(arch, store.root)
    other = ResultStore(tmp_path / "c")
    other.add_run("mine", "unet", ["normal"], "{}", None, 0)
    import_snapshot(arch, other.root, force=True)  # an empty-of-results store may be replaced
    with pytest.raises(SnapshotError, match="refusing to overwrite"):
        import_snapshot(arch, other.root)
    assert main(["snapshot", "import", str(arch), "--cache", str(other.root)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["snapshot", "import", str(arch), "--cache", str(other.root), "--force"]) == 0
    assert len(ResultStore(other.root).metrics_frame()) == 4


def test_empty_existing_folder_needs_no_force(store, tmp_path):
    arch = tmp_path / "snap.tar.gz"
    export_snapshot(arch, store.root)
    (tmp_path / "empty").mkdir()
    assert import_snapshot(arch, tmp_path / "empty")["results"] == 4


def test_never_replaces_a_store_in_use(store, tmp_path):
    arch = tmp_path / "snap.tar.gz"
    export_snapshot(arch, store.root)
    lock = FileLock(store.root / "locks" / "worker-cpu.lock")
    assert lock.acquire(timeout=1)
    try:
        with pytest.raises(SnapshotError, match="in use"):
            import_snapshot(arch, store.root, force=True)
    finally:
        lock.release()
    assert len(store.metrics_frame()) == 4


def test_missing_map_file_and_queued_jobs_are_left_out(store, tmp_path):
    row = store.con.execute("SELECT key, map_file FROM results LIMIT 1").fetchone()
    (store.root / row["map_file"]).unlink()
    now = time.time()
    store.con.execute("INSERT INTO jobs (job_id, spec_json, device, state, created_at) VALUES ('j1', '{}', 'cpu', 'queued', ?)",
                      (now,))
    store.con.execute("INSERT INTO jobs (job_id, spec_json, device, state, created_at) VALUES ('j2', '{}', 'cpu', 'done', ?)",
                      (now,))
    arch = tmp_path / "snap.tar.gz"
    m = export_snapshot(arch, store.root)
    assert m["results"] == 3 and [d["key"] for d in m["dropped_results"]] == [row["key"]]
    assert m["dropped_jobs"] == ["j1"]
    b = ResultStore(import_snapshot(arch, tmp_path / "b")["root"])
    assert len(b.metrics_frame()) == 3
    assert [r[0] for r in b.con.execute("SELECT job_id FROM jobs")] == ["j2"]


def test_consistent_while_a_writer_is_mid_transaction(store, tmp_path):
    writer = sqlite3.connect(str(store.db_path), isolation_level=None, timeout=5)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM results")  # not committed: the snapshot must not see it
    try:
        m = export_snapshot(tmp_path / "snap.tar.gz", store.root)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert m["results"] == 4


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_hostile_or_damaged_archives_are_refused(store, tmp_path):
    good = tmp_path / "good.tar.gz"
    export_snapshot(good, store.root)
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    target = tmp_path / "t"

    evil = tmp_path / "evil.tar.gz"
    _tar(evil, {**members, "../escaped.txt": b"x"})
    with pytest.raises(SnapshotError, match="unexpected member"):
        import_snapshot(evil, target)
    assert not (tmp_path / "escaped.txt").exists() and not target.exists()

    damaged = dict(members)
    first_map = next(n for n in damaged if n.startswith("maps/"))
    damaged[first_map] = damaged[first_map][:-10] + b"0" * 10
    _tar(tmp_path / "damaged.tar.gz", damaged)
    with pytest.raises(SnapshotError, match="missing or damaged"):
        import_snapshot(tmp_path / "damaged.tar.gz", target)
    assert not target.exists() and not list(tmp_path.glob(".t.*"))

    newer = dict(members)
    newer["manifest.json"] = json.dumps({**json.loads(members["manifest.json"]), "format_version": 99}).encode()
    _tar(tmp_path / "newer.tar.gz", newer)
    with pytest.raises(SnapshotError, match="newer"):
        import_snapshot(tmp_path / "newer.tar.gz", target)

    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(SnapshotError, match="not a readable snapshot"):
        import_snapshot(tmp_path / "junk.tar.gz", target)


def test_export_without_a_store(tmp_path, capsys):
    assert main(["snapshot", "export", "--cache", str(tmp_path / "none"), "--out", str(tmp_path / "s.tar.gz")]) == 2
    assert "no results store" in capsys.readouterr().err and not (tmp_path / "none").exists()
