"""A results store opened read-only (the app's demo mode): SQLite ``mode=ro``, no folder created,
no schema written, no corrupt row dropped, every write refused.

``mode=ro`` still reads a write-ahead log left by a writer. In a folder this process may not write
(a read-only mount, another user's files), SQLite cannot open the WAL index of a WAL-mode database
that way; the store is then opened ``immutable=1`` (SQLite neither locks nor looks for changes, which
is right for a snapshot no one writes). A store made by ``python -m segunc snapshot import`` has no
pending log, so nothing is missed; see ``docs/server.md``.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from urllib.parse import quote

from .db import ThreadConnections
from .. import settings
from .store import ResultStore

__all__ = ["ReadOnlyStore", "ReadOnlyStoreError", "connect_readonly", "open_for_reading"]

log = logging.getLogger(__name__)


class ReadOnlyStoreError(PermissionError):
    """A write to a store opened read-only."""


def connect_readonly(path: Path | str, timeout: float = 60.0) -> sqlite3.Connection:
    """A read-only connection to the database at ``path`` (``mode=ro``, else ``immutable=1``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results store database here")
    uri = "file:" + quote(str(path.resolve()))
    last: Exception | None = None
    for query in ("?mode=ro", "?mode=ro&immutable=1"):
        con = None
        try:
            con = sqlite3.connect(uri + query, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # SQLite opens lazily: probe now
        except sqlite3.DatabaseError as exc:
            if con is not None:
                con.close()
            last = exc
            continue
        if "immutable" in query:
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                log.warning("%s: opened immutable in a read-only folder; its write-ahead log %s is ignored "
                            "(open the store once where it is writable to fold it in)", path, wal)
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        con.execute("PRAGMA query_only = ON")
        return con
    raise sqlite3.OperationalError(f"{path}: cannot open read-only ({last})")


def open_for_reading(root: Path | str | None = None, read_only: bool = False) -> ResultStore:
    """The store in ``root`` opened for writing if this user can, else read-only (a store on a read-only
    mount or another user's files still serves ``export``, ``report`` and the app)."""
    from .store import writable_problem

    path = settings.store_dir(root).resolve()
    if not read_only and (path / "store.sqlite").is_file() and writable_problem(path):
        log.info("%s: not writable by this user; opened read-only", path)
        read_only = True
    return ReadOnlyStore(path) if read_only else ResultStore(path)


class ReadOnlyStore(ResultStore):
    """:class:`ResultStore` for reading only: every read method works; writes raise
    :class:`ReadOnlyStoreError`; a corrupt result is reported missing (``KeyError``) but not dropped."""

    read_only = True

    def __init__(self, root: Path | str | None = None, bits: int = 8):  # noqa: D107 - no super(): it creates folders
        self.root = settings.store_dir(root).resolve()
        self.bits = int(bits)
        self.db_path = self.root / "store.sqlite"
        if not self.db_path.is_file():
            raise FileNotFoundError(f"{self.root}: no results store here (no store.sqlite); import a snapshot with "
                                    f"`python -m segunc snapshot import FILE --cache {self.root}`")
        self._cons = ThreadConnections(self.db_path, connect_readonly)
        self.con  # noqa: B018 - open now, so an unreadable store fails here and not on a page

    def __repr__(self) -> str:
        return f"ReadOnlyStore({str(self.root)!r})"

    def _refuse(self, *args, **kwargs):
        raise ReadOnlyStoreError(f"the results store {self.root} is open read-only (demo mode); nothing is written")

    put_settings = put_slice = link = add_run = gc = _write_file = _refuse

    def invalidate(self, key: str, map_file: str | None = None) -> bool:
        return False  # reported missing by the caller, left in place
