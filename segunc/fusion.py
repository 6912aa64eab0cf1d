"""Uncertainty-weighted fusion of K probability maps and thresholding (paper §3.3).

``y_fusion = Σ_i w_i^norm y_i`` with per-pixel weights normalised over the K components:

* ``inverse``      w_i = 1 / (u_i + eps)
* ``exponential``  w_i = exp(−λ u_i)
* ``power``        w_i = (u_i + eps)^(−α)        (α = 1 is ``inverse``)

``u`` is a (K, H, W) non-negative uncertainty (e.g. each sample's binary entropy in bits, in
[0, 1]). Weights are normalised in log space (a softmax of log w over K), so no scheme can
overflow. NaN in ``u`` or in ``probs`` marks a component that did not observe a pixel
(TTA zoom-in); it gets weight 0 and the others are renormalised.

Thresholds turn a map into a mask: ``fixed`` keeps ``p >= value`` (so ``fixed`` at 0.5 gives the
same mask as the metrics' default); the data-derived ones (``otsu``, ``percentile``,
``mean_std``) keep ``p > t`` like ``skimage`` (``image > threshold_otsu(image)``), so a plateau
of ties at ``t`` (a constant map, a map that is mostly exact zeros) is never selected whole.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from skimage.filters import threshold_otsu

__all__ = ["WEIGHTINGS", "THRESHOLDS", "DATA_THRESHOLDS", "inverse_weights", "exponential_weights",
           "power_weights", "certainty_power_weights", "normalized_weights", "fuse", "fixed_threshold", "otsu_threshold",
           "percentile_threshold", "mean_std_threshold", "threshold_value", "binarize"]

EPS = 1e-6
#: λ for ``exponential``: with u in [0, 1] bits, exp(−10 u) spans a weight ratio of e^10 ≈ 2.2e4
#: between a certain (u = 0) and a maximally uncertain (u = 1) sample, and e ≈ 2.7 per 0.1 bit;
#: λ = 1 would span only e ≈ 2.7, i.e. almost a plain mean.
DEFAULT_LAMBDA = 10.0


# ---------------------------------------------------------------------------------- weights
def _softmax_over_k(log_w: np.ndarray) -> np.ndarray:
    """Normalise exp(log_w) over axis 0; NaN entries get weight 0 (all-NaN pixels: all 0)."""
    valid = ~np.isnan(log_w)
    shifted = np.where(valid, log_w, -np.inf)
    top = shifted.max(axis=0, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    w = np.where(valid, np.exp(shifted - top), 0.0)
    total = w.sum(axis=0, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def _check_u(u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 3:
        raise ValueError(f"u must have shape (K, H, W), got {u.shape}")
    if np.any(u < 0):  # NaN compares False
        raise ValueError("uncertainties must be >= 0")
    if np.any(np.isinf(u)):
        raise ValueError("uncertainties must be finite (NaN = not observed)")
    return u


def inverse_weights(u: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Normalised inverse weights w_i ∝ 1 / (u_i + eps) (paper §3.3, inverse weighting)."""
    return power_weights(u, alpha=1.0, eps=eps)


def exponential_weights(u: np.ndarray, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """Normalised exponential weights w_i ∝ exp(−λ u_i) (paper §3.3); stable via subtracting min u."""
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    return _softmax_over_k(-lam * _check_u(u))


def power_weights(u: np.ndarray, alpha: float = 1.0, eps: float = EPS) -> np.ndarray:
    """Normalised power-law weights w_i ∝ (u_i + eps)^(−α) (paper §3.3), computed in log space."""
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return _softmax_over_k(-alpha * np.log(_check_u(u) + eps))


def certainty_power_weights(u: np.ndarray, alpha: float = 1.0, eps: float = EPS) -> np.ndarray:
    """Normalised w_i ∝ (1 − u_i)^α, u in [0, 1] (the authors' scripts' "power" weighting; the paper's
    text has u_i^−α); computed in log space, 1 − u floored at ``eps``."""
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    u = _check_u(u)
    return _softmax_over_k(alpha * np.log(np.clip(1.0 - u, eps, None)))


#: name → function(u (K, H, W), **params) -> normalised weights (K, H, W)
WEIGHTINGS: dict[str, Callable[..., np.ndarray]] = {
    "inverse": inverse_weights,
    "exponential": exponential_weights,
    "power": power_weights,
    "certainty_power": certainty_power_weights,
}


def _lookup(table: dict, kind: str, name: str) -> Callable:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(table)}") from None


