"""Which backends can run here, for the pages that run a model (Run, Your image). Kept apart from the
viewer, as it loads the backends' code (PyTorch), which the pages that read stored results never need."""
from __future__ import annotations

from pages._data import slice_index
from segunc import settings
from segunc.backends import BACKENDS, found_weights


def backend_readiness() -> dict[str, str | None]:
    """Per registered backend: None if it can run here (weights found; UniverSeg also needs the LGG
    data for its support set), else why not."""
    out: dict[str, str | None] = {}
    for name, found in found_weights().items():
        cls = BACKENDS.get(name)
        why = None if found is not None else (cls.weights_hint or "weights missing")
        if why is None and cls.needs_support:
            try:
                slice_index(str(settings.app_data_dir()))
            except Exception:  # noqa: BLE001
                why = f"needs the LGG data (its support set is drawn from train slices); none at `{settings.app_data_dir()}`"
        out[name] = why
    return out
