"""Statistics over the per-slice metric table (paper §4.1, "Comparative Analysis Across Methods").

Pure functions on the long metric frame of the results store (one row per slice × backend × mode,
columns ``slice_id``, ``patient_id``, ``backend``, ``mode`` and the metrics of
:data:`segunc.metrics.METRIC_NAMES`). Every test is scipy's or statsmodels'; this module only
shapes the data and adds effect sizes:

* :func:`describe` — n, median, IQR, mean, SD and a bootstrap CI of the mean
  (``scipy.stats.bootstrap``, BCa by default) per backend × mode × metric.
* :func:`friedman` — Friedman test across modes within one backend, blocked by slice (or by
  patient with ``per_patient=True``), ``scipy.stats.friedmanchisquare``; effect size Kendall's
  W = χ²_F / (n (k − 1)) (Tomczak & Tomczak 2014).
* :func:`pairwise_wilcoxon` — Wilcoxon signed-rank test for every pair of modes
  (``scipy.stats.wilcoxon``), Holm-corrected (``statsmodels ... multipletests(method="holm")``),
  with the matched-pairs rank-biserial correlation r = (R⁺ − R⁻) / (R⁺ + R⁻) (Kerby 2014).
* :func:`to_latex` — the descriptive table as a LaTeX ``tabular`` for a thesis.

Slices of one patient are not independent; ``per_patient=True`` first averages each
patient's slices (per backend × mode) and uses patients as blocks.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..metrics import HIGHER_IS_BETTER, METRIC_NAMES
from .profiles import PROFILE_ORDER, split_profile

__all__ = ["METRIC_LABELS", "MODE_ORDER", "aggregate", "paired_table", "bootstrap_ci", "describe", "FriedmanResult",
           "friedman", "pairwise_wilcoxon", "rank_biserial", "kendalls_w", "holm", "to_latex", "order_modes",
           "order_backends", "BACKEND_LABELS", "backend_label", "MIN_PATIENTS", "few_patients_caution", "spearman_sign_note"]

METRIC_LABELS = {"iou": "IoU", "dice": "Dice", "accuracy": "Accuracy", "precision": "Precision", "recall": "Recall",
                 "nll": "NLL", "ece": "ECE", "brier": "Brier", "certainty": "Certainty"}
#: display order of modes (paper Fig. 2) and backends (registry order); unknown ones follow alphabetically
MODE_ORDER = ("normal", "mc_dropout", "tta", "noisy", "box_jitter", "fusion", "crf")
BACKEND_ORDER = ("unet", "litemedsam", "medsam", "universeg")
#: below this many patients a test or a fitted threshold gets a ``caution``: slices of one patient are
#: strongly correlated, so the effective sample size is about the number of patients
MIN_PATIENTS = 5


def few_patients_caution(n_patients: int, what: str = "this result", minimum: int = MIN_PATIENTS) -> str:
    """A caution (empty when ``n_patients`` ≥ ``minimum``) that ``what`` rests on too few patients."""
    if n_patients >= minimum:
        return ""
    return (f"{what} rests on {n_patients} patient(s) (fewer than {minimum}): slices of one patient are not "
            f"independent, so treat it as anecdotal, not as evidence")


def _n_patients(df: pd.DataFrame, blocks: Iterable[str], per_patient: bool) -> int:
    """Distinct patients among the blocks (slice ids are mapped through ``patient_id``)."""
    blocks = list(blocks)
    if per_patient:
        return len(set(blocks))
    if "patient_id" in df.columns:
        m = df.drop_duplicates("slice_id").set_index("slice_id")["patient_id"]
        return int(m.reindex(blocks).nunique())
    return len({"_".join(str(b).split("_")[:3]) for b in blocks})


def spearman_sign_note(rho: float | None = None, score: str = "the uncertainty score") -> str:
    """Plain-language reading of Spearman ρ between a slice's uncertainty and 1 − Dice (its error).

    ρ > 0: more uncertain slices tend to be segmented worse (the wanted behaviour: uncertainty
    can flag bad slices); ρ ≈ 0: no monotone relation; ρ < 0: the *better* segmented slices are the
    more uncertain ones, e.g. because a mean over a larger predicted tumour sums more uncertain
    boundary pixels, so that score should not be used to rank slices for review."""
    general = (f"Spearman ρ is the rank correlation between {score} and 1 − Dice over slices: "
               "+1 means the most uncertain slices are always the worst segmented, 0 no monotone relation, "
               "−1 the reverse.")
    if rho is None or not np.isfinite(rho):
        return general
    if rho >= 0.1:
        reading = (f"Here ρ = {rho:.2f} > 0: more uncertain slices tend to be segmented worse, as wanted "
                   "for flagging slices for review.")
    elif rho <= -0.1:
        reading = (f"Here ρ = {rho:.2f} < 0: the better-segmented slices carry more of this uncertainty "
                   "(often because larger tumours have more uncertain boundary pixels), so this score does not "
                   "flag bad slices; do not rank slices by it.")
    else:
        reading = f"Here ρ = {rho:.2f} ≈ 0: this score says little about which slices are segmented badly."
    return f"{general} {reading}"


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    rank = {m: i for i, m in enumerate(order)}
    if hasattr(names, "unique"):  # a Series: unique first (fast on large columns)
        names = names.unique()
    return sorted(dict.fromkeys(names), key=lambda m: (rank.get(m, len(rank)), m))


def sort_by_backend_mode(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in display order: backends as :func:`order_backends`, modes as :func:`order_modes` (stable)."""
    if df.empty:
        return df
    rank = {"backend": {b: i for i, b in enumerate(order_backends(df["backend"]))},
            "mode": {m: i for i, m in enumerate(order_modes(df["mode"]))}}
    return df.sort_values(["backend", "mode"], key=lambda s: s.map(rank[s.name]), kind="stable").reset_index(drop=True)


