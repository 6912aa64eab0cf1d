"""Per-slice segmentation, calibration and uncertainty metrics (paper §4.1).

One contract: every metric is ``f(prob, target, ...) -> float`` on one slice, where ``prob`` is
the (H, W) foreground probability and ``target`` the boolean (H, W) ground truth.
:func:`compute_metrics` returns all of them, keyed and ordered as :data:`METRIC_NAMES`.

Conventions (none ever returns NaN or inf; non-finite or out-of-range inputs raise ValueError):

* ``pred`` is the binary mask Ŷ; default ``prob >= 0.5`` (fusion may pass its thresholded mask).
* IoU |Y∩Ŷ|/|Y∪Ŷ|, Dice 2|Y∩Ŷ|/(|Y|+|Ŷ|), precision TP/(TP+FP), recall TP/(TP+FN): a zero
  denominator gives 1.0 when prediction and target are both empty, else 0.0 (an empty
  prediction on a tumour slice has precision = recall = 0; any prediction on an empty slice
  has IoU = Dice = precision = recall = 0).
* accuracy (TP+TN)/N.
* NLL −mean[t ln p + (1−t) ln(1−p)], natural log, p clipped to [1e-7, 1 − 1e-7].
* Brier mean (p − t)².
* ECE is top-label (Guo et al. 2017) on the two-class distribution [1−p, p]: confidence
  c = max(p, 1−p) of the predicted label (p >= 0.5, independent of ``pred``), correct = label == t;
  n_bins equal-width bins, bin b holds c ∈ (b/n, (b+1)/n] (the first also holds 0);
  ECE = Σ_b |I_b|/N · |acc(I_b) − conf(I_b)|. (Binning the foreground probability instead, as
  the paper authors' code does, scores a confidently correct background pixel p = 0 as fully
  miscalibrated.) :func:`reliability_bins` returns summable per-bin sums so calibration can be
  pooled over slices with :func:`ece_from_bins`.
* certainty (paper §4.1) mean over region T of clip(1 − u, 0, 1), u defaulting to the binary
  entropy of ``prob`` in bits; T = ground-truth foreground, else (empty target) the predicted
  foreground, else (both empty) every pixel.
"""
from __future__ import annotations

import numpy as np

from .uncertainty import binary_entropy

__all__ = ["METRIC_NAMES", "HIGHER_IS_BETTER", "iou", "dice", "accuracy", "precision", "recall", "nll", "brier",
           "ece", "reliability_bins", "ece_from_bins", "certainty", "compute_metrics"]

METRIC_NAMES = ("iou", "dice", "accuracy", "precision", "recall", "nll", "ece", "brier", "certainty")
#: direction of "better"; certainty is read as in the paper (higher = more confident in the region)
HIGHER_IS_BETTER = {"iou": True, "dice": True, "accuracy": True, "precision": True, "recall": True,
                    "nll": False, "ece": False, "brier": False, "certainty": True}
NLL_EPS = 1e-7


# ----------------------------------------------------------------------------------- inputs
def _prob(prob: np.ndarray) -> np.ndarray:
    p = np.asarray(prob, dtype=np.float64)
    if p.size == 0 or not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("prob must be a non-empty finite map in [0, 1]")
    return p


def _mask(m: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    m = np.asarray(m)
    if m.shape != shape:
        raise ValueError(f"{name} shape {m.shape} does not match prob {shape}")
    if m.dtype != bool:
        if not np.isfinite(m).all():
            raise ValueError(f"{name} must be finite")
        m = m != 0
    return m


def _inputs(prob, target, pred=None):
    p = _prob(prob)
    t = _mask(target, p.shape, "target")
    y = p >= 0.5 if pred is None else _mask(pred, p.shape, "pred")
    return p, t, y


def _counts(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred & ~target))
    fn = int(np.count_nonzero(~pred & target))
    return tp, fp, fn, pred.size - tp - fp - fn


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


# ------------------------------------------------------------------------------ overlap
def iou(prob, target, pred=None) -> float:
    """Jaccard index |Y∩Ŷ| / |Y∪Ŷ| (paper §4.1); 1.0 when both are empty."""
    _, t, y = _inputs(prob, target, pred)
    tp, fp, fn, _ = _counts(y, t)
    return _ratio(tp, tp + fp + fn, True)


def dice(prob, target, pred=None) -> float:
    """Dice 2|Y∩Ŷ| / (|Y| + |Ŷ|) (paper §4.1); 1.0 when both are empty."""
    _, t, y = _inputs(prob, target, pred)
    tp, fp, fn, _ = _counts(y, t)
    return _ratio(2 * tp, 2 * tp + fp + fn, True)


