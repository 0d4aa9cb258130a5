"""Every registered schedule against an independent float64 reference (NumPy/SciPy).

The references below are written from the papers' formulas, not from jaxdiff's code: closed
forms where they are short (SciPy's tails for the normal and Cauchy families), and otherwise
the naive float64 formula λ(t) inverted by bisection in log t (or log(1 − t)) with the density
by central finite differences. A schedule registered later without a reference here falls
back to its own float64 `logsnr` (inverted and differentiated the same way), so the table
covers every entry of `list_schedules()`.

Checked, in float32 and float64 under jit: `density` and `t_from_logsnr` over
λ ∈ [−19.9, 19.9] (the schedule's own range, shrunk by 0.05, where narrower), relative 1e−4
where p > 1e−30; `jax.grad` of λ(t) on a t grid with 0, ½ and 1 (0 where the clip is active,
the one-sided slope at a closed end); `clip_masses` against the reference tail masses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxdiff import noise


@dataclasses.dataclass(frozen=True)
class Reference:
    """lam(t, s) with s = 1 − t given separately (float64, unclipped); optionally closed forms
    upper(λ) = t(λ), lower(λ) = 1 − t(λ) and density(λ)."""

    lam: Callable
    upper: Callable | None = None
    lower: Callable | None = None
    density: Callable | None = None
    closed: bool = False  # finite at t = 0 and 1 (no clip there)


def _cot_half_pi(t, s):
    return np.sin(0.5 * np.pi * s) / np.sin(0.5 * np.pi * t)  # cos(πt/2) = sin(πs/2)


def _cosine(mu=0.0, scale=1.0):
    return Reference(
        lam=lambda t, s: mu + scale * 2.0 * np.log(_cot_half_pi(t, s)),
        upper=lambda l: 2 / np.pi * np.arctan(np.exp(-0.5 * (l - mu) / scale)),
        lower=lambda l: 2 / np.pi * np.arctan(np.exp(0.5 * (l - mu) / scale)),
        density=lambda l: 1 / (2 * np.pi * scale * np.cosh(0.5 * (l - mu) / scale)),
    )


def _scipy(dist, lam):
    """λ = dist.isf(t): t(λ) = sf, 1 − t = cdf, p = pdf (SciPy's accurate tails)."""
    return Reference(lam=lam, upper=dist.sf, lower=dist.cdf, density=dist.pdf)


def _normal(mean, std):
    d = stats.norm(-2.0 * mean, 2.0 * std)
    return _scipy(d, lambda t, s: np.where(t < 0.5, d.isf(t), d.ppf(s)))


def _cauchy(mu, gamma):
    d = stats.cauchy(mu, gamma)
    return _scipy(d, lambda t, s: np.where(t < 0.5, d.isf(t), d.ppf(s)))


def _laplace(mu, b):
    d = stats.laplace(mu, b)
    return _scipy(d, lambda t, s: np.where(t < 0.5, d.isf(t), d.ppf(s)))


def _logistic(scale):
    """λ = scale·log(s/t): t(λ) = sigmoid(−λ/scale) (linear: scale 1; flow: scale 2)."""
    d = stats.logistic(0.0, scale)
    return _scipy(d, lambda t, s: scale * (np.log(s) - np.log(t)))


def _chen(v, start, end):
    """Chen 2023 Algorithm 1, naively: γ = (v(end) − v(x))/(v(end) − v(start)), x from the
    nearer end so that x keeps the small one of t, 1 − t."""

    def lam(t, s):
        x_lo, x_hi = start + t * (end - start), end - s * (end - start)
        x = np.where(t < 0.5, x_lo, x_hi)
        return np.log((v(x) - v(end)) / (v(start) - v(x)))

    return Reference(lam=lam)


def _chen_sigmoid(start=-3.0, end=3.0, tau=1.0):
    return _chen(lambda x: special.expit(np.asarray(x) / tau), start, end)


def _chen_cosine(start=0.0, end=1.0, tau=1.0):
    v = lambda x: np.sin(0.5 * np.pi * (1.0 - np.asarray(x))) ** (2.0 * tau)
    return _chen(v, start, end)


def _interpolated(image_size=64.0, noise_d_low=32.0, noise_d_high=None):
    high = image_size if noise_d_high is None else noise_d_high
    lo, hi = 2 * np.log(noise_d_low / image_size), 2 * np.log(high / image_size)
    return Reference(lam=lambda t, s: 2 * np.log(_cot_half_pi(t, s)) + t * lo + s * hi)


def _ddpm(num_steps=1000, beta_start=1e-4, beta_end=0.02):
    n = int(num_steps)
    abar = np.cumprod(1.0 - np.linspace(beta_start, beta_end, n))
    table = np.log(abar / (1.0 - abar))
    k = np.arange(n, dtype=np.float64) / (n - 1)
    seg = lambda l: np.clip(np.searchsorted(-table, -l, side="left") - 1, 0, n - 2)
    return Reference(
        lam=lambda t, s: np.interp(t, k, table),
        upper=lambda l: np.interp(l, table[::-1], k[::-1]),
        lower=lambda l: np.interp(l, table[::-1], 1.0 - k[::-1]),
        density=lambda l: np.where(
            (l >= table[-1]) & (l <= table[0]), 1.0 / ((n - 1) * -np.diff(table)[seg(l)]), 0.0
        ),
        closed=True,
    )


REFERENCES = {
    "cosine": lambda: _cosine(),
    "cosine_shifted": lambda mu=0.0: _cosine(mu=mu),
    "cosine_scaled": lambda s=1.0: _cosine(scale=s),
    "laplace": lambda mu=0.0, b=0.5: _laplace(mu, b),
    "cauchy": lambda mu=0.0, gamma=1.0: _cauchy(mu, gamma),
    "lognormal": lambda p_mean=-1.2, p_std=1.2: _normal(p_mean, p_std),
    "logit_normal": lambda m=0.0, s=1.0: _normal(m, s),
    "flow": lambda: _logistic(2.0),
    "linear": lambda clip_min=1e-9: _logistic(1.0),
    "sigmoid": lambda clip_min=1e-9, **p: _chen_sigmoid(**p),
    "cosine_power": lambda clip_min=1e-9, **p: _chen_cosine(**p),
    "cosine_interpolated": _interpolated,
    "ddpm_linear": _ddpm,
}

VARIANTS = [
    ("cosine_shifted", {"mu": 0.7}),
    ("cosine_scaled", {"s": 0.5}),
    ("laplace", {"mu": 0.3, "b": 0.75}),
    ("cauchy", {"mu": 0.2, "gamma": 1.5}),
    ("logit_normal", {"m": 0.5, "s": 1.0}),
    ("sigmoid", {"start": 0.0, "end": 3.0, "tau": 0.7}),
    ("sigmoid", {"start": -2.0, "end": 4.0, "tau": 0.9}),
    ("cosine_power", {"start": 0.2, "end": 0.9, "tau": 1.5}),
    ("cosine_power", {"start": 0.2, "end": 1.0, "tau": 1.5}),
    ("cosine_power", {"start": 0.0, "end": 0.8, "tau": 0.7}),
    ("cosine_interpolated", {"image_size": 128}),
    ("cosine_interpolated", {"image_size": 256, "noise_d_low": 32, "noise_d_high": 64}),
    ("ddpm_linear", {"num_steps": 100, "beta_start": 1e-3, "beta_end": 0.05}),
    ("linear", {"clip_min": 0.01}),  # λ(1) = logit(0.01): an atom of mass 0.01 there
]
CASES = [(name, {}) for name in noise.list_schedules()] + VARIANTS
IDS = [f"{n}-{p}" if p else n for n, p in CASES]


def _own_float64(name: str, params: dict) -> Reference:
    """Fallback for a schedule without a hand-written reference: its own float64 λ(t)."""
    s = noise.get_schedule(name, **params)

    def lam(t, _):
        with jax.enable_x64(True):
            return np.asarray(s.logsnr(np.asarray(t, np.float64)))

    return Reference(lam=lam)


def reference(name: str, params: dict) -> Reference:
    make = REFERENCES.get(name)
    return _own_float64(name, params) if make is None else make(**params)


def _bisect(f, target, increasing, iters=120):
    """x ∈ [1e−300, ½] with f(x) = target by bisection in log x (f monotone)."""
    lo, hi = np.full_like(target, np.log(1e-300)), np.full_like(target, np.log(0.5))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = f(np.exp(mid)) < target
        go_up = below if increasing else ~below
        lo, hi = np.where(go_up, mid, lo), np.where(go_up, hi, mid)
    return np.exp(0.5 * (lo + hi))


def ref_tails(ref: Reference, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t(λ), 1 − t(λ)), each with its relative accuracy, in float64."""
    if ref.upper is not None:
        return ref.upper(lam), ref.lower(lam)
    with np.errstate(all="ignore"):
        mid = ref.lam(np.array(0.5), np.array(0.5))
        t_up = _bisect(lambda t: ref.lam(t, 1.0 - t), lam, increasing=False)
        s_dn = _bisect(lambda s: ref.lam(1.0 - s, s), lam, increasing=True)
    upper = lam >= mid
    return np.where(upper, t_up, 1.0 - s_dn), np.where(upper, 1.0 - t_up, s_dn)


def _central(ref: Reference, lam: np.ndarray, h: float) -> np.ndarray:
    (t_p, s_p), (t_m, s_m) = ref_tails(ref, lam + h), ref_tails(ref, lam - h)
    small_t = t_p + t_m < s_p + s_m
    return np.where(small_t, t_m - t_p, s_p - s_m) / (2.0 * h)


def ref_density(ref: Reference, lam: np.ndarray, h: float = 0.02) -> np.ndarray:
    """Closed form, or central differences of the tails with one Richardson step (error
    O(h⁴); a large h keeps the naive formulas' float64 rounding, ~1e−8 in λ, out)."""
    if ref.density is not None:
        return ref.density(lam)
    return (4.0 * _central(ref, lam, 0.5 * h) - _central(ref, lam, h)) / 3.0


def test_every_schedule_has_a_hand_written_reference():
    assert set(noise.list_schedules()) - {"test_user_logit_plus_linear"} <= set(REFERENCES)


def _lam_grid(s, n=1601):
    lo, hi = s.logsnr_range
    lo, hi = max(lo + 0.05, -19.9), min(hi - 0.05, 19.9)
    return np.linspace(lo, hi, n)


T_GRID = np.array(
    [0.0, 1e-8, 1e-6, 1e-4, 0.003, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.997, 1 - 1e-4, 1.0]
)


def _ref_slope(ref: Reference, s, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dλ/dt, λ) of the clipped reference: 0 where the clip is active around t, one-sided at a
    closed end, else a central difference (one Richardson step) in the smaller of t, 1 − t."""
    lo, hi = s.logsnr_range
    t, sm = t.astype(np.float64), 1.0 - t.astype(np.float64)
    # Relative steps, but a tiny one at ½ where the folded formulas are only C¹ (Laplace).
    h = np.where(abs(t - 0.5) < 0.01, 1e-7, 1e-3 * np.maximum(np.minimum(t, sm), 1e-12))
    with np.errstate(all="ignore"):
        lam = ref.lam(t, sm)
        d = lambda h: (ref.lam(t + h, sm - h) - ref.lam(t - h, sm + h)) / (2 * h)
        central = (4.0 * d(0.5 * h) - d(h)) / 3.0
        right, left = ref.lam(t + h, sm - h), ref.lam(t - h, sm + h)
        slope = np.where(t == 0, (right - lam) / h, np.where(sm == 0, (lam - left) / h, 0.0))
    slope = np.where((t > 0) & (sm > 0), central, slope)
    clipped = ~((lam > lo) & (lam < hi)) if not ref.closed else np.zeros(t.shape, bool)
    return np.where(clipped, 0.0, slope), lam


# Every registered schedule in float32 and float64, the parameter variants in float32.
DTYPE_CASES = [(n, p, "float32") for n, p in CASES] + [
    (n, {}, "float64") for n in noise.list_schedules()
]


@pytest.mark.parametrize(
    "name,params,dtype",
    DTYPE_CASES,
    ids=[f"{n}-{p}-{d}" if p else f"{n}-{d}" for n, p, d in DTYPE_CASES],
)
def test_schedule_against_reference(name, params, dtype):
    """t_from_logsnr, density and jax.grad of λ(t), float32/float64 under one jit."""
    s, ref = noise.get_schedule(name, **params), reference(name, params)
    with jax.enable_x64(dtype == "float64"):
        lam, t_grid = _lam_grid(s).astype(dtype), T_GRID.astype(dtype)
        run = jax.jit(
            lambda l, t: (
                s.t_from_logsnr(l),
                s.density(l),
                s.logsnr(t),
                jax.vmap(jax.grad(s.logsnr))(t),
            )
        )
        t, dens, lam_t, grad = map(np.asarray, run(lam, t_grid))
    assert t.dtype == dens.dtype == grad.dtype == dtype
    f32 = dtype == "float32"
    closed_form = ref.upper is not None  # else bisection + finite differences, float64 ~1e−6
    lam64 = lam.astype(np.float64)  # the reference at the very λ the schedule saw
    t_ref, _ = ref_tails(ref, lam64)
    rtol = 1e-4 if f32 else (1e-7 if closed_form else 1e-6)
    np.testing.assert_allclose(t, t_ref, rtol=rtol, atol=0, err_msg=f"{name} t_from_logsnr")
    p_ref = ref_density(ref, lam64)
    keep = p_ref > 1e-30
    assert keep.mean() > 0.5
    rtol = 1e-4 if f32 else (1e-7 if closed_form else 2e-5)
    np.testing.assert_allclose(dens[keep], p_ref[keep], rtol=rtol, err_msg=f"{name} density")

    want, lam_ref = _ref_slope(ref, s, t_grid)
    lo, hi = s.logsnr_range
    assert lam_t[0] == np.asarray(hi, dtype) and lam_t[-1] == np.asarray(lo, dtype)
    assert np.all(np.isfinite(grad)) and grad[list(T_GRID).index(0.5)] < 0
    near_clip = np.isfinite(lam_ref) & (np.minimum(abs(lam_ref - lo), abs(lam_ref - hi)) < 1e-3)
    rtol = 2e-4 if f32 else (1e-6 if closed_form else 2e-5)
    np.testing.assert_allclose(
        grad[~near_clip], want[~near_clip], rtol=rtol, atol=1e-30, err_msg=f"{name} grad"
    )


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_clip_masses_are_the_reference_tails(name, params):
    s, ref = noise.get_schedule(name, **params), reference(name, params)
    got_lo, got_hi = s.clip_masses()
    if ref.closed:  # no clip at either end: no atoms
        assert got_lo == got_hi == 0.0
        return
    lo, hi = s.logsnr_range
    _, s_lo = ref_tails(ref, np.array([lo]))
    t_hi, _ = ref_tails(ref, np.array([hi]))
    np.testing.assert_allclose([got_lo, got_hi], [s_lo[0], t_hi[0]], rtol=1e-4, atol=1e-300)
    assert got_lo > 0 and got_hi > 0


def test_issue_examples():
    """The report's numbers: float32 sigmoid beyond λ = 16.7, the gradient at t = ½,
    cosine_power with start > 0 near both ends."""
    sig = noise.get_schedule("sigmoid")
    ci = noise.get_schedule("cosine_interpolated", image_size=128)
    cp = noise.get_schedule("cosine_power", start=0.2, end=0.9, tau=1.5)
    t_cp = np.float32([1e-8, 1 - 2**-23])

    @jax.jit
    def run():
        lam_half = ci.logsnr(jnp.float32(0.5))
        return (
            sig.t_from_logsnr(jnp.float32(17.0)),
            sig.density(jnp.float32([15.0, 17.0, 20.0])),
            lam_half,
            ci.density(lam_half),
            cp.logsnr(t_cp),
        )

    t17, dens, lam_half, dens_half, lam_cp = map(np.asarray, run())
    assert t17 == pytest.approx(1.3824e-7, rel=1e-3)  # was −3.97e−8
    assert np.all(np.isfinite(dens)) and np.all(dens > 0)  # was [1.2e-6 (+17%), 0, 0]
    assert lam_half == pytest.approx(-1.386, abs=1e-3)
    assert dens_half == pytest.approx(0.1104, abs=1e-4)  # was 0.3607
    want = _chen_cosine(0.2, 0.9, 1.5).lam(t_cp.astype(np.float64), 1.0 - t_cp.astype(np.float64))
    np.testing.assert_allclose(lam_cp, want, rtol=1e-5)  # was off by up to 1.2
