"""Shared glue of the app pages: cached store and data access, the results filter, the error guard.

No results are computed here: statistics live in :mod:`segunc.stats`, figures in :mod:`segunc.viz`,
results in :mod:`segunc.store`. Heavy objects (the store, maps, slices) are cached with
``st.cache_resource`` (shared, never copied), tables with ``st.cache_data``; table caches are keyed by
the store's modification time, so new results show up without a restart.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import streamlit as st

log = logging.getLogger("segunc.app")

#: page files by short name (st.navigation registers these; st.switch_page takes them)
PAGE_FILES = {"home": "pages/home.py", "dataset": "pages/dataset.py", "run": "pages/run.py",
              "compare": "pages/compare.py", "metrics": "pages/metrics.py", "calibration": "pages/calibration.py",
              "upload": "pages/upload.py", "review": "pages/review.py"}
#: widget keys whose values survive page switches (see :func:`keep_state`)
STICKY = ("f_backends", "f_modes", "f_split", "f_runs")


# ------------------------------------------------------------------------------ bootstrap
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


# -------------------------------------------------------------------------------- errors
def explain(exc: BaseException) -> str:
    """A one-paragraph, traceback-free description of what went wrong."""
    from segunc.backends import WeightsError
    from segunc.data import DataError, SliceError

    msg = str(exc).strip().strip("'\"") or type(exc).__name__
    if isinstance(exc, SliceError):
        return f"A slice file could not be read: {msg}"
    if isinstance(exc, DataError):
        return f"The LGG data folder is not usable: {msg}. Set `SEGUNC_DATA` to the `kaggle_3m` folder."
    if isinstance(exc, WeightsError):
        return f"Model weights problem: {msg}"
    if isinstance(exc, KeyError):
        return f"Not found: {msg}"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"File problem: {msg}"
    if isinstance(exc, MemoryError):
        return "Out of memory; narrow the selection (fewer backends, modes or slices)."
    return f"{type(exc).__name__}: {msg}"


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


# --------------------------------------------------------------------------------- paths
def data_root() -> Path:
    from segunc.cli import default_data

    return default_data()


def store_root() -> Path:
    from segunc.store import default_cache_dir

    return Path(default_cache_dir())


def store_version(root: Path | str | None = None) -> float:
    """Newest modification time of the store's database and its write-ahead log (any write bumps one)."""
    db = Path(_store(str(root or store_root()), read_only()).db_path)
    times = []
    for path in (db, db.with_name(db.name + "-wal")):
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times, default=0.0)


def allowed_roots() -> list[Path]:
    """The folders user input may name: the LGG data folder, the results store, the weights folder."""
    from segunc.backends.base import default_weights_dir

    return [data_root(), store_root(), Path(default_weights_dir())]


def user_path(text: str | Path, base: Path | str | None = None) -> Path:
    """The real path a user typed (or a value derived from user input), confined to :func:`allowed_roots`:
    ``..`` and symbolic links are resolved first; :class:`segunc.access.PathError` if it leads outside.
    Relative paths are taken from ``base`` (default: the data folder). Use it for every path a widget,
    query parameter or upload name can influence."""
    from segunc.access import confine

    return confine(text, allowed_roots(), base=base)


# ------------------------------------------------------------------- access settings
# Server / demo mode settings (rules in segunc/access.py); the gate itself is pages/_access.py.
def _secrets() -> dict:
    """``st.secrets`` as a plain dict; {} when there is no secrets file; AccessError when one exists but
    cannot be read (a broken secrets.toml must not open a server to everyone)."""
    from segunc.access import AccessError

    try:
        return st.secrets.to_dict()
    except FileNotFoundError as exc:  # StreamlitSecretNotFoundError: no file, or one that does not parse
        from streamlit import config

        files = config.get_option("secrets.files") or []
        if any(Path(f).expanduser().exists() for f in files):
            raise AccessError(f"the secrets file could not be read: {exc}") from None
        return {}


def access_config():
    """The login / mode settings (:class:`segunc.access.AccessConfig`) from secrets.toml and ``$SEGUNC_MODE``."""
    from segunc.access import load_config

    return load_config(_secrets())


def read_only() -> bool:
    """Demo mode: nothing may write to the store, queue a job or download (an unreadable configuration
    counts as read-only; the gate shuts the app then anyway)."""
    from segunc.access import AccessError, resolve_mode

    try:
        return resolve_mode(_secrets()) == "demo"
    except AccessError:
        return True


