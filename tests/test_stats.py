"""Significance tests against arithmetic written out here and against scipy on the same numbers."""

import math

import numpy as np
import pytest
from scipy import stats as st

from mielib import metrics, stats

# 2 repeats × 3 folds of paired differences; mean 0.025, squared deviations sum to 1750e-6.
D = np.array([0.02, 0.04, 0.01, 0.03, 0.05, 0.00])


def test_corrected_ttest_by_hand():
    res = stats.corrected_ttest(D, n_train=20, n_test=10)
    var = 1750e-6 / 5  # sample variance, ddof 1
    se = math.sqrt((1 / 6 + 10 / 20) * var)  # Nadeau-Bengio: (1/J + n_test/n_train) × var
    t = 0.025 / se
    assert res.statistic == pytest.approx(t) and t == pytest.approx(1.6366, abs=1e-4)
    assert res.df == 5 and res.n == 6 and res.difference == pytest.approx(0.025) and res.se == pytest.approx(se)
    assert res.p == pytest.approx(2 * st.t.sf(t, 5))
    assert "Nadeau-Bengio" in res.test and "Bouckaert-Frank" in res.test
    lo, hi = res.interval(0.95)
    assert lo == pytest.approx(0.025 - st.t.ppf(0.975, 5) * se) and hi == pytest.approx(0.025 + st.t.ppf(0.975, 5) * se)
    # a and b give the same as their differences
    a = np.linspace(0.4, 0.5, 6)
    assert stats.corrected_ttest(a + D, a, n_train=20, n_test=10).statistic == pytest.approx(t)


def test_corrected_ttest_against_scipy_ttest_rel():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.3, 0.6, 15), rng.uniform(0.3, 0.6, 15)
    plain = st.ttest_rel(a, b)
    # The correction only: J = 15, so 1/J + n_test/n_train with n_test/n_train = 1/15 doubles
    # the 1/J variance factor, and t shrinks by sqrt(2).
    res = stats.corrected_ttest(a, b, n_train=30, n_test=2)
    assert res.statistic == pytest.approx(plain.statistic / math.sqrt(2))
    assert res.p > plain.pvalue
    # n_test/n_train -> 0: the plain paired t-test
    res0 = stats.corrected_ttest(a, b, n_train=1e15, n_test=1)
    assert res0.statistic == pytest.approx(plain.statistic) and res0.p == pytest.approx(plain.pvalue)
    # per-pair counts: the mean of the ratios (half the folds 1/5, half 1/15 -> 2/15)
    per = stats.corrected_ttest(a[:14], b[:14], n_train=[5, 15] * 7, n_test=1)
    assert per.se == pytest.approx(math.sqrt((1 / 14 + 2 / 15) * np.var(a[:14] - b[:14], ddof=1)))


def test_corrected_ttest_zero_variance_and_bad_input():
    same = stats.corrected_ttest([0.5] * 4, [0.5] * 4, n_train=30, n_test=10)
    assert same.p == 1.0 and same.statistic == 0.0
    shifted = stats.corrected_ttest([0.6] * 4, [0.5] * 4, n_train=30, n_test=10)
    assert shifted.p == 0.0 and shifted.statistic == math.inf
    with pytest.raises(ValueError, match="differ in length: a has 3, b has 2"):
        stats.corrected_ttest([1, 2, 3], [1, 2], n_train=10, n_test=5)
    with pytest.raises(ValueError, match="at least 2 paired scores, got 1"):
        stats.corrected_ttest([0.1], n_train=10, n_test=5)
    with pytest.raises(ValueError, match=r"non-finite values at positions \[1\]"):
        stats.corrected_ttest([0.1, np.nan, 0.2], n_train=10, n_test=5)
    with pytest.raises(ValueError, match="n_train must hold positive sample counts"):
        stats.corrected_ttest(D, n_train=0, n_test=5)
    with pytest.raises(ValueError, match=r"n_test must be one sample count or one per pair \(6\)"):
        stats.corrected_ttest(D, n_train=10, n_test=[5, 5])
    with pytest.raises(ValueError, match="only the corrected t-test"):
        stats.permutation_test(D).interval()


def test_permutation_test_exact_by_hand_and_against_scipy():
    # d = 1, 2, 3: the 8 sign patterns give sums 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 twice.
    res = stats.permutation_test([1.0, 2.0, 3.0])
    assert res.exact and res.resamples == 8 and res.p == pytest.approx(2 / 8) and res.statistic == pytest.approx(2.0)
    rng = np.random.default_rng(2)
    for n in (5, 10, 12):
        a, b = rng.normal(0.5, 0.1, n), rng.normal(0.45, 0.1, n)
        ref = st.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                  permutation_type="samples", n_resamples=np.inf, alternative="two-sided")
        ours = stats.permutation_test(a, b)
        assert ours.exact and ours.p == pytest.approx(ref.pvalue) and ours.statistic == pytest.approx(ref.statistic)
    # all ties: flipping zeros changes nothing
    assert stats.permutation_test([0.0, 0.0, 0.0]).p == 1.0


def test_permutation_test_monte_carlo():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.5, 0.1, 24), rng.normal(0.47, 0.1, 24)
    res = stats.permutation_test(a, b, n_resamples=4000, seed=7)
    assert not res.exact and res.resamples == 4000
    assert res == stats.permutation_test(a, b, n_resamples=4000, seed=7)  # seeded
    ref = st.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                              permutation_type="samples", n_resamples=20000, random_state=0)
    assert res.p == pytest.approx(ref.pvalue, abs=0.03)
    # a sign-consistent large shift: no random pattern reaches it, p = 1 / (R + 1)
    assert stats.permutation_test(np.ones(30), np.zeros(30), n_resamples=999).p == pytest.approx(1 / 1000)


