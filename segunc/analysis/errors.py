"""Uncertainty as an error detector: does high uncertainty sit where the prediction is wrong?

Per pixel, the *error map* is E = Ŷ ≠ Y (predicted mask ≠ ground truth; FP and FN alike).
Each uncertainty map u (variance, entropy, mutual information) is scored as a detector of E:

* AUROC = P(u_e > u_c) + ½ P(u_e = u_c) for a random error pixel e and a random correct pixel c
  (Hanley & McNeil 1982) — ``sklearn.metrics.roc_auc_score`` per slice.
* AUPRC = average precision Σ_k (R_k − R_{k−1}) P_k over descending thresholds
  (``sklearn.metrics.average_precision_score``); a random detector scores the error rate.
* Overlap Dice 2|U ∩ E| / (|U| + |E|) of the thresholded map U = u > t against E. ``t`` is
  Otsu's threshold of the slice's own map by default (:func:`segunc.fusion.otsu_threshold`,
  0.5 on a constant map), or a fixed value (e.g. 0.5 bits for entropy).
* Pooled over slices without holding their pixels: each slice contributes two fixed-bin
  histograms of u (error / correct pixels) with the edges of :func:`hist_edges` — by default
  :data:`HIST_BINS` = 1000 bins on [0, :data:`MAP_MAX`], log-spaced (bin 0 = [0, hi·10⁻¹²),
  then 999 bins of equal width in log u up to hi, ≈ 2.8 % wide each) because uncertainty maps
  pile up near 0, where equal-width bins would merge most background and missed-tumour
  pixels into one tied bin; ``scale="linear"`` gives equal-width bins.
  :func:`auroc_from_histograms` and :func:`auprc_from_histograms` read the pooled curves off
  the summed counts (exact for scores that are constant within a bin; otherwise within-bin
  pairs count as ties, error ≤ ½ Σ_b n⁺_b n⁻_b / (P N)).

Per slice (metrics frame): Spearman ρ (``scipy.stats.spearmanr``) between a slice score (mean
uncertainty over the predicted mask dilated by k px, or the image mean) and 1 − Dice, and the
risk–coverage curve of "refer the most uncertain slices": sort by score ascending, keep the
first k of n, coverage = k/n, risk = mean(1 − Dice) of the kept slices; AURC = (1/n) Σ_k risk_k
(Geifman et al. 2019); E-AURC = AURC − AURC of the oracle ordering (by 1 − Dice itself).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

# scipy.ndimage / scipy.stats, scikit-learn and the fusion module (scikit-image) are imported where they
# are used: reading cached numbers (the app's Review page) then loads none of them

__all__ = ["UNCERTAINTY_MAPS", "MAP_MAX", "HIST_BINS", "LOG_FLOOR", "hist_edges", "error_map", "pixel_auroc", "pixel_auprc", "error_histograms",
           "auroc_from_histograms", "auprc_from_histograms", "ErrorHistogram", "near_mask", "overlap_dice",
           "slice_error_stats", "pooled_error_detection", "spearman_table", "risk_coverage", "aurc",
           "risk_coverage_table"]

#: the maps scored as error detectors
UNCERTAINTY_MAPS = ("variance", "entropy", "mutual_information")
#: upper end of each map's range (entropies in bits ≤ 1; variance of a [0, 1] variable ≤ ¼)
MAP_MAX = {"variance": 0.25, "entropy": 1.0, "expected_entropy": 1.0, "mutual_information": 1.0}
HIST_BINS = 1000
#: lowest log-scale bin edge, relative to the map's maximum
LOG_FLOOR = 1e-12
#: default band width (px) of the region around the predicted mask
BAND_PX = 5


# ------------------------------------------------------------------------------ pixel level
def error_map(mask: np.ndarray, target: np.ndarray) -> np.ndarray:
    """E = Ŷ ≠ Y, boolean (H, W)."""
    mask, target = np.asarray(mask, bool), np.asarray(target, bool)
    if mask.shape != target.shape:
        raise ValueError(f"mask {mask.shape} and target {target.shape} differ in shape")
    return mask != target


def _scores_labels(u: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(u, dtype=np.float64).ravel()
    err = np.asarray(err, dtype=bool).ravel()
    if u.shape != err.shape:
        raise ValueError(f"uncertainty ({u.size} px) and error map ({err.size} px) differ in size")
    keep = np.isfinite(u)
    return u[keep], err[keep]


def pixel_auroc(u: np.ndarray, err: np.ndarray) -> float:
    """AUROC of ``u`` for the error pixels ``err``; NaN when one class is absent."""
    s, y = _scores_labels(u, err)
    if y.all() or not y.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def pixel_auprc(u: np.ndarray, err: np.ndarray) -> float:
    """Average precision of ``u`` for ``err``; NaN when there is no error pixel (or no correct one)."""
    s, y = _scores_labels(u, err)
    if y.all() or not y.any():
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s))


def hist_edges(hi: float, bins: int = HIST_BINS, scale: str = "log", floor: float = LOG_FLOOR) -> np.ndarray:
    """The ``bins + 1`` ascending bin edges on [0, hi]: ``"linear"`` equal width; ``"log"`` bin 0 =
    [0, hi·floor), the other bins - 1 equal in log u on [hi·floor, hi]."""
    if bins < 2 or hi <= 0:
        raise ValueError(f"need bins >= 2 and hi > 0, got {bins}, {hi}")
    if scale == "linear":
        return np.linspace(0.0, hi, bins + 1)
    if scale == "log":
        return np.concatenate([[0.0], np.geomspace(hi * floor, hi, bins)])
    raise ValueError(f"unknown histogram scale {scale!r}; expected 'log' or 'linear'")


def _bin_index(s: np.ndarray, hi: float, bins: int, scale: str, floor: float = LOG_FLOOR) -> np.ndarray:
    if scale == "linear":
        return np.clip((s * (bins / hi)).astype(np.int64), 0, bins - 1)
    hist_edges(hi, bins, scale, floor)  # validates
    lo = hi * floor
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.log(np.maximum(s, lo) / lo) / np.log(1.0 / floor) * (bins - 1)
    return np.where(s < lo, 0, np.clip(1 + pos.astype(np.int64), 1, bins - 1))


def error_histograms(u: np.ndarray, err: np.ndarray, hi: float, bins: int = HIST_BINS,
                     scale: str = "log") -> tuple[np.ndarray, np.ndarray]:
    """(counts of error pixels, counts of correct pixels) per bin of :func:`hist_edges` (``hi``,
    ``bins``, ``scale``; values above ``hi`` go to the last bin); int64 arrays that add up over slices."""
    s, y = _scores_labels(u, err)
    idx = _bin_index(s, float(hi), int(bins), scale)
    return (np.bincount(idx[y], minlength=bins).astype(np.int64),
            np.bincount(idx[~y], minlength=bins).astype(np.int64))


def auroc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC from score histograms of positives and negatives (same bins, ascending):
    Σ_b n⁺_b (N⁻_{<b} + ½ n⁻_b) / (P N), where N⁻_{<b} counts negatives in lower bins. NaN if P or N is 0."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    p, n = pos.sum(), neg.sum()
    if p == 0 or n == 0:
        return float("nan")
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float(np.sum(pos * (below + 0.5 * neg)) / (p * n))


def auprc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """Average precision from histograms: thresholds at bin edges from the top, recall R_k =
    TP_k / P, precision P_k = TP_k / (TP_k + FP_k), AP = Σ_k (R_k − R_{k−1}) P_k (sklearn's
    definition, bins acting as tied scores). NaN if there is no positive (or no negative)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    p = pos.sum()
    if p == 0 or neg.sum() == 0:
        return float("nan")
    tp, fp = np.cumsum(pos[::-1]), np.cumsum(neg[::-1])
    used = (pos[::-1] + neg[::-1]) > 0
    tp, fp = tp[used], fp[used]
    recall = tp / p
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


