"""Error-detection numbers of stored results: :func:`~.errors.slice_error_stats` on the maps of
the results store against the ground-truth masks of the data folder.

Computing them reads every map file and mask (≈ 0.1 s per result on one core), so each
result's numbers are cached beside the store, in ``<store>/analysis/<CACHE_VERSION>/``: one
small ``.npz`` per result, named by its key and the sha256 of its map file (a recomputed map
gets a new cache entry; a stale one is never read). Writing is atomic (temporary file +
``os.replace``), and a store on a read-only disk simply goes uncached. :func:`write_bundle`
(run at snapshot export) gathers them into one file, ``bundle.npz``, with each result's map
sha256, so a page reads one file instead of one per result; an entry whose sha256 no longer
matches its row is ignored there too.

:class:`StoredErrors` holds the scalar columns (one row per result key, joinable to
``ResultStore.metrics_frame()``) and the per-key pixel histograms that
:func:`~.errors.pooled_error_detection` pools over any subset of results.
"""
from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import BAND_PX, HIST_BINS, UNCERTAINTY_MAPS, pooled_error_detection, slice_error_stats

__all__ = ["CACHE_VERSION", "BUNDLE", "SCALAR_SUFFIXES", "StoredErrors", "stored_error_stats", "write_bundle",
           "renamed_for_maps", "mask_path_of", "slice_scores"]

#: cache folder name: bump when slice_error_stats or its defaults change
CACHE_VERSION = f"error_stats-v1-b{BAND_PX}-otsu-{HIST_BINS}-log"
#: the per-result caches gathered into one file (:func:`write_bundle`), in the cache folder
BUNDLE = "bundle.npz"
SCALAR_SUFFIXES = ("auroc", "auprc", "error_dice", "in", "near", "image")
SCALARS = ("error_px", "error_frac", *(f"{m}_{s}" for m in UNCERTAINTY_MAPS for s in SCALAR_SUFFIXES))


def slice_scores(columns: Sequence[str]) -> list[str]:
    """Slice-level uncertainty scores among ``columns``: the store's image means, then the means inside
    (``*_in``) and around (``*_near``) the predicted mask when error stats were joined."""
    base = ["mean_entropy", "mean_variance", "mean_mi"]
    extra = [f"{m}_{s}" for s in ("near", "in") for m in UNCERTAINTY_MAPS]
    return [c for c in base + extra if c in set(columns)]


def mask_path_of(data_root: Path | str, image: str) -> Path:
    """The ground-truth mask beside a stored ``image`` path (relative to the data folder)."""
    from ..store.keys import check_image

    p = Path(data_root) / check_image(image)  # a row edited by hand must not name a file outside the data folder
    return p.with_name(f"{p.stem}_mask{p.suffix}")


@dataclass
class StoredErrors:
    """Per-result error stats. ``frame``: ``key`` + :data:`SCALARS` (one row per key found);
    ``hists[key][map] = (error counts, correct counts)``; ``missing``: keys not computed, with why."""

    frame: pd.DataFrame
    hists: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0

    def join(self, metrics: pd.DataFrame) -> pd.DataFrame:
        """``metrics`` (store rows with a ``key``) widened with the scalar columns (NaN where missing)."""
        base = metrics.drop(columns=[c for c in SCALARS if c in metrics.columns])
        return base.merge(self.frame, on="key", how="left")

    def pooled(self, metrics: pd.DataFrame, by: Sequence[str] = ("backend", "mode"),
               map_names: Sequence[str] = UNCERTAINTY_MAPS) -> pd.DataFrame:
        """Pooled pixel AUROC / AUPRC (and per-slice medians) of each map per ``by`` group of ``metrics``:
        columns ``by``…, ``map``, then those of :func:`~.errors.pooled_error_detection`."""
        by = [c for c in by if c in metrics.columns]
        joined = self.join(metrics)
        out = []
        for key, g in joined.groupby(by, sort=False) if by else [((), joined)]:
            key = key if isinstance(key, tuple) else (key,)
            items = []
            for row in g.itertuples(index=False):
                h = self.hists.get(row.key)
                if h is None:
                    continue
                d = {f"{m}_{s}": getattr(row, f"{m}_{s}") for m in map_names for s in ("auroc", "auprc", "error_dice")}
                for m in map_names:
                    d[f"{m}_hist_err"], d[f"{m}_hist_ok"] = h[m]
                items.append(d)
            if not items:
                continue
            p = pooled_error_detection(items, map_names).reset_index()
            for i, c in enumerate(by):
                p.insert(i, c, key[i])
            out.append(p)
        cols = [*by, "map", "pooled_auroc", "pooled_auprc", "median_auroc", "median_auprc", "median_error_dice",
                "error_px", "n_slices"]
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def _cache_file(root: Path, key: str, sha: str) -> Path:
    from ..store.keys import check_key, check_sha256

    check_key(key), check_sha256(sha, "map sha256")  # joined into a path: hex only (UnsafeNameError otherwise)
    return root / "analysis" / CACHE_VERSION / key[:2] / f"{key}.{sha[:16]}.npz"


