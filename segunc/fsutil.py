"""Small filesystem helpers: folder fsync after an atomic replace, streamed file hashes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
