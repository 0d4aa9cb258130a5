"""Hypothesis properties of every noise registry entry over random valid parameters.

Table-driven over `list_schedules()`, `list_weightings()` and `TARGETS` (a new entry is
covered by the parametrisation; one without a strategy below fails), float32 and float64:

- schedules: λ(t) is non-increasing on [0, 1] (strictly decreasing where unclipped),
  t(λ(t)) = t wherever λ(t) is unclipped, t(λ) is non-increasing in [0, 1];
- schedules: the density is finite and ≥ 0, ∫ p(λ) dλ = 1 over ℝ, and its tails beyond the
  clip points hold the clip atoms' masses (`clip_masses`), so λ(U) has total mass 1;
- targets: x0 and ε recovered from each target's prediction, every `convert` round trip;
- weightings: positive and finite in every target space for λ ∈ [−40, 40].

Parameters are Python floats baked into each trace, so a jit would compile per example: the
schedule and weighting checks run eagerly (clip masses under `jax.disable_jit`, where they
would otherwise jit per schedule); the conversions, free of parameters, jit once per dtype.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

from jaxdiff import noise

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]


def _run(check, *strategies, max_examples=25):
    """Run `check(*drawn)` as a hypothesis test with SETTINGS (and `max_examples`)."""
    settings(SETTINGS, max_examples=max_examples)(given(*strategies)(check))()


def _uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Positive floats spread evenly in log (within rounding of [lo, hi])."""
    return _uniform(math.log(lo), math.log(hi)).map(math.exp)


# ----------------------------------------------------------------------------- strategies

# Valid parameters per schedule: the ranges the validators accept (see each `validate`),
# cut to magnitudes a config would use, where the float32 formulas are meant to hold.
CLIP_MIN = _log_uniform(1e-9, 0.45)  # 0 < clip_min < 0.5


@st.composite
def _sigmoid_params(draw):  # tau > 0, end > start
    start = draw(_uniform(-6.0, 4.0))
    return dict(
        start=start,
        end=start + draw(_log_uniform(0.2, 10.0)),
        tau=draw(_log_uniform(0.1, 4.0)),
        clip_min=draw(CLIP_MIN),
    )


@st.composite
def _cosine_power_params(draw):  # tau > 0, 0 <= start < end <= 1 (end = 1: its own branch)
    start = draw(st.one_of(st.just(0.0), _uniform(0.0, 0.8)))
    end = draw(st.one_of(st.just(1.0), _uniform(0.1, 1.0).map(lambda f: start + f * (1 - start))))
    return dict(start=start, end=end, tau=draw(_log_uniform(0.2, 4.0)), clip_min=draw(CLIP_MIN))


@st.composite
def _interpolated_params(draw):  # all > 0, noise_d_low / noise_d_high < e^π
    image_size = draw(_log_uniform(8.0, 1024.0))
    high = draw(st.one_of(st.none(), _log_uniform(4.0, 1024.0)))
    low = (image_size if high is None else high) * draw(_log_uniform(0.01, 20.0))
    return dict(image_size=image_size, noise_d_low=low, noise_d_high=high)


def _ddpm_table_in_range(p) -> bool:
    with np.errstate(divide="ignore"):  # ᾱ underflowing to 0 gives λ = −inf: rejected
        lam = noise.ddpm_linear_logsnr_table(**p)
    return bool(np.all(np.isfinite(lam)) and lam[-1] > noise.LOGSNR_MIN and lam[0] < 20.0)


# 0 < beta_start <= beta_end < 1, num_steps an integer >= 2. Restricted to tables inside
# [−20, 20]: beyond, `clip_masses` misses the clip atom (test_ddpm_linear_clip_masses_...).
DDPM_PARAMS = st.builds(
    lambda n, b0, r: dict(num_steps=n, beta_start=b0, beta_end=min(b0 * r, 0.9)),
    st.sampled_from([2, 10, 1000]),  # a few table sizes: each new one compiles its lookups
    _log_uniform(1e-5, 0.3),
    _log_uniform(1.0, 50.0),
).filter(_ddpm_table_in_range)

