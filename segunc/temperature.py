"""Temperature scaling (Guo et al. 2017) for pretrained segmentation backends, without retraining.

One scalar T > 0 per backend (optionally per mode) divides the logits before the sigmoid:
p = σ(z / T), or for a stochastic mode with samples z_1..z_S, p̄ = (1/S) Σ_s σ(z_s / T) — the
same place ``PipelineConfig.temperature`` acts in :func:`segunc.pipeline.evaluate_slice`
(before averaging and fusion). T is fitted on the val split by minimising the NLL of
:func:`segunc.metrics.nll` (natural log, p clipped to [1e-7, 1 − 1e-7]) with
``scipy.optimize.minimize_scalar`` over log T (bounded, default T ∈ [0.05, 20]). The fitted T
is kept only if it lowers the fitting NLL below that of T = 1, so fitting never raises it.
A thresholded mask at 0.5 does not move for a single pass (σ(z/T) ≥ ½ ⇔ z ≥ 0); for averaged
samples it can.

Memory: fitting does not hold every pixel. :class:`PixelSample` keeps, per slice, a seeded
uniform subsample of at most ``per_stratum`` pixels from each of four strata — ground truth
{tumour, background} × prediction {foreground, background} — so tumour pixels and errors are
always represented; each kept pixel carries the weight n_stratum / n_kept (inverse inclusion
probability), so the weighted NLL is an unbiased estimate of the mean NLL over all pixels
(Horvitz–Thompson). A stratum smaller than ``per_stratum`` is kept whole (weight 1); with
every stratum whole the fit is exact.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit

from .metrics import NLL_EPS, compute_metrics

__all__ = ["TemperatureScaler", "PixelSample", "temperature_nll", "fit_temperature", "fit_temperature_scaler",
           "calibration_slices", "temperature_report", "summarize_temperature_report"]

T_BOUNDS = (0.05, 20.0)
PER_STRATUM = 2000


def _split(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """→ (logits as (S, N) float64, targets (N,) bool, had_samples). ``logits`` has the targets'
    shape, or a leading samples axis."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(targets)
    t = t.astype(bool) if t.dtype == bool else t != 0
    if z.shape == t.shape:
        return z.reshape(1, -1), t.ravel(), False
    if z.ndim == t.ndim + 1 and z.shape[1:] == t.shape:
        return z.reshape(z.shape[0], -1), t.ravel(), True
    raise ValueError(f"logits {z.shape} must have the targets' shape {t.shape} or a leading samples axis")


def _pixel_nll(z: np.ndarray, t: np.ndarray, temperature: float) -> np.ndarray:
    """Per-pixel −ln p(t) of p̄ = mean_s σ(z_s / T), p clipped to [eps, 1 − eps] (``z``: S N)."""
    lo, hi = -np.log1p(-NLL_EPS), -np.log(NLL_EPS)
    u = z / temperature
    if z.shape[0] == 1:  # stable log-sigmoid: −ln σ(u) = log(1 + e^{−u})
        loss = np.where(t, np.logaddexp(0.0, -u[0]), np.logaddexp(0.0, u[0]))
        return np.clip(loss, lo, hi)
    p = np.clip(expit(u).mean(axis=0), NLL_EPS, 1.0 - NLL_EPS)
    return np.where(t, -np.log(p), -np.log1p(-p))


def temperature_nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0,
                    sample_weight: np.ndarray | None = None) -> float:
    """(Weighted) mean NLL of σ(logits / T) against ``targets``, as :func:`segunc.metrics.nll`."""
    z, t, _ = _split(logits, targets)
    loss = _pixel_nll(z, t, float(temperature))
    w = None if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
    return float(np.average(loss, weights=w))


