"""Small filesystem helpers shared by the downloader and the results store."""
from __future__ import annotations

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
