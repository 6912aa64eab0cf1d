"""Short display strings used by several pages."""
from __future__ import annotations

import json

import numpy as np


def fmt_seconds(s: float | None) -> str:
    """``42 s``, ``12 min``, ``1.5 h``; ``–`` for None or not finite."""
    if s is None or not np.isfinite(s):
        return "–"
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def run_label(r) -> str:
    """One run (a row of the store's runs table) as ``backend · modes · T=… · when · id``."""
    try:
        cfg = json.loads(r.settings_json).get("config", {})
        extra = f" · T={cfg['samples']}" if "samples" in cfg else ""
    except (TypeError, ValueError, AttributeError):
        extra = ""
    when = r.created_at.strftime("%Y-%m-%d %H:%M") if hasattr(r.created_at, "strftime") else ""
    return f"{r.backend} · {r.modes}{extra} · {when} · {str(r.run_id)[:8]}"
