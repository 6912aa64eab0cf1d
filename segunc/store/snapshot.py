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

``import`` unpacks into a staging folder beside the target, checks every member name (no
absolute paths, ``..``, links or unexpected files), the database's integrity and sha256 and
every map file against its row, then swaps the folder into place with a rename. It refuses to
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
from pathlib import Path

from .. import settings
from ..fsutil import file_sha256

__all__ = ["SnapshotError", "export_snapshot", "import_snapshot", "read_manifest"]

FORMAT = "segunc-snapshot"
FORMAT_VERSION = 1
DB_NAME = "store.sqlite"
MANIFEST = "manifest.json"
_MAP_RE = re.compile(r"^maps/[0-9A-Za-z]{2}/[0-9A-Za-z][0-9A-Za-z._-]*\.npz$")
#: the slices behind the results, and cached analyses (segunc.data.slice_pack, segunc.analysis.precompute)
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
                    precompute: bool = True) -> dict:
    """Write the store in ``store`` (default ``$SEGUNC_CACHE`` / ``data/cache``) to ``out``
    (a ``.tar.gz``), atomically; returns the manifest. It also holds the slices behind the results
    (image channels + mask, from ``data`` or the runs' data folders) and, with ``precompute``, the
    cached slow analyses, so the pages work from the snapshot alone."""
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
    extras_pre = _precompute(root, data_dir) if precompute else {}
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
            for key, rel, sha, size in dst.execute("SELECT key, map_file, map_sha256, map_bytes FROM results").fetchall():
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
            "dropped_results": dropped, "dropped_jobs": jobs, **extras_info, "precomputed": extras_pre,
        }
        part = Path(tmp) / "snapshot.tar.gz"
        with tarfile.open(part, "w:gz", compresslevel=6) as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode(), now)
            _add_bytes(tar, DB_NAME, db_bytes, now)
            for rel, blob in [*files, *extras]:
                _add_bytes(tar, rel, blob, now)
        os.replace(part, out)
    return manifest


def _precompute(root: Path, data: Path | str | None) -> dict:
    """Fill the store's analysis caches before packing (a failure only costs speed, never the export)."""
    try:
        from ..analysis.precompute import precompute_analyses
        from .store import ResultStore
        from ..data.slice_pack import data_roots

        store = ResultStore(root)
        roots = data_roots(store.con, [data])
        return precompute_analyses(store, roots[0] if roots else None)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


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
            if rel.endswith(".npz") and p.name.split(".")[0] not in keys:
                continue  # error stats of a result not in the snapshot
            out.append((rel, p.read_bytes()))
    return out, {"slices": info["slices"], "slices_missing": len(info["missing"]), "analysis_files": len(out) - 1}


# ---------------------------------------------------------------------------------------- import
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


def read_manifest(archive: Path | str) -> dict:
    """The manifest of a snapshot file (checked for format and version)."""
    from .db import SCHEMA_VERSION

    try:
        with tarfile.open(archive, "r:*") as tar:
            m = tar.extractfile(MANIFEST) if MANIFEST in tar.getnames() else None
            if m is None:
                raise SnapshotError(f"{archive}: no {MANIFEST}: not a segunc snapshot")
            manifest = json.loads(m.read())
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{archive}: not a readable snapshot ({type(exc).__name__}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise SnapshotError(f"{archive}: not a segunc snapshot (format {manifest.get('format')!r})")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise SnapshotError(f"{archive}: snapshot format {manifest['format_version']} is newer than this segunc "
                            f"understands ({FORMAT_VERSION}); update segunc")
    schema = manifest.get("schema_version")
    if schema is not None and int(schema) > SCHEMA_VERSION:
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


def _verify_staged(stage: Path, manifest: dict) -> int:
    db = stage / DB_NAME
    if manifest.get("db_sha256") and file_sha256(db) != manifest["db_sha256"]:
        raise SnapshotError("the database in the archive does not match its manifest (sha256); the file is damaged")
    con = sqlite3.connect(str(db), isolation_level=None)
    try:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise SnapshotError(f"the database in the archive is damaged: {ok}")
        rows = con.execute("SELECT map_file, map_sha256, map_bytes FROM results").fetchall()
    except sqlite3.DatabaseError as exc:
        raise SnapshotError(f"the database in the archive is not readable: {exc}") from None
    finally:
        con.close()
    for rel, sha, size in rows:
        p = stage / rel
        if not p.is_file() or p.stat().st_size != size or file_sha256(p) != sha:
            raise SnapshotError(f"map file {rel} is missing or damaged in the archive")
    return len(rows)


def import_snapshot(archive: Path | str, store: Path | str | None = None, force: bool = False) -> dict:
    """Install the snapshot ``archive`` as the store in ``store`` (default ``$SEGUNC_CACHE`` /
    ``data/cache``). Refuses to replace a store holding results unless ``force``, and a store
    in use (a held lock) always. Returns ``{"root", "results", "manifest"}``."""
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
            for m in _check_members(tar):
                dest = stage / m.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(dest, "wb") as f:
                    shutil.copyfileobj(src, f)
        n = _verify_staged(stage, manifest)
        for sub in ("maps", "locks", "logs"):
            (stage / sub).mkdir(exist_ok=True)
        if root.exists():
            old = root.parent / f".{root.name}.old-{token}"
            os.replace(root, old)
            os.replace(stage, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, root)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotError(f"{archive}: cannot unpack ({type(exc).__name__}: {exc})") from None
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    from .store import ResultStore

    ResultStore(root)  # opens it the normal way (WAL, schema) so a damaged install fails here
    return {"root": root, "results": n, "manifest": manifest}
