"""Backends: pretrained models behind one batched contract (see :mod:`.base`)."""
from __future__ import annotations

from ..registry import Registry
from .base import Backend, WeightsError, box_from_mask, file_sha256

BACKENDS: Registry[Backend] = Registry("backend")

# Each module registers itself; import order = display order.
from . import unet, litemedsam, medsam, universeg  # noqa: E402,F401


def get_backend(name: str, **kwargs) -> Backend:
    """Instantiate a registered backend by name."""
    return BACKENDS.get(name)(**kwargs)


__all__ = ["BACKENDS", "Backend", "WeightsError", "box_from_mask", "file_sha256", "get_backend"]
