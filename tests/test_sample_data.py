"""The shipped LGG sample: loads with the real loader, covers train+val and tumour-free
slices, stays small, and its pixels equal the shared source; the build script re-creates it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from segunc.data import discover, load_slice, select
from segunc.data.sample import MAX_BYTES, build, is_sample_dir, pick, sample_data_dir, verify
import pytest

pytestmark = pytest.mark.integration


def test_sample_ships_and_loads():
    root = sample_data_dir()
    assert root is not None and root.name == "kaggle_3m" and is_sample_dir(root) and is_sample_dir(root.parent)
    refs = discover(root)
    assert len(refs) == 42 and len({r.patient_folder for r in refs}) == 6
    slices = [load_slice(r) for r in refs]
    assert all(s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8 for s in slices)
    assert {r.split for r in refs} == {"train", "val"}
    for split in ("train", "val"):
        assert len({r.patient_id for r in select(refs, split)}) == 3
    for folder in {r.patient_folder for r in refs}:
        mine = [s for s in slices if s.ref.patient_folder == folder]
        assert sum(s.has_tumour for s in mine) == 4 and sum(not s.has_tumour for s in mine) == 3
    assert (root / "data.csv").read_text().count("\n") == 7  # header + one row per patient
    assert (root.parent / "README.md").read_text().count("CC BY-NC-SA 4.0") >= 1


def test_sample_size_and_tracked_by_git():
    root = sample_data_dir()
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert 0 < size <= MAX_BYTES == 5 * 1024 * 1024
    ignored = subprocess.run(["git", "check-ignore", "-q", str(next(root.rglob("*.tif")))], cwd=root)
    assert ignored.returncode == 1  # not ignored (0 would mean ignored)


def test_sample_pixels_equal_source_and_rebuild(lgg_root, tmp_path):
    verify(lgg_root)  # raises on any pixel difference
    chosen = pick(discover(lgg_root))
    assert [r.slice_id for r in chosen] == [r.slice_id for r in discover(sample_data_dir())]
    out = tmp_path / "kaggle_3m"
    s = build(lgg_root, out)
    assert s["slices"] == 42 and s["bytes"] <= MAX_BYTES
    verify(lgg_root, out)
    # the CLI entry point reports clearly on a bad source folder
    r = subprocess.run([sys.executable, "-m", "segunc.data.sample", "build", "--from", str(tmp_path / "nope"),
                        "--to", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 1 and "does not exist" in r.stderr
