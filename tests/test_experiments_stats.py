"""experiments.stats against independent references: scipy.stats (t distribution, t-test,
permutation test, binomial test), brute-force enumeration of sign patterns, Holm by hand,
closed forms for log-step interpolation, NumPy's polyfit."""

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from experiments import stats


def _brute_sign_flip(d):
    """Loops over every sign pattern, counting |Σ ε d| ≥ |Σ d| (exact rational arithmetic)."""
    from fractions import Fraction

    d = [Fraction(x).limit_denominator(10**9) for x in d]
    observed = abs(sum(d))
    hits = sum(
        abs(sum(e * x for e, x in zip(signs, d, strict=True))) >= observed
        for signs in itertools.product((1, -1), repeat=len(d))
    )
    return hits / 2 ** len(d)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_t_interval_and_t_test_match_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(size=n) + 0.3
    mean, lo, hi = stats.t_interval(a - b)
    ref = sps.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert mean == pytest.approx(np.mean(a - b), rel=1e-12)
    assert (lo, hi) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    half = sps.t.ppf(0.975, n - 1) * np.std(a - b, ddof=1) / math.sqrt(n)
    assert hi - mean == pytest.approx(half, rel=1e-10)
    assert stats.t_test_p(a - b) == pytest.approx(ref.pvalue, rel=1e-10)


@pytest.mark.parametrize("n", [2, 3, 5, 7, 10])
def test_sign_flip_matches_brute_force_and_scipy(n):
    rng = np.random.default_rng(100 + n)
    d = rng.normal(0.4, 1.0, size=n)
    p = stats.sign_flip_p(d)
    assert p == pytest.approx(_brute_sign_flip(d), abs=1e-12)
    ref = sps.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    )
    assert p == pytest.approx(ref.pvalue, abs=1e-12)


def test_sign_flip_hand_cases_and_its_floor():
    # all five differences positive: only the all-plus and all-minus patterns reach |Σ d|
    assert stats.sign_flip_p([1.0, 2.0, 3.0, 4.0, 5.0]) == 2 / 32 == stats.min_exact_p(5)
    assert stats.min_exact_p(5) > 0.05  # five seeds can never reach p < 0.05 with this test
    assert stats.min_exact_p(6) < 0.05
    # d = (1, 2, 3, 4, −5): Σ = 5; patterns with |Σ ε d| ≥ 5 counted by hand enumeration
    d = [1.0, 2.0, 3.0, 4.0, -5.0]
    assert stats.sign_flip_p(d) == _brute_sign_flip(d)
    assert 0.5 < stats.sign_flip_p(d) < 1.0
    assert stats.sign_flip_p([0.0, 0.0, 0.0]) == 1.0


def test_all_equal_differences():
    d = [0.5] * 5
    mean, lo, hi = stats.t_interval(d)
    assert mean == lo == hi == 0.5
    assert stats.t_test_p(d) == 0.0  # t = ±∞ (scipy: inf, p = 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy: "catastrophic cancellation"
        assert sps.ttest_1samp(d, 0.0).pvalue == 0.0
    assert stats.t_test_p([0.0] * 5) == 1.0
    test = stats.paired_test(d)
    assert test["p_exact"] == 2 / 32 and test["p"] == test["p_t"] == 0.0


def test_paired_test_reports_t_and_the_exact_check_up_to_exact_max_n():
    rng = np.random.default_rng(3)
    d_small = rng.normal(size=stats.EXACT_MAX_N)
    small = stats.paired_test(d_small)
    assert small["p"] == pytest.approx(sps.ttest_1samp(d_small, 0.0).pvalue, rel=1e-10)
    assert small["p_exact"] == pytest.approx(stats.sign_flip_p(d_small)) and small["n"] == 12
    d = rng.normal(0.5, 1, size=stats.EXACT_MAX_N + 1)
    big = stats.paired_test(d)
    assert math.isnan(big["p_exact"]) and big["test"] == "paired t"
    assert big["p"] == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=1e-10)
    one = stats.paired_test([2.0])
    assert one["n"] == 1 and math.isnan(one["lo"]) and math.isnan(one["p_t"])
    assert one["p"] == 1.0  # one pair: both sign patterns reach |d|


def test_holm_hand_cases():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far 0.06
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(stats.holm([0.01, math.nan]), [0.02, 1.0])  # nan counts as p = 1
    np.testing.assert_allclose(stats.holm([0.2]), [0.2])
    # never below the raw p, monotone in the raw p
    p = np.random.default_rng(0).uniform(size=12)
    adj = stats.holm(p)
    assert np.all(adj >= p) and np.all(np.diff(adj[np.argsort(p)]) >= 0)


def test_bootstrap_is_deterministic_and_near_the_t_interval():
    rng = np.random.default_rng(1)
    rows = rng.normal(2.0, 1.0, size=(60, 1))
    stat = lambda r: float(r[:, 0].mean())  # noqa: E731
    lo, hi = stats.bootstrap_interval(rows, stat)
    assert (lo, hi) == stats.bootstrap_interval(rows, stat)
    assert stats.bootstrap_interval(rows, stat, seed=1) != (lo, hi)
    _, tlo, thi = stats.t_interval(rows[:, 0])
    assert lo == pytest.approx(tlo, abs=0.1 * (thi - tlo))
    assert hi == pytest.approx(thi, abs=0.1 * (thi - tlo))
    assert all(math.isnan(x) for x in stats.bootstrap_interval(rows[:1], stat))


