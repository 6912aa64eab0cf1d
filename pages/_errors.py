"""The pages' error guard: any error in a page or a section becomes one clear message, never a traceback."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from segunc.data import DataError, SliceError

log = logging.getLogger("segunc.app")


def explain(exc: BaseException) -> str:
    """A one-paragraph, traceback-free description of what went wrong."""
    msg = str(exc).strip().strip("'\"") or type(exc).__name__
    if isinstance(exc, SliceError):
        return f"A slice file could not be read: {msg}"
    if isinstance(exc, DataError):
        return f"The LGG data folder is not usable: {msg}. Set `SEGUNC_DATA` to the `kaggle_3m` folder."
    if _weights_error(exc):
        return f"Model weights problem: {msg}"
    if isinstance(exc, KeyError):
        return f"Not found: {msg}"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"File problem: {msg}"
    if isinstance(exc, MemoryError):
        return "Out of memory; narrow the selection (fewer backends, modes or slices)."
    return f"{type(exc).__name__}: {msg}"


def _weights_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a :class:`segunc.backends.WeightsError`, without importing the backends (and
    PyTorch) on pages that run no model: when they are not loaded, no backend can have raised one."""
    base = sys.modules.get("segunc.backends.base")
    return base is not None and isinstance(exc, base.WeightsError)


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Run a page body (or one section of it); any error becomes a clear ``st.error`` naming ``what``.

    Streamlit's own control flow (``st.rerun``, ``st.switch_page``, ``st.stop``) raises
    ``BaseException`` subclasses and passes through untouched. The traceback goes to the server log.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the point of the guard
        log.exception("app: %s failed", what)
        st.error(f"**{what} could not be shown.** {explain(exc)}", icon=":material/error:")
