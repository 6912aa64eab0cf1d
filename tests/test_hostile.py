"""Hostile input, one case per row: snapshots built to attack the importer (paths in database
fields, oversized or unreferenced members, a huge manifest), and a store edited by hand.

The hostile-snapshot builder starts from a real export of real U-Net results, edits its database
with SQL, re-signs it (the manifest's sha256 and size match the edited database, as an attacker
would make them) and writes a new archive."""
from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segunc.analysis.stored import stored_error_stats
from segunc.snapshot import MAX_MANIFEST_BYTES, SnapshotError, export_snapshot, import_snapshot, read_manifest
from segunc.store.readonly import ReadOnlyStore

from .test_snapshot import computed, store  # noqa: F401 - fixtures: a store of 4 real U-Net results

EVIL_KEY = "/tmp/segunc-hostile/PWNED"


class Hostile:
    """A real snapshot unpacked in memory; ``sql`` edits its database, ``build`` writes an archive
    whose manifest matches the edited database (sha256 and size)."""

    def __init__(self, good: Path, work: Path):
        with tarfile.open(good) as tar:
            self.members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        self.manifest = json.loads(self.members["manifest.json"])
        self.work = work
        self.sizes: dict[str, int] = {}  # declared size override: name → bytes of zeros

    def sql(self, *statements: tuple) -> "Hostile":
        db = self.work / "edit.sqlite"
        db.write_bytes(self.members["store.sqlite"])
        con = sqlite3.connect(db)
        for st in statements:
            con.execute(*st) if isinstance(st, tuple) else con.execute(st)
        con.commit()
        con.close()
        self.members["store.sqlite"] = db.read_bytes()
        db.unlink()
        return self

    def first_map(self) -> str:
        return next(n for n in self.members if n.startswith("maps/"))

    def build(self, name: str, resign: bool = True, manifest_raw: bytes | None = None) -> Path:
        if resign:
            data = self.members["store.sqlite"]
            self.manifest.update(db_sha256=hashlib.sha256(data).hexdigest(), db_bytes=len(data))
        self.members["manifest.json"] = manifest_raw if manifest_raw is not None else json.dumps(self.manifest).encode()
        path = self.work / name
        with tarfile.open(path, "w:gz", compresslevel=1) as tar:
            for n, data in self.members.items():
                info = tarfile.TarInfo(n)
                if n in self.sizes:  # a large member of zeros, streamed (never held in memory)
                    info.size = self.sizes[n]
                    tar.addfile(info, _Zeros(info.size))
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return path


class _Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


@pytest.fixture
def hostile(store, tmp_path) -> Hostile:
    good = tmp_path / "good.tar.gz"
    export_snapshot(good, store.root)
    return Hostile(good, tmp_path)


def _refused(archive: Path, target: Path, match: str) -> str:
    with pytest.raises(SnapshotError, match=match) as exc:
        import_snapshot(archive, target)
    assert not target.exists(), "a refused snapshot must leave nothing installed"
    assert not list(target.parent.glob(f".{target.name}.*")), "no staging folder left behind"
    print(f"refused {archive.name}: {exc.value}")
    return str(exc.value)


# -------------------------------------------------------------------------- database fields
def test_row_naming_a_file_outside_the_store(hostile, tmp_path):
    os_release = Path("/etc/os-release").read_bytes()
    sha = hashlib.sha256(os_release).hexdigest()
    hostile.sql(("UPDATE results SET map_file = '/etc/os-release', map_sha256 = ?, map_bytes = ? "
                 "WHERE rowid = (SELECT MIN(rowid) FROM results)", (sha, len(os_release))))
    hostile.members.pop(hostile.first_map())  # keep the member set consistent with the rows
    _refused(hostile.build("abs_map.tar.gz"), tmp_path / "t", "unsafe row.*map file '/etc/os-release'")


def test_row_with_a_traversing_map_file(hostile, tmp_path):
    rel = hostile.first_map()
    evil = rel.replace("maps/", "maps/../../", 1)
    hostile.sql(("UPDATE results SET map_file = ? WHERE map_file = ?", (evil, rel)))
    _refused(hostile.build("dotdot_map.tar.gz"), tmp_path / "t", "unsafe row")


def test_row_with_a_path_as_key(hostile, tmp_path):
    hostile.sql(("UPDATE results SET key = ? WHERE rowid = (SELECT MIN(rowid) FROM results)", (EVIL_KEY,)))
    _refused(hostile.build("path_key.tar.gz"), tmp_path / "t", "unsafe row.*result key")
    assert not Path(EVIL_KEY).parent.exists()


