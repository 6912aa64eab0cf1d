"""The job tables of the store: every SQL statement on ``jobs``, ``job_slices`` and
``calibration_timing`` (schema in :mod:`.db`). :mod:`segunc.runner` decides *what* to run; this
module only reads and writes the rows, each write in one ``BEGIN IMMEDIATE`` transaction.

All functions take the store's connection (``ResultStore.con``, rows as :class:`sqlite3.Row`)."""
from __future__ import annotations

import sqlite3
import time
from typing import Iterable

from .db import transaction

__all__ = ["add_job", "requeue_job", "request_cancel", "job_row", "job_state", "job_spec_json", "job_ids",
           "job_errors", "delete_empty_jobs", "mean_slice_seconds", "set_job", "clear_job_slices", "record_job_slice", "runnable_jobs",
           "put_timing", "timing_rows", "fold_timing", "held_per_mode", "done_slice_seconds"]


def add_job(con: sqlite3.Connection, job_id: str, spec_json: str, device: str, total: int, now: float) -> None:
    """Insert a queued job (nothing happens if the id exists)."""
    with transaction(con) as c:
        c.execute("INSERT OR IGNORE INTO jobs (job_id, spec_json, device, state, total, created_at, updated_at) "
                  "VALUES (?, ?, ?, 'queued', ?, ?, ?)", (job_id, spec_json, device, total, now, now))


def requeue_job(con: sqlite3.Connection, job_id: str, now: float) -> None:
    """Queue a finished job again (a queued or running one is left alone)."""
    with transaction(con) as c:
        c.execute("UPDATE jobs SET state = 'queued', cancel = 0, error = NULL, updated_at = ? "
                  "WHERE job_id = ? AND state NOT IN ('queued', 'running')", (now, job_id))


def request_cancel(con: sqlite3.Connection, job_id: str) -> None:
    """Flag the job to stop after its current slice; a queued job is cancelled at once."""
    with transaction(con) as c:
        c.execute("UPDATE jobs SET cancel = 1, updated_at = ? WHERE job_id = ?", (time.time(), job_id))
        c.execute("UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE job_id = ? AND state = 'queued'",
                  (time.time(), job_id))