class ErrorHistogram:
    """Streaming pooled detector of error pixels for one map: ``add`` slices, read ``auroc``/``auprc``.

    Memory is 2 × ``bins`` counts whatever the number of slices.
    """

    def __init__(self, hi: float = 1.0, bins: int = HIST_BINS, scale: str = "log"):
        self.hi, self.bins, self.scale = float(hi), int(bins), scale
        self.pos = np.zeros(self.bins, np.int64)
        self.neg = np.zeros(self.bins, np.int64)

    def add(self, u: np.ndarray, err: np.ndarray) -> "ErrorHistogram":
        p, n = error_histograms(u, err, self.hi, self.bins, self.scale)
        self.pos += p
        self.neg += n
        return self

    def add_counts(self, pos: np.ndarray, neg: np.ndarray) -> "ErrorHistogram":
        self.pos += np.asarray(pos, np.int64)
        self.neg += np.asarray(neg, np.int64)
        return self

    def auroc(self) -> float:
        return auroc_from_histograms(self.pos, self.neg)

    def auprc(self) -> float:
        return auprc_from_histograms(self.pos, self.neg)


def near_mask(mask: np.ndarray, k: int = BAND_PX) -> np.ndarray:
    """The predicted mask dilated by ``k`` px (3×3 cross structuring element, k iterations): the
    mask plus a k-px band around it."""
    mask = np.asarray(mask, bool)
    if k <= 0 or not mask.any():
        return mask.copy()
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=int(k))