# --------------------------------------------------------------------------------- store
@st.cache_resource(show_spinner=False)
def _store(root: str, read_only: bool = False):
    from segunc.store.readonly import open_for_reading

    return open_for_reading(root, read_only)  # a store this user cannot write is read, not refused


def store():
    """The results store (read-only in demo mode: every write raises, corrupt rows are not dropped)."""
    return _store(str(store_root()), read_only())


@st.cache_data(show_spinner="Loading results…", max_entries=8)
def _metrics_frame(root: str, version: float, run_ids: tuple[str, ...]) -> pd.DataFrame:
    from segunc.stats import order_backends, order_modes

    df = _store(root, read_only()).metrics_frame(run_ids=list(run_ids) if run_ids else None)
    if len(df):  # display order everywhere: backends as registered, modes as in the paper
        rank = {"backend": {b: i for i, b in enumerate(order_backends(df["backend"]))},
                "mode": {m: i for i, m in enumerate(order_modes(df["mode"]))}}
        df = df.sort_values(["backend", "mode"], key=lambda s: s.map(rank[s.name]), kind="stable").reset_index(drop=True)
    return df


def metrics_frame(run_ids: tuple[str, ...] = ()) -> pd.DataFrame:
    """Every metric row in the store (one per result key), or those of the given runs; cached until
    the store changes."""
    root = store_root()
    return _metrics_frame(str(root), store_version(root), tuple(run_ids))


@st.cache_data(show_spinner=False, max_entries=4)
def _runs(root: str, version: float) -> pd.DataFrame:
    return _store(root, read_only()).runs()


def runs() -> pd.DataFrame:
    root = store_root()
    return _runs(str(root), store_version(root))


@st.cache_resource(show_spinner=False, max_entries=192)
def _maps(root: str, key: str) -> dict[str, np.ndarray]:
    return _store(root, read_only()).load_maps(key)


def load_maps(key: str) -> dict[str, np.ndarray] | None:
    """The stored maps of one result (read-only; shared between sessions), None if missing."""
    try:
        return _maps(str(store_root()), key)
    except KeyError:
        return None


