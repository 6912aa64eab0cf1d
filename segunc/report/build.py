"""Assemble the report from the results store: one section per backend, then the provenance.

Per backend: the box plots of the nine metrics × modes (paper figures 2, 4, 6), descriptive
statistics (median, IQR, mean, bootstrap CI), Friedman and Holm-corrected pairwise Wilcoxon
tests (:mod:`segunc.analysis.stats`), reliability diagrams from the stored bins, uncertainty as an error
detector (pooled pixel AUROC / AUPRC per map, Spearman ρ of slice scores with 1 − Dice,
risk–coverage and AURC), the review-queue outcome (threshold picked on the val split), aleatoric
vs epistemic uncertainty, tumour-free slices and cost beside quality (:mod:`segunc.analysis`).
Provenance: every run behind the reported results with its settings JSON and weights sha256,
and the key material of every settings id.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import settings
from ..analysis import stats
from ..analysis import (BAD_DICE, UNCERTAINTY_MAPS, cost_quality, decomposition_summary, review_outcome,
                        risk_coverage_table, slice_scores, spearman_table, stored_error_stats, tumour_free_summary)
from ..analysis.applicable import applicable_rows
from ..analysis.reliability import calibration_table
from ..metrics import METRIC_NAMES
from ..viz import mode_label
from . import figures
from .doc import Code, Document, Image, Table, Text, fmt_num, fmt_p, fmt_table

__all__ = ["ReportOptions", "NoResultsError", "select_results", "build_report"]

SPLITS = ("val", "test", "train", "all")
MAP_SHORT = {"variance": "variance", "entropy": "entropy", "mutual_information": "MI"}
SCORE_LABELS = {"mean_entropy": "entropy (image mean)", "mean_variance": "variance (image mean)",
                "mean_mi": "MI (image mean)", **{f"{m}_{s}": f"{MAP_SHORT[m]} ({where})" for m in UNCERTAINTY_MAPS
                                                 for s, where in (("near", "mask + 5 px"), ("in", "in mask"))}}


class NoResultsError(LookupError):
    """The store holds nothing to report on; the message says what to run."""


@dataclass
class ReportOptions:
    split: str = "val"
    val_split: str = "val"
    backends: Sequence[str] | None = None
    run_ids: Sequence[str] | None = None
    data: Path | None = None  # ground-truth masks for the error analyses (default: $SEGUNC_DATA)
    score: str = "entropy_near"  # slice score of the review queue and risk–coverage (mask + 5 px: best ρ on val)
    bad_dice: float = BAD_DICE
    target_recall: float = 0.8
    n_resamples: int = 2000
    alpha: float = 0.05
    command: str = ""  # the command line, recorded in the report
    notes: list[str] = field(default_factory=list)
    data_note: str = ""  # why the ground-truth masks are unavailable, if they are


def _lbl(score: str) -> str:
    return SCORE_LABELS.get(score, score)


def select_results(store, opts: ReportOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of ``opts.split``, rows of ``opts.val_split``) for the chosen backends / runs, one result per
    slice × backend × mode (the newest where several settings exist; ``opts.notes`` says so).
    Raises :class:`NoResultsError` with the command to run when the split has no results."""
    if opts.split not in SPLITS:
        raise ValueError(f"unknown split {opts.split!r}; expected one of {', '.join(SPLITS)}")
    df = store.metrics_frame(backends=list(opts.backends) if opts.backends else None,
                             run_ids=list(opts.run_ids) if opts.run_ids else None)
    everything = store.metrics_frame()
    where = f" in the results store at {store.root}"
    backends = ",".join(opts.backends) if opts.backends else "unet"
    cache = f" --cache {store.root}"
    hint = (f"Compute them first, e.g.: python -m segunc run --split {opts.split if opts.split != 'all' else 'val'} "
            f"--backend {backends.split(',')[0]}{cache}")
    if everything.empty:
        raise NoResultsError(f"no results{where}. {hint}")
    if opts.backends:
        unknown = sorted(set(opts.backends) - set(everything["backend"]))
        if unknown:
            raise NoResultsError(f"no results for backend(s) {', '.join(unknown)}{where} (it holds: "
                                 f"{', '.join(stats.order_backends(everything['backend']))}). {hint}")
    sel = df if opts.split == "all" else df[df["split"] == opts.split]
    if sel.empty:
        have = ", ".join(f"{s} ({n})" for s, n in df["split"].value_counts().items()) or "none"
        raise NoResultsError(f"no results for split '{opts.split}'{where} (results per split: {have}). {hint}")

    def dedupe(d: pd.DataFrame) -> pd.DataFrame:
        dup = d.duplicated(["backend", "mode", "slice_id"], keep="last")
        if dup.any():
            opts.notes.append(f"{int(dup.sum())} older result(s) of a slice × backend × mode under other settings were "
                              "left out (the newest is reported); pass --run to choose the runs.")
        return d[~dup].reset_index(drop=True)

    cal = df[df["split"] == opts.val_split]
    sel = dedupe(sel)
    cal = sel if opts.val_split == opts.split else cal[~cal.duplicated(["backend", "mode", "slice_id"], keep="last")]
    return _ordered(sel), _ordered(cal.reset_index(drop=True))


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    return stats.sort_by_backend_mode(df)


