"""The slices behind stored results, packed so a snapshot stands alone (no data folder needed).

``slices.npz`` (beside ``store.sqlite``) holds, for every distinct ``image`` of the results table,
the image (H W 3 uint8, the three MRI channels) and its ground-truth mask (bit-packed), deflate-
compressed: about 40–60 kB per slice. ``index`` lists the stored image paths (relative to the data
folder, as in the result keys) in array order.

:func:`pack_slices` builds it from the data folders the store's runs used; :class:`SlicePack`
reads one slice at a time and lists what it holds (:meth:`SlicePack.entries`, for browsing a
snapshot's slices); :func:`load_stored_slice` is what pages call: the data folder when it has the
slice, else the pack, else None.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["PACK_NAME", "SlicePack", "pack_slices", "write_pack", "open_pack", "load_stored_slice", "data_roots",
           "image_entry"]

PACK_NAME = "slices.npz"


def data_roots(con: sqlite3.Connection, extra: Iterable[Path | str | None] = ()) -> list[Path]:
    """Data folders the store's runs read (``data`` of job and run specs), then ``extra``, that exist."""
    seen: list[Path] = []
    texts = []
    for table, col in (("jobs", "spec_json"), ("runs", "settings_json")):
        try:
            texts += [r[0] for r in con.execute(f"SELECT {col} FROM {table}")]
        except sqlite3.Error:
            pass
    cands: list = []
    for t in texts:
        try:
            cands.append(json.loads(t).get("data"))
        except (TypeError, ValueError, AttributeError):
            continue
    for c in [*cands, *extra]:
        if not c:
            continue
        p = Path(c).expanduser()
        if p.is_dir() and p not in seen:
            seen.append(p)
    return seen


def _find(image: str, roots: Sequence[Path]) -> Path | None:
    for r in roots:
        p = r / image
        if p.is_file():
            return p
    return None


def pack_slices(con: sqlite3.Connection, roots: Sequence[Path | str]) -> tuple[bytes, dict]:
    """The pack (npz bytes) of every distinct stored ``image`` found under one of ``roots``, and a
    summary ``{"slices", "missing": [image, ...], "bytes"}`` (a slice not found is listed, not fatal)."""
    from .lgg import SliceError, load_image, load_mask

    roots = [Path(r) for r in roots]
    images = [r[0] for r in con.execute("SELECT DISTINCT image FROM results WHERE image IS NOT NULL ORDER BY image")]
    arrays: dict[str, np.ndarray] = {}
    index, missing = [], []
    for image in images:
        p = _find(image, roots)
        if p is None:
            missing.append(image)
            continue
        try:
            img = load_image(p)
            mask = load_mask(p.with_name(f"{p.stem}_mask{p.suffix}"), img.shape[:2])
        except SliceError:
            missing.append(image)
            continue
        i = len(index)
        index.append(image)
        arrays[f"image_{i}"] = img
        arrays[f"mask_{i}"] = np.packbits(mask, axis=None)
        arrays[f"shape_{i}"] = np.array(mask.shape, dtype=np.int32)
    buf = io.BytesIO()
    np.savez_compressed(buf, index=np.array(index, dtype=str), **arrays)
    data = buf.getvalue()
    return data, {"slices": len(index), "missing": missing, "bytes": len(data)}


def write_pack(store_root: Path | str, extra_roots: Iterable[Path | str | None] = ()) -> dict:
    """Write ``<store>/slices.npz`` for the local store (atomically); returns the summary."""
    root = Path(store_root)
    con = sqlite3.connect(str(root / "store.sqlite"), timeout=30)
    try:
        data, summary = pack_slices(con, data_roots(con, extra_roots))
    finally:
        con.close()
    tmp = root / f".{PACK_NAME}.{secrets.token_hex(4)}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, root / PACK_NAME)
    return summary


def image_entry(image: str) -> dict | None:
    """Where a stored image path (``<PATIENT>/<PATIENT>_<n>.tif``) sits in the LGG layout: ``image``,
    ``slice_id``, ``patient_folder``, ``patient_id``, ``index``, ``split`` (as :func:`~.lgg.discover`
    and :func:`~.lgg.split_of` give them); None for a path not named like an LGG slice."""
    from .lgg import _SLICE_RE, DataError, patient_id, split_of

    name = Path(image).name
    m = _SLICE_RE.match(name)
    if not m:
        return None
    folder = m.group("folder")
    try:
        pid = patient_id(folder)
    except DataError:
        return None
    return {"image": image, "slice_id": f"{folder}_{int(m.group('n'))}", "patient_folder": folder,
            "patient_id": pid, "index": int(m.group("n")), "split": split_of(pid)}


class SlicePack:
    """Read access to a ``slices.npz``: ``images`` (stored paths), ``load(image)`` → (image, mask)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._z = np.load(self.path, allow_pickle=False)
        self.images = [str(s) for s in self._z["index"]]
        self._pos = {im: i for i, im in enumerate(self.images)}

    def __contains__(self, image: str) -> bool:
        return image in self._pos

    def __len__(self) -> int:
        return len(self.images)

    def load(self, image: str) -> tuple[np.ndarray, np.ndarray]:
        """(H W 3 uint8 image, boolean mask) of a stored image path; KeyError if not packed."""
        return self._z[f"image_{self._pos[image]}"], self.mask(image)

    def mask(self, image: str) -> np.ndarray:
        """The boolean mask alone of a stored image path (the image is not decompressed); KeyError if not packed."""
        i = self._pos[image]
        shape = tuple(int(v) for v in self._z[f"shape_{i}"])
        return np.unpackbits(self._z[f"mask_{i}"], count=shape[0] * shape[1]).reshape(shape).astype(bool)

    def entries(self) -> list[dict]:
        """One dict per packed slice named like an LGG slice (:func:`image_entry`), plus ``tumour_px``
        (ground-truth foreground pixels), sorted by patient folder and slice number."""
        out = []
        for image in self.images:
            e = image_entry(image)
            if e is not None:
                out.append({**e, "tumour_px": int(self.mask(image).sum())})
        return sorted(out, key=lambda e: (e["patient_folder"], e["index"]))

    def close(self) -> None:
        self._z.close()


_OPEN: dict[tuple[str, float], SlicePack] = {}


def open_pack(store_root: Path | str) -> SlicePack | None:
    """The store's pack (cached per file and mtime), or None when it has none or it is unreadable."""
    p = Path(store_root) / PACK_NAME
    try:
        key = (str(p), p.stat().st_mtime)
    except OSError:
        return None
    if key not in _OPEN:
        try:
            _OPEN[key] = SlicePack(p)
        except (OSError, ValueError, KeyError):
            return None
    return _OPEN[key]


def load_stored_slice(store_root: Path | str, image: str,
                      data_root: Path | str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(image, mask) of a stored result's ``image``: from ``data_root`` when the file is there, else from
    the store's pack (a snapshot on a machine without the data), else None."""
    from .lgg import SliceError, load_image, load_mask

    if data_root is not None:
        p = Path(data_root) / image
        if p.is_file():
            try:
                img = load_image(p)
                return img, load_mask(p.with_name(f"{p.stem}_mask{p.suffix}"), img.shape[:2])
            except SliceError:
                pass
    pack = open_pack(store_root)
    if pack is not None and image in pack:
        return pack.load(image)
    return None