SCHEDULE_PARAMS: dict[str, st.SearchStrategy[dict]] = {
    "cauchy": st.fixed_dictionaries({"mu": _uniform(-5.0, 5.0), "gamma": _log_uniform(0.1, 5.0)}),
    "cosine": st.just({}),
    "cosine_interpolated": _interpolated_params(),
    "cosine_power": _cosine_power_params(),
    "cosine_scaled": st.fixed_dictionaries({"s": _log_uniform(0.1, 5.0)}),
    "cosine_shifted": st.fixed_dictionaries({"mu": _uniform(-8.0, 8.0)}),
    "ddpm_linear": DDPM_PARAMS,
    "flow": st.just({}),
    "laplace": st.fixed_dictionaries({"mu": _uniform(-5.0, 5.0), "b": _log_uniform(0.05, 3.0)}),
    "linear": st.fixed_dictionaries({"clip_min": CLIP_MIN}),
    "logit_normal": st.fixed_dictionaries({"m": _uniform(-3.0, 3.0), "s": _log_uniform(0.1, 3.0)}),
    "lognormal": st.fixed_dictionaries(
        {"p_mean": _uniform(-3.0, 3.0), "p_std": _log_uniform(0.1, 3.0)}
    ),
    "sigmoid": _sigmoid_params(),
    # Registered by tests/test_noise_schedules.py (decreasing for a > −4); present only when
    # that module was imported first.
    "test_user_logit_plus_linear": st.fixed_dictionaries({"a": _uniform(-3.5, 10.0)}),
}
# Schedules whose inverse and density bisect (`bisect_inverse`: a fori_loop traced and
# compiled anew per eager call): ~0.8 s an example, so fewer examples.
SLOW_SCHEDULES = {"cosine_interpolated": 3, "test_user_logit_plus_linear": 3}
# λ where a schedule's density jumps (before any shift): breaks of the quadrature.
DENSITY_JUMPS = {"ddpm_linear": lambda p: noise.ddpm_linear_logsnr_table(**p)}
# Input scaling by b (`noise.input_scaled`): λ shifted by 2·log b.
SCALES = st.one_of(st.just(1.0), _log_uniform(0.25, 4.0))

WEIGHTING_PARAMS: dict[str, st.SearchStrategy[dict]] = {
    "edm": st.fixed_dictionaries({"sigma_data": _log_uniform(1e-2, 1e2)}),
    "flow": st.just({}),
    "max_snr": st.fixed_dictionaries({"gamma": _log_uniform(1e-3, 1e3)}),
    "min_snr": st.fixed_dictionaries({"gamma": _log_uniform(1e-3, 1e3)}),
    "sigmoid": st.fixed_dictionaries({"bias": _uniform(-30.0, 30.0)}),
    "snr": st.just({}),
    "soft_min_snr": st.fixed_dictionaries({"gamma": _log_uniform(1e-3, 1e3)}),
    "v": st.just({}),
    "x0": st.just({}),
}

# How much recovering (x0, ε) from each target amplifies rounding, as a function of λ:
# from ε, x0 = (x_t − σε)/α (σ/α = e^{−λ/2}); from x0, ε = (x_t − α·x0)/σ (α/σ = e^{λ/2});
# v is a rotation and flow divides by α + σ ≥ 1.
TARGET_CONDITION = {
    "eps": lambda lam: np.exp(-0.5 * lam),
    "x0": lambda lam: np.exp(0.5 * lam),
    "v": np.ones_like,
    "flow": np.ones_like,
}

SCHEDULES = noise.list_schedules()
WEIGHTINGS = noise.list_weightings()


