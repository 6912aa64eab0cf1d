import math

import numpy as np
import pytest

from segunc import metrics as M
from segunc.metrics import (HIGHER_IS_BETTER, METRIC_NAMES, compute_metrics, ece, ece_from_bins,
                            reliability_bins)

pytestmark = pytest.mark.unit

# A 2x2 slice used throughout:
#   prob = [[0.9, 0.6],    target = [[1, 0],    pred (p >= 0.5) = [[1, 1],
#           [0.4, 0.1]]              [1, 0]]                       [0, 0]]
#   -> TP = 1 (0,0), FP = 1 (0,1), FN = 1 (1,0), TN = 1 (1,1)
PROB = np.array([[0.9, 0.6], [0.4, 0.1]])
TARGET = np.array([[1, 0], [1, 0]], dtype=bool)
H09 = 0.4689955935892812   # H(0.9) = -(0.9 log2 0.9 + 0.1 log2 0.1)
H04 = 0.9709505944546686   # H(0.4) = -(0.4 log2 0.4 + 0.6 log2 0.6)


def test_names_and_directions():
    assert METRIC_NAMES == ("iou", "dice", "accuracy", "precision", "recall", "nll", "ece", "brier", "certainty")
    assert tuple(HIGHER_IS_BETTER) == METRIC_NAMES
    assert [k for k, v in HIGHER_IS_BETTER.items() if not v] == ["nll", "ece", "brier"]


def test_overlap_hand_computed():
    assert M.iou(PROB, TARGET) == pytest.approx(1 / 3)        # TP / (TP+FP+FN) = 1/3
    assert M.dice(PROB, TARGET) == pytest.approx(0.5)         # 2TP / (2TP+FP+FN) = 2/4
    assert M.accuracy(PROB, TARGET) == pytest.approx(0.5)     # (TP+TN)/N = 2/4
    assert M.precision(PROB, TARGET) == pytest.approx(0.5)    # TP/(TP+FP) = 1/2
    assert M.recall(PROB, TARGET) == pytest.approx(0.5)       # TP/(TP+FN) = 1/2


def test_overlap_uses_given_pred():
    pred = np.array([[1, 0], [1, 1]], dtype=bool)  # TP = 2, FP = 1, FN = 0, TN = 1
    assert M.iou(PROB, TARGET, pred) == pytest.approx(2 / 3)      # 2 / 3
    assert M.dice(PROB, TARGET, pred) == pytest.approx(0.8)       # 4 / 5
    assert M.accuracy(PROB, TARGET, pred) == pytest.approx(0.75)  # 3 / 4
    assert M.precision(PROB, TARGET, pred) == pytest.approx(2 / 3)
    assert M.recall(PROB, TARGET, pred) == pytest.approx(1.0)


def test_nll_hand_computed():
    # -(ln 0.9 + ln(1-0.6) + ln 0.4 + ln(1-0.1)) / 4 = -(ln 0.9 + ln 0.4)/2 = (0.1053605 + 0.9162907)/2
    assert M.nll(PROB, TARGET) == pytest.approx(-(math.log(0.9) + math.log(0.4)) / 2)
    assert M.nll(PROB, TARGET) == pytest.approx(0.5108256, abs=1e-7)
    # clipping: p = 0 on a foreground pixel costs -ln(1e-7) = 16.118, p = 1 on it costs -ln(1 - 1e-7) ~ 1e-7
    assert M.nll(np.array([[0.0]]), np.array([[True]])) == pytest.approx(-math.log(1e-7))
    assert M.nll(np.array([[1.0]]), np.array([[True]])) == pytest.approx(1e-7, rel=1e-3)


def test_brier_hand_computed():
    # ((0.9-1)^2 + 0.6^2 + (0.4-1)^2 + 0.1^2)/4 = (0.01 + 0.36 + 0.36 + 0.01)/4 = 0.185
    assert M.brier(PROB, TARGET) == pytest.approx(0.185)


def test_ece_hand_computed():
    # confidences max(p, 1-p) = 0.9, 0.6, 0.6, 0.9; correct = T, F, F, T
    # bin 8 (0.8, 0.9]: n = 2, acc 1, conf 0.9 -> 2/4 * 0.1; bin 5 (0.5, 0.6]: n = 2, acc 0, conf 0.6 -> 2/4 * 0.6
    # ECE = 0.05 + 0.30 = 0.35
    assert ece(PROB, TARGET) == pytest.approx(0.35)
    counts, sconf, scorr = reliability_bins(PROB, TARGET)
    assert counts.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    np.testing.assert_allclose(sconf, [0, 0, 0, 0, 0, 1.2, 0, 0, 1.8, 0])
    np.testing.assert_allclose(scorr, [0, 0, 0, 0, 0, 0, 0, 0, 2, 0])