def _read_cache(path: Path) -> tuple[dict, dict] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [str(n) for n in z["names"]]
            maps = [str(n) for n in z["maps"]]
            if names != list(SCALARS) or maps != list(UNCERTAINTY_MAPS):
                return None
            scal = dict(zip(names, z["scalars"].astype(float).tolist()))
            h = z["hists"].astype(np.int64)
            return scal, {m: (h[i, 0], h[i, 1]) for i, m in enumerate(maps)}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _write_cache(path: Path, scal: Mapping[str, float], hists: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, names=np.array(SCALARS), maps=np.array(UNCERTAINTY_MAPS),
                            scalars=np.array([scal[n] for n in SCALARS], dtype=np.float64),
                            hists=np.stack([np.stack(hists[m]) for m in UNCERTAINTY_MAPS]).astype(np.int32))
        _replace(path, buf.getvalue())
    except OSError as exc:  # read-only store: go on uncached; a full disk: the one clear error
        from ..fsutil import disk_full_error, is_disk_full

        if is_disk_full(exc):
            raise disk_full_error(f"analysis cache {path.parent}", exc) from exc


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _bundle_path(root: Path | str) -> Path:
    return Path(root) / "analysis" / CACHE_VERSION / BUNDLE


def write_bundle(store, errors: StoredErrors) -> int:
    """Gather the error stats of ``errors`` (keys found in ``store``) into one file beside the per-result
    caches, with each result's map sha256 (read back by :func:`stored_error_stats` only while it matches
    the row). Returns how many results it holds (0, nothing written, for none or a read-only store)."""
    if getattr(store, "read_only", False) or errors.frame.empty:
        return 0
    rows = _rows(store, errors.frame["key"].tolist())
    keys = [k for k in errors.frame["key"] if k in rows and k in errors.hists]
    if not keys:
        return 0
    frame = errors.frame.set_index("key").loc[keys, list(SCALARS)]
    hists = np.stack([np.stack([np.stack(errors.hists[k][m]) for m in UNCERTAINTY_MAPS]) for k in keys])
    buf = io.BytesIO()
    np.savez_compressed(buf, names=np.array(SCALARS), maps=np.array(UNCERTAINTY_MAPS), keys=np.array(keys),
                        shas=np.array([rows[k][1] for k in keys]), scalars=frame.to_numpy(np.float64),
                        hists=hists.astype(np.int32))
    path = _bundle_path(store.root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace(path, buf.getvalue())
    except OSError:
        return 0
    return len(keys)


def renamed_for_maps(member: str, blob: bytes, changed: Mapping[str, tuple[str, str]]) -> tuple[str, bytes]:
    """A snapshot member (``analysis/...``) as it must read for map files rewritten at export, ``changed``
    = {key: (old map sha256, new)} (their samples left out; the maps themselves, hence the error stats,
    are the same): a per-result cache takes the new sha256 in its name, the bundle in its ``shas``; any
    other file is returned as it is."""
    parts = member.split("/")
    if len(parts) < 3 or parts[:2] != ["analysis", CACHE_VERSION]:
        return member, blob
    if parts[2:] == [BUNDLE]:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        shas = [changed[str(k)][1] if str(k) in changed and str(h) == changed[str(k)][0] else str(h)
                for k, h in zip(arrays["keys"], arrays["shas"])]
        arrays["shas"] = np.array(shas, dtype=arrays["shas"].dtype)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return member, buf.getvalue()
    key, _, rest = parts[-1].partition(".")
    if key in changed and rest == f"{changed[key][0][:16]}.npz":
        return "/".join([*parts[:-1], f"{key}.{changed[key][1][:16]}.npz"]), blob
    return member, blob


def _read_bundle(root: Path | str) -> tuple[dict[str, tuple[str, int]], np.ndarray, np.ndarray] | None:
    """({key: (map sha256, row)}, scalars, hists) of the bundle, None when absent or unreadable."""
    try:
        with np.load(_bundle_path(root), allow_pickle=False) as z:
            if [str(n) for n in z["names"]] != list(SCALARS) or [str(n) for n in z["maps"]] != list(UNCERTAINTY_MAPS):
                return None
            keys, shas, scal, hists = z["keys"], z["shas"], z["scalars"], z["hists"]
            if not (len(keys) == len(shas) == len(scal) == len(hists)) or scal.shape[1:] != (len(SCALARS),) \
                    or hists.shape[1:3] != (len(UNCERTAINTY_MAPS), 2):
                return None
            index = {str(k): (str(h), i) for i, (k, h) in enumerate(zip(keys, shas))}
            return index, scal.astype(float), hists
    except (OSError, ValueError, KeyError, EOFError, IndexError):
        return None


def _rows(store, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    out = {}
    keys = list(dict.fromkeys(keys))
    for i in range(0, len(keys), 900):
        part = keys[i:i + 900]
        q = f"SELECT key, image, map_sha256 FROM results WHERE key IN ({', '.join('?' * len(part))})"
        out.update({k: (img, sha) for k, img, sha in store.con.execute(q, part).fetchall()})
    return out


def _mask(store, data_root, image: str, load_mask) -> np.ndarray:
    """The ground truth from the data folder, else from the store's slice pack (a snapshot without data)."""
    from ..data import SliceError
    from ..data.slice_pack import load_stored_slice

    if data_root is not None:
        try:
            return load_mask(mask_path_of(data_root, image))
        except SliceError:
            pass
    got = load_stored_slice(store.root, image)
    if got is None:
        raise SliceError(mask_path_of(data_root or ".", image), "mask file is missing (and not in the store's slice pack)")
    return got[1]


def stored_error_stats(store, keys: Sequence[str], data_root: Path | str, *, cache: bool = True,
                       progress: bool | Callable[[int, int], None] = False) -> StoredErrors:
    """:func:`slice_error_stats` of each stored result in ``keys`` against its mask in ``data_root``.

    ``data_root`` may be None or lack a slice: its mask then comes from the store's slice pack
    (:mod:`segunc.data.slice_pack`). ``progress``: True for a tqdm bar on stderr, or ``callable(done, total)``. A result whose mask
    or map cannot be read is listed in ``missing`` (with the reason) instead of failing the lot.
    ``cache``: read and write the per-result cache files; a store opened read-only (``store.read_only``,
    the app's demo mode) only reads them.
    """
    import sys

    from ..data import SliceError, load_mask

    rows = _rows(store, keys)
    keys = list(dict.fromkeys(keys))
    write = cache and not getattr(store, "read_only", False)
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(keys), desc="error stats", unit="result", file=sys.stderr, dynamic_ncols=True)
    out = StoredErrors(pd.DataFrame(columns=["key", *SCALARS]))
    records, masks = [], {}
    bundle = _read_bundle(store.root) if cache else None
    for i, key in enumerate(keys):
        if key not in rows:
            out.missing[key] = "not in the store"
        else:
            image, sha = rows[key]
            try:
                path = _cache_file(store.root, key, sha)
            except ValueError as exc:
                path = None
                out.missing[key] = f"{type(exc).__name__}: {exc}"
            got = None
            if bundle is not None and path is not None and bundle[0].get(key, ("",))[0] == sha:
                j = bundle[0][key][1]
                h = bundle[2][j].astype(np.int64)
                got = (dict(zip(SCALARS, bundle[1][j].tolist())), {m: (h[n, 0], h[n, 1]) for n, m in enumerate(UNCERTAINTY_MAPS)})
            elif cache and path is not None:
                got = _read_cache(path)
            if got is not None:
                out.cached += 1
            elif path is None:
                pass
            else:
                try:
                    if image not in masks:
                        masks.clear()  # keys come slice by slice: hold one mask at a time
                        masks[image] = _mask(store, data_root, image, load_mask)
                    maps = store.load_maps(key)
                    st = slice_error_stats(maps, masks[image])
                except (SliceError, KeyError, ValueError, OSError) as exc:
                    out.missing[key] = f"{type(exc).__name__}: {str(exc).strip(chr(39))}"
                    got = None
                else:
                    got = ({n: float(st[n]) for n in SCALARS},
                           {m: (st[f"{m}_hist_err"], st[f"{m}_hist_ok"]) for m in UNCERTAINTY_MAPS})
                    out.computed += 1
                    if write:
                        _write_cache(path, *got)
            if got is not None:
                records.append({"key": key, **got[0]})
                out.hists[key] = got[1]
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(i + 1, len(keys))
    if bar is not None:
        bar.close()
    if records:
        out.frame = pd.DataFrame(records, columns=["key", *SCALARS])
    return out
