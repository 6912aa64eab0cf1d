"""Backends: pretrained models behind one batched contract (see :mod:`.base`, which holds the registry)."""
from __future__ import annotations

from .base import (BACKENDS, Backend, WeightsError, available_devices, box_from_mask, default_device, found_weights,
                   get_backend)

# Each module registers itself in BACKENDS; import order = display order.
from . import unet, litemedsam, medsam, universeg  # noqa: E402,F401

__all__ = ["BACKENDS", "Backend", "WeightsError", "available_devices", "box_from_mask", "default_device",
           "found_weights", "get_backend"]
