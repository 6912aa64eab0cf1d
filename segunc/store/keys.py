"""Content-addressed result keys.

A stored result is named by what determines it::

    settings_id = sha256(canonical_json(material))
    key         = sha256(canonical_json({"material": material, "slice_id": <slice id>,
                                         "image": <image path relative to the data root>}))

``material`` is :func:`segunc.pipeline.result_key_material` (backend settings incl. support
set ids and prompt options, weights sha256, mode + parameters of the mode and of every mode it
depends on — T, seed, p, σ, TTA set, fusion, CRF — temperature and ``PIPELINE_VERSION``).
``canonical_json`` sorts keys, has no whitespace, writes tuples as lists and paths as POSIX
strings, so equal settings give equal bytes on every machine. The image is identified by its
path relative to the data root (``TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_12.tif``), not by
its bytes: the LGG files are immutable; replacing a TIFF in place under the same name is not
detected (bump ``PIPELINE_VERSION`` or use a new folder name).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

import numpy as np

__all__ = ["canonical_json", "sha256_hex", "settings_id", "result_key", "image_relpath", "UnsafeNameError",
           "check_key", "check_sha256", "check_map_file", "check_image", "check_row_names", "KEY_RE", "MAP_FILE_RE", "NAME_RE", "NAME_COLUMNS"]

#: a result key / settings id / sha256: 64 lowercase hex digits
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
#: a map file, relative to the store: ``maps/<key[:2]>/<key>.<8 hex token>.npz``
MAP_FILE_RE = re.compile(r"^maps/[0-9a-f]{2}/[0-9a-f]{64}\.[0-9a-f]{8}\.npz$")


#: characters of a name shown in the app (slice / patient ids, backend, mode, split): no Markdown or HTML
NAME_CHARS = "A-Za-z0-9 _.+-"
NAME_RE = re.compile(f"^[{NAME_CHARS}]{{1,200}}$")
#: the result columns that are names (checked by :func:`check_row_names`, filtered by ``metrics_frame``)
NAME_COLUMNS = ("backend", "mode", "slice_id", "patient_id", "patient_folder", "split")


class UnsafeNameError(ValueError):
    """A database value that becomes a path or a file name but is not of the form the store writes
    (a hand-edited store or a hostile snapshot)."""


def check_key(key, what: str = "result key") -> str:
    """``key`` if it is 64 lowercase hex digits, else :class:`UnsafeNameError`."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise UnsafeNameError(f"{what} {key!r} is not 64 lowercase hex digits")
    return key


def check_sha256(sha, what: str = "sha256") -> str:
    return check_key(sha, what)


def check_map_file(rel) -> str:
    """``rel`` if it is a map file name of the form the store writes (inside ``maps/``), else UnsafeNameError."""
    if not isinstance(rel, str) or not MAP_FILE_RE.match(rel) or rel[5:7] != rel[8:10]:
        raise UnsafeNameError(f"map file {rel!r} is not of the form maps/<xx>/<64 hex>.<8 hex>.npz")
    return rel


def check_image(image) -> str:
    """``image`` if it is a relative POSIX path inside the data folder (no ``..``, no absolute or drive path,
    no backslash or control character), else UnsafeNameError."""
    parts = PurePosixPath(image).parts if isinstance(image, str) else ()
    if (not parts or image.startswith("/") or ":" in parts[0] or any(p in (".", "..") for p in parts)
            or any(c == "\\" or ord(c) < 32 for c in image)):
        raise UnsafeNameError(f"image path {image!r} is not a relative path of plain names inside the data folder")
    return image


def check_row_names(row) -> None:
    """Check every value of a ``results`` row that becomes a path or a name (key, map file, sha256, image,
    and the names the app shows: :data:`NAME_COLUMNS`)."""
    check_key(row["key"])
    check_map_file(row["map_file"])
    check_sha256(row["map_sha256"], "map sha256")
    if row["image"] is not None:
        check_image(row["image"])
    for col in NAME_COLUMNS:
        value = row[col]
        if value is not None and (not isinstance(value, str) or not NAME_RE.match(value)):
            raise UnsafeNameError(f"{col} {value!r} is not a plain name (letters, digits, space, _ . + -)")


def _default(o: Any):
    if isinstance(o, PurePath):
        return o.as_posix()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON-serialisable in a key: {type(o).__name__}")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, compact separators, ASCII, tuples as lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=_default)


def sha256_hex(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def settings_id(material: dict) -> str:
    """Hash of the key material alone (shared by every slice of one setting)."""
    return sha256_hex(canonical_json(material))


def result_key(material: dict, slice_id: str, image: str) -> str:
    """The key of one (slice, mode) result; ``image`` = :func:`image_relpath`."""
    return sha256_hex(canonical_json({"material": material, "slice_id": slice_id, "image": image}))


def image_relpath(image_path: Path | str, root: Path | str) -> str:
    """POSIX path of the slice's image relative to the (resolved) data root; the name if outside it."""
    p, r = Path(image_path), Path(root)
    try:
        return p.resolve().relative_to(r.resolve()).as_posix()
    except ValueError:
        return PurePath(p.parent.name, p.name).as_posix()
