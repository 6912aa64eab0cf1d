"""Review queue: refer the most uncertain slices to a human.

A slice is *bad* when Dice < ``bad_dice`` (default 0.7). Slices are flagged when their
uncertainty score s ≥ t. On a calibration split (val) :func:`pick_threshold` chooses the
largest t whose flagged set still catches at least ``target_recall`` of the bad slices
(recall(t) = |{bad, s ≥ t}| / |bad| is non-increasing in t, so the largest such t flags the
fewest slices); :func:`apply_threshold` applies t unchanged to another split and reports
what it catches and misses. All functions take the metrics frame of ONE (backend, mode)
(columns ``slice_id``, ``patient_id``, ``dice`` and the score column).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from .stats import few_patients_caution

__all__ = ["BAD_DICE", "ReviewReport", "rank_slices", "pick_threshold", "apply_threshold", "review_queue",
           "patient_halves", "ReviewOutcome", "review_outcome"]

BAD_DICE = 0.7


def _one_run(frame: pd.DataFrame, score: str) -> pd.DataFrame:
    for col in ("backend", "mode"):
        if col in frame.columns and frame[col].nunique() > 1:
            raise ValueError(f"the review queue takes one backend and mode; frame has {col}s "
                             f"{sorted(frame[col].unique())}: filter it first")
    missing = [c for c in ("slice_id", "dice", score) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    d = frame.dropna(subset=[score, "dice"])
    if d["slice_id"].duplicated().any():
        raise ValueError("a slice appears more than once (several settings of one mode?): deduplicate first")
    return d


def rank_slices(frame: pd.DataFrame, score: str = "mean_entropy") -> pd.DataFrame:
    """Rows sorted by ``score`` descending (most uncertain first; ties by slice id), with ``rank`` 1..n."""
    d = _one_run(frame, score).sort_values([score, "slice_id"], ascending=[False, True], kind="stable")
    return d.assign(rank=np.arange(1, len(d) + 1)).reset_index(drop=True)


def pick_threshold(frame: pd.DataFrame, score: str = "mean_entropy", bad_dice: float = BAD_DICE,
                   target_recall: float = 0.8) -> float:
    """The largest score threshold t with recall(t) ≥ ``target_recall`` of the slices with Dice < ``bad_dice``
    (flag s ≥ t). Raises ValueError if the frame has no bad slice to calibrate on."""
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    d = _one_run(frame, score)
    bad = d.loc[d["dice"] < bad_dice, score].to_numpy(dtype=float)
    if bad.size == 0:
        raise ValueError(f"no slice with Dice < {bad_dice} to calibrate the threshold on")
    need = int(np.ceil(target_recall * bad.size - 1e-9))
    # flagging s ≥ t catches the bad slices with score ≥ t: t = the need-th largest bad score
    return float(np.sort(bad)[::-1][need - 1])


@dataclass
class ReviewReport:
    """What a threshold catches on one split."""

    threshold: float
    score: str
    bad_dice: float
    n_slices: int
    n_bad: int
    n_flagged: int
    caught: list[str] = field(default_factory=list)  # bad and flagged
    missed: list[str] = field(default_factory=list)  # bad, not flagged
    false_alarms: list[str] = field(default_factory=list)  # flagged, not bad
    frame: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def recall(self) -> float:
        """Fraction of bad slices flagged (NaN without bad slices)."""
        return len(self.caught) / self.n_bad if self.n_bad else float("nan")

    @property
    def flagged_fraction(self) -> float:
        return self.n_flagged / self.n_slices if self.n_slices else float("nan")

    @property
    def precision(self) -> float:
        """Fraction of flagged slices that are bad (NaN when nothing is flagged)."""
        return len(self.caught) / self.n_flagged if self.n_flagged else float("nan")

    def summary(self) -> dict[str, float]:
        return {"score": self.score, "threshold": self.threshold, "bad_dice": self.bad_dice, "n_slices": self.n_slices,
                "n_bad": self.n_bad, "n_flagged": self.n_flagged, "caught": len(self.caught),
                "missed": len(self.missed), "false_alarms": len(self.false_alarms), "recall": self.recall,
                "flagged_fraction": self.flagged_fraction, "precision": self.precision}


def apply_threshold(frame: pd.DataFrame, threshold: float, score: str = "mean_entropy",
                    bad_dice: float = BAD_DICE) -> ReviewReport:
    """Flag s ≥ ``threshold`` on ``frame``; the report's ``frame`` is the ranked queue ready for CSV
    (``rank``, ``slice_id``, ``patient_id``, score, ``dice``, ``bad``, ``flagged``, ``outcome`` ∈
    {caught, missed, false_alarm, pass}, plus ``backend``/``mode``/``split`` when present)."""
    d = rank_slices(frame, score)
    bad = (d["dice"] < bad_dice).to_numpy()
    flagged = (d[score] >= threshold).to_numpy()
    outcome = np.select([bad & flagged, bad & ~flagged, ~bad & flagged], ["caught", "missed", "false_alarm"], "pass")
    cols = ["rank", "slice_id"] + [c for c in ("patient_id", "split", "backend", "mode") if c in d.columns]
    out = d[cols + [score, "dice"]].assign(bad=bad, flagged=flagged, outcome=outcome)
    ids = out["slice_id"].to_numpy()
    return ReviewReport(float(threshold), score, float(bad_dice), len(out), int(bad.sum()), int(flagged.sum()),
                        list(ids[outcome == "caught"]), list(ids[outcome == "missed"]),
                        list(ids[outcome == "false_alarm"]), out)


def review_queue(calibration: pd.DataFrame, evaluation: pd.DataFrame, score: str = "mean_entropy",
                 bad_dice: float = BAD_DICE, target_recall: float = 0.8) -> tuple[ReviewReport, ReviewReport]:
    """Pick the threshold on ``calibration`` (val), apply it to ``evaluation``; returns (calibration
    report, evaluation report) — the first shows the recall achieved where t was chosen."""
    t = pick_threshold(calibration, score, bad_dice, target_recall)
    return apply_threshold(calibration, t, score, bad_dice), apply_threshold(evaluation, t, score, bad_dice)


def patient_halves(patient_ids: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Split patient ids into two deterministic halves (sorted by sha256(seed|id)); the first
    half gets the extra patient of an odd count."""
    ids = sorted(set(patient_ids), key=lambda p: hashlib.sha256(f"{seed}|{p}".encode()).hexdigest())
    k = (len(ids) + 1) // 2
    return sorted(ids[:k]), sorted(ids[k:])


