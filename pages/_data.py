"""Cached access to the results store, its analyses and the LGG data folder (no results are computed here).

Heavy objects (the store, maps, slices) are cached with ``st.cache_resource`` (shared, never copied),
tables with ``st.cache_data``; table caches are keyed by the store's modification time, so new results
show up without a restart. Slow analyses (bootstrap CIs, significance tests) are read from the store's
analysis cache (:mod:`segunc.analysis.precompute`: filled at snapshot export, else on first use).
Locations come from :mod:`segunc.settings`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from pages._settings import read_only
from segunc import settings
from segunc.data import SliceError, discover, load_image, load_mask
from segunc.analysis.precompute import cached_describe, cached_tests
from segunc.analysis.stats import FriedmanResult, sort_by_backend_mode
from segunc.store.readonly import open_for_reading
from segunc.data.sample import SAMPLE_LABEL
from segunc.data.slice_pack import PACK_NAME, open_pack


# --------------------------------------------------------------------------------- store
@st.cache_resource(show_spinner=False)
def _store(root: str, read_only: bool = False):
    return open_for_reading(root, read_only)  # a store this user cannot write is read, not refused


def store():
    """The results store (read-only in demo mode: every write raises, corrupt rows are not dropped)."""
    return _store(str(settings.store_dir()), read_only())


def store_version(root: Path | str | None = None) -> float:
    """Newest modification time of the store's database and its write-ahead log (any write bumps one)."""
    db = Path(_store(str(root or settings.store_dir()), read_only()).db_path)
    times = []
    for path in (db, db.with_name(db.name + "-wal")):
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times, default=0.0)


@st.cache_data(show_spinner="Loading results…", max_entries=8)
def _metrics_frame(root: str, version: float, run_ids: tuple[str, ...]) -> pd.DataFrame:
    df = _store(root, read_only()).metrics_frame(run_ids=list(run_ids) if run_ids else None)
    return sort_by_backend_mode(df)  # display order everywhere: backends as registered, modes as in the paper


def metrics_frame(run_ids: tuple[str, ...] = ()) -> pd.DataFrame:
    """Every metric row in the store (one per result key), or those of the given runs; cached until
    the store changes."""
    root = settings.store_dir()
    return _metrics_frame(str(root), store_version(root), tuple(run_ids))


@st.cache_data(show_spinner=False, max_entries=4)
def _runs(root: str, version: float) -> pd.DataFrame:
    return _store(root, read_only()).runs()


def runs() -> pd.DataFrame:
    """The store's runs (one row per sweep); cached until the store changes."""
    root = settings.store_dir()
    return _runs(str(root), store_version(root))


@st.cache_data(show_spinner=False, max_entries=4)
def _run_links(root: str, version: float) -> pd.DataFrame:
    return _store(root, read_only()).run_links()


def run_links() -> pd.DataFrame:
    """(key, run_id) of every run that asked for each result; cached until the store changes."""
    root = settings.store_dir()
    return _run_links(str(root), store_version(root))


@st.cache_resource(show_spinner=False, max_entries=192)
def _maps(root: str, key: str) -> dict[str, np.ndarray]:
    return _store(root, read_only()).load_maps(key)


def load_maps(key: str) -> dict[str, np.ndarray] | None:
    """The stored maps of one result (read-only; shared between sessions), None if missing."""
    try:
        return _maps(str(settings.store_dir()), key)
    except KeyError:
        return None


