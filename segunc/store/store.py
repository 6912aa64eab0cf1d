"""ResultStore: SQLite rows + one compressed map file per (slice, mode) result.

Write protocol (crash-safe at any instant, ``kill -9`` included): encode the maps, write them to
a temporary file in the target folder, ``fsync``, ``os.replace`` to the final name (unique per
write), ``fsync`` the folder; then insert the rows of one slice in a single ``BEGIN IMMEDIATE``
transaction. The row is the commit point: a file without a row is an orphan that
:meth:`ResultStore.gc` removes; a row always names a complete file whose sha256 it records.

Read protocol: a row with a non-finite metric, a missing file, a file whose size or sha256
differs from the row, or one that does not decode to the row's H x W is *corrupt*: it is deleted
(so the next sweep recomputes it) and reported as missing (``KeyError``), never served.
"""
from __future__ import annotations

import errno
import json
import math
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .. import settings
from ..fsutil import StoreFullError, disk_full_error, fsync_dir, is_disk_full as _is_full
from .db import METRIC_COLUMNS, ThreadConnections, init_schema, transaction
from .jobs import delete_empty_jobs
from .keys import NAME_CHARS, NAME_COLUMNS, UnsafeNameError, canonical_json, check_key, check_map_file, check_row_names, sha256_hex, settings_id as _settings_id
from .maps import MapFileError, decode_maps, encode_maps

__all__ = ["ResultStore", "StoreFullError", "StoreNotWritableError", "writable_problem",
           "FRAME_COLUMNS"]


class StoreNotWritableError(PermissionError):
    """The results store exists but this user cannot write it (permissions, a read-only mount)."""


def writable_problem(root: Path) -> str | None:
    """Why this user cannot write the store in ``root`` (None if it can). A ``-shm`` / ``-wal`` left
    read-only by an earlier read-only open (SQLite gives them the database's mode) is made writable
    again when the database is, so fixing the database's permission is enough."""
    db = root / "store.sqlite"
    if not db.exists():
        return None if os.access(root, os.W_OK) or not root.exists() else f"its folder {root} is not writable"
    bad = [p for p in (db, root) if not os.access(p, os.W_OK)]
    if not bad:
        for side in (db.with_name(db.name + "-shm"), db.with_name(db.name + "-wal")):
            if side.exists() and not os.access(side, os.W_OK):
                try:
                    side.chmod(db.stat().st_mode & 0o666)
                except OSError:
                    bad.append(side)
    if not bad:
        return None
    return " and ".join(f"{p} is not writable" for p in bad)



FRAME_COLUMNS = ("key", "run_id", "patient_id", "slice_id", "split", "backend", "mode", *METRIC_COLUMNS,
                 "seconds", "threshold", "tumour_px", "pred_px", "mean_entropy", "mean_variance", "mean_mi", "created_at")
_ROW_COLUMNS = ("key", "settings_id", "run_id", "patient_id", "patient_folder", "slice_index", "slice_id", "split", "image",
                "backend", "mode", *METRIC_COLUMNS, "seconds", "threshold", "tumour_px", "pred_px", "mean_entropy",
                "mean_variance", "mean_mi", "reliability", "height", "width", "map_file", "map_sha256", "map_bytes",
                "has_samples", "created_at")
_CHUNK = 900  # keys per IN (...) query




def _finite(values: Iterable) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