def test_every_registry_entry_has_a_strategy():
    assert set(noise.list_schedules()) <= set(SCHEDULE_PARAMS)
    assert set(noise.list_weightings()) <= set(WEIGHTING_PARAMS)
    assert set(noise.TARGETS) == set(TARGET_CONDITION)


# ----------------------------------------------------------------------------- schedules

# Even in t (λ strictly decreasing there where unclipped), then logit-even towards both
# ends, where a narrow unclipped range may lie (float32 keeps 1 − 3e−7 apart from 1).
T_EVEN = np.linspace(0.0, 1.0, 65)
T_ENDS = special.expit(np.linspace(-25.0, 15.0, 41))
T_POINTS = st.lists(_uniform(1e-4, 1.0 - 1e-4), min_size=8, max_size=8)
# |t(λ(t)) − t| ≤ INVERSE_K·ε·(t + (1 + |λ| + |λ(½)|)·p(λ)): the rounding of λ(t) (absolute,
# on the scale of λ and its offset λ(½)) moved by dt/dλ = p(λ), plus t's own rounding.
# Worst seen over 150 random draws per schedule: < 8 (float32), ~45 (float64: XLA's float64
# log1p/logistic are a few ulps off), so a relative error of 1e−5 in t(λ) fails in float32.
INVERSE_K = {np.float32: 32.0, np.float64: 256.0}


def _schedule(name, params, scale):
    return noise.input_scaled(noise.get_schedule(name, **params), scale)


# Every schedule call gets an array of this length (padded), so each eager op compiles once
# per dtype rather than once per shape.
N_EVAL = 10240


def _eval(fn, x, fill):
    """fn(x) with x padded to N_EVAL by `fill`, its outputs cut back to len(x), as NumPy."""
    assert len(x) <= N_EVAL
    out = fn(np.concatenate([x, np.full(N_EVAL - len(x), fill, x.dtype)]))
    return jax.tree.map(lambda a: np.asarray(a)[: len(x)], out)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", SCHEDULES)
def test_logsnr_is_decreasing_and_inverted(name, dtype):
    """λ(t) non-increasing on [0, 1], strictly decreasing where unclipped, λ(0) = hi,
    λ(1) = lo; t(λ(t)) = t where lo < λ(t) < hi; t(λ) non-increasing, in [0, 1]."""
    eps, k = np.finfo(dtype).eps, INVERSE_K[dtype]

    def check(params, scale, t_drawn):
        s = _schedule(name, params, scale)
        lo, hi = s.logsnr_range
        t = np.concatenate([T_EVEN, T_ENDS, t_drawn, [0.5]]).astype(dtype)
        lam_wide = np.linspace(lo - 10.0, hi + 10.0, 41).astype(dtype)
        with jax.enable_x64(dtype == np.float64):
            lam = _eval(s.logsnr, t, 0.5)
            t_back = _eval(s.t_from_logsnr, np.concatenate([lam, lam_wide]), 0.0)
            p = _eval(s.density, lam, 0.0)  # |dt/dλ|
        assert lam.dtype == t_back.dtype == p.dtype == dtype
        n = len(T_EVEN)
        lam_grid, lam_mid = lam[:n], float(lam[-1])
        # λ(0) and λ(1) are the clip bounds (shifted in `dtype`: compare within rounding), and
        # exactly the values the clip gives inside (0, 1).
        np.testing.assert_allclose(lam_grid[[0, -1]], [hi, lo], rtol=4 * eps, atol=4 * eps)

        # Non-increasing up to rounding (a few ulps of λ, of t near 1), strictly on the grid.
        lam_sorted = lam[:-1][np.argsort(t[:-1], kind="stable")].astype(np.float64)
        rise = np.diff(lam_sorted) - 4 * eps * (1.0 + np.abs(lam_sorted[1:]))
        assert np.all(rise <= 0), "λ(t) increases"
        inner = (lam < lam_grid[0]) & (lam > lam_grid[-1])  # unclipped
        both = inner[: n - 1] & inner[1:n]
        assert np.all(np.diff(lam_grid)[both] < 0), "λ(t) not strictly decreasing"
        assert inner.sum() >= 8, f"too few unclipped points: {lam}"

        # In [0, 1] exactly (t_from_logsnr clips the few ulps a closed-form inverse can
        # round past the ends: test_t_from_logsnr_stays_in_the_unit_interval).
        assert np.all((t_back >= 0) & (t_back <= 1))
        assert np.all(np.diff(t_back[len(t) :]) <= 4 * eps), "t(λ) increases"
        t64, lam64 = t.astype(np.float64), lam.astype(np.float64)
        assert np.all(np.isfinite(p[inner]))
        bound = t64 + (1.0 + np.abs(lam64) + abs(lam_mid)) * p.astype(np.float64)
        err = np.abs(t_back[: len(t)].astype(np.float64) - t64)
        bad = inner & (err > k * eps * bound)
        assert not bad.any(), (
            f"t(λ(t)) != t at t={t[bad]}: got {t_back[: len(t)][bad]}, bound {k * eps * bound[bad]}"
        )

    _run(
        check,
        SCHEDULE_PARAMS[name],
        SCALES,
        T_POINTS,
        max_examples=SLOW_SCHEDULES.get(name, 25),
    )


