"""Snapshots of the results store: ``python -m segunc snapshot export|import``.

A snapshot is one ``.tar.gz`` file holding

* ``manifest.json`` (first member): format and version, segunc and pipeline versions, the store's
  schema version, counts, the database's sha256, when and where it was made;
* ``store.sqlite``: a consistent copy of the database made with SQLite's online backup API (so a
  sweep may keep writing while it is taken), switched to a single-file journal and vacuumed;
* ``maps/xx/<key>.<token>.npz``: every map file a result row references, each checked against
  the size and sha256 in its row while it is read (a row whose file is missing or corrupt is
  left out of the snapshot, and counted in the manifest). Orphan files, locks and logs stay out;
  queued / running jobs are dropped (they name this machine's paths and would wake a worker).

gzip, not zstd: the map files are already deflate-compressed ``.npz`` (a second pass gains
little), and ``tarfile`` reads and writes gzip without another package on Python 3.11.

``import`` treats the archive as untrusted. It unpacks into a staging folder beside the target,
checks every member name (no absolute paths, ``..``, links or unexpected files), bounds the
manifest's size, checks each member's declared size against the manifest / its row (and the total
against the free disk space) before writing it, streams it with that size as a cap, refuses map
files no row names, checks every database value that becomes a path or a name, the database's
integrity and sha256 and every map file against its row, then swaps the folder into place with a
rename. It refuses to
replace a store that holds results unless ``--force``, and never while a worker or sweep holds
one of its locks.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

from .. import settings
from ..fsutil import file_sha256
from .maps import MapFileError, without_samples

__all__ = ["SnapshotError", "export_snapshot", "import_snapshot", "read_manifest"]

FORMAT = "segunc-snapshot"
FORMAT_VERSION = 1
DB_NAME = "store.sqlite"
MANIFEST = "manifest.json"
from .keys import MAP_FILE_RE as _MAP_RE  # noqa: E402 - maps/<xx>/<64 hex>.<8 hex>.npz
#: the slices behind the results, and cached analyses (segunc.data.slice_pack, segunc.analysis.precompute);
#: each is listed in the manifest (``extras``: name → sha256, bytes) and checked against it at import
_EXTRA_RE = re.compile(r"^(slices\.npz|analysis(/[0-9A-Za-z][0-9A-Za-z._-]*){2,3})$")


class SnapshotError(RuntimeError):
    """A snapshot that cannot be written or imported; the message says why."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _store_root(store: Path | str | None) -> Path:
    return settings.store_dir(store).resolve()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------- export