class TemperatureScaler:
    """netcal-style estimator: ``fit(logits, targets)`` on val, ``transform(logits)`` → logits / T.

    ``logits`` has the targets' shape (one prediction per pixel) or a leading samples axis
    (S, ...) whose probabilities are averaged. After ``fit``: ``temperature_``, ``nll_before_``
    (T = 1) and ``nll_after_`` on the fitting data, ``n_pixels_``.
    """

    def __init__(self, bounds: tuple[float, float] = T_BOUNDS, xatol: float = 1e-4):
        if not 0 < bounds[0] < 1 < bounds[1]:
            raise ValueError(f"bounds must satisfy 0 < low < 1 < high, got {bounds}")
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.xatol = float(xatol)
        self.temperature_ = 1.0
        self.nll_before_ = self.nll_after_ = float("nan")
        self.n_pixels_ = 0

    def fit(self, logits: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None = None) -> "TemperatureScaler":
        z, t, _ = _split(logits, targets)
        if t.size == 0 or not np.isfinite(z).all():
            raise ValueError("need a non-empty, finite set of logits to fit a temperature")
        w = None if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
        if w is not None and (w.shape != t.shape or (w < 0).any() or w.sum() <= 0):
            raise ValueError("sample_weight must be non-negative, one per pixel, with a positive sum")

        def f(log_t: float) -> float:
            return float(np.average(_pixel_nll(z, t, float(np.exp(log_t))), weights=w))

        res = minimize_scalar(f, bounds=tuple(np.log(self.bounds)), method="bounded", options={"xatol": self.xatol})
        before, after = f(0.0), float(res.fun)
        self.temperature_, self.nll_after_ = (float(np.exp(res.x)), after) if after < before else (1.0, before)
        self.nll_before_ = before
        self.n_pixels_ = int(t.size)
        return self

    def transform(self, logits):
        """Calibrated logits z / T (numpy array or torch tensor)."""
        return logits / self.temperature_

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """σ(z / T) elementwise (average over a samples axis yourself, as the pipeline does)."""
        return expit(np.asarray(logits, np.float64) / self.temperature_)

    def __repr__(self) -> str:
        return f"TemperatureScaler(T={self.temperature_:.4f}, nll {self.nll_before_:.4f} → {self.nll_after_:.4f})"