def order_modes(modes: Iterable[str]) -> list[str]:
    """Unique modes in the paper's order, unknown ones after, alphabetically; a profiled mode
    (``fusion@tuned on val``, :mod:`.profiles`) right after its mode."""
    rank = {m: i for i, m in enumerate(MODE_ORDER)}
    prank = {p: i for i, p in enumerate(PROFILE_ORDER)}
    if hasattr(modes, "unique"):
        modes = modes.unique()

    def key(m: str):
        base, label = split_profile(m)
        return rank.get(base, len(rank)), base, bool(label), prank.get(label, len(prank)), label

    return sorted(dict.fromkeys(modes), key=key)


def order_backends(backends: Iterable[str]) -> list[str]:
    """Unique backends in registry order (U-Net, LiteMedSAM, MedSAM, UniverSeg), unknown ones after."""
    return _ordered(backends, BACKEND_ORDER)


def _check(df: pd.DataFrame, metric: str, cols: Sequence[str] = ("backend", "mode", "slice_id")) -> None:
    missing = [c for c in (*cols, metric) if c not in df.columns]
    if missing:
        raise KeyError(f"metric frame lacks column(s) {missing}; has {list(df.columns)}")


def aggregate(df: pd.DataFrame, metric: str, per_patient: bool = False) -> pd.DataFrame:
    """Long frame (backend, mode, block, value): one row per slice, or per patient (mean of its slices).

    Duplicate (backend, mode, slice) rows (the same slice in two runs) are averaged first, so every
    slice counts once.
    """
    _check(df, metric, ("backend", "mode", "slice_id", *(["patient_id"] if per_patient else [])))
    cols = ["backend", "mode", "slice_id", *(["patient_id"] if per_patient else []), metric]
    d = df[cols].dropna(subset=[metric])
    d = d.groupby(["backend", "mode", "slice_id", *(["patient_id"] if per_patient else [])], sort=False,
                  observed=True)[metric].mean().reset_index()
    block = "patient_id" if per_patient else "slice_id"
    if per_patient:
        d = d.groupby(["backend", "mode", "patient_id"], sort=False, observed=True)[metric].mean().reset_index()
    return d.rename(columns={block: "block", metric: "value"})[["backend", "mode", "block", "value"]]


def paired_table(df: pd.DataFrame, metric: str, backend: str, modes: Sequence[str] | None = None,
                 per_patient: bool = False) -> pd.DataFrame:
    """Wide block × mode table of one backend, complete blocks only (a slice missing a mode is dropped)."""
    a = aggregate(df[df["backend"] == backend], metric, per_patient)
    wide = a.pivot(index="block", columns="mode", values="value")
    modes = order_modes(wide.columns) if modes is None else list(modes)
    absent = [m for m in modes if m not in wide.columns]
    if absent:
        raise KeyError(f"backend '{backend}' has no '{metric}' results for mode(s) {absent}")
    return wide[modes].dropna().sort_index()