def test_stacked_scores_match_metrics_scores():
    rng = np.random.default_rng(4)
    stack = rng.integers(0, 5, (6, 4, 4))
    stack[0, 2, :] = 0  # a class absent from the truth
    stack[1, :, 3] = 0  # and one never predicted
    for classes in metrics.CLASSES:
        got = metrics.stacked_scores(stack, classes)
        for i, c in enumerate(stack):
            ref = metrics.scores_from_confusion(c, classes)
            for m in ("uf1", "uar", "accuracy"):
                assert got[m][i] == pytest.approx(ref[m])


def test_paired_prediction_test_by_hand_and_brute_force():
    # a right on all 4 samples, b wrong: swapping s samples gives accuracy difference (4 - 2s)/4,
    # which reaches |1| only for s = 0 or 4: 2 of 16 patterns.
    res = stats.paired_prediction_test([0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], metric="accuracy")
    assert res.exact and res.p == pytest.approx(2 / 16) and res.statistic == pytest.approx(1.0)
    # UF1 over all 2**8 swaps, computed one by one with mielib.metrics
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 8)
    a = np.where(rng.random(8) < 0.7, y, rng.integers(0, 3, 8))
    b = rng.integers(0, 3, 8)
    obs = metrics.uf1(y, a, labels=range(3)) - metrics.uf1(y, b, labels=range(3))
    null = []
    for pattern in range(2 ** 8):
        swap = np.array([(pattern >> i) & 1 for i in range(8)], dtype=bool)
        null.append(metrics.uf1(y, np.where(swap, b, a), labels=range(3))
                    - metrics.uf1(y, np.where(swap, a, b), labels=range(3)))
    expected = np.mean(np.abs(null) >= abs(obs) - 1e-12)
    res = stats.paired_prediction_test(y, a, b, labels=range(3))
    assert res.statistic == pytest.approx(obs) and res.p == pytest.approx(expected) and "UF1" in res.test


def test_paired_prediction_test_monte_carlo_and_errors():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 300)
    good = np.where(rng.random(300) < 0.8, y, rng.integers(0, 3, 300))
    bad = np.where(rng.random(300) < 0.3, y, rng.integers(0, 3, 300))
    res = stats.paired_prediction_test(y, good, bad, metric="uar", n_resamples=500, seed=1, batch=128)
    assert not res.exact and res.resamples == 500 and res.p == pytest.approx(1 / 501)
    assert res.statistic == pytest.approx(metrics.uar(y, good) - metrics.uar(y, bad))
    same = stats.paired_prediction_test(y, good, good, n_resamples=200)
    assert same.p == 1.0 and same.statistic == 0.0
    with pytest.raises(ValueError, match="of one length"):
        stats.paired_prediction_test(y, good[:-1], bad)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        stats.paired_prediction_test(y, good, bad, metric="f1")
    with pytest.raises(ValueError, match=r"labels \['2'\] occur"):
        stats.paired_prediction_test(y, good, bad, labels=[0, 1])


def test_holm_by_hand_with_nan():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): × 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    # 0.02, 0.03, 0.06, 0.06
    got = stats.holm([0.01, 0.04, 0.03, np.nan, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, np.nan, 0.02])
    assert stats.holm([]).size == 0 and np.isnan(stats.holm([np.nan])).all()
    assert stats.holm([0.3, 0.5]).tolist() == [0.6, 0.6]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.2, 1.5])


def test_stars_follow_miex_fig5():
    cases = {0.0: "***", 0.0009: "***", 0.001: "**", 0.009: "**", 0.01: "*", 0.049: "*", 0.05: "n.s.",
             0.2: "n.s.", 1.0: "n.s."}
    for p, mark in cases.items():
        assert stats.stars(p) == mark, p
    assert stats.stars(float("nan")) == "n/a" and stats.stars(None) == "n/a" and stats.stars(np.float64(0.02)) == "*"
    with pytest.raises(ValueError, match="1.5"):
        stats.stars(1.5)


def test_rope_and_equivalence():
    assert stats.rope((-0.01, 0.015)) == "equivalent"
    assert stats.rope((0.03, 0.05)) == "different" and stats.rope((-0.09, -0.021)) == "different"
    assert stats.rope((-0.01, 0.05)) == "undecided"
    assert stats.rope((0.03, 0.05), width=0.06) == "equivalent"
    with pytest.raises(ValueError, match="low <= high"):
        stats.rope((0.1, 0.0))
    # differences 0.001 ± 0.002 with n_test/n_train = 1/4: interval well inside ±0.02
    d = np.array([0.003, -0.001, 0.001, 0.002, 0.0, 0.001])
    eq = stats.equivalence(d, n_train=40, n_test=10)
    se = math.sqrt((1 / 6 + 1 / 4) * np.var(d, ddof=1))
    half = st.t.ppf(0.975, 5) * se
    assert eq.interval == pytest.approx((d.mean() - half, d.mean() + half))
    assert eq.decision == "equivalent" and eq.rope == 0.02
    assert stats.equivalence(D, n_train=20, n_test=10).decision == "undecided"  # 0.025 ± 0.039
    assert stats.equivalence(D + 0.1, n_train=20, n_test=10).decision == "different"
