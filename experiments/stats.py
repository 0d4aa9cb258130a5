"""Paired statistics of the studies (../shared/STUDIES.md), pure NumPy/SciPy.

Arms are paired by seed: seed s of every arm shares the initialisation, the data order and the
evaluation noise, so a comparison is made on the per-seed differences d_s = arm_s − baseline_s.

- :func:`paired_test`: mean(d) with a t interval at n − 1 degrees of freedom and the paired
  t-test's p (the reported one, the test of that interval), and, for n ≤ :data:`EXACT_MAX_N`,
  the exact sign-flip permutation test over all 2^n sign patterns beside it as a
  distribution-free check. With n pairs the sign-flip test's smallest two-sided p is 2/2^n
  (:func:`min_exact_p`): 0.0625 for n = 5, so with five seeds it cannot carry a verdict at
  0.05 (less after Holm's correction); the t-test can, under its normality assumption.
- :func:`holm`: Holm–Bonferroni adjusted p over a study's declared comparisons.
- :func:`bootstrap_interval`: percentile interval of a statistic over seeds resampled with
  replacement (whole rows, so the pairing is kept), from a fixed RNG seed.
- :func:`steps_to_target` and :func:`speedup`: the first step at which a run reaches a target,
  interpolated linearly in log(step) between evaluations, with its censoring; the ratio of
  paired steps-to-target, or only the bound the grid allows when a run is censored.
- :func:`verdict`: reproduced / contradicted / not resolved.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

ALPHA = 0.05  # the level of every verdict (after Holm's correction)
LEVEL = 0.95  # the coverage of every interval
EXACT_MAX_N = 12  # up to this many pairs the exact sign-flip p is computed (a check beside p)
N_BOOT = 10_000  # bootstrap resamples
BOOT_SEED = 0  # the bootstrap's fixed RNG seed (a table regenerates bit for bit)
VERDICTS = ("reproduced", "contradicted", "not resolved")


def t_interval(d: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi): the t interval mean(d) ± t_{n−1, (1+level)/2}·sd(d)/√n (sd with ddof 1);
    lo = hi = nan for fewer than 2 values (a single value has no interval)."""
    d = np.asarray(d, np.float64)
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def t_test_p(d: Sequence[float]) -> float:
    """Two-sided p of the paired t-test (one-sample t on the differences, n − 1 df).

    nan for fewer than 2 values; with all differences equal the statistic is undefined
    (0/0) when they are 0 and infinite otherwise, so p is 1 or 0 there."""
    d = np.asarray(d, np.float64)
    n = len(d)
    if n < 2:
        return math.nan
    sd = d.std(ddof=1)
    if sd == 0 or sd <= 1e-12 * np.abs(d).max():
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / math.sqrt(n))
    return float(2 * sps.t.sf(abs(t), n - 1))


def _sign_patterns(n: int) -> np.ndarray:
    """All 2^n rows of ±1 (n ≤ 20)."""
    if n > 20:
        raise ValueError(f"exact sign-flip enumeration is limited to n ≤ 20, got {n}")
    return np.array(list(itertools.product((1.0, -1.0), repeat=n)), np.float64).reshape(-1, n)