def _gauss_legendre(breaks: np.ndarray, nodes: int = 4096, order: int = 8):
    """Nodes and weights of composite Gauss–Legendre on [breaks[0], breaks[-1]]: each
    [breaks[i], breaks[i+1]] cut into equal panels, about `nodes` in all."""
    x, w = np.polynomial.legendre.leggauss(order)
    sub = max(1, nodes // (order * (len(breaks) - 1)))
    edges = np.concatenate(
        [np.linspace(a, b, sub + 1)[:-1] for a, b in zip(breaks[:-1], breaks[1:], strict=True)]
        + [breaks[-1:]]
    )
    half = 0.5 * np.diff(edges)[:, None]
    return (0.5 * (edges[:-1] + edges[1:])[:, None] + half * x).ravel(), (half * w).ravel()


DECADES = 10.0 ** np.arange(-2, 5)
# |∫ p dλ − 1| (and each tail against its clip mass): worst seen over 400 random draws per
# schedule ~1.5e−7 (float32), ~1e−12 (float64); a density 3e−5 too large fails.
INTEGRAL_TOL = {np.float32: 5e-6, np.float64: 1e-9}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", SCHEDULES)
def test_density_integrates_to_one(name, dtype):
    """∫ p(λ) dλ = 1 over ℝ, with p finite and ≥ 0 everywhere; ∫ above hi = P(λ = hi) and
    ∫ below lo = P(λ = lo) (`clip_masses`), so ∫_lo^hi p + the atoms = 1.

    Quadrature in x ∈ (0, 1) with λ = m + cot(πx), m = λ(½): heavy (Cauchy) tails become
    bounded, light ones vanish, nothing is truncated. Composite Gauss–Legendre with breaks
    at m ± 10^k (as many nodes per decade of |λ − m|, whatever the density's scale), at hi,
    m, lo (a compact support's ends, Laplace's kink) and at `DENSITY_JUMPS`."""

    def check(params, scale):
        s = _schedule(name, params, scale)
        lo, hi = s.logsnr_range
        with jax.enable_x64(True):
            m = float(_eval(s.logsnr, np.array([0.5]), 0.5)[0])
        jumps = DENSITY_JUMPS.get(name, lambda p: np.zeros(0))(params) + s.shift
        breaks = np.concatenate([[hi, lo, m], m + DECADES, m - DECADES, jumps])
        breaks = np.arctan2(1.0, breaks - m) / np.pi  # x(λ) = arccot(λ − m)/π
        x, wx = _gauss_legendre(np.unique(np.concatenate([[0.0, 1.0], breaks])))
        lam = m + np.cos(np.pi * x) / np.sin(np.pi * x)
        with jax.enable_x64(dtype == np.float64):
            dens = _eval(s.density, lam.astype(dtype), 0.0)
        assert dens.dtype == dtype
        good = np.isfinite(dens) & (dens >= 0)
        assert good.all(), f"p({lam[~good]}) = {dens[~good]}"
        mass = dens.astype(np.float64) * wx * np.pi / np.sin(np.pi * x) ** 2
        above, below = mass[lam > hi].sum(), mass[lam < lo].sum()
        inside = mass[(lam >= lo) & (lam <= hi)].sum()
        tol = INTEGRAL_TOL[dtype]
        assert abs(above + inside + below - 1.0) <= tol, (above, inside, below)
        with jax.disable_jit():  # eager: a jit here would compile per example
            m_lo, m_hi = s.clip_masses()
        assert abs(below - m_lo) <= tol and abs(above - m_hi) <= tol, (below, m_lo, above, m_hi)
        assert abs(inside + m_lo + m_hi - 1.0) <= 2 * tol

    _run(check, SCHEDULE_PARAMS[name], SCALES, max_examples=SLOW_SCHEDULES.get(name, 25))


def test_ddpm_linear_clip_masses_when_the_table_leaves_the_range():
    """A closed schedule whose table leaves [−20, 20] has an atom at the clip, and
    clip_masses reports it (found by test_density_integrates_to_one: it returned (0, 0))."""
    s = noise.get_schedule("ddpm_linear", beta_end=0.05)  # λ_999 = −25.5: clipped at −20
    lo, hi = s.logsnr_range
    assert lo == noise.LOGSNR_MIN
    with jax.enable_x64(True):
        lam = _eval(s.logsnr, np.linspace(0.0, 1.0, N_EVAL), 0.5)
        t_lo = float(_eval(s.t_from_logsnr, np.array([lo]), 0.0)[0])
    assert np.mean(lam == lo) == pytest.approx(1.0 - t_lo, abs=1e-3)  # 0.1134
    assert s.clip_masses()[0] == pytest.approx(1.0 - t_lo, rel=1e-6)  # was 0.0


@pytest.mark.parametrize(
    "name,params,dtype",
    [
        ("sigmoid", {"start": 3.5, "end": 4.5}, np.float32),  # t = 1 + 2^−23 for λ ≤ −16
        ("cosine_power", {"start": 0.5, "tau": 0.25}, np.float64),  # t = 1 + 2^−52 at −30
    ],
)
def test_t_from_logsnr_stays_in_the_unit_interval(name, params, dtype):
    """t_from_logsnr rounded past 1 below the range, and logsnr(t_from_logsnr(λ)) raised
    (found by test_logsnr_is_decreasing_and_inverted)."""
    s = noise.get_schedule(name, **params)
    with jax.enable_x64(dtype == np.float64):
        t = _eval(s.t_from_logsnr, np.array([-30.0, -20.0], dtype), 0.0)
        assert np.all((t >= 0) & (t <= 1)), t - 1
        s.logsnr(t)


# ----------------------------------------------------------------------------- targets

BATCH, DIM = 8, 3
VALUES = _uniform(-4.0, 4.0)
LOGSNRS = hnp.arrays(np.float64, (BATCH,), elements=_uniform(-20.0, 20.0))


@jax.jit
def _conversions(x0, eps, lam, junk):
    """Every target's prediction, the (x0, ε) recovered from it, and for every pair
    (src, dst): convert src → dst, back to src, and an arbitrary `junk` prediction there
    and back."""
    x_t = noise.corrupt(x0, eps, lam)
    preds = {t: noise.make_target(x0, eps, lam, t) for t in noise.TARGETS}
    recovered = {t: noise.to_x0_eps(preds[t], t, x_t, lam) for t in noise.TARGETS}
    remade = {t: noise.make_target(*recovered[t], lam, t) for t in noise.TARGETS}
    pairs = {}
    for src in noise.TARGETS:
        for dst in noise.TARGETS:
            fwd = noise.convert(preds[src], src, dst, x_t, lam)
            junk_fwd = noise.convert(junk, src, dst, x_t, lam)
            pairs[src, dst] = (
                fwd,
                noise.convert(fwd, dst, src, x_t, lam),
                noise.convert(junk_fwd, dst, src, x_t, lam),
            )
    return preds, recovered, remade, pairs


# |error| ≤ TARGET_K·ε·(1 + conditions)·(1 + max |value|) per example.
TARGET_K = 32.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_target_conversions_round_trip(dtype):
    """For random x0, ε, junk and λ ∈ [−20, 20]: (x0, ε) recovered from every target's
    prediction and that prediction rebuilt from them; `convert` src → dst gives dst's
    prediction, and src → dst → src is the identity (also for a prediction not matching
    x_t), within the conversions' conditioning (`TARGET_CONDITION`), jitted, in `dtype`."""
    ulp = np.finfo(dtype).eps

    def check(x0, eps, junk, lam):
        args = [a.astype(dtype) for a in (x0, eps, lam, junk)]
        with jax.enable_x64(dtype == np.float64):
            preds, recovered, remade, pairs = jax.tree.map(np.asarray, _conversions(*args))
        lam = args[2].astype(np.float64)
        mag = 1.0 + np.max(np.abs(np.stack([x0, eps, junk])), axis=(0, 2))
        cond = {t: TARGET_CONDITION[t](lam) for t in noise.TARGETS}

        def close(got, want, *targets, msg):
            assert got.dtype == dtype, msg
            tol = TARGET_K * ulp * (1.0 + sum(cond[t] for t in targets)) * mag
            err = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), axis=1)
            assert np.all(err <= tol), f"{msg}: error {err} > {tol} at λ = {lam}"

        for t in noise.TARGETS:
            close(recovered[t][0], args[0], t, msg=f"x0 from {t}")
            close(recovered[t][1], args[1], t, msg=f"eps from {t}")
            close(remade[t], preds[t], t, msg=f"{t} rebuilt")
        for (src, dst), (fwd, back, junk_back) in pairs.items():
            close(fwd, preds[dst], src, dst, msg=f"{src} -> {dst}")
            close(back, preds[src], src, dst, msg=f"{src} -> {dst} -> {src}")
            close(junk_back, args[3], src, dst, msg=f"junk {src} -> {dst} -> {src}")

    values = hnp.arrays(np.float64, (BATCH, DIM), elements=VALUES)
    _run(check, values, values, values, LOGSNRS)


# ----------------------------------------------------------------------------- weightings

LAM_GRID = np.linspace(-40.0, 40.0, 81)
WEIGHT_LOGSNRS = hnp.arrays(np.float64, (16,), elements=_uniform(-40.0, 40.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", WEIGHTINGS)
def test_weights_are_positive_and_finite(name, dtype):
    """w(λ, target) > 0 and finite for every target, λ on [−40, 40] (a grid and random
    points), at the default and at random valid parameters."""

    def check(params, lam_drawn):
        weighting = noise.get_weighting(name, **params)
        lam = np.concatenate([LAM_GRID, lam_drawn]).astype(dtype)
        with jax.enable_x64(dtype == np.float64):
            for target in noise.TARGETS:
                w = np.asarray(weighting(lam, target))
                assert w.dtype == dtype
                good = np.isfinite(w) & (w > 0)
                assert good.all(), f"{weighting} {target}: w({lam[~good]}) = {w[~good]}"

    check({}, np.zeros(0))  # the defaults
    _run(check, WEIGHTING_PARAMS[name], WEIGHT_LOGSNRS)