class PixelSample:
    """Stratified, weighted pixel subsample of many slices (see module doc); memory O(slices × 4 × per_stratum × S)."""

    def __init__(self, per_stratum: int = PER_STRATUM, seed: int = 0):
        if per_stratum < 1:
            raise ValueError(f"per_stratum must be >= 1, got {per_stratum}")
        self.per_stratum = int(per_stratum)
        self.rng = np.random.default_rng(seed)
        self._z: list[np.ndarray] = []
        self._t: list[np.ndarray] = []
        self._w: list[np.ndarray] = []

    def add(self, logits: np.ndarray, target: np.ndarray) -> "PixelSample":
        """Add one slice: ``logits`` (H, W) or (S, H, W), ``target`` (H, W)."""
        z, t, _ = _split(logits, target)
        if self._z and self._z[0].shape[0] != z.shape[0]:
            raise ValueError(f"every slice needs the same number of samples: {self._z[0].shape[0]} before, {z.shape[0]} now")
        pred = expit(z).mean(axis=0) >= 0.5
        for stratum in (t & pred, t & ~pred, ~t & pred, ~t & ~pred):
            idx = np.flatnonzero(stratum)
            if idx.size == 0:
                continue
            take = idx if idx.size <= self.per_stratum else self.rng.choice(idx, self.per_stratum, replace=False)
            self._z.append(z[:, take].astype(np.float32))
            self._t.append(t[take])
            self._w.append(np.full(take.size, idx.size / take.size))
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits (S, n) float32, targets (n,) bool, weights (n,) float64)."""
        if not self._z:
            raise ValueError("no pixels collected")
        return np.concatenate(self._z, axis=1), np.concatenate(self._t), np.concatenate(self._w)

    def __len__(self) -> int:
        return sum(len(t) for t in self._t)


# --------------------------------------------------------------------------- real models
def calibration_slices(refs: Iterable, split: str = "val", max_slices: int | None = 64, tumour_only: bool = True,
                       seed: int = 0, patients: Sequence[str] | None = None) -> list:
    """The slice refs a temperature is fitted on: ``split`` (and ``patients`` if given), tumour slices
    unless ``tumour_only=False``, then at most ``max_slices`` ordered by sha256(seed|slice id) — a
    seeded sample that does not depend on the order of ``refs``."""
    from .data import select
    from .data import tumour_only as keep_tumour

    chosen = select(refs, split, patients)
    key = lambda r: hashlib.sha256(f"{seed}|{r.slice_id}".encode()).hexdigest()  # noqa: E731
    chosen = sorted(chosen, key=key)
    if tumour_only:
        out = []
        for r in chosen:  # read masks lazily: stop once enough tumour slices are found
            out += keep_tumour([r])
            if max_slices and len(out) >= max_slices:
                break
        chosen = out
    return chosen[:max_slices] if max_slices else chosen


def _logits(backend, slice_, mode: str, config) -> np.ndarray:
    import torch

    from .modes import SliceInput
    from .pipeline import make_mode

    m = make_mode(mode, config)
    if not m.supports(backend):
        raise ValueError(f"mode '{mode}' does not apply to backend '{backend.name}'")
    with torch.inference_mode():
        z = m.sample_logits(backend, SliceInput.from_slice(slice_, backend))
    return z.float().cpu().numpy()


def fit_temperature_scaler(backend, refs: Iterable, config, max_slices: int = 64, mode: str = "normal",
                           split: str = "val", per_stratum: int = PER_STRATUM, tumour_only: bool = True,
                           patients: Sequence[str] | None = None,
                           bounds: tuple[float, float] = T_BOUNDS) -> TemperatureScaler:
    """Run ``mode`` (default the single pass) of the real ``backend`` on up to ``max_slices`` slices
    of ``split`` (:func:`calibration_slices`, seeded by ``config.seed``), collect a stratified pixel
    sample of the raw logits (``config.temperature`` is ignored) and fit a :class:`TemperatureScaler`."""
    from .data import load_slice

    sample = PixelSample(per_stratum, seed=config.seed)
    for ref in calibration_slices(refs, split, max_slices, tumour_only, config.seed, patients):
        s = load_slice(ref)
        sample.add(_logits(backend, s, mode, config), s.mask)
    z, t, w = sample.arrays()
    return TemperatureScaler(bounds).fit(z if z.shape[0] > 1 else z[0], t, w)


def fit_temperature(backend, refs: Iterable, config, max_slices: int = 64, **kwargs) -> float:
    """The fitted temperature of :func:`fit_temperature_scaler` (use it as ``PipelineConfig.temperature``)."""
    return fit_temperature_scaler(backend, refs, config, max_slices, **kwargs).temperature_


def temperature_report(backend, slices: Sequence, config, temperature: float,
                       modes: Sequence[str] = ("normal",)) -> pd.DataFrame:
    """Per (slice, mode, phase ∈ {before, after}) the metrics of :func:`segunc.metrics.compute_metrics`
    at T = 1 and at ``temperature``, from ONE set of sample logits per (slice, mode); sampling modes
    only (the probabilities are the mean of σ(z_s / T) as in the pipeline, mask at 0.5)."""
    rows = []
    for s in slices:
        for mode in modes:
            z = _logits(backend, s, mode, replace(config, temperature=1.0))
            for phase, temp in (("before", 1.0), ("after", float(temperature))):
                p = np.nanmean(expit(z.astype(np.float64) / temp), axis=0)
                rows.append({"slice_id": s.slice_id, "patient_id": s.patient_id, "mode": mode, "phase": phase,
                             "temperature": temp, "tumour_px": int(s.mask.sum()), **compute_metrics(p, s.mask)})
    return pd.DataFrame(rows)


def summarize_temperature_report(report: pd.DataFrame, metrics: Sequence[str] = ("nll", "ece", "brier", "dice")) -> pd.DataFrame:
    """Mean and median of ``metrics`` per (mode, phase), phases ordered before → after."""
    g = report.groupby(["mode", "phase"], sort=False)[list(metrics)]
    out = pd.concat({"mean": g.mean(), "median": g.median()}, axis=1)
    out.columns = [f"{m}_{s}" for s, m in out.columns]
    return out.reset_index()