def test_row_with_an_absolute_image(hostile, tmp_path):
    hostile.sql("UPDATE results SET image = '../../../../etc/passwd'")
    _refused(hostile.build("image.tar.gz"), tmp_path / "t", "unsafe row.*image path")


def test_row_with_a_non_hex_sha(hostile, tmp_path):
    hostile.sql("UPDATE results SET map_sha256 = '../x'")
    _refused(hostile.build("sha.tar.gz"), tmp_path / "t", "unsafe row.*sha256")


# -------------------------------------------------------------------------- sizes
def test_database_larger_than_its_manifest_says_is_not_written(hostile, tmp_path):
    """A 256 MiB zero store.sqlite inside a small archive: refused from its header, nothing written."""
    hostile.sizes["store.sqlite"] = 256 << 20
    arch = hostile.build("bomb_db.tar.gz")
    assert arch.stat().st_size < 2 << 20
    _refused(arch, tmp_path / "t", r"store.sqlite declares 268435456 bytes, its manifest")


def test_manifest_without_a_database_size(hostile, tmp_path):
    m = dict(hostile.manifest)
    m.pop("db_bytes")
    arch = hostile.build("nosize.tar.gz", resign=False, manifest_raw=json.dumps(m).encode())
    _refused(arch, tmp_path / "t", "db_bytes")


def test_map_file_no_row_references(hostile, tmp_path):
    """A 64 MiB map member no row names: refused before it is written."""
    name = "maps/ab/" + "ab" * 32 + ".00000000.npz"
    hostile.members[name] = b""
    hostile.sizes[name] = 64 << 20
    _refused(hostile.build("orphan.tar.gz"), tmp_path / "t", "not referenced by any result row")


def test_map_member_larger_than_its_row(hostile, tmp_path):
    name = hostile.first_map()
    hostile.sizes[name] = 32 << 20
    _refused(hostile.build("bigmap.tar.gz"), tmp_path / "t", f"map file {name} declares 33554432 bytes, its row")


def test_snapshot_larger_than_the_free_disk_space(hostile, tmp_path, monkeypatch):
    import shutil

    from segunc import snapshot

    real = shutil.disk_usage
    monkeypatch.setattr(snapshot.shutil, "disk_usage", lambda p: real(p)._replace(free=10 << 20))
    _refused(hostile.build("fits.tar.gz"), tmp_path / "t", "MiB free")


