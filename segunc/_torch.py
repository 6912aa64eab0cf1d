"""PyTorch imported on its first use rather than when a backend or mode module is imported.

The backends' descriptions (name, weight files, hint, needs a box / a support set, where the weights
are) are class attributes, and the mode and step names are registry keys: the app's Set-up, Run and
Your-image pages and a job's validation read them. Listing them must not cost PyTorch's import (1–2 s,
and the first page view waits for it), so the backend, mode and pipeline modules take ``torch``,
``nn`` and ``F`` from here: each name stands for its module and imports it when an attribute is first
looked up (``torch.zeros``, ``nn.Module``). Networks that subclass ``nn.Module`` live in their own
modules (:mod:`.backends.unet_net`, :mod:`.backends.universeg_net`), imported by ``build``.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = ["F", "nn", "torch"]


class _OnFirstUse:
    """Stands for the module ``name``; imports it at the first attribute lookup (import locks make
    concurrent first lookups one import)."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use{'' if self._module is None else ': imported'}>"


if TYPE_CHECKING:  # type checkers and IDEs see the real modules
    import torch
    import torch.nn.functional as F
    from torch import nn
else:
    torch = _OnFirstUse("torch")
    nn = _OnFirstUse("torch.nn")
    F = _OnFirstUse("torch.nn.functional")
