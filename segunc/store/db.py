"""The store's SQLite database: schema and connections (WAL, busy timeout, explicit transactions).

Tables (one file ``store.sqlite``; see ``docs/store.md`` for the full picture):

* ``results``      one row per (slice, mode, settings) result: metric row, map-means, reliability
                   bins, the map file's name, size and sha256. **The row is the commit point.**
* ``settings``     settings_id → canonical key material (provenance of every key).
* ``runs``         one row per sweep (run_id = job id); ``run_results`` links runs to result keys.
* ``jobs``         queued / running / finished sweeps with progress counters;
  ``job_slices``   per-slice progress and error text of a job's latest execution.
* ``calibration_timing``  measured seconds per forward per (backend, device, host, stage).
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..fsutil import StoreFullError, disk_full_error, full_near

SCHEMA_VERSION = 1

METRIC_COLUMNS = ("iou", "dice", "accuracy", "precision", "recall", "nll", "ece", "brier", "certainty")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS settings (settings_id TEXT PRIMARY KEY, material TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    settings_id TEXT NOT NULL,
    run_id TEXT,
    patient_id TEXT NOT NULL,
    patient_folder TEXT,
    slice_index INTEGER,
    slice_id TEXT NOT NULL,
    split TEXT,
    image TEXT,
    backend TEXT NOT NULL,
    mode TEXT NOT NULL,
    {", ".join(f"{m} REAL" for m in METRIC_COLUMNS)},
    seconds REAL, threshold REAL, tumour_px INTEGER, pred_px INTEGER,
    mean_entropy REAL, mean_variance REAL, mean_mi REAL,
    reliability TEXT,
    height INTEGER NOT NULL, width INTEGER NOT NULL,
    map_file TEXT NOT NULL, map_sha256 TEXT NOT NULL, map_bytes INTEGER NOT NULL,
    has_samples INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_slice ON results (backend, mode, slice_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, backend TEXT, modes TEXT, settings_json TEXT, weights_sha256 TEXT,
    n_slices INTEGER, created_at REAL
);
CREATE TABLE IF NOT EXISTS run_results (
    run_id TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, spec_json TEXT NOT NULL, device TEXT NOT NULL, state TEXT NOT NULL,
    total INTEGER, done INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    computed INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0, failed_results INTEGER NOT NULL DEFAULT 0,
    current TEXT, error TEXT, cancel INTEGER NOT NULL DEFAULT 0, owner TEXT,
    created_at REAL, started_at REAL, finished_at REAL, updated_at REAL
);
CREATE TABLE IF NOT EXISTS job_slices (
    job_id TEXT NOT NULL, slice_id TEXT NOT NULL, state TEXT NOT NULL, error TEXT, file TEXT,
    computed INTEGER, skipped INTEGER, seconds REAL, updated_at REAL,
    PRIMARY KEY (job_id, slice_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS calibration_timing (
    backend TEXT NOT NULL, device TEXT NOT NULL, host TEXT NOT NULL, stage TEXT NOT NULL,
    seconds REAL NOT NULL, n INTEGER NOT NULL, measured_at REAL NOT NULL,
    PRIMARY KEY (backend, device, host, stage)
);
"""


def connect(path: Path | str, timeout: float = 60.0) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions via :func:`transaction`), WAL, NORMAL sync."""
    con = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    try:
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.OperationalError as exc:
        con.close()
        if full_near(path, exc):  # no room for the WAL index: the one clear error
            raise disk_full_error(f"results store database {path}", exc) from exc
        raise
    if str(mode).lower() != "wal":  # e.g. a network file system
        raise sqlite3.OperationalError(f"{path}: cannot enable WAL (journal_mode={mode}); put the cache on a local disk")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute("PRAGMA foreign_keys = OFF")
    return con


def _database_file(con: sqlite3.Connection) -> str:
    try:
        return next((row[2] for row in con.execute("PRAGMA database_list") if row[1] == "main"), "") or "database"
    except sqlite3.Error:
        return "database"


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): one writer at a time, all or nothing.

    A full disk ("database or disk is full", ENOSPC) at any step is raised as
    :class:`segunc.fsutil.StoreFullError` naming the database file."""
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except sqlite3.OperationalError:  # SQLite already rolled back (e.g. SQLITE_FULL)
                pass
            raise
        try:
            con.execute("COMMIT")
        except sqlite3.OperationalError:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
    except (sqlite3.OperationalError, OSError) as exc:
        path = _database_file(con)
        if full_near(path, exc) and not isinstance(exc, StoreFullError):
            raise disk_full_error(f"results store database {path}", exc) from exc
        raise


def init_schema(con: sqlite3.Connection) -> None:
    """Create the tables (no-op, and no write lock, when the schema is already there)."""
    try:
        row = con.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if row is not None and int(row[0]) == SCHEMA_VERSION:
            return
    except sqlite3.OperationalError:  # no meta table yet
        pass
    with transaction(con):
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                con.execute(stmt)
        con.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


class ThreadConnections:
    """One connection per thread (Streamlit serves sessions from several threads), made by ``opener``."""

    def __init__(self, path: Path, opener=None):
        self.path = path
        self._opener = opener or connect
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._opener(self.path)
        return con
