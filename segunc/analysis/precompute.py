"""Slow analyses computed ahead, so pages read results instead of waiting: the error-detection
stats of every stored result (:func:`~.stored.stored_error_stats`, cached per result beside the
store), the significance tests of each backend × metric (Friedman and pairwise Wilcoxon, slice and
patient blocks) and the descriptive statistics with their bootstrap CIs (:func:`~.stats.describe`),
each cached as JSON under ``<store>/analysis/<version>/`` by a digest of exactly the values it was
computed from, so a cached answer is never stale and equals a fresh computation.

Run at snapshot export and on demand for the local store (:func:`precompute_analyses`), for the
selections the pages open with (every result, and the slices of the newest run); pages call
:func:`cached_tests` and :func:`cached_describe` (a cache hit for the precomputed selections,
computed and stored otherwise).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["SIG_VERSION", "DESCRIBE_VERSION", "cached_tests", "cached_describe", "default_selections",
           "precompute_analyses"]

SIG_VERSION = "significance-v1"
#: cache folder of :func:`cached_describe`; bump when :func:`~.stats.describe` changes its numbers
DESCRIBE_VERSION = "describe-v1"
#: the Calibration page's metrics and resamples (its table and bars)
CALIBRATION_METRICS = ("nll", "ece", "brier")
#: FriedmanResult fields that are NaN when the test cannot run (null in the cache)
_FRIEDMAN_FLOATS = ("statistic", "pvalue", "kendalls_w")


def _digest(df: pd.DataFrame, metric: str, backend: str, modes: Sequence[str] | None, per_patient: bool,
            alpha: float = 0.05) -> str:
    cols = [c for c in ("slice_id", "patient_id", "mode") if c in df.columns]
    d = df.loc[df["backend"] == backend, [*cols, metric]].sort_values(cols, kind="stable")
    h = hashlib.sha256(json.dumps([SIG_VERSION, metric, backend, list(modes or []), per_patient, alpha]).encode())
    h.update(pd.util.hash_pandas_object(d.round({metric: 12}), index=False).to_numpy().tobytes())
    return h.hexdigest()[:32]


def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def cached_tests(store_root: Path | str | None, df: pd.DataFrame, metric: str, backend: str,
                 modes: Sequence[str] | None = None, per_patient: bool = False, alpha: float = 0.05,
                 write: bool = True) -> dict:
    """``{"friedman": FriedmanResult.as_dict(), "pairs": DataFrame of pairwise_wilcoxon, "cached": bool}``
    for ``df``'s ``backend`` and ``metric``; read from the store's cache when these exact values were
    tested before, else computed (and written unless ``write`` is False or the store is read-only)."""
    from .stats import friedman, order_modes, pairwise_wilcoxon

    if modes is not None and list(modes) == order_modes(df.loc[df["backend"] == backend, "mode"]):
        modes = None  # every mode of the backend, in display order: the same tests as the default
    path = None
    if store_root is not None:
        path = Path(store_root) / "analysis" / SIG_VERSION / f"{_digest(df, metric, backend, modes, per_patient, alpha)}.json"
        try:
            got = json.loads(path.read_text())
            pairs = _frame_from_record({"columns": got["pair_columns"], "dtypes": got.get("pair_dtypes") or [],
                                        "data": got["pairs"]})
            f = {k: float("nan") if v is None and k in _FRIEDMAN_FLOATS else v for k, v in got["friedman"].items()}
            return {"friedman": f, "pairs": pairs, "cached": True}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    f = friedman(df, metric, backend, modes, per_patient=per_patient).as_dict()
    pairs = pairwise_wilcoxon(df, metric, backend, modes, per_patient=per_patient, alpha=alpha)
    if path is not None and write:
        rec = _frame_record(pairs)
        _write_json(path, {"friedman": {k: _jsonable(v) for k, v in f.items()}, "pair_columns": rec["columns"],
                           "pair_dtypes": rec["dtypes"], "pairs": rec["data"]})
    return {"friedman": f, "pairs": pairs, "cached": False}


def _write_json(path: Path, rec: dict) -> None:
    """Write ``rec`` atomically (temporary file + ``os.replace``); a read-only store goes on uncached."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(json.dumps(rec))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:
        pass


# ------------------------------------------------------------------------ descriptive statistics
def _frame_record(df: pd.DataFrame) -> dict:
    """A frame as JSON-ready lists: floats as Python floats (``json`` writes the shortest repr that reads
    back to the same double, so the numbers survive exactly), NaN as null, and the dtype of each column."""
    return {"columns": list(df.columns), "dtypes": [str(t) for t in df.dtypes],
            "data": [[_jsonable(v) for v in row] for row in df.itertuples(index=False)]}


def _frame_from_record(rec: dict) -> pd.DataFrame:
    """The frame of :func:`_frame_record` (numeric and boolean columns back in their dtype, null → NaN)."""
    df = pd.DataFrame(rec["data"], columns=rec["columns"])
    for col, dtype in zip(rec["columns"], rec["dtypes"]):
        if dtype.startswith(("float", "int", "bool")):
            df[col] = df[col].astype("float64" if dtype.startswith("float") else dtype)
    return df


def _describe_digest(df: pd.DataFrame, metrics: Sequence[str], per_patient: bool, confidence: float,
                     n_resamples: int) -> str:
    """sha256 of the parameters and of the rows :func:`~.stats.describe` reads, in their order (the
    bootstrap draws depend on it)."""
    cols = [c for c in ("backend", "mode", "slice_id", "patient_id") if c in df.columns]
    metrics = [m for m in metrics if m in df.columns]
    h = hashlib.sha256(json.dumps([DESCRIBE_VERSION, cols, metrics, per_patient, confidence, n_resamples]).encode())
    h.update(pd.util.hash_pandas_object(df[[*cols, *metrics]], index=False).to_numpy().tobytes())
    return h.hexdigest()[:32]