@st.cache_data(show_spinner=False, max_entries=64)
def _reliability(root: str, version: float, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = _store(root, read_only()).reliability(list(keys))
    return {k: np.asarray(v) for k, v in out.items()}


def reliability(keys) -> dict[str, np.ndarray]:
    """Pooled reliability bins of these results (see :meth:`segunc.store.ResultStore.reliability`)."""
    root = settings.store_dir()
    return _reliability(str(root), store_version(root), tuple(sorted(keys)))


# ------------------------------------------------------------------------------ analyses
@st.cache_data(show_spinner="Bootstrapping confidence intervals…", max_entries=32)
def describe(sel: pd.DataFrame, metrics: tuple[str, ...], per_patient: bool = False, confidence: float = 0.95,
             n_resamples: int = 2000, root: str | None = None) -> pd.DataFrame:
    """:func:`segunc.analysis.stats.describe` of ``sel``, from the store's analysis cache when these rows
    were described before (a demo's are, at export), else computed (and cached unless read-only)."""
    out, _ = cached_describe(root or str(settings.store_dir()), sel, metrics, per_patient=per_patient,
                             confidence=confidence, n_resamples=n_resamples, write=not read_only())
    return out


@st.cache_data(show_spinner="Testing…", max_entries=64)
def significance(sel: pd.DataFrame, metric: str, backend: str, modes: tuple[str, ...], per_patient: bool,
                 alpha: float, root: str | None = None) -> tuple[FriedmanResult, pd.DataFrame]:
    """(Friedman test, pairwise Wilcoxon table) of ``backend``'s ``modes`` on ``metric``, from the store's
    analysis cache when these values were tested before, else computed (and cached unless read-only)."""
    got = cached_tests(root or str(settings.store_dir()), sel, metric, backend, list(modes), per_patient=per_patient,
                       alpha=alpha, write=not read_only())
    return FriedmanResult(**got["friedman"]), got["pairs"]


# ---------------------------------------------------------------------------------- data
@st.cache_data(show_spinner="Scanning the data folder…", ttl=600)
def slice_index(root: str) -> pd.DataFrame:
    """One row per slice file: slice_id, patient_id, patient_folder, index, split, image, mask paths."""
    refs = discover(root)
    return pd.DataFrame({"slice_id": [r.slice_id for r in refs], "patient_id": [r.patient_id for r in refs],
                         "patient_folder": [r.patient_folder for r in refs], "index": [r.index for r in refs],
                         "split": [r.split for r in refs], "image_path": [str(r.image_path) for r in refs],
                         "mask_path": [str(r.mask_path) for r in refs]})


@st.cache_resource(show_spinner=False, max_entries=256)
def _slice_arrays(image_path: str, mask_path: str):
    image = load_image(image_path)
    return image, load_mask(mask_path, image.shape[:2])


def slice_arrays(slice_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(image H W 3 uint8, mask H W bool) of a slice in the data folder; KeyError if unknown."""
    root = settings.app_data_dir()
    idx = slice_index(str(root))
    row = idx[idx["slice_id"] == slice_id]
    if row.empty:
        raise KeyError(f"slice {slice_id} is not in the data folder {root}")
    r = row.iloc[0]
    return _slice_arrays(r["image_path"], r["mask_path"])


@st.cache_data(show_spinner="Reading the slice pack…", max_entries=4)
def _pack_index(root: str, mtime: float) -> pd.DataFrame | None:
    pack = open_pack(root)
    if pack is None:
        return None
    cols = ["slice_id", "patient_id", "patient_folder", "index", "split", "image", "tumour_px"]
    return pd.DataFrame(pack.entries(), columns=cols)


def pack_index() -> pd.DataFrame | None:
    """The slices the store's slice pack holds (a snapshot carries one; see :mod:`segunc.data.slice_pack`):
    one row per slice like :func:`slice_index` but with the stored ``image`` path instead of files and the
    ground truth's ``tumour_px``; None when the store has no readable pack."""
    path = settings.store_dir() / PACK_NAME
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return _pack_index(str(settings.store_dir()), mtime)


def pack_arrays(image: str) -> tuple[np.ndarray, np.ndarray]:
    """(image H W 3 uint8, mask H W bool) of a stored image path from the store's slice pack; KeyError if absent."""
    pack = open_pack(settings.store_dir())
    if pack is None or image not in pack:
        raise KeyError(f"{image} is not in the store's slice pack ({settings.store_dir() / PACK_NAME})")
    return pack.load(image)


@st.cache_data(show_spinner="Reading masks…", max_entries=512)
def tumour_sizes(mask_paths: tuple[str, ...]) -> list[int]:
    """Tumour pixels of each mask (a missing or unreadable mask counts as -1)."""
    out = []
    for p in mask_paths:
        try:
            out.append(int(load_mask(p).sum()))
        except SliceError:
            out.append(-1)
    return out


def sample_notice() -> None:
    """Say so when the app reads the shipped LGG sample (no data folder configured, none at the default)."""
    if not settings.using_sample() or settings.app_mode() == "demo":  # a demo shows its snapshot's slices
        return

    st.info(f"**Sample data** — {SAMPLE_LABEL}, because no data folder is configured (`SEGUNC_DATA`) and "
            f"`{settings.DEFAULT_DATA}` is missing. Results on it are a demonstration, not the paper's evaluation; "
            "get the full dataset on the Set-up page.", icon=":material/science:")