@st.cache_data(show_spinner=False, max_entries=64)
def _reliability(root: str, version: float, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = _store(root, read_only()).reliability(list(keys))
    return {k: np.asarray(v) for k, v in out.items()}


def reliability(keys) -> dict[str, np.ndarray]:
    root = store_root()
    return _reliability(str(root), store_version(root), tuple(sorted(keys)))


# ---------------------------------------------------------------------------------- data
@st.cache_data(show_spinner="Scanning the data folder…", ttl=600)
def slice_index(root: str) -> pd.DataFrame:
    """One row per slice file: slice_id, patient_id, patient_folder, index, split, image, mask paths."""
    from segunc.data import discover

    refs = discover(root)
    return pd.DataFrame({"slice_id": [r.slice_id for r in refs], "patient_id": [r.patient_id for r in refs],
                         "patient_folder": [r.patient_folder for r in refs], "index": [r.index for r in refs],
                         "split": [r.split for r in refs], "image_path": [str(r.image_path) for r in refs],
                         "mask_path": [str(r.mask_path) for r in refs]})


@st.cache_resource(show_spinner=False, max_entries=256)
def _slice_arrays(image_path: str, mask_path: str):
    from segunc.data import load_image, load_mask

    image = load_image(image_path)
    return image, load_mask(mask_path, image.shape[:2])


def slice_arrays(slice_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(image H W 3 uint8, mask H W bool) of a slice in the data folder; KeyError if unknown."""
    idx = slice_index(str(data_root()))
    row = idx[idx["slice_id"] == slice_id]
    if row.empty:
        raise KeyError(f"slice {slice_id} is not in the data folder {data_root()}")
    r = row.iloc[0]
    return _slice_arrays(r["image_path"], r["mask_path"])


@st.cache_data(show_spinner="Reading masks…", max_entries=512)
def tumour_sizes(mask_paths: tuple[str, ...]) -> list[int]:
    """Tumour pixels of each mask (a missing or unreadable mask counts as -1)."""
    from segunc.data import SliceError, load_mask

    out = []
    for p in mask_paths:
        try:
            out.append(int(load_mask(p).sum()))
        except SliceError:
            out.append(-1)
    return out


# ---------------------------------------------------------------------------- page bits
def keep_state() -> None:
    """Keep the shared filter widgets' values when the user switches pages."""
    for k in STICKY:
        if k in st.session_state:
            st.session_state[k] = st.session_state[k]


def open_clicked(event, source: str) -> None:
    """A clicked distribution point (``customdata`` = key, slice_id, patient_id, backend, mode) → that slice
    on the Compare page; once per click (the chart keeps its selection across reruns)."""
    pts = event.selection.points if event else []
    custom = pts[0].get("customdata") if pts else None
    if not custom or len(custom) < 5:
        return
    marker = (source, custom[0])
    if st.session_state.get("_last_click") == marker:
        return
    st.session_state["_last_click"] = marker
    st.switch_page(PAGE_FILES["compare"], query_params={"slice": custom[1], "focus": f"{custom[3]}:{custom[4]}"})


def no_results(message: str = "The results store is empty.") -> None:
    from pages._access import principal

    can_run = principal().can_run
    st.info(f"{message} {'Queue a sweep on the **Run** page, or point' if can_run else 'Point'} `SEGUNC_CACHE` at "
            f"an existing store (now `{store_root()}`).", icon=":material/inbox:")
    if can_run:  # viewers have no Run page (a link to it would fail)
        st.page_link(PAGE_FILES["run"], label="Go to Run", icon=":material/play_arrow:")


def _run_label(r) -> str:
    try:
        cfg = json.loads(r.settings_json).get("config", {})
        extra = f" · T={cfg['samples']}" if "samples" in cfg else ""
    except (TypeError, ValueError, AttributeError):
        extra = ""
    when = r.created_at.strftime("%Y-%m-%d %H:%M") if hasattr(r.created_at, "strftime") else ""
    return f"{r.backend} · {r.modes}{extra} · {when} · {str(r.run_id)[:8]}"


def result_filters(df: pd.DataFrame, modes_default: list[str] | None = None) -> pd.DataFrame:
    """Sidebar filters (runs, backends, modes, split) shared by the result pages; returns the selection."""
    from segunc.stats import order_backends, order_modes

    with st.sidebar:
        st.subheader("Results")
        rr = runs()
        if len(rr) > 1:
            labels = {r.run_id: _run_label(r) for r in rr.itertuples()}
            _valid("f_runs", list(labels))
            sel_r = st.multiselect("Runs", list(labels), key="f_runs", format_func=labels.get,
                                   placeholder="all runs", help="Results of these sweeps only (empty: every result)")
            if sel_r:
                df = metrics_frame(tuple(sel_r))
        backends = order_backends(df["backend"])
        modes = order_modes(df["mode"])
        present = set(df["split"].unique()) if "split" in df.columns else set()
        splits = [s for s in ("val", "test", "train") if s in present]
        _valid("f_backends", backends)
        _valid("f_modes", modes)
        sel_b = st.multiselect("Backends", backends, key="f_backends", **_default("f_backends", backends))
        sel_m = st.multiselect("Modes", modes, key="f_modes", **_default("f_modes", modes_default or modes))
        if st.session_state.get("f_split") not in ("all", *splits):
            st.session_state.pop("f_split", None)
        split = st.selectbox("Split", ["all", *splits], key="f_split", disabled=len(splits) < 2)
    out = df[df["backend"].isin(sel_b) & df["mode"].isin(sel_m)]
    if split != "all" and "split" in out.columns:
        out = out[out["split"] == split]
    dup = int(out.duplicated(["backend", "mode", "slice_id"]).sum())
    if dup:
        st.sidebar.warning(f"{dup} slice result(s) exist under several settings; statistics average them. "
                           "Pick runs to compare like with like.", icon=":material/warning:")
    return out


def selected_results(prepare=None, modes_default: list[str] | None = None) -> pd.DataFrame:
    """The result pages' common start: the store's metric rows through the sidebar filters; stops
    the page with a clear message when the store is empty or nothing matches. ``prepare(df)`` runs
    on the whole frame before the filters (e.g. to apply a deep link)."""
    df = metrics_frame()
    if df.empty:
        no_results()
        st.stop()
    if prepare is not None:
        prepare(df)
    sel = result_filters(df, modes_default)
    if sel.empty:
        st.info("Nothing matches the filters in the sidebar.", icon=":material/filter_alt_off:")
        st.stop()
    return sel


def _default(key: str, value) -> dict:
    """``default=`` only for a widget whose value Session State does not hold yet (avoids Streamlit's warning)."""
    return {} if key in st.session_state else {"default": value}


def _valid(key: str, options: list[str]) -> None:
    """Drop remembered selections that are no longer options (e.g. after a filter elsewhere)."""
    if key in st.session_state:
        st.session_state[key] = [v for v in st.session_state[key] if v in options]


def fmt_seconds(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "–"
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