def accuracy(prob, target, pred=None) -> float:
    """Pixel accuracy (TP + TN) / N (paper §4.1)."""
    _, t, y = _inputs(prob, target, pred)
    tp, _, _, tn = _counts(y, t)
    return (tp + tn) / t.size


def precision(prob, target, pred=None) -> float:
    """TP / (TP + FP) (paper §4.1); empty prediction: 1.0 if the target is empty too, else 0.0."""
    _, t, y = _inputs(prob, target, pred)
    tp, fp, _, _ = _counts(y, t)
    return _ratio(tp, tp + fp, not t.any())


def recall(prob, target, pred=None) -> float:
    """TP / (TP + FN) (paper §4.1); empty target: 1.0 if the prediction is empty too, else 0.0."""
    _, t, y = _inputs(prob, target, pred)
    tp, _, fn, _ = _counts(y, t)
    return _ratio(tp, tp + fn, not y.any())


# -------------------------------------------------------------------------- calibration
def nll(prob, target) -> float:
    """Binary NLL −mean[t ln p + (1−t) ln(1−p)], p clipped to [1e-7, 1 − 1e-7] (paper §4.1)."""
    p, t, _ = _inputs(prob, target)
    p = np.clip(p, NLL_EPS, 1.0 - NLL_EPS)
    return float(-np.mean(np.where(t, np.log(p), np.log1p(-p))))


def brier(prob, target) -> float:
    """Brier score mean (p − t)² (paper §4.1)."""
    p, t, _ = _inputs(prob, target)
    return float(np.mean((p - t) ** 2))


def reliability_bins(prob, target, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label reliability diagram sums per bin: (counts int64, sum_confidence, sum_correct), each (n_bins,).

    Confidence c = max(p, 1−p), label = p >= 0.5; bin b holds c ∈ (b/n, (b+1)/n], the first also 0.
    The arrays add up over slices, so pooled calibration is ``ece_from_bins(*sum of bins)``.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    p, t, label = _inputs(prob, target)
    conf = np.maximum(p, 1.0 - p).ravel()
    correct = (label == t).ravel()
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(b, minlength=n_bins).astype(np.int64)
    sum_conf = np.bincount(b, weights=conf, minlength=n_bins)
    sum_correct = np.bincount(b, weights=correct.astype(np.float64), minlength=n_bins)
    return counts, sum_conf, sum_correct


def ece_from_bins(counts, sum_confidence, sum_correct) -> float:
    """ECE = Σ_b |I_b|/N · |acc(I_b) − conf(I_b)| = Σ_b |Σcorrect_b − Σconf_b| / N (0.0 when N = 0)."""
    n = int(np.sum(counts))
    if n == 0:
        return 0.0
    return float(np.sum(np.abs(np.asarray(sum_correct, float) - np.asarray(sum_confidence, float))) / n)


def ece(prob, target, n_bins: int = 10) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins (paper §4.1; Guo et al. 2017)."""
    return ece_from_bins(*reliability_bins(prob, target, n_bins))


# ----------------------------------------------------------------------------- certainty
def certainty(prob, target, uncertainty=None, pred=None) -> float:
    """Mean of clip(1 − u, 0, 1) over the target foreground (paper §4.1).

    Falls back to the predicted foreground when the target is empty, and to all pixels when both
    are empty. ``uncertainty`` defaults to the binary entropy of ``prob`` (bits, in [0, 1]).
    """
    p, t, y = _inputs(prob, target, pred)
    if uncertainty is None:
        u = binary_entropy(p)
    else:
        u = np.asarray(uncertainty, dtype=np.float64)
        if u.shape != p.shape or not np.isfinite(u).all():
            raise ValueError(f"uncertainty must be a finite map of shape {p.shape}")
    region = t if t.any() else y if y.any() else np.ones_like(t)
    return float(np.mean(np.clip(1.0 - u[region], 0.0, 1.0)))


def compute_metrics(prob, target, uncertainty=None, pred=None, n_bins: int = 10) -> dict[str, float]:
    """All metrics of one slice, keyed and ordered as :data:`METRIC_NAMES`."""
    p, t, y = _inputs(prob, target, pred)
    out = {
        "iou": iou(p, t, y),
        "dice": dice(p, t, y),
        "accuracy": accuracy(p, t, y),
        "precision": precision(p, t, y),
        "recall": recall(p, t, y),
        "nll": nll(p, t),
        "ece": ece(p, t, n_bins),
        "brier": brier(p, t),
        "certainty": certainty(p, t, uncertainty, y),
    }
    assert tuple(out) == METRIC_NAMES
    return out