def test_ece_bin_edges():
    # bins are right-closed: c = 0.5 -> bin 4 (0.4, 0.5], c = 0.7 -> bin 6 (0.6, 0.7], c = 1 -> bin 9
    p = np.array([[0.5, 0.7, 1.0, 0.0]])
    counts, _, _ = reliability_bins(p, np.zeros_like(p, bool))
    assert counts.tolist() == [0, 0, 0, 0, 1, 0, 1, 0, 0, 2]
    # one bin: ECE = |accuracy - mean confidence|
    p = np.array([[0.9, 0.2, 0.6]])
    t = np.array([[True, False, False]])  # correct: T, T, F; conf 0.9, 0.8, 0.6 -> |2/3 - 2.3/3| = 0.1
    assert ece(p, t, n_bins=1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        reliability_bins(p, t, n_bins=0)


def _reference_top_label_ece(prob, target, n_bins=10):
    """Independent multiclass top-label ECE over the 2-class distribution [1-p, p], by a plain loop."""
    dist = np.stack([1 - prob.ravel(), prob.ravel()], axis=1)  # (N, 2)
    labels = target.ravel().astype(int)
    conf = dist.max(axis=1)
    pred = dist.argmax(axis=1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = [i for i in range(len(conf)) if lo < conf[i] <= hi or (b == 0 and conf[i] == 0)]
        if not in_bin:
            continue
        acc = sum(pred[i] == labels[i] for i in in_bin) / len(in_bin)
        avg_conf = sum(conf[i] for i in in_bin) / len(in_bin)
        total += len(in_bin) / len(conf) * abs(acc - avg_conf)
    return total


def _random_case(seed, shape=(24, 24)):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.3, 0.3, shape)  # mass near 0 and 1, like a segmentation output
    target = rng.random(shape) < np.clip(p + rng.normal(0, 0.2, shape), 0, 1)
    return p, target


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_independent_reference(seed, n_bins):
    p, t = _random_case(seed)
    assert ece(p, t, n_bins) == pytest.approx(_reference_top_label_ece(p, t, n_bins), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_ece_matches_torchmetrics(seed):
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    p, t = _random_case(seed)
    preds = torch.tensor(np.stack([1 - p.ravel(), p.ravel()], axis=1), dtype=torch.float32)
    ref = tmf.multiclass_calibration_error(preds, torch.tensor(t.ravel().astype(np.int64)),
                                           num_classes=2, n_bins=10, norm="l1")
    assert ece(p, t) == pytest.approx(float(ref), abs=1e-6)


def _paper_foreground_ece(prob, target, n_bins=10):
    """The paper authors' variant: bins the foreground probability p and compares it with accuracy."""
    p, correct = prob.ravel(), ((prob.ravel() >= 0.5) == target.ravel())
    b = np.clip(np.ceil(p * n_bins).astype(int) - 1, 0, n_bins - 1)
    return sum((b == k).mean() * abs(correct[b == k].mean() - p[b == k].mean())
               for k in range(n_bins) if (b == k).any())


def test_paper_foreground_ece_differs_from_top_label():
    # a perfectly confident, perfectly correct background slice is perfectly calibrated ...
    p, t = np.zeros((4, 4)), np.zeros((4, 4), bool)
    assert ece(p, t) == 0.0
    # ... but binning the foreground probability scores it as maximally miscalibrated (conf 0, acc 1)
    assert _paper_foreground_ece(p, t) == pytest.approx(1.0)
    # and the two disagree on realistic maps too
    p, t = _random_case(0)
    assert abs(ece(p, t) - _paper_foreground_ece(p, t)) > 0.1


def test_reliability_bins_pool_over_slices():
    slices = [_random_case(s) for s in range(4)]
    pooled = [sum(arrs) for arrs in zip(*(reliability_bins(p, t) for p, t in slices))]
    p_all = np.concatenate([p for p, _ in slices])
    t_all = np.concatenate([t for _, t in slices])
    assert ece_from_bins(*pooled) == pytest.approx(ece(p_all, t_all), abs=1e-12)
    for p, t in slices:  # a slice's ECE is the ECE of its own bins
        assert ece(p, t) == ece_from_bins(*reliability_bins(p, t))
    counts = pooled[0]
    assert counts.dtype == np.int64 and counts.sum() == p_all.size
    assert ece_from_bins(np.zeros(10), np.zeros(10), np.zeros(10)) == 0.0


def test_certainty_hand_computed():
    # default u = H(p): region = target pixels (0,0) p=0.9, (1,0) p=0.4 -> 1 - (H(0.9) + H(0.4))/2 = 0.2800269
    assert M.certainty(PROB, TARGET) == pytest.approx(1 - (H09 + H04) / 2)
    # given u, clipped to [0, 1]: pixels (0,0) u=0.2 -> 0.8, (1,0) u=-0.5 -> clip(1.5) = 1 -> 0.9
    u = np.array([[0.2, 1.5], [-0.5, 0.3]])
    assert M.certainty(PROB, TARGET, u) == pytest.approx(0.9)


def test_certainty_region_fallbacks():
    u = np.array([[0.2, 0.4], [0.6, 0.8]])
    empty = np.zeros((2, 2), bool)
    # empty target -> predicted foreground (p >= 0.5): (0,0), (0,1) -> mean(0.8, 0.6) = 0.7
    assert M.certainty(PROB, empty, u) == pytest.approx(0.7)
    # ... or the given pred: (1,1) -> 0.2
    assert M.certainty(PROB, empty, u, pred=np.array([[0, 0], [0, 1]], bool)) == pytest.approx(0.2)
    # both empty -> all pixels: mean(0.8, 0.6, 0.4, 0.2) = 0.5
    assert M.certainty(np.full((2, 2), 0.1), empty, u) == pytest.approx(0.5)


def test_empty_conventions():
    tumour = np.array([[True, False], [False, False]])
    empty = np.zeros((2, 2), bool)
    low = np.full((2, 2), 0.1)     # empty prediction
    high = np.full((2, 2), 0.9)    # non-empty prediction
    # both empty: perfect overlap
    for f in (M.iou, M.dice, M.precision, M.recall, M.accuracy):
        assert f(low, empty) == 1.0
    # empty prediction on a tumour slice
    assert (M.iou(low, tumour), M.dice(low, tumour), M.precision(low, tumour), M.recall(low, tumour)) == (0, 0, 0, 0)
    assert M.accuracy(low, tumour) == 0.75
    # non-empty prediction on an empty slice
    assert (M.iou(high, empty), M.dice(high, empty), M.precision(high, empty), M.recall(high, empty)) == (0, 0, 0, 0)
    assert M.accuracy(high, empty) == 0.0


def test_all_zero_inputs_never_nan():
    z = np.zeros((8, 8), np.float32)
    for target in (np.zeros((8, 8), bool), np.ones((8, 8), bool)):
        for u in (None, np.zeros((8, 8)), np.ones((8, 8))):
            out = compute_metrics(z, target, uncertainty=u)
            assert all(math.isfinite(v) for v in out.values()), out
    out = compute_metrics(z, np.zeros((8, 8), bool))
    assert out == pytest.approx({"iou": 1, "dice": 1, "accuracy": 1, "precision": 1, "recall": 1,
                                 "nll": -math.log1p(-1e-7), "ece": 0, "brier": 0, "certainty": 1})


def test_compute_metrics_matches_functions():
    out = compute_metrics(PROB.astype(np.float32), TARGET)
    assert tuple(out) == METRIC_NAMES and all(isinstance(v, float) for v in out.values())
    expected = {"iou": 1 / 3, "dice": 0.5, "accuracy": 0.5, "precision": 0.5, "recall": 0.5,
                "nll": -(math.log(0.9) + math.log(0.4)) / 2, "ece": 0.35, "brier": 0.185,
                "certainty": 1 - (H09 + H04) / 2}
    assert out == pytest.approx(expected, abs=1e-6)
    pred = np.array([[1, 0], [1, 1]], dtype=bool)
    out = compute_metrics(PROB, TARGET, pred=pred)
    assert out["dice"] == pytest.approx(0.8) and out["ece"] == pytest.approx(0.35)  # ECE ignores pred


def test_input_validation():
    with pytest.raises(ValueError):
        compute_metrics(np.array([[np.nan]]), np.array([[True]]))
    with pytest.raises(ValueError):
        compute_metrics(np.array([[1.5]]), np.array([[True]]))
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((2, 2)), np.zeros((2, 3), bool))
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((2, 2)), np.zeros((2, 2), bool), uncertainty=np.full((2, 2), np.nan))
    # non-bool masks are accepted (0/255 uint8 masks as stored on disk)
    assert M.dice(PROB, TARGET.astype(np.uint8) * 255) == 0.5