def normalized_weights(u: np.ndarray, scheme: str = "inverse", **params) -> np.ndarray:
    """Per-pixel weights w_i^norm, (K, H, W) float64 summing to 1 over K; NaN u → weight 0."""
    return _lookup(WEIGHTINGS, "weighting", scheme)(u, **params)


def fuse(probs: np.ndarray, u: np.ndarray, scheme: str = "inverse", **params) -> np.ndarray:
    """Fused map y_fusion = Σ_i w_i^norm y_i (paper §3.3), (H, W) float32.

    ``probs`` and ``u`` are (K, H, W); a component NaN in either is ignored at that pixel.
    """
    probs = np.asarray(probs, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if probs.shape != u.shape or probs.ndim != 3:
        raise ValueError(f"probs and u must both be (K, H, W), got {probs.shape} and {u.shape}")
    observed = ~(np.isnan(probs) | np.isnan(u))
    if not observed.any(axis=0).all():
        raise ValueError("every pixel must be observed (non-NaN) by at least one component")
    w = normalized_weights(np.where(observed, u, np.nan), scheme, **params)
    return np.sum(w * np.where(observed, probs, 0.0), axis=0).astype(np.float32)


# ------------------------------------------------------------------------------- thresholds
def _check_map(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0 or not np.isfinite(p).all():
        raise ValueError("map must be non-empty and finite")
    return p


def fixed_threshold(p: np.ndarray, value: float = 0.5) -> float:
    """A fixed threshold (default 0.5)."""
    return float(value)


def otsu_threshold(p: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold (Otsu 1979, via ``skimage.filters.threshold_otsu``); 0.5 on a constant map.

    ``threshold_otsu`` returns the centre of the last bin of the lower class; we return that
    bin's upper edge, so ``p > t`` is exactly Otsu's upper class (otherwise the upper half of
    that bin, e.g. the brightest background pixels, would leak into the mask).
    """
    p = _check_map(p)
    lo, hi = p.min(), p.max()
    if lo == hi:
        return 0.5
    return float(threshold_otsu(p, nbins=nbins) + (hi - lo) / (2 * nbins))


def percentile_threshold(p: np.ndarray, q: float = 95.0) -> float:
    """The q-th percentile of the map (default 95: keeps roughly the top 5 %)."""
    return float(np.percentile(_check_map(p), q))


def mean_std_threshold(p: np.ndarray, k: float = 1.0) -> float:
    """mean + k · std of the map (default k = 1)."""
    p = _check_map(p)
    return float(p.mean() + k * p.std())


#: name → function(p (H, W), **params) -> float
THRESHOLDS: dict[str, Callable[..., float]] = {
    "fixed": fixed_threshold,
    "otsu": otsu_threshold,
    "percentile": percentile_threshold,
    "mean_std": mean_std_threshold,
}
#: methods whose threshold is derived from the map itself; they binarise strictly (p > t)
DATA_THRESHOLDS = frozenset({"otsu", "percentile", "mean_std"})


def threshold_value(p: np.ndarray, method: str = "fixed", **params) -> float:
    """The threshold that ``method`` picks for map ``p``."""
    return _lookup(THRESHOLDS, "threshold", method)(p, **params)


def binarize(p: np.ndarray, method: str = "fixed", **params) -> np.ndarray:
    """Boolean (H, W) mask: ``p >= t`` for ``fixed``, ``p > t`` for data-derived thresholds.

    The one binarisation of a fused map (the pipeline uses it): a constant map, e.g. a
    tumour-free slice, marks nothing under a data-derived threshold."""
    p = _check_map(p)
    t = threshold_value(p, method, **params)
    return p > t if method in DATA_THRESHOLDS else p >= t