def _chunks(seq: Sequence, n: int = _CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class ResultStore:
    """The results store in ``root`` (default :func:`segunc.settings.store_dir`); created if absent.

    ``bits``: quantisation depth of new map files (8 default, see :mod:`segunc.store.maps`).
    """

    def __init__(self, root: Path | str | None = None, bits: int = 8):
        self.root = settings.store_dir(root).resolve()
        self.bits = int(bits)
        problem = writable_problem(self.root)
        if problem:
            db = self.root / "store.sqlite"
            raise StoreNotWritableError(
                errno.EACCES, f"results store {db}: {problem} for this user. `run` and `gc` write to it: make it "
                f"writable (e.g. `chmod u+w {self.root} {db}`, or ask its owner; a read-only mount must be remounted), "
                "or give --store a store you can write. `export`, `report` and the app still read it as it is.")
        for sub in ("", "maps", "locks", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "store.sqlite"
        self._cons = ThreadConnections(self.db_path)
        init_schema(self.con)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    @property
    def con(self) -> sqlite3.Connection:
        return self._cons.get()

    # ------------------------------------------------------------------------ writing
    def put_settings(self, material: dict) -> str:
        """Record key material; returns its settings_id."""
        sid = _settings_id(material)
        with transaction(self.con) as con:
            con.execute("INSERT OR IGNORE INTO settings (settings_id, material) VALUES (?, ?)", (sid, canonical_json(material)))
        return sid

    def _write_file(self, key: str, data: bytes) -> str:
        token = secrets.token_hex(4)
        rel = check_map_file(f"maps/{check_key(key)[:2]}/{key}.{token}.npz")
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{key}.{token}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # no half-written file left behind
            if _is_full(exc):
                raise self._full(exc) from exc
            raise
        fsync_dir(final.parent)
        return rel

    def _full(self, exc: BaseException) -> StoreFullError:
        return disk_full_error(f"results store {self.root}", exc)

    def put_slice(self, run_id: str | None, items: Sequence[tuple[str, str, object]], *, ref, image: str,
                  target: np.ndarray, backend: str, keep_samples: bool = False, link: Sequence[str] = ()) -> int:
        """Store the results of one slice atomically; returns how many rows were written.

        ``items``: ``(key, settings_id, ModeResult)``; ``ref``: its SliceRef; ``image``: the key's
        image path; ``target``: the ground-truth mask (for reliability bins); ``link``: further keys
        (found in the store) to attach to ``run_id``. An existing row for a key is kept unless the
        new one adds samples the old one lacks.
        """
        from ..metrics import reliability_bins

        rows, files = [], []
        now = time.time()
        for key, sid, res in items:
            maps = res.maps
            samples = res.samples if keep_samples else None
            data = encode_maps(maps, samples, self.bits)
            try:
                rel = self._write_file(key, data)
            except OSError:
                self._unlink(files)  # this slice is stored whole or not at all
                raise
            files.append(rel)
            counts, conf, corr = reliability_bins(maps["mean"], target)
            h, w = maps["mask"].shape
            row = res.row(backend)
            row.update(key=key, settings_id=sid, run_id=run_id, patient_folder=ref.patient_folder,
                       slice_index=int(ref.index), split=ref.split, image=image,
                       mean_entropy=float(np.nanmean(maps["entropy"])), mean_variance=float(np.nanmean(maps["variance"])),
                       mean_mi=float(np.nanmean(maps["mutual_information"])),
                       reliability=json.dumps({"counts": counts.tolist(), "sum_confidence": conf.tolist(),
                                               "sum_correct": corr.tolist()}),
                       height=int(h), width=int(w), map_file=rel, map_sha256=sha256_hex(data), map_bytes=len(data),
                       has_samples=int(samples is not None), created_at=now)
            rows.append(tuple(row[c] for c in _ROW_COLUMNS))
        cols = ", ".join(_ROW_COLUMNS)
        update = ", ".join(f"{c} = excluded.{c}" for c in _ROW_COLUMNS if c != "key")
        sql = (f"INSERT INTO results ({cols}) VALUES ({', '.join('?' * len(_ROW_COLUMNS))}) "
               f"ON CONFLICT(key) DO UPDATE SET {update} WHERE excluded.has_samples > results.has_samples")
        written, losers = 0, []
        try:
            with transaction(self.con) as con:
                for row, rel in zip(rows, files):
                    cur = con.execute(sql, row)
                    if cur.rowcount > 0:
                        written += 1
                    else:
                        losers.append(rel)  # someone stored this key first: our file is an orphan
                if run_id is not None:
                    keys = [r[0] for r in rows] + list(link)
                    con.executemany("INSERT OR IGNORE INTO run_results (run_id, key) VALUES (?, ?)", [(run_id, k) for k in keys])
        except (sqlite3.OperationalError, StoreFullError) as exc:
            if _is_full(exc):
                losers, written = files, 0  # rolled back: the files are orphans
                self._unlink(losers)
                raise self._full(exc) from exc
            raise
        self._unlink(losers)
        return written

    def _unlink(self, rels: Sequence[str]) -> None:
        for rel in rels:
            try:
                (self.root / rel).unlink()
            except OSError:
                pass

    def link(self, run_id: str, keys: Sequence[str]) -> None:
        """Attach existing results to a run."""
        if keys:
            with transaction(self.con) as con:
                con.executemany("INSERT OR IGNORE INTO run_results (run_id, key) VALUES (?, ?)", [(run_id, k) for k in keys])

    def add_run(self, run_id: str, backend: str, modes: Sequence[str], settings_json: str, weights_sha256: str | None,
                n_slices: int | None) -> None:
        """Record a sweep (idempotent; the first record wins, except that unknown fields are filled in)."""
        with transaction(self.con) as con:
            con.execute("INSERT OR IGNORE INTO runs (run_id, backend, modes, settings_json, weights_sha256, n_slices, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (run_id, backend, ",".join(modes), settings_json, weights_sha256, n_slices, time.time()))
            con.execute("UPDATE runs SET weights_sha256 = COALESCE(weights_sha256, ?), n_slices = COALESCE(n_slices, ?) "
                        "WHERE run_id = ?", (weights_sha256, n_slices, run_id))

    # ---------------------------------------------------------------------- integrity
    def invalidate(self, key: str, map_file: str | None = None) -> bool:
        """Delete a result row (only if it still names ``map_file``); its file becomes an orphan."""
        with transaction(self.con) as con:
            if map_file is None:
                cur = con.execute("DELETE FROM results WHERE key = ?", (key,))
            else:
                cur = con.execute("DELETE FROM results WHERE key = ? AND map_file = ?", (key, map_file))
        return cur.rowcount > 0

    def _check(self, row: sqlite3.Row, read: bool = True) -> tuple[str | None, bytes | None]:
        """(problem or None, file bytes) of one row."""
        if not _finite(row[m] for m in METRIC_COLUMNS):
            return "non-finite metric in row", None
        try:
            check_row_names(row)  # a hand-edited row must not name a file outside maps/
        except UnsafeNameError as exc:
            return f"unsafe row: {exc}", None
        path = self.root / row["map_file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return f"map file missing: {path}", None
        if len(data) != row["map_bytes"] or sha256_hex(data) != row["map_sha256"]:
            return f"map file corrupt (size/sha256 mismatch): {path}", None
        return None, data

    def valid_keys(self, keys: Sequence[str], need_samples: bool = False) -> set[str]:
        """The subset of ``keys`` stored intact (checksums verified); corrupt rows are invalidated."""
        good: set[str] = set()
        for part in _chunks(list(keys)):
            q = f"SELECT * FROM results WHERE key IN ({', '.join('?' * len(part))})"
            for row in self.con.execute(q, part).fetchall():
                problem, _ = self._check(row)
                if problem:
                    self.invalidate(row["key"], row["map_file"])
                elif row["has_samples"] or not need_samples:
                    good.add(row["key"])
        return good

    def _load(self, key: str, with_samples: bool) -> dict[str, np.ndarray]:
        row = self.con.execute("SELECT * FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no stored result {key}")
        problem, data = self._check(row)
        if problem is None:
            try:
                return decode_maps(data, (row["height"], row["width"]), with_samples=with_samples)
            except MapFileError as exc:
                if with_samples and not row["has_samples"]:
                    raise KeyError(f"result {key} was stored without samples") from None
                problem = str(exc)
        self.invalidate(key, row["map_file"])
        raise KeyError(f"stored result {key} is corrupt and was dropped (will be recomputed): {problem}")

    def load_maps(self, key: str) -> dict[str, np.ndarray]:
        """mean, variance, entropy, expected_entropy, mutual_information (float32 H W), mask (bool H W).

        Raises ``KeyError`` if the result is missing or corrupt (a corrupt one is dropped)."""
        return self._load(key, with_samples=False)

    def load_samples(self, key: str) -> np.ndarray:
        """The T H W sample probabilities of a result stored with ``keep_samples`` (else KeyError)."""
        return self._load(key, with_samples=True)["samples"]

    # ------------------------------------------------------------------------ reading
    def metrics_frame(self, backends: Sequence[str] | None = None, modes: Sequence[str] | None = None,
                      slice_ids: Sequence[str] | None = None, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per stored (slice, backend, mode, settings) result, columns :data:`FRAME_COLUMNS`.

        ``run_ids`` keeps the results of those sweeps (``run_id`` then names the sweep that asked
        for the row); rows with a non-finite metric, or a name (slice, patient, backend, mode, split)
        with characters other than :data:`~.keys.NAME_CHARS`, are left out (they count as missing)."""
        where, params = [" AND ".join(f"r.{m} IS NOT NULL" for m in METRIC_COLUMNS)], []
        # a name with other characters (a hand-edited store) is never served to a page as Markdown
        where += [f"COALESCE(r.{c}, '') NOT GLOB '*[^{NAME_CHARS}]*'" for c in NAME_COLUMNS]
        for col, values in (("backend", backends), ("mode", modes), ("slice_id", slice_ids)):
            if values is not None:
                values = [values] if isinstance(values, str) else list(values)
                where.append(f"r.{col} IN ({', '.join('?' * len(values)) or 'NULL'})")
                params += values
        run_col, join = "r.run_id", ""
        if run_ids is not None:
            run_ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
            join = (f"JOIN (SELECT key, MIN(run_id) AS rid FROM run_results WHERE run_id IN "
                    f"({', '.join('?' * len(run_ids)) or 'NULL'}) GROUP BY key) rr ON rr.key = r.key")
            run_col = "rr.rid"
            params = list(run_ids) + params
        cols = ", ".join(f"{run_col} AS run_id" if c == "run_id" else f"r.{c}" for c in FRAME_COLUMNS)
        sql = (f"SELECT {cols} FROM results r {join} WHERE {' AND '.join(where)} "
               "ORDER BY r.backend, r.patient_folder, r.slice_index, r.mode, r.created_at")
        df = pd.read_sql_query(sql, self.con, params=params)
        if len(df):
            finite = np.isfinite(df[list(METRIC_COLUMNS)].to_numpy(dtype=float)).all(axis=1)
            df = df[finite].reset_index(drop=True)
        df["created_at"] = pd.to_datetime(df["created_at"], unit="s", utc=True)
        for c in ("tumour_px", "pred_px"):
            df[c] = df[c].astype("int64")
        return df

    def result_settings(self, backend: str, modes: Sequence[str]) -> list[sqlite3.Row]:
        """``(slice_id, mode, settings_id, has_samples, material)`` of every stored result of ``backend`` in
        ``modes`` (``material``: the settings' key material, JSON)."""
        modes = list(modes)
        if not modes:
            return []
        q = (f"SELECT r.slice_id, r.mode, r.settings_id, r.has_samples, s.material FROM results r JOIN settings s "
             f"ON s.settings_id = r.settings_id WHERE r.backend = ? AND r.mode IN ({', '.join('?' * len(modes))})")
        return self.con.execute(q, (backend, *modes)).fetchall()

    def runs(self) -> pd.DataFrame:
        """Recorded sweeps: run_id, backend, modes (comma list), settings_json, weights_sha256, n_slices, created_at."""
        df = pd.read_sql_query("SELECT run_id, backend, modes, settings_json, weights_sha256, n_slices, created_at "
                               "FROM runs ORDER BY created_at", self.con)
        df["created_at"] = pd.to_datetime(df["created_at"], unit="s", utc=True)
        return df

    def run_links(self) -> pd.DataFrame:
        """Every (key, run_id) pair of ``run_results``: each sweep that asked for a result, the one that
        computed it and those that found it stored (a result can belong to several runs)."""
        return pd.read_sql_query("SELECT key, run_id FROM run_results ORDER BY run_id, key", self.con)

    def reliability(self, keys: Sequence[str]) -> dict:
        """Pooled top-label reliability bins of these results (no maps read).

        Returns ``counts`` (int64), ``sum_confidence``, ``sum_correct`` (float64, one per bin),
        ``n_results`` (how many keys were found) and the pooled ``ece``."""
        from ..metrics import ece_from_bins

        counts = conf = corr = None
        n = 0
        for part in _chunks(list(dict.fromkeys(keys))):
            q = f"SELECT reliability FROM results WHERE key IN ({', '.join('?' * len(part))})"
            for (text,) in self.con.execute(q, part).fetchall():
                d = json.loads(text)
                c, s, k = np.asarray(d["counts"], np.int64), np.asarray(d["sum_confidence"]), np.asarray(d["sum_correct"])
                counts, conf, corr = (c, s, k) if counts is None else (counts + c, conf + s, corr + k)
                n += 1
        if counts is None:
            counts, conf, corr = np.zeros(10, np.int64), np.zeros(10), np.zeros(10)
        return {"counts": counts, "sum_confidence": conf, "sum_correct": corr, "n_results": n,
                "ece": ece_from_bins(counts, conf, corr)}

    def export(self, path: Path | str, fmt: str | None = None, **filters) -> int:
        """Write ``metrics_frame(**filters)`` as CSV or Parquet (by ``fmt`` or the suffix); returns rows."""
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".") or "csv").lower()
        df = self.metrics_frame(**filters)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            df.to_csv(path, index=False)
        elif fmt in ("parquet", "pq"):
            df.to_parquet(path, index=False)
        else:
            raise ValueError(f"unknown export format {fmt!r}; use csv or parquet")
        return len(df)

    def stats(self) -> dict:
        """Result count and map bytes on disk (total and mean per result)."""
        n, total = self.con.execute("SELECT COUNT(*), COALESCE(SUM(map_bytes), 0) FROM results").fetchone()
        return {"results": n, "map_bytes": total, "mean_map_bytes": total / n if n else 0.0}

    # -------------------------------------------------------------------- maintenance
    def gc(self, grace_s: float = 3600.0, verify: bool = False) -> dict:
        """Remove orphan map files and stale temp files older than ``grace_s`` (a writer between
        its file and its row is younger), and the rows of sweeps that failed or were cancelled
        before storing anything; ``verify`` first drops rows whose file is corrupt."""
        invalid = 0
        if verify:
            for row in self.con.execute("SELECT * FROM results").fetchall():
                problem, data = self._check(row)
                if problem is None:
                    try:
                        decode_maps(data, (row["height"], row["width"]))
                    except MapFileError as exc:
                        problem = str(exc)
                if problem:
                    invalid += self.invalidate(row["key"], row["map_file"])
        referenced = {r[0] for r in self.con.execute("SELECT map_file FROM results")}
        cutoff = time.time() - grace_s
        removed = tmp = freed = 0
        for f in (self.root / "maps").glob("*/*"):
            rel = f.relative_to(self.root).as_posix()
            try:
                st = f.stat()
                if rel in referenced or st.st_mtime > cutoff:
                    continue
                f.unlink()
            except OSError:
                continue
            freed += st.st_size
            if f.name.endswith(".tmp"):
                tmp += 1
            else:
                removed += 1
        with transaction(self.con) as con:
            con.execute("DELETE FROM run_results WHERE key NOT IN (SELECT key FROM results)")
            # sweeps that failed or were cancelled before storing anything (bad weights, a full disk at the
            # start, ...): their job, slice-progress and run rows describe nothing
            empty = delete_empty_jobs(con)
        try:
            self.con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.OperationalError as exc:
            if not _is_full(exc):
                raise  # (on a full disk the log stays; the next checkpoint folds it in)
        return {"invalid_rows": invalid, "orphan_files": removed, "temp_files": tmp, "freed_bytes": freed,
                "empty_failed_jobs": len(empty)}