def export_snapshot(out: Path | str, store: Path | str | None = None, data: Path | str | None = None,
                    precomputed: dict | None = None, samples: bool = False,
                    rename_extra: Callable[[str, bytes, dict], tuple[str, bytes]] | None = None) -> dict:
    """Write the store in ``store`` (default ``$SEGUNC_CACHE`` / ``data/cache``) to ``out``
    (a ``.tar.gz``), atomically; returns the manifest. It also holds the slices behind the results
    (image channels + mask, from ``data`` or the runs' data folders) and the
    analysis caches the store holds (filled beforehand by
    :func:`segunc.analysis.precompute.export_snapshot_with_analyses`, whose counts ``precomputed``
    records), so the pages work from the snapshot alone.

    The T samples kept by ``--keep-samples`` (for ``tune``; no page reads them) are left out unless
    ``samples``: each such map file is written without them (:func:`.maps.without_samples`; its row's
    sha256 and size follow, ``has_samples`` 0). ``rename_extra(member, bytes, changed)``, given
    ``changed`` = {key: (old sha256, new sha256)}, returns an analysis cache file as it must be named
    and written for the new map files (caches keyed by a map's sha256)."""
    from .. import PIPELINE_VERSION, __version__
    from .db import connect

    root = _store_root(store)
    db = root / DB_NAME
    if not db.is_file():
        raise SnapshotError(f"{root}: no results store here (no {DB_NAME}); nothing to export")
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    data_dir = data  # (``data`` is reused below for map file bytes)
    with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=out.parent) as tmp:
        copy = Path(tmp) / DB_NAME
        src = connect(db)
        dst = sqlite3.connect(str(copy), isolation_level=None)
        try:
            src.backup(dst)  # one consistent read of the live (WAL) database
        finally:
            src.close()
        try:
            dst.execute("PRAGMA journal_mode = DELETE")  # the copy is one self-contained file
            dst.execute("BEGIN")
            files: list[tuple[str, bytes]] = []
            dropped: list[dict] = []
            changed: dict[str, tuple[str, str]] = {}  # key -> (old, new) map sha256 (samples left out)
            rows = dst.execute("SELECT key, map_file, map_sha256, map_bytes, has_samples FROM results").fetchall()
            for key, rel, sha, size, has_samples in rows:
                problem = None
                if not _MAP_RE.match(rel or ""):
                    problem = f"unexpected map file name {rel!r}"
                else:
                    try:
                        data = (root / rel).read_bytes()
                        if len(data) != size or _sha256(data) != sha:
                            problem = "map file corrupt (size/sha256 mismatch)"
                    except FileNotFoundError:
                        problem = "map file missing"
                if not problem and has_samples and not samples:
                    try:
                        data = without_samples(data)
                    except MapFileError as exc:
                        problem = f"map file unreadable ({exc})"
                    else:
                        changed[key] = (sha, _sha256(data))
                        dst.execute("UPDATE results SET map_sha256 = ?, map_bytes = ?, has_samples = 0 WHERE key = ?",
                                    (changed[key][1], len(data), key))
                if problem:
                    dropped.append({"key": key, "map_file": rel, "problem": problem})
                    dst.execute("DELETE FROM results WHERE key = ?", (key,))
                else:
                    files.append((rel, data))
            dst.execute("DELETE FROM run_results WHERE key NOT IN (SELECT key FROM results)")
            jobs = [r[0] for r in dst.execute("SELECT job_id FROM jobs WHERE state IN ('queued', 'running')")]
            dst.executemany("DELETE FROM job_slices WHERE job_id = ?", [(j,) for j in jobs])
            dst.executemany("DELETE FROM jobs WHERE job_id = ?", [(j,) for j in jobs])
            dst.execute("COMMIT")
            extras, extras_info = _extras(dst, root, data_dir)  # slice pack + analysis caches of the kept results
            if changed and rename_extra is not None:
                extras = [rename_extra(rel, blob, changed) if rel.startswith("analysis/") else (rel, blob)
                          for rel, blob in extras]
            dst.execute("VACUUM")
            schema = dst.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            n_results = dst.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            n_runs = dst.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            dst.close()
        db_bytes = copy.read_bytes()
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "segunc_version": __version__, "pipeline_version": PIPELINE_VERSION,
            "schema_version": int(schema[0]) if schema else None,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "host": socket.gethostname(), "source": str(root),
            "results": n_results, "runs": n_runs, "map_files": len(files),
            "map_bytes": sum(len(d) for _, d in files),
            "db_sha256": _sha256(db_bytes), "db_bytes": len(db_bytes),
            "samples_left_out": len(changed),
            "dropped_results": dropped, "dropped_jobs": jobs, **extras_info, "precomputed": precomputed or {},
            "extras": {rel: {"sha256": _sha256(blob), "bytes": len(blob)} for rel, blob in extras},
        }
        part = Path(tmp) / "snapshot.tar.gz"
        with tarfile.open(part, "w:gz", compresslevel=6) as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode(), now)
            _add_bytes(tar, DB_NAME, db_bytes, now)
            for rel, blob in [*files, *extras]:
                _add_bytes(tar, rel, blob, now)
        os.replace(part, out)
    return manifest


