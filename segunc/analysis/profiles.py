"""Labels for results computed with a settings profile, so they are never read as the defaults.

A sweep run with ``--preset paper`` and/or ``--tuned tuned.json`` (or the Run page's tuned profile)
records a ``profile`` in its settings JSON (``preset:paper``, ``tuned on val (tuned.json)``, or
both joined by `` + ``). Here that becomes a short label (``paper preset``, ``tuned on val``),
and a result row's mode a *profiled mode* ``<mode>@<label>`` that the display functions
(:func:`~.stats.mode_label`, :func:`~.stats.order_modes`) show as ``Fusion (tuned on val)``,
right after the mode's default row. Pure functions on strings and frames.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["TUNED", "PAPER", "SEP", "profile_label", "run_profiles", "profiled_mode", "split_profile",
           "with_profiles", "result_labels", "profile_column", "profile_note", "tuned_choice_label",
           "tuned_settings_text", "PROFILE_ORDER"]

TUNED = "tuned on val"
PAPER = "paper preset"
#: between a mode and its profile label in a profiled mode (mode names are identifiers: never contain it)
SEP = "@"
#: display order of profiles after the default (no profile)
PROFILE_ORDER = (PAPER, TUNED, f"{PAPER} + {TUNED}")


def profile_label(profile: str | None) -> str:
    """A run's recorded profile → its label: ``preset:paper`` → ``paper preset``; ``tuned on val (x.json)``
    → ``tuned on val``; both → ``paper preset + tuned on val``; None / empty → ``""`` (the defaults).
    Another preset ``preset:NAME`` → ``NAME preset``; anything else is kept as it is."""
    if not profile:
        return ""
    parts = []
    for part in (p.strip() for p in str(profile).split(" + ")):
        if part.startswith("preset:"):
            parts.append(f"{part.split(':', 1)[1]} preset")
        elif part.startswith(TUNED):
            parts.append(TUNED)
        elif part:
            parts.append(part)
    return " + ".join(parts)


def _profile_of(settings_json: Any) -> str:
    try:
        d = json.loads(settings_json) if isinstance(settings_json, str) else settings_json
    except ValueError:
        return ""
    return profile_label(d.get("profile")) if isinstance(d, dict) else ""


def run_profiles(runs: pd.DataFrame) -> dict[str, str]:
    """run_id → profile label (``""`` for default runs) from the store's runs table (``settings_json``)."""
    if runs is None or runs.empty or "settings_json" not in runs.columns:
        return {}
    return {str(r): _profile_of(s) for r, s in zip(runs["run_id"], runs["settings_json"])}


def profiled_mode(mode: str, label: str) -> str:
    """``fusion`` + ``tuned on val`` → ``fusion@tuned on val``; no label → the mode itself."""
    return f"{mode}{SEP}{label}" if label else mode


def split_profile(mode: str) -> tuple[str, str]:
    """``fusion@tuned on val`` → (``fusion``, ``tuned on val``); a plain mode → (mode, ``""``)."""
    base, _, label = str(mode).partition(SEP)
    return base, label


def with_profiles(df: pd.DataFrame, profiles: Mapping[str, str], links: pd.DataFrame | None = None) -> pd.DataFrame:
    """The metric rows with a ``profile`` column (the label of the row's run, ``""`` for defaults) and
    each profiled row's ``mode`` made a profiled mode, so statistics and plots keep it apart from
    the default rows of that mode.

    ``links`` (``key``, ``run_id``: the store's :meth:`~segunc.store.ResultStore.run_links`) names every
    run that asked for a result, not only the one that computed it. A result asked for by runs of
    several profiles (``--preset paper`` computes Normal exactly as the defaults do: one key) is then
    a row under each of their labels, so a profile's modes do not depend on which sweep ran first."""
    out = df.copy()
    if out.empty:
        out["profile"] = pd.Series(dtype=object)
        return out
    label = (lambda r: profiles.get(str(r), ""))
    out["profile"] = out["run_id"].map(label).fillna("")
    if links is not None and len(links) and "key" in out.columns:
        asked = links[links["key"].isin(out["key"])]
        asked = pd.DataFrame({"key": asked["key"], "profile": asked["run_id"].map(label).fillna("")})
        extra = asked.merge(out[["key", "profile"]], on=["key", "profile"], how="left", indicator=True)
        extra = extra[extra["_merge"] == "left_only"].drop(columns="_merge").drop_duplicates()
        if len(extra):  # a copy of the key's (first) row per profile, placed right after it
            out["_pos"] = np.arange(len(out), dtype=float)
            more = out.drop_duplicates("key").set_index("key").loc[extra["key"]].reset_index()
            more = more.assign(profile=extra["profile"].to_numpy(), _pos=more["_pos"] + 0.5)
            out = pd.concat([out, more[out.columns]], ignore_index=True).sort_values("_pos", kind="stable")
            out = out.drop(columns="_pos").reset_index(drop=True)
    marked = out["profile"] != ""
    if marked.any():
        out.loc[marked, "mode"] = [profiled_mode(m, p) for m, p in zip(out.loc[marked, "mode"], out.loc[marked, "profile"])]
    return out


