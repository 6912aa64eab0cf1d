"""Backends: pretrained models behind one batched contract (see :mod:`.base`)."""
from __future__ import annotations

from ..registry import Registry
from .base import Backend, WeightsError, box_from_mask

BACKENDS: Registry[Backend] = Registry("backend")

# Each module registers itself; import order = display order.
from . import unet, litemedsam, medsam, universeg  # noqa: E402,F401


def get_backend(name: str, **kwargs) -> Backend:
    """Instantiate a registered backend by name."""
    return BACKENDS.get(name)(**kwargs)


def found_weights(weights_dir=None) -> dict:
    """Per registered backend (display order): the weights file it would load, or None when missing
    (a lookup that fails counts as missing)."""
    out = {}
    for name in BACKENDS.names():
        try:
            out[name] = BACKENDS.get(name).find_weights(weights_dir)
        except Exception:  # noqa: BLE001 - e.g. an unreadable weights folder
            out[name] = None
    return out


__all__ = ["BACKENDS", "Backend", "WeightsError", "box_from_mask", "found_weights", "get_backend"]