def sign_flip_p(d: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation p of the mean difference.

    Under the null (each d_s symmetric about 0) every sign pattern ε ∈ {±1}^n is equally
    likely; p = #{ε : |Σ ε_s·d_s| ≥ |Σ d_s|} / 2^n, enumerated over all 2^n patterns (ties
    within a relative 1e-9 count as reaching the observed value). nan for no values."""
    d = np.asarray(d, np.float64)
    n = len(d)
    if n == 0:
        return math.nan
    sums = np.abs(_sign_patterns(n) @ d)
    observed = abs(d.sum())
    tol = 1e-9 * max(np.abs(d).sum(), 1e-300)
    return float(np.mean(sums >= observed - tol))


def min_exact_p(n: int) -> float:
    """The smallest two-sided p the exact sign-flip test can give with n pairs: 2/2^n."""
    return min(1.0, 2.0 / 2.0**n)


def paired_test(d: Sequence[float], level: float = LEVEL) -> dict:
    """Everything a comparison reports about its per-seed differences ``d``.

    Keys: n, mean, lo, hi (t interval), p_t (paired t-test at n − 1 df), p_exact (sign-flip,
    nan for n > EXACT_MAX_N), p (the reported one: p_t; 1 for a single pair), test."""
    d = np.asarray(d, np.float64)
    mean, lo, hi = t_interval(d, level)
    exact = len(d) <= EXACT_MAX_N
    p_t = t_test_p(d)
    p_exact = sign_flip_p(d) if exact else math.nan
    return {
        "n": len(d),
        "mean": mean,
        "lo": lo,
        "hi": hi,
        "p_t": p_t,
        "p_exact": p_exact,
        "p": p_t if len(d) > 1 else 1.0,
        "test": "paired t",
    }


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input's order.

    Sorted ascending p_(1) ≤ … ≤ p_(m): adj_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j)). A
    comparison without a p (nan: not run, or no test possible) counts as p = 1, so m is always
    the number of declared comparisons."""
    p = np.nan_to_num(np.asarray(p, np.float64), nan=1.0)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj = np.maximum.accumulate(adj)
    out = np.empty(m)
    out[order] = adj
    return out