def result_labels(df: pd.DataFrame, profiles: Mapping[str, str], links: pd.DataFrame | None = None) -> pd.Series:
    """Per row of ``df`` (``key``, ``run_id``): ``""`` when a run with segunc's defaults asked for its result
    (it is the default result, whatever else shares it), else the labels of the runs that did, joined by
    `` / `` (e.g. ``tuned on val``): what a page showing one result per mode must say next to the mode."""
    label = (lambda r: profiles.get(str(r), ""))
    asked: dict[str, set[str]] = {}
    if links is not None and len(links):
        for k, r in zip(links["key"], links["run_id"]):
            asked.setdefault(k, set()).add(label(r))
    out = []
    for k, r in zip(df["key"], df["run_id"]):
        got = asked.get(k, set()) | {label(r)}
        out.append("" if "" in got else " / ".join(sorted(got)))
    return pd.Series(out, index=df.index, dtype=object)


def tuned_choice_label(name: str, doc: Mapping[str, Any], tuned_at: float | None) -> str:
    """How the Run page lists a tuned profile: ``tuned.json — unet, tuned 2026-12-01 18:40 UTC on 40 val slices``."""
    when = (dt.datetime.fromtimestamp(float(tuned_at), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            if tuned_at is not None else "at an unknown time")
    n = len(doc.get("slices") or ())
    on = f" on {n} {doc.get('split', 'val')} slice{'s' if n != 1 else ''}" if n else ""
    return f"{name} — {doc.get('backend') or 'any backend'}, tuned {when}{on}"


def profile_column(df: pd.DataFrame) -> pd.DataFrame:
    """A table with profiled modes (e.g. :func:`~.stats.describe` of :func:`with_profiles` rows) split back
    into ``mode`` and a ``profile`` column right after it (``""``: defaults); unchanged when no row has one."""
    if df.empty or "mode" not in df.columns:
        return df
    parts = [split_profile(m) for m in df["mode"]]
    if not any(label for _, label in parts):
        return df
    out = df.copy()
    out["mode"] = [b for b, _ in parts]
    out.insert(out.columns.get_loc("mode") + 1, "profile", [label for _, label in parts])
    return out


def profile_note(labels) -> str:
    """The legend line for the profiles present (empty when only defaults are shown)."""
    present = [p for p in dict.fromkeys(labels) if p]
    if not present:
        return ""
    what = []
    if any(TUNED in p for p in present):
        what.append(f"*({TUNED})*: temperature, fusion and CRF chosen on the val split by `python -m segunc tune`")
    if any(PAPER in p for p in present):
        what.append(f"*({PAPER})*: the authors' settings (`--preset paper`)")
    other = [p for p in present if TUNED not in p and PAPER not in p]
    if other:
        what.append(", ".join(f"*({p})*" for p in other) + ": a recorded settings profile")
    return "Not segunc's defaults — " + "; ".join(what) + "."


def _v(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def tuned_settings_text(doc: Mapping[str, Any]) -> str:
    """One line of what a tuned.json sets: ``temperature 1.25 · fusion exponential (lam 5) · threshold
    otsu · CRF compat_bilateral 3, compat_gaussian 0, …``."""
    s = doc.get("settings") or {}
    f = dict(s.get("fusion") or {})
    w = f.get("weighting", "?")
    wp = {"exponential": "lam", "power": "alpha", "certainty_power": "alpha"}.get(w)
    weighting = f"{w} ({wp} {_v(f[wp])})" if wp and wp in f else str(w)
    tp = f.get("threshold_params") or {}
    threshold = str(f.get("threshold", "?")) + (" (" + ", ".join(f"{k} {_v(v)}" for k, v in tp.items()) + ")" if tp else "")
    crf = ", ".join(f"{k} {_v(v)}" for k, v in (s.get("crf") or {}).items())
    return f"temperature {_v(s.get('temperature', '?'))} · fusion {weighting} · threshold {threshold} · CRF {crf}"
