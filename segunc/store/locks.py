"""Inter-process file locks held by the kernel: ``fcntl.flock`` (POSIX) or ``msvcrt.locking``
(Windows). A lock dies with its process (``kill -9`` included), so a crashed worker never
leaves a stale lock; lock files are never deleted (deleting them would race with waiters).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

__all__ = ["FileLock", "is_locked", "holder"]


class FileLock:
    """A non-reentrant exclusive lock on ``path``; ``acquire(timeout)`` returns whether it got it."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _try(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        if fcntl is not None:  # who holds it, for humans (`cat locks/worker-cpu.lock`)
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n".encode())
        return True

    def acquire(self, timeout: float = 0.0, poll: float = 0.1) -> bool:
        """Try for up to ``timeout`` seconds (0 = once; None = forever)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._try():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            else:
                msvcrt.locking(self._fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        self.acquire(timeout=None)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()


def is_locked(path: Path | str) -> bool:
    """Whether some live process (this one included) holds the lock at ``path``."""
    if not Path(path).exists():
        return False
    probe = FileLock(path)
    if probe.acquire(timeout=0):
        probe.release()
        return False
    return True


def holder(path: Path | str) -> dict | None:
    """``{"host", "pid", "since"}`` written by the holder (POSIX), or None."""
    try:
        host, pid, since = Path(path).read_text().split()
        return {"host": host, "pid": int(pid), "since": float(since)}
    except (OSError, ValueError):
        return None
