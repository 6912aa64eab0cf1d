"""Pixel-wise uncertainty maps from T stochastic predictions (paper §1, §3.2).

Input convention: ``probs`` is a (T, H, W) stack of foreground probabilities, one map per
stochastic sample (MC dropout pass, TTA view, noisy input). ``NaN`` in ``probs[t]`` means
"pixel not observed by sample t" (e.g. outside a TTA zoom-in) and is ignored by every
reduction; every pixel must be observed by at least one sample.

Maps (all in bits where entropic, binary task C = 2):

* variance            (1/T) Σ_t (y_t − ȳ)²                    paper §1 (population variance)
* entropy             H(ȳ)                 total / predictive   paper §1, ``−Σ_c p̄_c log2 p̄_c``
* expected_entropy    (1/T) Σ_t H(y_t)     aleatoric part
* mutual_information  H(ȳ) − (1/T) Σ_t H(y_t)  epistemic part (BALD; Houlsby et al. 2011,
                      Gal et al. 2017), clipped at 0 against rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["UncertaintyMaps", "binary_entropy", "summarize"]

_LN2 = np.log(2.0)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits, H(p) = −p log2 p − (1−p) log2(1−p), with 0 log 0 = 0.

    ``p`` is clipped to [0, 1] and the result to [0, 1]; NaN propagates (unobserved pixels).
    Returns float32 for float32 input, float64 otherwise.
    """
    p = np.asarray(p)
    out_dtype = np.float32 if p.dtype == np.float32 else np.float64
    p64 = np.clip(p.astype(np.float64), 0.0, 1.0)
    from scipy.special import entr  # here: the app's result pages import this module without scipy

    h = (entr(p64) + entr(1.0 - p64)) / _LN2
    return np.clip(h, 0.0, 1.0).astype(out_dtype)


@dataclass
class UncertaintyMaps:
    """Summary of T samples; every field is an (H, W) float32 map."""

    mean: np.ndarray
    variance: np.ndarray
    entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray


def summarize(probs: np.ndarray) -> UncertaintyMaps:
    """Mean, variance, predictive entropy, expected entropy and mutual information of (T, H, W) ``probs``.

    NaN-aware: each pixel's statistics use only the samples that observed it.
    For T = 1, variance = mutual_information = 0 and entropy = expected_entropy.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must have shape (T, H, W) with T >= 1, got {probs.shape}")
    observed = ~np.isnan(probs)
    if not observed.any(axis=0).all():
        raise ValueError("every pixel must be observed (non-NaN) by at least one sample")
    if np.any((probs[observed] < 0.0) | (probs[observed] > 1.0)):
        raise ValueError("probs must lie in [0, 1] (NaN = not observed)")

    mean = np.nanmean(probs, axis=0)
    variance = np.nanmean((probs - mean) ** 2, axis=0)
    entropy = binary_entropy(mean)
    expected_entropy = np.nanmean(binary_entropy(probs), axis=0)
    mutual_information = np.clip(entropy - expected_entropy, 0.0, None)

    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return UncertaintyMaps(mean=f32(mean), variance=f32(variance), entropy=f32(entropy),
                           expected_entropy=f32(expected_entropy), mutual_information=f32(mutual_information))