def overlap_dice(u: np.ndarray, err: np.ndarray, threshold: str | float = "otsu") -> float:
    """Dice between U = u > t and the error map E; t = Otsu on ``u`` (``"otsu"``) or a number.
    1.0 when both U and E are empty."""
    u = np.asarray(u, dtype=np.float64)
    err = np.asarray(err, bool)
    from ..fusion import otsu_threshold

    t = otsu_threshold(u) if threshold == "otsu" else float(threshold)
    flagged = u > t
    den = int(flagged.sum()) + int(err.sum())
    return 1.0 if den == 0 else 2.0 * int(np.count_nonzero(flagged & err)) / den


def _mean(u: np.ndarray, region: np.ndarray) -> float:
    return float(np.nanmean(u[region])) if region.any() else float("nan")


def slice_error_stats(maps: Mapping[str, np.ndarray], target: np.ndarray, *, band_px: int = BAND_PX,
                      threshold: str | float = "otsu", bins: int = HIST_BINS, scale: str = "log",
                      map_names: Sequence[str] = UNCERTAINTY_MAPS) -> dict[str, float | np.ndarray]:
    """Error-detection numbers of one slice, for the store to save beside its metrics.

    ``maps``: a ``ModeResult.maps`` dict (uncertainty maps + boolean ``mask``); ``target``: the
    ground truth. Keys (``m`` in ``map_names``):

    * ``error_px``, ``error_frac`` — size of E = mask ≠ target;
    * ``{m}_auroc``, ``{m}_auprc`` — pixel detector of E (NaN when E is empty or everything);
    * ``{m}_error_dice`` — overlap Dice of u > t (``threshold``: Otsu or a number) with E;
    * ``{m}_in`` — mean u over the predicted mask (NaN if it is empty);
    * ``{m}_near`` — mean u over the predicted mask dilated by ``band_px`` px (the whole image if
      the mask is empty, so a missed tumour still gets a score);
    * ``{m}_image`` — mean u over the image;
    * ``{m}_hist_err``, ``{m}_hist_ok`` — int64 arrays of ``bins`` counts of u over error / correct
      pixels, edges ``hist_edges(MAP_MAX[m], bins, scale)``, to pool with :func:`pooled_error_detection`
      (pool only histograms made with the same ``bins`` and ``scale``).
    All other values are Python floats.
    """
    mask = np.asarray(maps["mask"], bool)
    err = error_map(mask, target)
    near = near_mask(mask, band_px) if mask.any() else np.ones_like(mask)
    out: dict[str, float | np.ndarray] = {"error_px": float(err.sum()), "error_frac": float(err.mean())}
    for m in map_names:
        u = np.asarray(maps[m], dtype=np.float64)
        out[f"{m}_auroc"] = pixel_auroc(u, err)
        out[f"{m}_auprc"] = pixel_auprc(u, err)
        out[f"{m}_error_dice"] = overlap_dice(u, err, threshold)
        out[f"{m}_in"] = _mean(u, mask)
        out[f"{m}_near"] = _mean(u, near)
        out[f"{m}_image"] = float(np.nanmean(u))
        out[f"{m}_hist_err"], out[f"{m}_hist_ok"] = error_histograms(u, err, MAP_MAX.get(m, 1.0), bins, scale)
    return out