def bootstrap_interval(
    rows: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(rows[idx])`` over ``n_boot`` resamples of the rows
    (seeds) with replacement; rows keep their columns together (a paired bootstrap). The
    resamples come from ``np.random.default_rng(seed)``: the same call gives the same interval."""
    rows = np.asarray(rows, np.float64)
    n = len(rows)
    if n < 2:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    values = np.array([statistic(rows[i]) for i in idx], np.float64)
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


# --------------------------------------------------------------------- steps to a target
OBSERVED, LEFT, RIGHT = "observed", "left", "right"


def steps_to_target(
    steps: Sequence[float], values: Sequence[float], target: float, *, lower_is_better=True
) -> tuple[float, str]:
    """(steps, censoring): the first step at which a run's metric reaches ``target``.

    Between the last evaluation that misses the target (s0, v0) and the first that reaches it
    (s1, v1) the crossing is interpolated linearly in log(step):
    log s = log s0 + (target − v0)/(v1 − v0)·(log s1 − log s0) → (s, "observed").
    Reached already at the first evaluation → (first step, "left"): the crossing is at or before
    it. Never reached → (last step, "right"): the crossing is after it, if at all. Evaluations
    with a non-finite value are skipped; (nan, "right") when none is left."""
    steps = np.asarray(steps, np.float64)
    values = np.asarray(values, np.float64)
    keep = np.isfinite(values) & np.isfinite(steps)
    steps, values = steps[keep], values[keep]
    order = np.argsort(steps)
    steps, values = steps[order], values[order]
    if len(steps) == 0:
        return math.nan, RIGHT
    reached = values <= target if lower_is_better else values >= target
    if reached[0]:
        return float(steps[0]), LEFT
    if not reached.any():
        return float(steps[-1]), RIGHT
    i = int(np.argmax(reached))
    (s0, s1), (v0, v1) = steps[i - 1 : i + 1], values[i - 1 : i + 1]
    frac = (target - v0) / (v1 - v0)
    if frac >= 1.0:
        return float(s1), OBSERVED  # reached exactly at an evaluation
    return float(math.exp(math.log(s0) + frac * (math.log(s1) - math.log(s0)))), OBSERVED


def _range(t: float, censoring: str) -> tuple[float, float]:
    """The interval a steps-to-target lies in."""
    return {OBSERVED: (t, t), LEFT: (0.0, t), RIGHT: (t, math.inf)}[censoring]


def ratio_range(base: tuple[float, str], arm: tuple[float, str]) -> tuple[float, float]:
    """The interval of base_steps / arm_steps given each one's censoring (0 and inf allowed)."""
    (b_lo, b_hi), (a_lo, a_hi) = _range(*base), _range(*arm)
    lo = 0.0 if b_lo == 0 or a_hi == math.inf else b_lo / a_hi
    hi = math.inf if b_hi == math.inf or a_lo == 0 else b_hi / a_lo
    return lo, hi


def _geomean(x: np.ndarray) -> float:
    if np.any(x == 0):
        return 0.0
    if np.any(np.isinf(x)):
        return math.inf
    return float(np.exp(np.mean(np.log(x))))


def speedup(base: Sequence[tuple[float, str]], arm: Sequence[tuple[float, str]]) -> dict:
    """The speed-up of ``arm`` over ``base`` from paired (steps, censoring) per seed.

    Resolved (no run censored): the geometric mean of the per-seed ratios base/arm, its paired
    bootstrap interval over seeds, and the test of log(base/arm) by :func:`paired_test`.
    Otherwise only the range the grid allows: the geometric means of the per-seed lower and
    upper ratio bounds (a lower bound "> x", an upper bound "< x", both, or neither: not
    resolvable); p from the exact sign test when every seed's ratio range excludes 1 (its sign
    is known although its size is not), else nan.

    Keys: n, resolved, estimate, lo, hi (interval, or bounds when not resolved), p, test."""
    n = len(base)
    if n != len(arm):
        raise ValueError(f"paired steps-to-target need equal lengths, got {n} and {len(arm)}")
    if n == 0:
        return {
            "n": 0,
            "resolved": False,
            "estimate": math.nan,
            "lo": 0.0,
            "hi": math.inf,
            "p": math.nan,
            "test": "none",
        }
    if all(b[1] == OBSERVED and a[1] == OBSERVED for b, a in zip(base, arm, strict=True)):
        pairs = np.array([[b[0], a[0]] for b, a in zip(base, arm, strict=True)], np.float64)
        stat = lambda rows: _geomean(rows[:, 0] / rows[:, 1])  # noqa: E731
        lo, hi = bootstrap_interval(pairs, stat)
        test = paired_test(np.log(pairs[:, 0] / pairs[:, 1]))
        return {
            "n": n,
            "resolved": True,
            "estimate": stat(pairs),
            "lo": lo,
            "hi": hi,
            "p": test["p"],
            "p_exact": test["p_exact"],
            "test": test["test"] + " on log ratio",
        }
    ranges = np.array([ratio_range(b, a) for b, a in zip(base, arm, strict=True)], np.float64)
    signs = np.where(ranges[:, 0] > 1, 1, np.where(ranges[:, 1] < 1, -1, 0))
    if np.all(signs != 0):
        p, test = float(sps.binomtest(int((signs > 0).sum()), n, 0.5).pvalue), "exact sign test"
    else:
        p, test = math.nan, "none (a seed's ratio range contains 1)"
    return {
        "n": n,
        "resolved": False,
        "estimate": math.nan,
        "lo": _geomean(ranges[:, 0]),
        "hi": _geomean(ranges[:, 1]),
        "p": p,
        "test": test,
    }


def verdict(effect: float, p_adjusted: float, expected_sign: int) -> str:
    """The verdict: "reproduced" (the effect has the paper's sign and adjusted p < ALPHA),
    "contradicted" (the opposite sign, adjusted p < ALPHA), else "not resolved"."""
    if not (p_adjusted < ALPHA) or not effect or math.isnan(effect):
        return "not resolved"
    return "reproduced" if np.sign(effect) == expected_sign else "contradicted"


# ------------------------------------------------------------------- best of a sweep
def best_index_bootstrap(
    matrix: np.ndarray, *, lower_is_better: bool = True, n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> tuple[int, np.ndarray]:
    """(best column, how often each column is best over resamples of the rows).

    ``matrix`` is seeds × settings (e.g. input scales b) of one metric; the best column
    minimises (or maximises) the mean over seeds. The frequencies come from ``n_boot`` paired
    resamples of the seeds (rows) from ``np.random.default_rng(seed)``: a bootstrap
    distribution of the best setting."""
    matrix = np.asarray(matrix, np.float64)
    sign = 1.0 if lower_is_better else -1.0
    best = int(np.argmin(sign * matrix.mean(axis=0)))
    idx = np.random.default_rng(seed).integers(0, len(matrix), size=(n_boot, len(matrix)))
    picks = np.argmin(sign * matrix[idx].mean(axis=1), axis=1)
    return best, np.bincount(picks, minlength=matrix.shape[1]) / n_boot


def slopes(y: np.ndarray, x: Sequence[float]) -> np.ndarray:
    """Least-squares slope of each row of ``y`` (seeds × points) against ``x``:
    Σ(x − x̄)(y − ȳ) / Σ(x − x̄)²."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xc = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