def _extras(con: sqlite3.Connection, root: Path, data: Path | str | None) -> tuple[list[tuple[str, bytes]], dict]:
    """(member name, bytes) of the slice pack and of the analysis cache files of the results in ``con``."""
    from ..data.slice_pack import PACK_NAME, data_roots, pack_slices

    pack, info = pack_slices(con, data_roots(con, [data]))
    out = [(PACK_NAME, pack)]
    keys = {r[0] for r in con.execute("SELECT key FROM results")}
    analysis = root / "analysis"
    if analysis.is_dir():
        for p in sorted(analysis.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if not p.is_file() or p.name.startswith(".") or not _EXTRA_RE.match(rel):
                continue
            if rel.endswith(".npz") and p.name != "bundle.npz" and p.name.split(".")[0] not in keys:
                continue  # error stats of a result not in the snapshot (the bundle checks its rows' sha256)
            out.append((rel, p.read_bytes()))
    return out, {"slices": info["slices"], "slices_missing": len(info["missing"]), "analysis_files": len(out) - 1}


# ---------------------------------------------------------------------------------------- import
#: largest manifest.json read (an export's is a few KB; it lists dropped results, ~150 bytes each)
MAX_MANIFEST_BYTES = 4 << 20
#: room left free on the target disk beyond the snapshot's declared size
FREE_MARGIN_BYTES = 64 << 20


def _check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    names = set()
    for m in members:
        name = m.name
        if not m.isfile():
            raise SnapshotError(f"unexpected member {name!r} (not a regular file): not a segunc snapshot")
        if name not in (MANIFEST, DB_NAME) and not _MAP_RE.match(name) and not _EXTRA_RE.match(name):
            raise SnapshotError(f"unexpected member {name!r}: not a segunc snapshot")
        if name in names:
            raise SnapshotError(f"member {name!r} appears twice")
        names.add(name)
    for need in (MANIFEST, DB_NAME):
        if need not in names:
            raise SnapshotError(f"no {need} in the archive: not a segunc snapshot")
    return members


def _read_capped(f, cap: int, what: str) -> bytes:
    data = f.read(cap + 1)
    if len(data) > cap:
        raise SnapshotError(f"{what} is larger than {cap} bytes: not a segunc snapshot")
    return data


def read_manifest(archive: Path | str) -> dict:
    """The manifest of a snapshot file (checked for format and version; at most
    :data:`MAX_MANIFEST_BYTES`, checked from its tar header before it is read)."""
    from .db import SCHEMA_VERSION

    try:
        with tarfile.open(archive, "r:*") as tar:
            info = tar.next()  # the manifest is the first member: no need to scan the whole archive
            while info is not None and info.name != MANIFEST:
                info = tar.next()
            if info is None or not info.isfile():
                raise SnapshotError(f"{archive}: no {MANIFEST}: not a segunc snapshot")
            if info.size > MAX_MANIFEST_BYTES:
                raise SnapshotError(f"{archive}: {MANIFEST} declares {info.size} bytes (at most {MAX_MANIFEST_BYTES}): "
                                    "not a segunc snapshot")
            manifest = json.loads(_read_capped(tar.extractfile(info), MAX_MANIFEST_BYTES, f"{archive}: {MANIFEST}"))
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise SnapshotError(f"{archive}: not a readable snapshot ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise SnapshotError(f"{archive}: not a segunc snapshot (format {fmt!r})")
    try:
        version = int(manifest.get("format_version", 0))
        schema = manifest.get("schema_version")
        schema = None if schema is None else int(schema)
    except (TypeError, ValueError):
        raise SnapshotError(f"{archive}: manifest versions are not integers: not a segunc snapshot") from None
    if version > FORMAT_VERSION:
        raise SnapshotError(f"{archive}: snapshot format {manifest['format_version']} is newer than this segunc "
                            f"understands ({FORMAT_VERSION}); update segunc")
    if schema is not None and schema > SCHEMA_VERSION:
        raise SnapshotError(f"{archive}: store schema {schema} is newer than this segunc's ({SCHEMA_VERSION}); update segunc")
    return manifest


def _existing_results(root: Path) -> int:
    """How many result rows (or, without a database, map files) the folder holds."""
    db = root / DB_NAME
    if db.is_file():
        try:
            con = sqlite3.connect(str(db), timeout=10)
            try:
                return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error:
            return 1  # unreadable: treat as something to protect
    maps = root / "maps"
    return sum(1 for _ in maps.glob("*/*")) if maps.is_dir() else 0


def _held_locks(root: Path) -> list[Path]:
    from .locks import is_locked

    locks = root / "locks"
    return [p for p in sorted(locks.glob("*.lock")) if is_locked(p)] if locks.is_dir() else []


def _extract(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: Path) -> str:
    """Stream member ``m`` to ``dest``, never more than its declared size; returns its sha256."""
    h = hashlib.sha256()
    left = m.size
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tar.extractfile(m) as src, open(dest, "wb") as f:
        while left > 0:
            block = src.read(min(left, 1 << 20))
            if not block:
                raise SnapshotError(f"member {m.name!r} is shorter than its declared {m.size} bytes; the file is damaged")
            h.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


def _declared_db(manifest: dict) -> tuple[str, int]:
    from .keys import UnsafeNameError, check_sha256

    try:
        sha = check_sha256(manifest.get("db_sha256"), "the manifest's db_sha256")
        size = manifest.get("db_bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise UnsafeNameError(f"the manifest's db_bytes {size!r} is not a positive integer")
    except UnsafeNameError as exc:
        raise SnapshotError(f"{exc}: not a segunc snapshot") from None
    return sha, size


def _staged_rows(db: Path) -> dict[str, tuple[str, int]]:
    """``map_file → (sha256, bytes)`` of every result row of the staged database, each row's names checked."""
    from .keys import UnsafeNameError, check_row_names

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise SnapshotError(f"the database in the archive is damaged: {ok}")
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT * FROM results").fetchall()
    except sqlite3.DatabaseError as exc:
        raise SnapshotError(f"the database in the archive is not readable: {exc}") from None
    finally:
        con.close()
    out: dict[str, tuple[str, int]] = {}
    for row in rows:
        try:
            check_row_names(row)
        except UnsafeNameError as exc:
            raise SnapshotError(f"the database in the archive holds an unsafe row: {exc}") from None
        size = row["map_bytes"]
        if not isinstance(size, int) or size < 0:
            raise SnapshotError(f"result {row['key']}: map_bytes {size!r} is not a size")
        if row["map_file"] in out and out[row["map_file"]] != (row["map_sha256"], size):
            raise SnapshotError(f"map file {row['map_file']} is named by two rows with different checksums")
        out[row["map_file"]] = (row["map_sha256"], size)
    return out


def _declared_extras(manifest: dict) -> dict[str, tuple[str, int]]:
    """``name → (sha256, bytes)`` of the manifest's ``extras`` (slice pack, analysis caches), each checked."""
    from .keys import UnsafeNameError, check_sha256

    extras = manifest.get("extras") or {}
    if not isinstance(extras, dict):
        raise SnapshotError("the manifest's extras is not a mapping: not a segunc snapshot")
    out = {}
    for name, d in extras.items():
        if not isinstance(name, str) or not _EXTRA_RE.match(name) or not isinstance(d, dict):
            raise SnapshotError(f"the manifest lists an unexpected extra member {name!r}: not a segunc snapshot")
        size = d.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SnapshotError(f"the manifest's size of {name} ({size!r}) is not a size")
        try:
            out[name] = (check_sha256(d.get("sha256"), f"the manifest's sha256 of {name}"), size)
        except UnsafeNameError as exc:
            raise SnapshotError(f"{exc}: not a segunc snapshot") from None
    return out


def _unpack(tar: tarfile.TarFile, stage: Path, manifest: dict, free_dir: Path) -> int:
    """Check every member against the manifest / the rows before writing it, then stream it with its
    declared size as the cap. Returns the number of result rows."""
    members = {m.name: m for m in _check_members(tar)}
    db_sha, db_bytes = _declared_db(manifest)
    if members[MANIFEST].size > MAX_MANIFEST_BYTES:
        raise SnapshotError(f"{MANIFEST} declares {members[MANIFEST].size} bytes (at most {MAX_MANIFEST_BYTES})")
    if members[DB_NAME].size != db_bytes:
        raise SnapshotError(f"{DB_NAME} declares {members[DB_NAME].size} bytes, its manifest {db_bytes}; the file is damaged")
    declared = sum(m.size for m in members.values() if m.name != MANIFEST)
    free = shutil.disk_usage(free_dir).free
    if declared + FREE_MARGIN_BYTES > free:
        raise SnapshotError(f"the snapshot unpacks to {declared / 2**20:.1f} MiB but {free_dir} has "
                            f"{free / 2**20:.1f} MiB free (keeping {FREE_MARGIN_BYTES >> 20} MiB spare); free some space")
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2))  # the parsed (size-checked) manifest
    if _extract(tar, members[DB_NAME], stage / DB_NAME) != db_sha:
        raise SnapshotError("the database in the archive does not match its manifest (sha256); the file is damaged")
    rows = _staged_rows(stage / DB_NAME)
    extras = _declared_extras(manifest)
    expected = {**rows, **extras}  # name → (sha256, bytes): every member but the manifest and the database
    maps = {n: m for n, m in members.items() if n not in (MANIFEST, DB_NAME)}
    for name, m in maps.items():
        if name not in expected:
            raise SnapshotError(f"member {name!r} is not referenced by any result row or by the manifest: "
                                "not a segunc snapshot")
        if m.size != expected[name][1]:
            what = "its row" if name in rows else "its manifest"
            raise SnapshotError(f"map file {name} declares {m.size} bytes, {what} {expected[name][1]}; the file is damaged"
                                if name in rows else f"member {name} declares {m.size} bytes, {what} {expected[name][1]}; "
                                "the file is damaged")
    for name in rows:
        if name not in maps:
            raise SnapshotError(f"map file {name} is missing or damaged in the archive")
    for name, m in maps.items():
        if _extract(tar, m, stage / name) != expected[name][0]:
            raise SnapshotError(f"{'map file' if name in rows else 'member'} {name} is missing or damaged in the archive")
    con = sqlite3.connect(f"file:{stage / DB_NAME}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    finally:
        con.close()


def import_snapshot(archive: Path | str, store: Path | str | None = None, force: bool = False) -> dict:
    """Install the snapshot ``archive`` as the store in ``store`` (default ``$SEGUNC_CACHE`` /
    ``data/cache``). Refuses to replace a store holding results unless ``force``, and a store
    in use (a held lock) always. Returns ``{"root", "results", "manifest"}``.

    The archive is untrusted: the manifest is read only up to :data:`MAX_MANIFEST_BYTES`; every
    member's declared size is checked against the manifest (database) or its row (map file) before
    it is written, and written with that size as a cap; a member no row names is refused; every
    database value that becomes a path or a name (key, map file, sha256, image) is checked
    (:func:`segunc.store.keys.check_row_names`); the declared total must fit on the disk."""
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise SnapshotError(f"{archive}: no such file")
    manifest = read_manifest(archive)
    root = _store_root(store)
    if root.exists() and not root.is_dir():
        raise SnapshotError(f"{root} exists and is not a folder")
    if root.exists():
        held = _held_locks(root)
        if held:
            raise SnapshotError(f"{root} is in use (lock held: {held[0].name}); stop its worker / sweep first")
        n = _existing_results(root)
        if n and not force:
            raise SnapshotError(f"{root} already holds a results store ({n} results); refusing to overwrite it: "
                                f"use --force to replace it, or import into another folder with --store")
    root.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    stage = root.parent / f".{root.name}.import-{token}"
    stage.mkdir()
    try:
        with tarfile.open(archive, "r:*") as tar:
            n = _unpack(tar, stage, manifest, root.parent)
        for sub in ("maps", "locks", "logs"):
            (stage / sub).mkdir(exist_ok=True)
        if root.exists():
            old = root.parent / f".{root.name}.old-{token}"
            os.replace(root, old)
            os.replace(stage, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, root)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SnapshotError(f"{archive}: cannot unpack ({type(exc).__name__}: {exc})") from None
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    from .store import ResultStore

    ResultStore(root)  # opens it the normal way (WAL, schema) so a damaged install fails here
    return {"root": root, "results": n, "manifest": manifest}