def test_huge_manifest_is_refused_from_its_header(hostile, tmp_path):
    """A 64 MiB manifest (gzip makes it tiny): refused from its header without reading it, in a
    child whose peak RSS is measured before and after."""
    raw = json.dumps(hostile.manifest).encode()
    raw = raw[:-1] + b', "pad": "' + b" " * (64 << 20) + b'"}'
    assert len(raw) > MAX_MANIFEST_BYTES
    arch = hostile.build("big_manifest.tar.gz", manifest_raw=raw)
    with pytest.raises(SnapshotError, match="manifest.json declares"):
        read_manifest(arch)
    _refused(arch, tmp_path / "t", "manifest.json declares")
    code = ("import resource, sys\nfrom segunc.snapshot import read_manifest, SnapshotError\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\ntry:\n    read_manifest(sys.argv[1])\nexcept SnapshotError as e:\n    print('refused', e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, str(arch)], capture_output=True, text=True, timeout=120)
    assert "refused" in out.stdout, out.stderr
    before, after = (int(x) / 1024 for x in (out.stdout.split()[0], out.stdout.split()[-1]))
    print(f"peak RSS refusing a {len(raw) / 2**20:.0f} MiB manifest: {after:.0f} MB ({after - before:+.1f} MB over the import)")
    assert after - before < 16


def test_good_snapshot_still_imports(hostile, store, tmp_path):
    res = import_snapshot(hostile.build("same.tar.gz"), tmp_path / "t")
    assert res["results"] == 4
    assert json.loads((tmp_path / "t" / "manifest.json").read_text())["db_sha256"] == hostile.manifest["db_sha256"]


# -------------------------------------------------------------------------- a store edited by hand
def test_hand_edited_store_serves_no_file_outside_it(store, tmp_path, lgg_root):
    os_release = Path("/etc/os-release").read_bytes()
    rows = store.con.execute("SELECT key FROM results ORDER BY key").fetchall()
    k_abs, k_evil = rows[0]["key"], rows[1]["key"]
    store.con.execute("UPDATE results SET map_file = '/etc/os-release', map_sha256 = ?, map_bytes = ? WHERE key = ?",
                      (hashlib.sha256(os_release).hexdigest(), len(os_release), k_abs))
    store.con.execute("UPDATE results SET key = ? WHERE key = ?", (EVIL_KEY, k_evil))
    ro = ReadOnlyStore(store.root)
    for st in (ro, store):
        with pytest.raises(KeyError, match="unsafe row"):
            st.load_maps(k_abs)
        assert k_abs not in st.valid_keys([k_abs])
    errs = stored_error_stats(ReadOnlyStore(store.root), [EVIL_KEY], lgg_root)
    assert "hex" in errs.missing[EVIL_KEY]
    errs = stored_error_stats(store, [EVIL_KEY], lgg_root)
    assert "hex" in errs.missing[EVIL_KEY]
    assert not Path(EVIL_KEY).parent.exists(), "the analysis cache wrote outside the store"
    good = store.con.execute("SELECT key FROM results WHERE key NOT IN (?, ?) LIMIT 1", (k_abs, EVIL_KEY)).fetchone()[0]
    store.con.execute("UPDATE results SET image = '../../../../etc/passwd' WHERE key = ?", (good,))
    errs = stored_error_stats(store, [good], lgg_root, cache=False)
    assert "image path" in errs.missing[good]


# -------------------------------------------------------------------------- decoding: memory before pixels
_RSS = """
import io, resource, sys, time
import numpy as np, tifffile
from segunc.data.upload import UploadError, decode_image
def status(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
data = open(sys.argv[1], "rb").read()
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    hwm = True
except OSError:
    hwm = False
base = status("VmRSS")
t = time.perf_counter()
try:
    arr, notes, hw = decode_image(data, "upload.tif")
    print("accepted", arr.shape)
except UploadError as exc:
    print("refused", exc)
peak = status("VmHWM") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"rss {base / 1024:.0f} {peak / 1024:.0f} {time.perf_counter() - t:.2f}")
"""


def _decode_in_child(path: Path) -> tuple[str, float, float, float]:
    """(first output line, peak RSS MB, its rise over the imports MB, seconds) of decode_image(path) in a child."""
    out = subprocess.run([sys.executable, "-c", _RSS, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("rss"), out.stderr[-2000:]
    base, peak, secs = (float(x) for x in lines[-1].split()[1:])
    return lines[0], peak, peak - base, secs


@pytest.mark.parametrize("samples", [64, 512])
def test_upload_header_bomb_is_refused_before_decoding(samples, tmp_path):
    from .test_robustness import write_header_bomb

    path = tmp_path / f"bomb{samples}.tif"
    write_header_bomb(path, samples)
    said, peak, rise, secs = _decode_in_child(path)
    print(f"{path.stat().st_size} B TIFF declaring 4096x4096x{samples}: {said!r}; peak RSS {peak:.0f} MB "
          f"(+{rise:.0f} MB over the imports), {secs:.2f} s")
    assert said.startswith("refused") and f"image has {samples} channels" in said
    assert rise < 32 and secs < 2


def test_upload_decode_budget_worst_cases(tmp_path):
    """The worst accepted upload (4096² RGB, 16 bits) and a refused float64 one, peak RSS measured."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 65535, (64, 64, 3), dtype=np.uint16)
    worst = np.kron(small, np.ones((64, 64, 1), np.uint16))  # 4096 × 4096 × 3, compressible
    ok = tmp_path / "rgb16.tif"
    tifffile.imwrite(ok, worst, compression="zlib", photometric="rgb")
    said, peak, rise, secs = _decode_in_child(ok)
    print(f"worst accepted (4096x4096x3 uint16, {ok.stat().st_size >> 10} KiB): {said!r}; peak RSS {peak:.0f} MB "
          f"(+{rise:.0f} MB), {secs:.2f} s")
    assert said.startswith("accepted") and rise < 400
    bad = tmp_path / "rgb64.tif"
    tifffile.imwrite(bad, worst[:2048].astype(np.float64), compression="zlib", photometric="rgb")
    said, peak, rise, secs = _decode_in_child(bad)
    print(f"refused (2048x4096x3 float64, {bad.stat().st_size >> 10} KiB): {said!r}; peak RSS {peak:.0f} MB "
          f"(+{rise:.0f} MB), {secs:.2f} s")
    assert said.startswith("refused") and "has 64 bits per sample" in said and rise < 32
