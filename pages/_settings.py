"""App-side settings: the page files, the page bootstrap, the access settings (secrets.toml and
``$SEGUNC_MODE``; rules in :mod:`segunc.access`) and the folders user input may name. Locations
come from :mod:`segunc.settings`; nothing here sets the environment."""
from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit import config as st_config

from segunc import settings
from segunc.access import AccessError, confine, load_config, resolve_mode

#: page files by short name (st.navigation registers these; st.switch_page takes them)
PAGE_FILES = {"home": "pages/home.py", "dataset": "pages/dataset.py", "run": "pages/run.py",
              "compare": "pages/compare.py", "metrics": "pages/metrics.py", "calibration": "pages/calibration.py",
              "upload": "pages/upload.py", "review": "pages/review.py"}


def ensure_app() -> None:
    """Make sure the page runs inside ``app.py``'s navigation (call first on every page).

    On a fresh server, a deep link such as ``/compare?slice=...`` can arrive before ``app.py`` has
    ever run; Streamlit then falls back to its legacy ``pages/`` folder mode and runs the page file
    alone (no page config, no navigation). Switch that mode off and rerun: the rerun goes through
    ``app.py``, whose ``st.navigation`` resolves the same page (same url path), query string kept.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy mode
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


# ------------------------------------------------------------------------------ paths
def allowed_roots() -> list[Path]:
    """The folders user input may name: the LGG data folder, the results store, the weights folder."""
    return [settings.app_data_dir(), settings.data_dir(), settings.store_dir(), settings.weights_dir()]


def user_path(text: str | Path, base: Path | str | None = None) -> Path:
    """The real path a user typed (or a value derived from user input), confined to :func:`allowed_roots`:
    ``..`` and symbolic links are resolved first; :class:`segunc.access.PathError` if it leads outside.
    Relative paths are taken from ``base`` (default: the data folder). Use it for every path a widget,
    query parameter or upload name can influence."""
    return confine(text, allowed_roots(), base=base)


# -------------------------------------------------------------------- access settings
def _secrets() -> dict:
    """``st.secrets`` as a plain dict; {} when there is no secrets file; AccessError when one exists but
    cannot be read (a broken secrets.toml must not open a server to everyone)."""
    try:
        return st.secrets.to_dict()
    except FileNotFoundError as exc:  # StreamlitSecretNotFoundError: no file, or one that does not parse
        files = st_config.get_option("secrets.files") or []
        if any(Path(f).expanduser().exists() for f in files):
            raise AccessError(f"the secrets file could not be read: {exc}") from None
        return {}


def access_config():
    """The login / mode settings (:class:`segunc.access.AccessConfig`) from secrets.toml and ``$SEGUNC_MODE``."""
    return load_config(_secrets())


def read_only() -> bool:
    """Demo mode: nothing may write to the store, queue a job or download (an unreadable configuration
    counts as read-only; the gate shuts the app then anyway)."""
    try:
        return resolve_mode(_secrets()) == "demo"
    except AccessError:
        return True


def offline() -> bool:
    """Download nothing: demo mode, or ``$SEGUNC_OFFLINE`` (pass as ``offline=`` to :mod:`segunc.fetch`)."""
    return read_only() or settings.offline()