def pooled_error_detection(stats_list: Iterable[Mapping[str, float | np.ndarray]],
                           map_names: Sequence[str] = UNCERTAINTY_MAPS) -> pd.DataFrame:
    """Pooled pixel AUROC / AUPRC per map from summed per-slice histograms, plus the per-slice
    median AUROC / AUPRC / overlap Dice. Index: map name; columns ``pooled_auroc``,
    ``pooled_auprc``, ``median_auroc``, ``median_auprc``, ``median_error_dice``, ``error_px``, ``n_slices``."""
    stats_list = list(stats_list)
    rows = {}
    for m in map_names:
        h = None
        for s in stats_list:
            pos, neg = s[f"{m}_hist_err"], s[f"{m}_hist_ok"]
            h = ErrorHistogram(bins=len(pos)) if h is None else h
            h.add_counts(pos, neg)
        col = lambda k: np.array([s[k] for s in stats_list], dtype=float)  # noqa: E731
        rows[m] = {
            "pooled_auroc": h.auroc() if h else float("nan"),
            "pooled_auprc": h.auprc() if h else float("nan"),
            "median_auroc": float(np.nanmedian(col(f"{m}_auroc"))) if np.isfinite(col(f"{m}_auroc")).any() else float("nan"),
            "median_auprc": float(np.nanmedian(col(f"{m}_auprc"))) if np.isfinite(col(f"{m}_auprc")).any() else float("nan"),
            "median_error_dice": float(np.nanmedian(col(f"{m}_error_dice"))) if stats_list else float("nan"),
            "error_px": int(h.pos.sum()) if h else 0,
            "n_slices": len(stats_list),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("map")


# ------------------------------------------------------------------------------ slice level
def _runs(frame: pd.DataFrame, by: Sequence[str]):
    by = [c for c in by if c in frame.columns]
    if not by:
        yield (), frame
        return
    for key, g in frame.groupby(by, sort=False):
        yield (key if isinstance(key, tuple) else (key,)), g


def spearman_table(frame: pd.DataFrame, scores: Sequence[str] = ("mean_entropy", "mean_variance", "mean_mi"),
                   by: Sequence[str] = ("backend", "mode")) -> pd.DataFrame:
    """Spearman ρ (and its p-value) between each slice score column and 1 − Dice, per ``by`` group.

    Columns: ``by``…, ``score``, ``rho``, ``p``, ``n``. ρ > 0: more uncertain slices are worse.
    NaN scores are dropped; ρ is NaN when either side is constant.
    """
    from scipy import stats

    rows = []
    for key, g in _runs(frame, by):
        for sc in scores:
            d = g[[sc, "dice"]].dropna()
            if len(d) >= 3 and d[sc].nunique() > 1 and d["dice"].nunique() > 1:
                res = stats.spearmanr(d[sc], 1.0 - d["dice"])
                rho, p = float(res.statistic), float(res.pvalue)
            else:
                rho = p = float("nan")
            rows.append({**dict(zip([c for c in by if c in frame.columns], key)), "score": sc, "rho": rho, "p": p,
                         "n": len(d)})
    return pd.DataFrame(rows)


def risk_coverage(scores: Sequence[float], dice: Sequence[float]) -> pd.DataFrame:
    """Risk–coverage curve of keeping the least uncertain slices and referring the rest.

    Slices sorted by ``scores`` ascending (stable); row k (1..n): ``coverage`` = k/n, ``risk`` =
    mean(1 − Dice) of the k kept slices, ``threshold`` = the k-th score (keep score ≤ threshold).
    """
    s = np.asarray(scores, dtype=float)
    loss = 1.0 - np.asarray(dice, dtype=float)
    if s.shape != loss.shape or s.ndim != 1 or s.size == 0:
        raise ValueError("scores and dice must be non-empty 1-D sequences of one length")
    if not (np.isfinite(s).all() and np.isfinite(loss).all()):
        raise ValueError("scores and dice must be finite (drop NaN rows first)")
    order = np.argsort(s, kind="stable")
    k = np.arange(1, s.size + 1)
    return pd.DataFrame({"coverage": k / s.size, "risk": np.cumsum(loss[order]) / k, "threshold": s[order]})


def aurc(scores: Sequence[float], dice: Sequence[float]) -> dict[str, float]:
    """AURC = (1/n) Σ_k risk_k, its oracle (sorted by 1 − Dice), E-AURC = AURC − oracle, and the
    risk at full coverage (= what a random ordering averages to)."""
    loss = 1.0 - np.asarray(dice, dtype=float)
    a = float(risk_coverage(scores, dice)["risk"].mean())
    o = float(risk_coverage(loss, dice)["risk"].mean())
    return {"aurc": a, "oracle_aurc": o, "e_aurc": a - o, "full_risk": float(loss.mean()), "n": int(loss.size)}


def risk_coverage_table(frame: pd.DataFrame, scores: Sequence[str] = ("mean_entropy", "mean_variance", "mean_mi"),
                        by: Sequence[str] = ("backend", "mode")) -> pd.DataFrame:
    """:func:`aurc` for each score column per ``by`` group (rows with NaN score or Dice dropped)."""
    from scipy import stats

    rows = []
    for key, g in _runs(frame, by):
        for sc in scores:
            d = g[[sc, "dice"]].dropna()
            if len(d) == 0:
                continue
            rows.append({**dict(zip([c for c in by if c in frame.columns], key)), "score": sc,
                         **aurc(d[sc].to_numpy(), d["dice"].to_numpy())})
    return pd.DataFrame(rows)
