"""Small filesystem helpers: folder fsync after an atomic replace, streamed file hashes, and one
clear error for a full disk."""
from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
from pathlib import Path


class StoreFullError(OSError):
    """The results store's disk is full (or its quota is spent). What was stored before stays."""


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT / EFBIG, or SQLite's "database or disk is full"."""
    if isinstance(exc, StoreFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc).lower()


def full_near(path: Path | str, exc: BaseException, spare: int = 1 << 20) -> bool:
    """:func:`is_disk_full`, or an SQLite I/O error (e.g. its WAL index cannot be sized) while the disk
    holding ``path`` has less than ``spare`` bytes free."""
    if is_disk_full(exc):
        return True
    if not isinstance(exc, sqlite3.OperationalError) or "i/o error" not in str(exc).lower():
        return False
    import shutil

    try:
        return shutil.disk_usage(Path(path).parent).free < spare
    except OSError:
        return False


def disk_full_error(where: Path | str, exc: BaseException) -> StoreFullError:
    """The one message of every write that fails on a full disk (map files, database rows, logs,
    analysis cache, CSV): where, why, and that the results stored before are kept."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StoreFullError(errno.ENOSPC, f"{where}: disk full while writing ({detail}); the results stored before "
                          "are kept — free some space and run the same command again to continue")


def fsync_dir(path: Path | str) -> None:
    """fsync a folder so a preceding ``os.replace`` into it survives a crash (no-op where
    folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_digests(path: Path | str, algorithms: tuple[str, ...] = ("sha256",), chunk: int = 1 << 20) -> dict[str, str]:
    """Hex digests of a file for each ``hashlib`` algorithm name, in one streamed pass (constant memory)."""
    hashes = {a: hashlib.new(a, usedforsecurity=False) if a == "md5" else hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while block := f.read(chunk):
            for h in hashes.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed."""
    return file_digests(path, ("sha256",), chunk)["sha256"]