def cached_describe(store_root: Path | str | None, df: pd.DataFrame, metrics: Sequence[str] | None = None,
                    per_patient: bool = False, confidence: float = 0.95, n_resamples: int = 2000,
                    write: bool = True) -> tuple[pd.DataFrame, bool]:
    """(:func:`~.stats.describe` of ``df``, whether it was read from the cache): read from the store's
    cache when these exact rows were described with these parameters before, else computed (and written
    unless ``write`` is False or the store is read-only)."""
    from ..metrics import METRIC_NAMES
    from .stats import describe

    metrics = [m for m in (metrics or METRIC_NAMES) if m in df.columns]
    path = None
    if store_root is not None:
        digest = _describe_digest(df, metrics, per_patient, confidence, n_resamples)
        path = Path(store_root) / "analysis" / DESCRIBE_VERSION / f"{digest}.json"
        try:
            return _frame_from_record(json.loads(path.read_text())), True
        except (OSError, ValueError, KeyError, TypeError):
            pass
    out = describe(df, metrics, per_patient=per_patient, confidence=confidence, n_resamples=n_resamples)
    if path is not None and write:
        _write_json(path, _frame_record(out))
    return out, False


def default_selections(store) -> dict[str, pd.DataFrame]:
    """The metric rows the result pages open with, in their order: ``all`` (every result, backends and
    modes in display order) and ``latest`` (only the slices of the newest run with results: the pages'
    default slice filter), the latter left out when it equals the former."""
    from .stats import sort_by_backend_mode

    df = sort_by_backend_mode(store.metrics_frame())
    out = {"all": df}
    runs = store.runs()
    for run_id in reversed(runs.sort_values("created_at")["run_id"].tolist()) if len(runs) else []:
        ids = set(store.metrics_frame(run_ids=[run_id])["slice_id"])
        if ids:
            latest = df[df["slice_id"].isin(ids)]
            if len(latest) != len(df):
                out["latest"] = latest
            break
    return out


def precompute_analyses(store, data_root: Path | str | None = None, metrics: Sequence[str] | None = None,
                        progress: bool = False) -> dict:
    """Fill the store's analysis caches for the selections the pages open with (:func:`default_selections`):
    error stats of every result (masks from ``data_root`` or the store's slice pack), the significance
    tests of every backend × metric (slice and patient blocks) and the descriptive statistics of the
    Calibration and Metrics pages (default CI level and resamples). Returns counts and seconds."""
    from ..metrics import METRIC_NAMES
    from .stats import order_backends
    from .stored import stored_error_stats, write_bundle

    t0 = time.perf_counter()
    df = store.metrics_frame()
    if df.empty:
        return {"results": 0, "error_stats": 0, "missing": 0, "bundled": 0, "tests": 0, "described": 0, "seconds": 0.0}
    err = stored_error_stats(store, df["key"].tolist(), data_root, progress=progress)
    bundled = write_bundle(store, err)  # one file for the Review page, instead of one per result
    t1 = time.perf_counter()
    tests = described = 0
    metrics = [m for m in (metrics or METRIC_NAMES) if m in df.columns]
    for sel in default_selections(store).values():
        for backend in order_backends(sel["backend"].unique()):
            d = sel[sel["backend"] == backend]
            for metric in metrics:
                if d[metric].isna().all():
                    continue
                for per_patient in (False, True):
                    try:
                        cached_tests(store.root, d, metric, backend, per_patient=per_patient)
                        tests += 1
                    except (KeyError, ValueError):
                        continue
        # the Calibration page's table, the Metrics page's summary table (slices and patients)
        for what, per_patient in ((CALIBRATION_METRICS, False), (metrics, False), (metrics, True)):
            cached_describe(store.root, sel, what, per_patient=per_patient)
            described += 1
    return {"results": len(df), "error_stats": err.computed + err.cached, "missing": len(err.missing),
            "bundled": bundled, "tests": tests, "described": described, "seconds_error_stats": round(t1 - t0, 2),
            "seconds": round(time.perf_counter() - t0, 2)}


def export_snapshot_with_analyses(out: Path | str, store_root: Path | str | None = None,
                                  data: Path | str | None = None, samples: bool = False) -> dict:
    """Fill the store's analysis caches (:func:`precompute_analyses`; a failure only costs the demo
    speed, never the export), then write the snapshot (:func:`segunc.store.snapshot.export_snapshot`),
    so every page of a demo reads cached analyses. ``samples``: keep the T samples of results stored
    with them (left out by default: no page reads them). Returns the manifest."""
    from ..data.slice_pack import data_roots
    from ..store import ResultStore
    from ..store.snapshot import export_snapshot
    from .stored import renamed_for_maps

    from .. import settings

    if not (settings.store_dir(store_root) / "store.sqlite").is_file():
        return export_snapshot(out, store_root, data=data, samples=samples)  # no store: its clear error
    try:
        store = ResultStore(store_root)
        roots = data_roots(store.con, [data])
        info = precompute_analyses(store, roots[0] if roots else None)
        root = store.root
    except Exception as exc:  # noqa: BLE001
        info, root = {"error": f"{type(exc).__name__}: {exc}"}, store_root
    return export_snapshot(out, root, data=data, precomputed=info, samples=samples, rename_extra=renamed_for_maps)
