import numpy as np
import pytest

from segunc.uncertainty import UncertaintyMaps, binary_entropy, summarize

pytestmark = pytest.mark.unit

H25 = 0.8112781244591328  # H(0.25) = 0.25*2 + 0.75*log2(4/3) = 0.5 + 0.3112781


def test_binary_entropy_values():
    p = np.array([0.0, 1.0, 0.5, 0.25, 0.75], dtype=np.float32)
    h = binary_entropy(p)
    assert h.dtype == np.float32
    np.testing.assert_allclose(h, [0.0, 0.0, 1.0, H25, H25], atol=1e-6)
    assert h[0] == 0.0 and h[1] == 0.0  # 0 log 0 = 0 exactly, no NaN
    assert binary_entropy(np.float64(0.5)).dtype == np.float64


def test_binary_entropy_range_and_nan():
    p = np.linspace(0, 1, 1001)
    h = binary_entropy(p)
    assert np.isfinite(h).all() and h.min() >= 0.0 and h.max() <= 1.0
    assert np.isnan(binary_entropy(np.array([np.nan]))).all()  # unobserved stays unobserved


def _stack():
    # 2x2 pixels, T = 3 samples; probs[:, r, c]
    probs = np.zeros((3, 2, 2), dtype=np.float32)
    probs[:, 0, 0] = [0.0, 0.0, 0.0]
    probs[:, 0, 1] = [0.25, 0.25, 1.0]
    probs[:, 1, 0] = [0.5, 0.5, 0.5]
    probs[:, 1, 1] = [0.0, 1.0, 0.5]
    return probs


def test_summarize_hand_computed():
    m = summarize(_stack())
    assert isinstance(m, UncertaintyMaps)
    for a in (m.mean, m.variance, m.entropy, m.expected_entropy, m.mutual_information):
        assert a.shape == (2, 2) and a.dtype == np.float32
    # means: 0; (0.25+0.25+1)/3 = 0.5; 0.5; (0+1+0.5)/3 = 0.5
    np.testing.assert_allclose(m.mean, [[0, 0.5], [0.5, 0.5]], atol=1e-7)
    # variance (1/T): 0; (0.0625+0.0625+0.25)/3 = 0.125; 0; (0.25+0.25+0)/3 = 1/6
    np.testing.assert_allclose(m.variance, [[0, 0.125], [0, 1 / 6]], atol=1e-7)
    # entropy of the mean: H(0)=0, H(0.5)=1
    np.testing.assert_allclose(m.entropy, [[0, 1], [1, 1]], atol=1e-6)
    # expected entropy: 0; (H25+H25+0)/3; (1+1+1)/3 = 1; (0+0+1)/3
    ee = [[0, 2 * H25 / 3], [1, 1 / 3]]
    np.testing.assert_allclose(m.expected_entropy, ee, atol=1e-6)
    # MI = entropy - expected entropy: 0; 1 - 0.540852 = 0.459148; 0; 2/3
    np.testing.assert_allclose(m.mutual_information, [[0, 1 - 2 * H25 / 3], [0, 2 / 3]], atol=1e-6)


def test_summarize_ignores_nan():
    probs = _stack()
    probs[1, 1, 1] = np.nan          # pixel (1,1) now observed by samples 0 and 2: [0.0, 0.5]
    probs[:2, 0, 0] = np.nan         # pixel (0,0) observed by sample 2 only: [0.0]
    m = summarize(probs)
    for a in (m.mean, m.variance, m.entropy, m.expected_entropy, m.mutual_information):
        assert np.isfinite(a).all()
    # pixel (1,1): mean 0.25; var (0.0625+0.0625)/2 = 0.0625; H(0.25); EH = (0+1)/2 = 0.5
    assert m.mean[1, 1] == pytest.approx(0.25)
    assert m.variance[1, 1] == pytest.approx(0.0625)
    assert m.entropy[1, 1] == pytest.approx(H25, abs=1e-6)
    assert m.expected_entropy[1, 1] == pytest.approx(0.5, abs=1e-6)
    assert m.mutual_information[1, 1] == pytest.approx(H25 - 0.5, abs=1e-6)
    assert m.mean[0, 0] == 0 and m.variance[0, 0] == 0 and m.mutual_information[0, 0] == 0


def test_summarize_single_sample():
    p = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    m = summarize(p)
    np.testing.assert_array_equal(m.mean, p[0])
    assert (m.variance == 0).all() and (m.mutual_information == 0).all()
    np.testing.assert_array_equal(m.entropy, m.expected_entropy)
    np.testing.assert_allclose(m.entropy, binary_entropy(p[0]), atol=1e-7)


def test_summarize_ranges_random():
    p = np.random.default_rng(1).random((30, 16, 16)).astype(np.float32)
    p[p < 0.05] = 0.0
    p[p > 0.95] = 1.0
    m = summarize(p)
    assert (m.variance >= 0).all() and (m.variance <= 0.25).all()
    for a in (m.entropy, m.expected_entropy, m.mutual_information):
        assert (a >= 0).all() and (a <= 1).all()
    assert (m.mutual_information <= m.entropy).all()
    np.testing.assert_allclose(m.mean, p.mean(0), atol=1e-6)
    np.testing.assert_allclose(m.variance, p.astype(np.float64).var(0), atol=1e-6)


def test_summarize_validation():
    with pytest.raises(ValueError):
        summarize(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        summarize(np.full((2, 2, 2), np.nan))
    with pytest.raises(ValueError):
        summarize(np.full((2, 2, 2), 1.5))