def test_steps_to_target_interpolates_in_log_step_and_censors():
    steps, fd = [250, 500, 750, 1000], [10.0, 6.0, 4.0, 3.0]
    t, c = stats.steps_to_target(steps, fd, 5.0)  # halfway from 6 to 4: √(500·750)
    assert c == stats.OBSERVED and t == pytest.approx(math.sqrt(500 * 750), rel=1e-12)
    t, c = stats.steps_to_target(steps, fd, 3.5)  # halfway from 4 to 3
    assert t == pytest.approx(750 * (1000 / 750) ** 0.5, rel=1e-12)
    assert stats.steps_to_target(steps, fd, 4.0) == (750.0, stats.OBSERVED)  # exactly reached
    assert stats.steps_to_target(steps, fd, 20.0) == (250.0, stats.LEFT)
    assert stats.steps_to_target(steps, fd, 2.0) == (1000.0, stats.RIGHT)
    acc = [0.2, 0.5, 0.8, 0.9]
    t, c = stats.steps_to_target(steps, acc, 0.65, lower_is_better=False)
    assert c == stats.OBSERVED and t == pytest.approx(math.sqrt(500 * 750), rel=1e-12)
    # unsorted input and a non-finite evaluation are handled
    t2, _ = stats.steps_to_target(steps[::-1] + [600], fd[::-1] + [math.nan], 5.0)
    assert t2 == pytest.approx(math.sqrt(500 * 750), rel=1e-12)


def test_speedup_resolved_is_the_geometric_mean_with_a_bootstrap_interval():
    base = [(800.0, "observed"), (900.0, "observed"), (700.0, "observed"), (1000.0, "observed"),
            (850.0, "observed")]  # fmt: skip
    arm = [(400.0, "observed"), (300.0, "observed"), (350.0, "observed"), (400.0, "observed"),
           (425.0, "observed")]  # fmt: skip
    sp = stats.speedup(base, arm)
    ratios = np.array([b[0] / a[0] for b, a in zip(base, arm, strict=True)])
    assert sp["resolved"] and sp["n"] == 5
    assert sp["estimate"] == pytest.approx(sps.gmean(ratios), rel=1e-12)
    assert ratios.min() <= sp["lo"] <= sp["estimate"] <= sp["hi"] <= ratios.max()
    assert sp["p"] == pytest.approx(sps.ttest_1samp(np.log(ratios), 0.0).pvalue, rel=1e-10)
    assert stats.sign_flip_p(np.log(ratios)) == pytest.approx(_brute_sign_flip(np.log(ratios)))
    assert sp == stats.speedup(base, arm)  # deterministic


def test_speedup_censored_gives_only_bounds():
    # the baseline never reaches the target in seed 1: its ratio is > 1000/400
    base = [(800.0, "observed"), (1000.0, "right"), (700.0, "observed")]
    arm = [(400.0, "observed"), (400.0, "observed"), (350.0, "observed")]
    sp = stats.speedup(base, arm)
    assert not sp["resolved"] and math.isnan(sp["estimate"]) and sp["hi"] == math.inf
    assert sp["lo"] == pytest.approx(sps.gmean([2.0, 2.5, 2.0]), rel=1e-12)
    assert sp["p"] == pytest.approx(sps.binomtest(3, 3).pvalue) and sp["test"] == "exact sign test"
    # the arm reached the target at its first evaluation (≤ 250): another lower bound
    sp = stats.speedup([(800.0, "observed")] * 2, [(250.0, "left"), (400.0, "observed")])
    assert sp["lo"] == pytest.approx(math.sqrt(3.2 * 2.0)) and sp["hi"] == math.inf
    # both never reach it: nothing can be said
    sp = stats.speedup([(1000.0, "right")] * 2, [(1000.0, "right")] * 2)
    assert (sp["lo"], sp["hi"]) == (0.0, math.inf) and math.isnan(sp["p"])
    assert stats.ratio_range((250.0, "left"), (1000.0, "right")) == (0.0, 0.25)


def test_verdicts():
    assert stats.verdict(-0.3, 0.01, -1) == "reproduced"
    assert stats.verdict(0.3, 0.01, -1) == "contradicted"
    assert stats.verdict(-0.3, 0.05, -1) == "not resolved"  # the level is strict
    assert stats.verdict(-0.3, math.nan, -1) == "not resolved"
    assert stats.verdict(0.0, 0.0, 1) == "not resolved"


def test_best_index_bootstrap_and_slopes():
    rng = np.random.default_rng(2)
    m = rng.normal(0, 0.1, size=(5, 4)) + np.array([3.0, 1.0, 2.0, 4.0])
    best, freq = stats.best_index_bootstrap(m)
    assert best == 1 and freq[1] == 1.0 and freq.sum() == pytest.approx(1.0)
    best, freq = stats.best_index_bootstrap(m, lower_is_better=False)
    assert best == 3
    close = np.array([[1.0, 1.05], [1.1, 1.0], [1.0, 1.02], [1.2, 1.0], [1.0, 1.01]])
    best, freq = stats.best_index_bootstrap(close)
    assert 0.05 < freq[best] < 0.95 and freq.sum() == pytest.approx(1.0)
    x, y = [1.0, 2.0, 3.0], rng.normal(size=(4, 3))
    ref = [np.polyfit(x, row, 1)[0] for row in y]
    np.testing.assert_allclose(stats.slopes(y, x), ref, rtol=1e-10)