@dataclass
class ReviewOutcome:
    """A review queue on one (backend, mode): threshold picked on ``calibration``, applied to
    ``evaluation``; ``scheme`` says which slices played which part, ``note`` why something is missing
    (a report is None when it could not be made)."""

    calibration: ReviewReport | None
    evaluation: ReviewReport | None
    scheme: str
    note: str = ""
    calibration_patients: int = 0
    caution: str = ""  # non-empty when the threshold was fitted on too few patients

    def summary(self) -> dict:
        """One row: the evaluation report's :meth:`ReviewReport.summary` (NaN when absent), the recall
        reached on the calibration slices, the scheme and the note."""
        keys = ("threshold", "n_slices", "n_bad", "n_flagged", "caught", "missed", "false_alarms", "recall",
                "flagged_fraction", "precision")
        row = {k: float("nan") for k in keys}
        if self.evaluation is not None:
            row.update({k: v for k, v in self.evaluation.summary().items() if k in keys})
        elif self.calibration is not None:
            row["threshold"] = self.calibration.threshold
        row["calibration_recall"] = self.calibration.recall if self.calibration is not None else float("nan")
        row["calibration_slices"] = self.calibration.n_slices if self.calibration is not None else 0
        return {**row, "scheme": self.scheme, "note": self.note, "calibration_patients": self.calibration_patients,
                "caution": self.caution}


def review_outcome(frame: pd.DataFrame, split: str, score: str = "mean_entropy", bad_dice: float = BAD_DICE,
                   target_recall: float = 0.8, val_split: str = "val", seed: int = 0) -> ReviewOutcome:
    """The review queue of ONE (backend, mode) whose ``frame`` holds both the ``val_split`` rows and the
    ``split`` rows (column ``split``): threshold picked on ``val_split``, applied to ``split``.

    When ``split`` is the calibration split itself, its patients are cut in two
    (:func:`patient_halves`): the threshold is picked on the first half and applied to the second,
    so the outcome is not judged on the slices that chose it. With a single patient that is not
    possible: the threshold is then picked and applied on the same slices, and ``note`` says so.
    """
    cal = frame[frame["split"] == val_split] if "split" in frame.columns else frame
    ev = frame if split == "all" or "split" not in frame.columns else frame[frame["split"] == split]
    scheme = f"threshold picked on {val_split}, applied to {split}"
    note = ""
    if split == "all":
        scheme = f"threshold picked on {val_split}, applied to every split ({val_split} included)"
    if split == val_split:
        a, b = patient_halves(cal["patient_id"], seed)
        if a and b:
            cal, ev = cal[cal["patient_id"].isin(a)], cal[cal["patient_id"].isin(b)]
            scheme = (f"{val_split} cut into patient halves: threshold picked on {len(a)} patient(s), "
                      f"applied to the other {len(b)}")
        else:
            scheme = f"threshold picked and applied on the same {val_split} slices (in-sample)"
            note = f"only {len(a) + len(b)} {val_split} patient(s): no held-out half, so the outcome is optimistic"
    if cal.empty:
        return ReviewOutcome(None, None, scheme, f"no {val_split} results to pick the threshold on")
    try:
        t = pick_threshold(cal, score, bad_dice, target_recall)
    except ValueError as exc:
        return ReviewOutcome(None, None, scheme, str(exc))
    calib = apply_threshold(cal, t, score, bad_dice)
    n_pat = int(cal["patient_id"].nunique()) if "patient_id" in cal.columns else 0
    caution = few_patients_caution(n_pat, "This review threshold")
    if ev.empty:
        return ReviewOutcome(calib, None, scheme, (note + "; " if note else "") + f"no {split} results to apply it to",
                             n_pat, caution)
    return ReviewOutcome(calib, apply_threshold(ev, t, score, bad_dice), scheme, note, n_pat, caution)
