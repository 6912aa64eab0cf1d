"""Slow analyses computed ahead, so pages read results instead of waiting: the error-detection
stats of every stored result (:func:`~.stored.stored_error_stats`, cached per result beside the
store) and the significance tests of each backend × metric (Friedman and pairwise Wilcoxon,
slice and patient blocks), cached as JSON under ``<store>/analysis/<SIG_VERSION>/`` by a digest of
exactly the values tested, so a cached answer is never stale.

Run at snapshot export and on demand for the local store (:func:`precompute_analyses`); pages
call :func:`cached_tests` (a cache hit for the precomputed selections, computed and stored otherwise).
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

__all__ = ["SIG_VERSION", "cached_tests", "precompute_analyses"]

SIG_VERSION = "significance-v1"


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
    from .stats import friedman, pairwise_wilcoxon

    path = None
    if store_root is not None:
        path = Path(store_root) / "analysis" / SIG_VERSION / f"{_digest(df, metric, backend, modes, per_patient, alpha)}.json"
        try:
            got = json.loads(path.read_text())
            pairs = pd.DataFrame(got["pairs"], columns=got["pair_columns"])
            return {"friedman": got["friedman"], "pairs": pairs, "cached": True}
        except (OSError, ValueError, KeyError):
            pass
    f = friedman(df, metric, backend, modes, per_patient=per_patient).as_dict()
    pairs = pairwise_wilcoxon(df, metric, backend, modes, per_patient=per_patient, alpha=alpha)
    if path is not None and write:
        rec = {"friedman": {k: _jsonable(v) for k, v in f.items()}, "pair_columns": list(pairs.columns),
               "pairs": [[_jsonable(v) for v in row] for row in pairs.itertuples(index=False)]}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            tmp.write_text(json.dumps(rec))
            os.replace(tmp, path)
        except OSError:  # read-only store: go on uncached
            pass
    return {"friedman": f, "pairs": pairs, "cached": False}


def precompute_analyses(store, data_root: Path | str | None = None, metrics: Sequence[str] | None = None,
                        progress: bool = False) -> dict:
    """Fill the store's analysis caches: error stats of every result (masks from ``data_root`` or the
    store's slice pack) and the significance tests of every backend × metric over all its results
    (slice and patient blocks). Returns counts and seconds."""
    from ..metrics import METRIC_NAMES
    from .stats import order_backends
    from .stored import stored_error_stats

    t0 = time.perf_counter()
    df = store.metrics_frame()
    if df.empty:
        return {"results": 0, "error_stats": 0, "missing": 0, "tests": 0, "seconds": 0.0}
    err = stored_error_stats(store, df["key"].tolist(), data_root, progress=progress)
    t1 = time.perf_counter()
    tests = 0
    for backend in order_backends(df["backend"].unique()):
        d = df[df["backend"] == backend]
        for metric in metrics or METRIC_NAMES:
            if metric not in d.columns or d[metric].isna().all():
                continue
            for per_patient in (False, True):
                try:
                    cached_tests(store.root, d, metric, backend, per_patient=per_patient)
                    tests += 1
                except (KeyError, ValueError):
                    continue
    return {"results": len(df), "error_stats": err.computed + err.cached, "missing": len(err.missing), "tests": tests,
            "seconds_error_stats": round(t1 - t0, 2), "seconds": round(time.perf_counter() - t0, 2)}


def export_snapshot_with_analyses(out: Path | str, store_root: Path | str | None = None,
                                  data: Path | str | None = None) -> dict:
    """Fill the store's analysis caches (:func:`precompute_analyses`; a failure only costs the demo
    speed, never the export), then write the snapshot (:func:`segunc.store.snapshot.export_snapshot`),
    so every page of a demo reads cached analyses. Returns the manifest."""
    from ..data.slice_pack import data_roots
    from ..store import ResultStore
    from ..store.snapshot import export_snapshot

    from .. import settings

    if not (settings.store_dir(store_root) / "store.sqlite").is_file():
        return export_snapshot(out, store_root, data=data)  # no store here: its clear error, nothing created
    try:
        store = ResultStore(store_root)
        roots = data_roots(store.con, [data])
        info = precompute_analyses(store, roots[0] if roots else None)
        root = store.root
    except Exception as exc:  # noqa: BLE001
        info, root = {"error": f"{type(exc).__name__}: {exc}"}, store_root
    return export_snapshot(out, root, data=data, precomputed=info)