class _Steps:
    """tqdm bar over the report's sections (stderr); a failing section becomes a warning in the report."""

    def __init__(self, total: int, progress: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="report", unit="section", file=sys.stderr, disable=not progress,
                        dynamic_ncols=True)
        self.failed: list[str] = []

    def run(self, doc: Document, what: str, fn, *args) -> None:
        self.bar.set_postfix_str(what[:40])
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the rest of the report still gets written
            self.failed.append(f"{what}: {type(exc).__name__}: {exc}")
            doc.add(Text(f"This section could not be built ({type(exc).__name__}: {exc}).", "warn"))
            print(f"warning: report section '{what}' failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------------------ sections
def _metrics_section(doc: Document, b: str, d: pd.DataFrame, opts: ReportOptions) -> None:
    doc.heading(3, "Metrics by mode", f"{b}-metrics")
    n = d["slice_id"].nunique()
    doc.add(Image(f"{b}_metrics.png", figures.metric_boxplots(d),
                  f"{b}: the nine metrics per mode over {n} slice(s) of split {opts.split} (box: quartiles, whiskers: "
                  "1.5 IQR, line: median, ◆: mean, dots: slices)."))
    desc = stats.describe(d, METRIC_NAMES, n_resamples=opts.n_resamples)
    modes = stats.order_modes(d["mode"])
    metrics = [m for m in METRIC_NAMES if m in set(desc["metric"])]

    def pivot(cell) -> pd.DataFrame:
        rows = []
        for mode in modes:
            row = {"mode": mode_label(mode)}
            for m in metrics:
                r = desc[(desc["mode"] == mode) & (desc["metric"] == m)]
                row[stats.METRIC_LABELS.get(m, m)] = cell(r.iloc[0]) if len(r) else "–"
            rows.append(row)
        return pd.DataFrame(rows)

    doc.add(Table(pivot(lambda r: f"{fmt_num(r['median'], 3)}\n[{fmt_num(r['q1'], 3)}, {fmt_num(r['q3'], 3)}]"),
                  "Median [Q1, Q3] per slice (IQR = Q3 − Q1)."))
    doc.add(Table(pivot(lambda r: f"{fmt_num(r['mean'], 3)}\n[{fmt_num(r['ci_low'], 3)}, {fmt_num(r['ci_high'], 3)}]"),
                  f"Mean [95 % BCa bootstrap CI of the mean, {opts.n_resamples:,} resamples]."))
    full = desc.assign(metric=desc["metric"].map(lambda m: stats.METRIC_LABELS.get(m, m)),
                       mode=desc["mode"].map(mode_label)).drop(columns=["backend"])
    doc.add(Table(fmt_table(full, rename={"ci_low": "CI low", "ci_high": "CI high"}),
                  "Full descriptive table (n, median, Q1, Q3, IQR, mean, SD, 95 % CI)", collapsed=True))


def _tests_section(doc: Document, b: str, d: pd.DataFrame, opts: ReportOptions) -> None:
    doc.heading(3, "Significance tests", f"{b}-tests")
    modes = stats.order_modes(d["mode"])
    if len(modes) < 2:
        doc.add(Text("One mode only: nothing to compare.", "note"))
        return
    fr_rows, pw = [], []
    for m in METRIC_NAMES:
        fr = stats.friedman(d, m, b, modes)
        fr_rows.append({"metric": stats.METRIC_LABELS.get(m, m), "blocks": fr.n_blocks, "modes": len(fr.modes),
                        "χ²": fr.statistic, "p": fr.pvalue, "Kendall's W": fr.kendalls_w, "note": fr.note})
        pw.append(stats.pairwise_wilcoxon(d, m, b, modes, alpha=opts.alpha))
    doc.add(Table(fmt_table(pd.DataFrame(fr_rows), {"p": fmt_p}),
                  "Friedman test across the modes, blocked by slice (scipy.stats.friedmanchisquare); "
                  "Kendall's W = χ² / (n (k − 1))."))
    pw = pd.concat(pw, ignore_index=True)
    sig = pw[pw["significant"]]
    doc.add(Text(f"Pairwise Wilcoxon signed-rank tests, Holm-corrected within each metric at α = {opts.alpha}: "
                 f"{len(sig)} of {len(pw)} pairs differ significantly."
                 + (" Smallest p (Holm): " + ", ".join(
                     f"{stats.METRIC_LABELS[r.metric]} {mode_label(r.mode_a)} vs {mode_label(r.mode_b)} {fmt_p(r.p_holm)}"
                     for r in pw.nsmallest(3, "p_holm").itertuples()) + "." if pw["p_holm"].notna().any() else "")))
    show = pw.assign(metric=pw["metric"].map(stats.METRIC_LABELS.get), mode_a=pw["mode_a"].map(mode_label),
                     mode_b=pw["mode_b"].map(mode_label),
                     better=pw["better"].map(lambda m: mode_label(m) if m else ""))
    show = show[["metric", "mode_a", "mode_b", "n", "median_a", "median_b", "rank_biserial", "pvalue", "p_holm",
                 "significant", "better", "note"]]
    doc.add(Table(fmt_table(show, {"pvalue": fmt_p, "p_holm": fmt_p},
                            rename={"mode_a": "mode A", "mode_b": "mode B", "median_a": "median A", "median_b": "median B",
                                    "rank_biserial": "r", "pvalue": "p", "p_holm": "p (Holm)", "significant": "< α"}),
                  "Pairwise Wilcoxon tests, every metric (r: matched-pairs rank-biserial, +1 = A above B on every slice)",
                  collapsed=True))


def _calibration_section(doc: Document, b: str, d: pd.DataFrame, store) -> None:
    doc.heading(3, "Calibration", f"{b}-calibration")
    pooled, table = calibration_table(d, store.reliability)
    bins = {mode: v for (_, mode), v in pooled.items()}
    doc.add(Image(f"{b}_reliability.png", figures.reliability_diagrams(bins),
                  f"{b}: top-label reliability diagrams pooled over every pixel of the slices (10 bins); hatched: the "
                  "gap between confidence and accuracy."))
    table = table.drop(columns="backend").assign(mode=table["mode"].map(mode_label))
    doc.add(Table(fmt_table(table), "Pooled and per-slice calibration."))


def _errors_section(doc: Document, b: str, d: pd.DataFrame, errs, opts: ReportOptions) -> None:
    doc.heading(3, "Uncertainty as an error detector", f"{b}-errors")
    if errs is None:
        doc.add(Text("Pixel-level error detection needs the ground-truth masks; " + opts.data_note, "warn"))
    else:
        pooled = applicable_rows(errs.pooled(d), "map")  # not Normal's variance / MI: zero by construction
        if pooled.empty:
            doc.add(Text("No error statistics could be computed for these results.", "warn"))
        else:
            pooled = pooled.assign(mode=pooled["mode"].map(mode_label), map=pooled["map"].map(MAP_SHORT))
            best = pooled.loc[pooled.groupby("mode", sort=False)["pooled_auroc"].idxmax().dropna()]
            doc.add(Text("Does high uncertainty sit on the wrong pixels (prediction ≠ ground truth)? Best map per mode "
                         "(pooled pixel AUROC): " + "; ".join(f"{r.mode}: {r.map} {fmt_num(r.pooled_auroc, 3)}"
                                                              for r in best.itertuples()) + "."))
            show = pooled.drop(columns=["backend"])
            doc.add(Table(fmt_table(show, rename={"pooled_auroc": "AUROC (pooled)", "pooled_auprc": "AUPRC (pooled)",
                                                  "median_auroc": "AUROC (median slice)", "median_auprc": "AUPRC (median slice)",
                                                  "median_error_dice": "overlap Dice (median)", "error_px": "error px",
                                                  "n_slices": "slices"}),
                          "Pixel-level detection of errors by each uncertainty map: AUROC and AUPRC pooled over all pixels "
                          "(1000 log-spaced bins), per-slice medians, and the median Dice between the Otsu-thresholded "
                          "map and the error map. A random detector scores AUROC 0.5 and AUPRC = the error rate."))
    scores = slice_scores(d.columns)
    rho = applicable_rows(spearman_table(d, scores), "score")
    wide = rho.assign(cell=[f"{fmt_num(r, 3)}\n(p {fmt_p(p)})" if np.isfinite(r) else "–" for r, p in zip(rho["rho"], rho["p"])])
    modes = stats.order_modes(d["mode"])
    wide = wide.pivot_table(index="score", columns="mode", values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(index=scores, columns=modes).fillna("n/a")
    wide.columns = [mode_label(m) for m in wide.columns]
    wide.index = [_lbl(sc) for sc in wide.index]
    doc.add(Table(wide.reset_index(names="slice score"),
                  f"Spearman ρ (p) between a slice's mean uncertainty and 1 − Dice over {d['slice_id'].nunique()} "
                  "slice(s): ρ > 0 means more uncertain slices are worse; – where the score is constant or there are "
                  "fewer than 3 slices; n/a where it does not apply (a single pass has no variance or mutual "
                  "information)."))
    score = opts.score if opts.score in d.columns else "mean_entropy"
    doc.add(Image(f"{b}_risk_coverage.png", figures.risk_coverage_curves(d, score),
                  f"{b}: risk–coverage when the slices most uncertain by {_lbl(score)} are referred to a human."))
    rc = risk_coverage_table(d, [score])
    if len(rc):
        rc = rc.assign(mode=rc["mode"].map(mode_label)).drop(columns=["backend", "score"])
        doc.add(Table(fmt_table(rc, rename={"aurc": "AURC", "oracle_aurc": "oracle AURC", "e_aurc": "E-AURC",
                                            "full_risk": "risk at full coverage", "n": "slices"}),
                      f"Area under the risk–coverage curve for {_lbl(score)} (lower is better; E-AURC = AURC − oracle)."))


def _review_section(doc: Document, b: str, d: pd.DataFrame, cal: pd.DataFrame, opts: ReportOptions,
                    attachments: dict) -> None:
    doc.heading(3, "Review queue", f"{b}-review")
    score = opts.score if opts.score in d.columns else "mean_entropy"
    rows, queues, scheme, notes = [], [], "", set()
    for mode in stats.order_modes(d["mode"]):
        f = pd.concat([d[d["mode"] == mode], cal[cal["mode"] == mode]]).drop_duplicates("key")
        out = review_outcome(f, opts.split, score, opts.bad_dice, opts.target_recall, opts.val_split)
        scheme = out.scheme
        if out.note:
            notes.add(out.note)
        s = out.summary()
        rows.append({"mode": mode_label(mode), "threshold": s["threshold"], "cal. slices": s["calibration_slices"],
                     "cal. recall": s["calibration_recall"], "slices": s["n_slices"], "bad": s["n_bad"],
                     "flagged": s["n_flagged"], "caught": s["caught"], "missed": s["missed"],
                     "false alarms": s["false_alarms"], "recall": s["recall"], "flagged share": s["flagged_fraction"],
                     "precision": s["precision"]})
        if out.evaluation is not None:
            queues.append(out.evaluation.frame.assign(backend=b, mode=mode, threshold=out.evaluation.threshold))
    doc.add(Text(f"Refer a slice to a human when its {_lbl(score)} is at least a threshold. The threshold is the largest "
                 f"that catches ≥ {opts.target_recall:.0%} of the slices with Dice < {opts.bad_dice} ({scheme})."))
    for n in sorted(notes):
        doc.add(Text(f"Note: {n}.", "warn"))
    table = pd.DataFrame(rows)
    for c in ("cal. slices", "slices", "bad", "flagged", "caught", "missed", "false alarms"):
        table[c] = table[c].astype("Int64")
    doc.add(Table(fmt_table(table),
                  "Outcome on the evaluated slices: caught = bad and flagged, missed = bad and not flagged, false alarm = "
                  "flagged but Dice ≥ the bar; recall = caught / bad; precision = caught / flagged."))
    if queues:
        name = f"review_queue_{b}.csv"
        attachments[name] = pd.concat(queues, ignore_index=True).to_csv(index=False).encode()
        doc.add(Text(f"The ranked queues (every evaluated slice, its score, Dice and outcome) are in {name} beside this "
                     "report.", "note"))


def _extras_section(doc: Document, b: str, d: pd.DataFrame) -> None:
    doc.heading(3, "Aleatoric vs epistemic", f"{b}-decomposition")
    dec = decomposition_summary(d)
    doc.add(Image(f"{b}_decomposition.png", figures.decomposition_bars(dec),
                  f"{b}: total predictive entropy = expected entropy (aleatoric) + mutual information (epistemic)."))
    show = dec[["mode", "n", "aleatoric_image_mean", "epistemic_image_mean", "epistemic_share_median"]]
    doc.add(Table(fmt_table(show.assign(mode=show["mode"].map(mode_label)),
                            rename={"aleatoric_image_mean": "aleatoric (mean bits)", "epistemic_image_mean":
                                    "epistemic (mean bits)", "epistemic_share_median": "epistemic share (median)"}),
                  "Image means over slices. A single pass (normal) has no epistemic part; for CRF the entropy is "
                  "recomputed after refinement."))

    doc.heading(3, "Tumour-free slices", f"{b}-tumour-free")
    tf = tumour_free_summary(d)
    if tf.empty:
        doc.add(Text("No tumour-free slices among these results (sweeps skip them unless run with --all-slices).",
                     "note"))
    else:
        doc.add(Table(fmt_table(tf.drop(columns=["backend"]).assign(mode=tf["mode"].map(mode_label))),
                      "Slices without tumour: share with any false positive, false-positive area (px), mean uncertainty "
                      "there vs on tumour slices, and the AUROC of the entropy for 'has a false positive'."))

    doc.heading(3, "Cost beside quality", f"{b}-cost")
    cost = cost_quality(d)
    doc.add(Image(f"{b}_cost.png", figures.cost_quality_scatter(cost), f"{b}: seconds per slice against median Dice."))
    cols = ["mode", "n", "seconds_median", "x_reference", "dice_median", "iou_median", "nll_median", "ece_median",
            "brier_median"]
    doc.add(Table(fmt_table(cost[[c for c in cols if c in cost.columns]].assign(mode=cost["mode"].map(mode_label)),
                            rename={"seconds_median": "s/slice (median)", "x_reference": "× normal",
                                    **{f"{m}_median": f"{stats.METRIC_LABELS.get(m, m)} (median)" for m in METRIC_NAMES}}),
                  "Wall time per slice of each mode including the modes it builds on (fusion: its sources; CRF: fusion), "
                  "on the machine that ran it."))


def _provenance_section(doc: Document, store, keys: Sequence[str], opts: ReportOptions) -> None:
    doc.heading(2, "Settings and provenance", "provenance")
    keys = list(dict.fromkeys(keys))
    run_ids, sids = set(), {}
    for i in range(0, len(keys), 900):
        part = keys[i:i + 900]
        marks = ", ".join("?" * len(part))
        run_ids |= {r[0] for r in store.con.execute(f"SELECT DISTINCT run_id FROM run_results WHERE key IN ({marks})", part)}
        run_ids |= {r[0] for r in store.con.execute(f"SELECT DISTINCT run_id FROM results WHERE key IN ({marks}) "
                                                    "AND run_id IS NOT NULL", part)}
        for sid, material in store.con.execute(
                f"SELECT DISTINCT r.settings_id, s.material FROM results r LEFT JOIN settings s "
                f"ON s.settings_id = r.settings_id WHERE r.key IN ({marks})", part):
            sids[sid] = material
    runs = store.runs()
    runs = runs[runs["run_id"].isin(run_ids)]
    if opts.command:
        doc.add(Text(f"Regenerate with: {opts.command}", "note"))
    if runs.empty:
        doc.add(Text("No recorded run owns these results.", "note"))
    else:
        show = runs.assign(created=runs["created_at"].dt.strftime("%Y-%m-%d %H:%M UTC"),
                           modes=runs["modes"].fillna("").str.replace(",", ", "),
                           weights=runs["weights_sha256"].fillna("–"))
        doc.add(Table(fmt_table(show[["run_id", "backend", "modes", "n_slices", "created", "weights"]],
                                rename={"run_id": "run", "n_slices": "slices", "weights": "weights sha256"}),
                      "Runs (sweeps) behind the reported results, with the sha256 of the weights they used."))
        for r in runs.itertuples():
            try:
                text = json.dumps(json.loads(r.settings_json), indent=2, sort_keys=True)
            except (TypeError, ValueError):
                text = str(r.settings_json)
            doc.add(Code(text, f"Job spec of run {r.run_id} ({r.backend}; weights sha256 {r.weights_sha256 or '–'})"))
    def label(material: str | None) -> tuple[str, str]:
        try:
            m = json.loads(material)
            return str(m.get("backend", {}).get("backend", "?")), str(m.get("mode", "?"))
        except (TypeError, ValueError, AttributeError):
            return "?", "?"

    brank = {b: i for i, b in enumerate(stats.order_backends(label(m)[0] for m in sids.values()))}
    mrank = {m: i for i, m in enumerate(stats.order_modes(label(m)[1] for m in sids.values()))}
    for sid, material in sorted(sids.items(), key=lambda kv: (brank[label(kv[1])[0]], mrank[label(kv[1])[1]], kv[0])):
        try:
            text = json.dumps(json.loads(material), indent=2, sort_keys=True) if material else "(not recorded)"
        except (TypeError, ValueError):
            text = str(material)
        b, m = label(material)
        doc.add(Code(text, f"Key material of settings {sid[:16]}… ({b} · {mode_label(m)})"))


# ------------------------------------------------------------------------------- build
def build_report(store, opts: ReportOptions, progress: bool = True) -> tuple[Document, dict[str, bytes], list[str]]:
    """(document, attachments {file name: bytes}, failed sections). Raises :class:`NoResultsError`."""
    from ..data import DataError, resolve_root

    sel, cal = select_results(store, opts)
    data = settings.data_dir(opts.data or None)
    errs = None
    try:
        root = resolve_root(data)
        keys = list(dict.fromkeys([*sel["key"], *cal["key"]]))
        errs = stored_error_stats(store, keys, root, progress=progress)
        if errs.missing:
            first = next(iter(errs.missing.items()))
            opts.notes.append(f"error statistics missing for {len(errs.missing)} result(s) (e.g. {first[0][:12]}…: "
                              f"{first[1]}).")
        sel, cal = errs.join(sel), errs.join(cal)
    except DataError as exc:
        opts.data_note = f"{exc}. Pass --data (or set SEGUNC_DATA) to the kaggle_3m folder."
        opts.notes.append("Ground-truth masks not found: " + opts.data_note)

    backends = stats.order_backends(sel["backend"])
    doc = Document(f"segunc report · split {opts.split}",
                   f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the results store {store.root} · "
                   f"{len(sel):,} results · {sel['slice_id'].nunique():,} slices · {sel['patient_id'].nunique():,} "
                   f"patient(s) · backends: {', '.join(backends)}")
    attachments: dict[str, bytes] = {}
    steps = _Steps(1 + 7 * len(backends) + 1, progress)
    doc.heading(2, "Overview", "overview")

    def overview() -> None:
        rows = []
        for b in backends:
            g = sel[sel["backend"] == b]
            rows.append({"backend": b, "modes": ", ".join(mode_label(m) for m in stats.order_modes(g["mode"])),
                         "slices": g["slice_id"].nunique(), "patients": g["patient_id"].nunique(), "results": len(g),
                         f"{opts.val_split} slices (calibration)": cal.loc[cal["backend"] == b, "slice_id"].nunique(),
                         "median Dice (normal)": g.loc[g["mode"] == "normal", "dice"].median()})
        doc.add(Table(fmt_table(pd.DataFrame(rows)), f"What this report covers (split {opts.split})."))
        for n in dict.fromkeys(opts.notes):
            doc.add(Text(n, "warn"))

    steps.run(doc, "overview", overview)
    for b in backends:
        d = sel[sel["backend"] == b].reset_index(drop=True)
        c = cal[cal["backend"] == b].reset_index(drop=True)
        doc.heading(2, f"Backend: {b}", f"backend-{b}")
        steps.run(doc, f"{b}: metrics", _metrics_section, doc, b, d, opts)
        steps.run(doc, f"{b}: tests", _tests_section, doc, b, d, opts)
        steps.run(doc, f"{b}: calibration", _calibration_section, doc, b, d, store)
        steps.run(doc, f"{b}: error detection", _errors_section, doc, b, d, errs, opts)
        steps.run(doc, f"{b}: review queue", _review_section, doc, b, d, c, opts, attachments)
        steps.run(doc, f"{b}: decomposition, tumour-free, cost", _extras_section, doc, b, d)
        steps.bar.update(1)
    steps.run(doc, "provenance", _provenance_section, doc, store, sel["key"].tolist(), opts)
    steps.close()
    return doc, attachments, steps.failed
