"""What a results store (or an imported snapshot) holds, for a presentation: backends, modes, slices,
patients, splits, and the settings its runs actually used (read from each run's recorded spec, e.g.
the number of samples T, never the paper defaults)."""
from __future__ import annotations

import json

import pandas as pd

__all__ = ["store_overview", "run_settings"]

#: spec fields shown per run: (label, path in the recorded spec)
SETTINGS = (("Samples T", ("config", "samples")), ("Dropout p", ("config", "p")), ("Noise σ", ("config", "sigma")),
            ("Dropout placement", ("config", "placement")), ("Fusion weighting", ("config", "fusion", "weighting")),
            ("Fusion sources", ("config", "fusion", "sources")), ("CRF iterations", ("config", "crf", "iterations")),
            ("Split", ("split",)), ("Device", ("device",)))


def _get(spec: dict, path: tuple[str, ...]):
    cur = spec
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def run_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: backend, modes, slices, TTA transforms and :data:`SETTINGS`, from ``settings_json``
    (a run whose spec cannot be read shows "–" rather than a default)."""
    rows = []
    for _, r in runs.iterrows():
        try:
            spec = json.loads(r.get("settings_json") or "{}")
        except (TypeError, ValueError):
            spec = {}
        cfg = spec.get("config") if isinstance(spec.get("config"), dict) else {}
        tta = None
        if cfg and all(k in cfg for k in ("tta_flips", "tta_intensities", "tta_scales")):
            tta = (len(cfg["tta_flips"]) * len(cfg["tta_intensities"]) * len(cfg["tta_scales"])
                   * len(cfg.get("tta_rotations", (0,))))
        row = {"Run": str(r.get("run_id", ""))[:8], "Backend": r.get("backend"),
               "Modes": _fmt(str(r.get("modes", "")).split(",")), "Slices": r.get("n_slices")}
        row.update({label: _fmt(_get(spec, path)) for label, path in SETTINGS})
        row["TTA transforms"] = _fmt(tta)
        rows.append(row)
    return pd.DataFrame(rows)


def store_overview(metrics: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """Counts and names: ``results``, ``backends``, ``modes`` (display order), ``slices``, ``patients``,
    ``splits`` ({split: slices}), ``samples`` (the distinct T of the runs, as recorded) and ``settings``
    (:func:`run_settings`)."""
    from ..analysis.stats import order_backends, order_modes

    settings = run_settings(runs)
    samples = sorted({s for s in settings.get("Samples T", pd.Series(dtype=str)) if s != "–"}, key=str)
    empty = metrics.empty
    return {"results": int(len(metrics)),
            "backends": [] if empty else order_backends(metrics["backend"]),
            "modes": [] if empty else order_modes(metrics["mode"]),
            "slices": 0 if empty else int(metrics["slice_id"].nunique()),
            "patients": 0 if empty else int(metrics["patient_id"].nunique()),
            "splits": {} if empty else {str(k): int(v) for k, v in
                                        metrics.groupby("split")["slice_id"].nunique().items()},
            "samples": samples, "settings": settings}
