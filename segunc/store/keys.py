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
from pathlib import Path, PurePath
from typing import Any

import numpy as np

__all__ = ["canonical_json", "sha256_hex", "settings_id", "result_key", "image_relpath"]


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