def job_row(con: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
    return con.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()


def job_state(con: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
    """``(state, cancel, done, total)`` of a job, or None."""
    return con.execute("SELECT state, cancel, done, total FROM jobs WHERE job_id = ?", (job_id,)).fetchone()


def job_spec_json(con: sqlite3.Connection, job_id: str) -> str | None:
    row = con.execute("SELECT spec_json FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else row[0]


def job_ids(con: sqlite3.Connection) -> list[str]:
    """Every job, newest first."""
    return [r[0] for r in con.execute("SELECT job_id FROM jobs ORDER BY created_at DESC").fetchall()]


def job_errors(con: sqlite3.Connection, job_id: str) -> list[tuple[str, str]]:
    """``(slice_id, error)`` of the job's failed slices, in the order they failed."""
    return [(r[0], r[1]) for r in con.execute(
        "SELECT slice_id, error FROM job_slices WHERE job_id = ? AND state = 'failed' ORDER BY updated_at", (job_id,))]


def mean_slice_seconds(con: sqlite3.Connection, job_id: str) -> tuple[float | None, int]:
    """Mean seconds of the job's slices that computed something, and how many there were."""
    r = con.execute("SELECT AVG(seconds), COUNT(*) FROM job_slices WHERE job_id = ? AND computed > 0", (job_id,)).fetchone()
    return r[0], r[1]


def set_job(con: sqlite3.Connection, job_id: str, **cols) -> None:
    """Set columns of a job's row (``updated_at`` too)."""
    cols["updated_at"] = time.time()
    sql = ", ".join(f"{k} = ?" for k in cols)
    with transaction(con) as c:
        c.execute(f"UPDATE jobs SET {sql} WHERE job_id = ?", (*cols.values(), job_id))


def clear_job_slices(con: sqlite3.Connection, job_id: str) -> None:
    with transaction(con) as c:
        c.execute("DELETE FROM job_slices WHERE job_id = ?", (job_id,))


def record_job_slice(con: sqlite3.Connection, job_id: str, slice_id: str, state: str, computed: int, skipped: int,
                     seconds: float, totals: tuple[int, int, int], error: str | None = None,
                     file: str | None = None, current: str | None = None) -> bool:
    """Progress of one slice and the job's running totals ``(computed, skipped, failed results)``, and
    ``current`` (the slice computed next, None after the last), in one transaction; returns whether a
    cancel was requested."""
    now = time.time()
    with transaction(con) as c:
        c.execute("INSERT OR REPLACE INTO job_slices (job_id, slice_id, state, error, file, computed, skipped, seconds, "
                  "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (job_id, slice_id, state, error, file, computed, skipped, seconds, now))
        c.execute("UPDATE jobs SET done = done + 1, failed = failed + ?, computed = ?, skipped = ?, failed_results = ?, "
                  "updated_at = ?, current = ? WHERE job_id = ?", (int(state == "failed"), *totals, now, current, job_id))
        return bool(c.execute("SELECT cancel FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0])


def runnable_jobs(con: sqlite3.Connection, device: str) -> list[str]:
    """Queued or interrupted jobs of ``device``, oldest first."""
    return [r[0] for r in con.execute(
        "SELECT job_id FROM jobs WHERE device = ? AND state IN ('queued', 'running') AND cancel = 0 ORDER BY created_at",
        (device,))]


def put_timing(con: sqlite3.Connection, backend: str, device: str, host: str, stages: dict[str, float], n: int = 1) -> None:
    with transaction(con) as c:
        for stage, sec in stages.items():
            c.execute("INSERT OR REPLACE INTO calibration_timing (backend, device, host, stage, seconds, n, measured_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)", (backend, device, host, stage, float(sec), n, time.time()))


def fold_timing(con: sqlite3.Connection, backend: str, device: str, host: str, observations: dict[str, float],
                cap: int = 50) -> None:
    """Fold one observation per stage into its running mean over at most ``cap`` observations
    (``n`` counts them), in one transaction."""
    with transaction(con) as c:
        for stage, x in observations.items():
            row = c.execute("SELECT seconds, n FROM calibration_timing WHERE backend = ? AND device = ? AND host = ? "
                            "AND stage = ?", (backend, device, host, stage)).fetchone()
            n = 0 if row is None else min(int(row["n"]), cap - 1)
            value = float(x) if row is None else (row["seconds"] * n + float(x)) / (n + 1)
            c.execute("INSERT OR REPLACE INTO calibration_timing (backend, device, host, stage, seconds, n, measured_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)", (backend, device, host, stage, value, n + 1, time.time()))


def held_per_mode(con: sqlite3.Connection, job_id: str, not_yet_processed: bool = False) -> dict[str, int]:
    """mode → slices whose result is linked to the job; with ``not_yet_processed`` only slices without a
    ``job_slices`` row (the current execution has not reached them)."""
    q = ("SELECT r.mode, COUNT(DISTINCT r.slice_id) FROM run_results rr JOIN results r ON r.key = rr.key "
         "WHERE rr.run_id = ?")
    args: tuple = (job_id,)
    if not_yet_processed:
        q += " AND r.slice_id NOT IN (SELECT slice_id FROM job_slices WHERE job_id = ?)"
        args += (job_id,)
    return {r[0]: int(r[1]) for r in con.execute(q + " GROUP BY r.mode", args)}


def done_slice_seconds(con: sqlite3.Connection, job_id: str) -> tuple[float | None, int]:
    """Total seconds and count of the job's finished slices that computed something."""
    r = con.execute("SELECT SUM(seconds), COUNT(*) FROM job_slices WHERE job_id = ? AND computed > 0 "
                    "AND state = 'done'", (job_id,)).fetchone()
    return r[0], r[1]


def timing_rows(con: sqlite3.Connection, backend: str, device: str) -> Iterable[sqlite3.Row]:
    """``(host, stage, seconds)`` measured for backend × device, oldest first."""
    return con.execute("SELECT host, stage, seconds FROM calibration_timing WHERE backend = ? AND device = ? "
                       "ORDER BY measured_at", (backend, device)).fetchall()


def delete_empty_jobs(con: sqlite3.Connection, job_id: str | None = None) -> list[str]:
    """Delete failed / cancelled jobs that stored nothing (their job, slice-progress and run rows): every
    such job, or only ``job_id``. Call inside a transaction; returns the deleted ids."""
    q = ("SELECT job_id FROM jobs WHERE state IN ('failed', 'cancelled') AND done = 0 "
         "AND job_id NOT IN (SELECT run_id FROM run_results)")
    empty = [r[0] for r in (con.execute(q + " AND job_id = ?", (job_id,)) if job_id else con.execute(q))]
    for table, col in (("job_slices", "job_id"), ("jobs", "job_id"), ("runs", "run_id")):
        con.executemany(f"DELETE FROM {table} WHERE {col} = ?", [(j,) for j in empty])
    return empty