# ------------------------------------------------------------------------ descriptives
def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 2000, method: str = "BCa",
                 seed: int = 0, statistic=np.mean) -> tuple[float, float]:
    """Bootstrap CI of ``statistic`` (``scipy.stats.bootstrap``); NaN for n < 2, a point for constant data.

    BCa is undefined on constant data (zero jackknife spread), hence the point interval there.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    if np.ptp(x) == 0:
        v = float(statistic(x))
        return v, v
    from scipy import stats as sst  # here: the pages that only order and label rows do not load scipy.stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning on near-constant data → falls back below
        res = sst.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples, method=method,
                            vectorized=True, rng=np.random.default_rng(seed), batch=max(1, 2_000_000 // x.size))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)) and method.lower() != "percentile":
        return bootstrap_ci(x, confidence, n_resamples, "percentile", seed, statistic)
    return lo, hi


def describe(df: pd.DataFrame, metrics: Sequence[str] | None = None, per_patient: bool = False,
             confidence: float = 0.95, n_resamples: int = 2000, method: str = "BCa", seed: int = 0) -> pd.DataFrame:
    """Descriptive statistics per backend × mode × metric.

    Columns: backend, mode, metric, n, median, q1, q3, iqr, mean, sd, ci_low, ci_high (bootstrap CI of
    the mean at ``confidence``). Quartiles are numpy's linear-interpolation percentiles.
    """
    metrics = [m for m in (metrics or METRIC_NAMES) if m in df.columns]
    rows = []
    for metric in metrics:
        a = aggregate(df, metric, per_patient)
        for (backend, mode), g in a.groupby(["backend", "mode"], sort=False, observed=True):
            x = g["value"].to_numpy(dtype=float)
            q1, med, q3 = np.percentile(x, [25, 50, 75])
            lo, hi = bootstrap_ci(x, confidence, n_resamples, method, seed)
            rows.append({"backend": backend, "mode": mode, "metric": metric, "n": int(x.size), "median": float(med),
                         "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1), "mean": float(x.mean()),
                         "sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"), "ci_low": lo, "ci_high": hi})
    out = pd.DataFrame(rows, columns=["backend", "mode", "metric", "n", "median", "q1", "q3", "iqr", "mean", "sd",
                                      "ci_low", "ci_high"])
    return _sort(out)


def _sort(out: pd.DataFrame) -> pd.DataFrame:
    if out.empty:
        return out
    rank = {"mode": {m: i for i, m in enumerate(order_modes(out["mode"]))},
            "backend": {b: i for i, b in enumerate(order_backends(out["backend"]))},
            "metric": {m: i for i, m in enumerate([*METRIC_NAMES, *sorted(set(out["metric"]) - set(METRIC_NAMES))])}}
    return out.sort_values(["metric", "backend", "mode"], key=lambda s: s.map(rank[s.name])).reset_index(drop=True)


# ---------------------------------------------------------------------------- tests
@dataclass
class FriedmanResult:
    """Friedman test of k modes over n blocks; ``pvalue`` NaN (with ``note``) when it cannot run."""

    backend: str
    metric: str
    modes: list[str]
    n_blocks: int
    statistic: float = float("nan")
    pvalue: float = float("nan")
    kendalls_w: float = float("nan")
    per_patient: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)
    n_patients: int = 0
    caution: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def kendalls_w(statistic: float, n_blocks: int, k: int) -> float:
    """Kendall's W from Friedman's χ²: W = χ² / (n (k − 1)), in [0, 1]."""
    if n_blocks < 1 or k < 2:
        return float("nan")
    return float(statistic / (n_blocks * (k - 1)))


def friedman(df: pd.DataFrame, metric: str, backend: str, modes: Sequence[str] | None = None,
             per_patient: bool = False) -> FriedmanResult:
    """Friedman test across ``modes`` (default: all of the backend's) within ``backend``, blocked by slice/patient."""
    wide = paired_table(df, metric, backend, modes, per_patient)
    modes = list(wide.columns)
    res = FriedmanResult(backend, metric, modes, int(len(wide)), per_patient=per_patient)
    res.n_patients = _n_patients(df, wide.index, per_patient)
    res.caution = few_patients_caution(res.n_patients, "This Friedman test")
    if len(modes) < 3:
        res.note = f"Friedman needs at least 3 modes (have {len(modes)}); see the pairwise tests"
        return res
    if len(wide) < 2:
        res.note = f"Friedman needs at least 2 complete blocks (have {len(wide)})"
        return res
    x = wide.to_numpy(dtype=float)
    if np.all(x == x[:, :1]):
        res.statistic, res.pvalue, res.kendalls_w = 0.0, 1.0, 0.0
        res.note = "all modes identical within every block"
        return res
    from scipy import stats as sst

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sst.friedmanchisquare(*[x[:, j] for j in range(x.shape[1])])
    res.statistic, res.pvalue = float(r.statistic), float(r.pvalue)
    res.kendalls_w = kendalls_w(res.statistic, len(wide), len(modes))
    return res


def rank_biserial(a, b) -> float:
    """Matched-pairs rank-biserial correlation of ``a − b`` (Kerby 2014): (R⁺ − R⁻) / (R⁺ + R⁻).

    Zero differences are dropped (as Wilcoxon's ``zero_method="wilcox"``), ties get average ranks;
    +1 means every non-zero difference favours ``a`` being larger. 0.0 when all differences are zero.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    from scipy import stats as sst

    r = sst.rankdata(np.abs(d))
    rp, rm = r[d > 0].sum(), r[d < 0].sum()
    return float((rp - rm) / (rp + rm))


def holm(pvalues, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down adjusted p-values and rejections (statsmodels); NaN p-values stay NaN, not rejected."""
    p = np.asarray(pvalues, dtype=float)
    adj = np.full(p.shape, np.nan)
    rej = np.zeros(p.shape, dtype=bool)
    ok = np.isfinite(p)
    if ok.any():
        from statsmodels.stats.multitest import multipletests

        r, a, _, _ = multipletests(p[ok], alpha=alpha, method="holm")
        adj[ok], rej[ok] = a, r
    return adj, rej


def pairwise_wilcoxon(df: pd.DataFrame, metric: str, backend: str, modes: Sequence[str] | None = None,
                      per_patient: bool = False, alpha: float = 0.05, zero_method: str = "wilcox",
                      alternative: str = "two-sided", method: str = "auto") -> pd.DataFrame:
    """Wilcoxon signed-rank test of every pair of ``modes`` within ``backend``, Holm-corrected over the pairs.

    Pairs use the blocks complete for all ``modes`` (the same blocks as :func:`friedman`).
    Columns: backend, metric, mode_a, mode_b, n, median_a, median_b, median_diff (median of a − b),
    statistic, pvalue, p_holm, significant, rank_biserial, better (the mode favoured by the metric's
    direction when significant, else ""), note, n_patients, caution (non-empty under
    :data:`MIN_PATIENTS` patients).
    """
    from scipy import stats as sst

    wide = paired_table(df, metric, backend, modes, per_patient)
    rows = []
    for a, b in itertools.combinations(list(wide.columns), 2):
        x, y = wide[a].to_numpy(float), wide[b].to_numpy(float)
        d = x - y
        row = {"backend": backend, "metric": metric, "mode_a": a, "mode_b": b, "n": int(d.size),
               "median_a": float(np.median(x)) if d.size else np.nan, "median_b": float(np.median(y)) if d.size else np.nan,
               "median_diff": float(np.median(d)) if d.size else np.nan, "statistic": np.nan, "pvalue": np.nan,
               "rank_biserial": rank_biserial(x, y) if d.size else np.nan, "note": ""}
        if d.size == 0:
            row["note"] = "no complete blocks"
        elif np.all(d == 0):
            row["note"] = "identical in every block"
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = sst.wilcoxon(x, y, zero_method=zero_method, alternative=alternative, method=method)
                row["statistic"], row["pvalue"] = float(r.statistic), float(r.pvalue)
            except ValueError as exc:
                row["note"] = str(exc)
        rows.append(row)
    out = pd.DataFrame(rows, columns=["backend", "metric", "mode_a", "mode_b", "n", "median_a", "median_b", "median_diff",
                                      "statistic", "pvalue", "rank_biserial", "note"])
    adj, rej = holm(out["pvalue"].to_numpy(float), alpha)
    out.insert(10, "p_holm", adj)
    out.insert(11, "significant", rej)
    hib = HIGHER_IS_BETTER.get(metric, True)
    better = np.where(out["rank_biserial"] > 0, out["mode_a"], out["mode_b"]) if hib else \
        np.where(out["rank_biserial"] < 0, out["mode_a"], out["mode_b"])
    out.insert(13, "better", np.where(rej, better, ""))
    n_pat = _n_patients(df, wide.index, per_patient)
    out["n_patients"] = n_pat
    out["caution"] = few_patients_caution(n_pat, "This Wilcoxon test")
    return out


# ---------------------------------------------------------------------------- LaTeX
def _fmt(v: float, digits: int) -> str:
    return "--" if not np.isfinite(v) else f"{v:.{digits}f}"


#: display names of backends and modes in tables and figures (unknown ones are shown as they are)
BACKEND_LABELS = {"unet": "U-Net", "litemedsam": "LiteMedSAM", "medsam": "MedSAM", "universeg": "UniverSeg"}
MODE_LABELS = {"normal": "Normal", "mc_dropout": "MC dropout", "tta": "TTA", "noisy": "Noisy",
               "box_jitter": "Box jitter", "fusion": "Fusion", "crf": "CRF"}


def mode_label(mode: str) -> str:
    """Display name of a mode (``mc_dropout`` → ``MC dropout``; a profiled mode ``fusion@tuned on val`` →
    ``Fusion (tuned on val)``); unknown modes as they are."""
    base, label = split_profile(mode)
    name = MODE_LABELS.get(base, base)
    return f"{name} ({label})" if label else name


def backend_label(backend: str) -> str:
    return BACKEND_LABELS.get(backend, backend)


def to_latex(desc: pd.DataFrame, metrics: Sequence[str] | None = None, stat: str = "median_iqr", digits: int = 3,
             caption: str | None = None, label: str | None = None, bold_best: bool = True,
             width: str = r"\linewidth") -> str:
    r"""The :func:`describe` table as a LaTeX ``table`` (booktabs rules): one row per backend × mode, one
    column per metric, display names (``MC dropout``, ``U-Net``), not identifiers.

    ``stat``: ``median_iqr`` (median [Q1, Q3]) or ``mean_ci`` (mean [CI low, CI high]); the interval is set
    small under the value so a column stays narrow. Up to four metrics the table is a ``tabular*`` spread to
    ``width``; with more it is a ``tabular`` scaled to ``width`` (``\resizebox``), so it always fits. With
    ``bold_best`` the best central value of each metric within each backend is bold (direction from
    :data:`segunc.metrics.HIGHER_IS_BETTER`). Needs ``\usepackage{booktabs,graphicx,makecell}``.
    """
    if stat not in ("median_iqr", "mean_ci"):
        raise ValueError(f"stat must be 'median_iqr' or 'mean_ci', got {stat!r}")
    if desc.empty:
        raise ValueError("no descriptive statistics to tabulate (empty selection)")
    metrics = [m for m in (metrics or METRIC_NAMES) if m in set(desc["metric"])]
    centre, lo, hi = ("median", "q1", "q3") if stat == "median_iqr" else ("mean", "ci_low", "ci_high")
    best: dict[tuple[str, str], float] = {}
    if bold_best:
        for (backend, metric), g in desc.groupby(["backend", "metric"], sort=False):
            vals = g[centre].round(digits)
            best[(backend, metric)] = vals.max() if HIGHER_IS_BETTER.get(metric, True) else vals.min()
    backends = order_backends(desc["backend"])
    body: list[str] = []
    for bi, backend in enumerate(backends):
        d = desc[desc["backend"] == backend]
        if bi:
            body.append(r"\midrule")
        for i, mode in enumerate(order_modes(d["mode"])):
            cells = [_tex(backend_label(backend)) if i == 0 else "", _tex(mode_label(mode))]
            for metric in metrics:
                r = d[(d["mode"] == mode) & (d["metric"] == metric)]
                if r.empty:
                    cells.append("--")
                    continue
                r = r.iloc[0]
                c = _fmt(r[centre], digits)
                if bold_best and np.isfinite(r[centre]) and round(r[centre], digits) == best.get((backend, metric)):
                    c = rf"\textbf{{{c}}}"
                cells.append(rf"\makecell{{{c}\\ \scriptsize[{_fmt(r[lo], digits)}, {_fmt(r[hi], digits)}]}}")
            body.append(" & ".join(cells) + r" \\")
    head = " & ".join(["Backend", "Mode", *[_tex(METRIC_LABELS.get(m, m)) for m in metrics]]) + r" \\"
    what = "median [Q1, Q3]" if stat == "median_iqr" else "mean [bootstrap CI of the mean]"
    caption = caption or f"Per-slice metrics, {what}. Bold: best per backend."
    cols = "ll" + "c" * len(metrics)
    rules = [r"\toprule", head, r"\midrule", *body, r"\bottomrule"]
    if len(metrics) > 4:  # natural width, scaled down to the page (a tabular* cannot shrink below its content)
        tabular = "\n".join([rf"\resizebox{{{width}}}{{!}}{{%", rf"\begin{{tabular}}{{@{{}}{cols}@{{}}}}", *rules,
                             r"\end{tabular}}"])
    else:  # spread to the page width
        tabular = "\n".join([rf"\begin{{tabular*}}{{{width}}}{{@{{\extracolsep{{\fill}}}}{cols}@{{}}}}", *rules,
                             r"\end{tabular*}"])
    lines = ["% needs \\usepackage{booktabs,graphicx,makecell}", r"\begin{table}[htbp]", r"\centering", r"\small",
             tabular, rf"\caption{{{caption}}}"]
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    """Escape LaTeX specials in a backend or mode name."""
    return "".join(_TEX.get(ch, ch) for ch in str(s))
