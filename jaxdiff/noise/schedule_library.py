"""The built-in noise schedules, registered on import (see `jaxdiff.noise.schedules`).

Each is a formula t ↦ λ(t) = logSNR with t ∈ [0, 1] (0 clean), strictly decreasing, plus where
known its closed-form inverse t(λ), density p(λ) = |dt/dλ| and a parameter validator. Importing
`jaxdiff.noise.schedules` (or `jaxdiff.noise`) imports this module, so `get_schedule` always
sees every built-in.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.noise.schedules import bisect_inverse, register_schedule

# Formulas fold t onto u = min(t, 1 − t) where that keeps float32 accurate near both ends
# (1 − t is exact for t ≥ ½).


def _fold(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(u, sign): u = t, sign = +1 for t < ½; u = 1 − t, sign = −1 otherwise.

    A `where`, not min(t, 1 − t): at t = ½ exactly, min's tie rule would give du/dt = 0 and
    so a zero derivative of λ(t); here du/dt = −1 there, matching sign = −1.
    """
    below = t < 0.5
    return jnp.where(below, t, 1.0 - t), jnp.where(below, 1.0, -1.0).astype(t.dtype)


def _positive(schedule: str, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"schedule {schedule!r}: {key} must be > 0, got {value}")


def _cosine(t):
    u, sign = _fold(t)
    return -sign * 2.0 * jnp.log(jnp.tan(0.5 * jnp.pi * u))


def _cosine_inv(lam):
    return (2.0 / jnp.pi) * jnp.arctan(jnp.exp(-0.5 * lam))


def _cosine_density(lam):
    return 1.0 / (2.0 * jnp.pi * jnp.cosh(0.5 * lam))


register_schedule("cosine", inverse=_cosine_inv, density=_cosine_density)(
    lambda t: _cosine(t)  # λ = 2·log cot(πt/2); p(λ) = sech(λ/2)/2π
)


@register_schedule(
    "cosine_shifted",
    inverse=lambda lam, mu: _cosine_inv(lam - mu),
    density=lambda lam, mu: _cosine_density(lam - mu),
)
def _cosine_shifted(t, mu=0.0):
    """λ = mu + 2·log cot(πt/2) (simple diffusion's resolution shift: mu = 2·log(64/d))."""
    return mu + _cosine(t)


@register_schedule(
    "cosine_scaled",
    inverse=lambda lam, s: _cosine_inv(lam / s),
    density=lambda lam, s: _cosine_density(lam / s) / s,
    validate=lambda s: _positive("cosine_scaled", s=s),
)
def _cosine_scaled(t, s=1.0):
    """λ = s·2·log cot(πt/2); s < 1 concentrates p(λ) = sech(λ/2s)/(2πs) at 0."""
    return s * _cosine(t)


def _laplace_inv(lam, mu, b):
    x = (lam - mu) / b
    half_tail = 0.5 * jnp.exp(-jnp.where(x > 0, x, -x))  # |x| with the right slope at x = 0
    return jnp.where(x > 0, half_tail, 1.0 - half_tail)


@register_schedule(
    "laplace",
    inverse=_laplace_inv,
    density=lambda lam, mu, b: jnp.exp(-jnp.abs(lam - mu) / b) / (2.0 * b),
    validate=lambda mu, b: _positive("laplace", b=b),
)
def _laplace(t, mu=0.0, b=0.5):
    """λ = mu − b·sgn(½ − t)·log(1 − 2|t − ½|) (Hang et al. 2024)."""
    u, sign = _fold(t)
    return mu - sign * b * jnp.log(2.0 * u)


def _cauchy_inv(lam, mu, gamma):
    x = (lam - mu) / gamma
    small = jnp.abs(x) <= 1.0
    t_small = 0.5 - jnp.arctan(x) / jnp.pi
    tail = jnp.arctan(1.0 / jnp.where(small, 1.0, jnp.abs(x))) / jnp.pi  # arccot, accurate
    return jnp.where(small, t_small, jnp.where(x > 0, tail, 1.0 - tail))


@register_schedule(
    "cauchy",
    inverse=_cauchy_inv,
    density=lambda lam, mu, gamma: gamma / (jnp.pi * ((lam - mu) ** 2 + gamma**2)),
    validate=lambda mu, gamma: _positive("cauchy", gamma=gamma),
)
def _cauchy(t, mu=0.0, gamma=1.0):
    """λ = mu + gamma·tan(π/2·(1 − 2t)) = mu + gamma·cot(πt) (Hang et al. 2024)."""
    u, sign = _fold(t)
    return mu + sign * gamma * jnp.cos(jnp.pi * u) / jnp.sin(jnp.pi * u)


def _normal_logsnr(t, mean, std):
    """λ = −2·(mean + std·Φ⁻¹(t)), i.e. λ ~ Normal(−2·mean, (2·std)²) for t ~ U(0, 1)."""
    u, sign = _fold(t)
    return -2.0 * (mean + std * sign * jax.scipy.special.ndtri(u))


def _normal_inv(lam, mean, std):
    return jax.scipy.special.ndtr((-0.5 * lam - mean) / std)


def _normal_density(lam, mean, std):
    z = (lam + 2.0 * mean) / (2.0 * std)
    return jnp.exp(-0.5 * z * z) / (2.0 * std * jnp.sqrt(2.0 * jnp.pi))


@register_schedule(
    "lognormal",
    inverse=lambda lam, p_mean, p_std: _normal_inv(lam, p_mean, p_std),
    density=lambda lam, p_mean, p_std: _normal_density(lam, p_mean, p_std),
    validate=lambda p_mean, p_std: _positive("lognormal", p_std=p_std),
)
def _lognormal(t, p_mean=-1.2, p_std=1.2):
    """EDM: log σ ~ N(p_mean, p_std²) with λ = −2·log σ (Karras et al. 2022)."""
    return _normal_logsnr(t, p_mean, p_std)


@register_schedule(
    "logit_normal",
    inverse=lambda lam, m, s: _normal_inv(lam, m, s),
    density=lambda lam, m, s: _normal_density(lam, m, s),
    validate=lambda m, s: _positive("logit_normal", s=s),
)
def _logit_normal(t, m=0.0, s=1.0):
    """SD3 (Esser et al. 2024): t_flow = sigmoid(m + s·z) on the flow path, λ = −2·(m + s·z)."""
    return _normal_logsnr(t, m, s)


@register_schedule(
    "flow",
    inverse=lambda lam: jax.nn.sigmoid(-0.5 * lam),
    density=lambda lam: 1.0 / (8.0 * jnp.cosh(0.25 * lam) ** 2),
)
def _flow(t):
    """Rectified flow / FM-OT path (1 − t)·x0 + t·ε: λ = 2·log((1 − t)/t)."""
    return 2.0 * (jnp.log1p(-t) - jnp.log(t))


def _check_interpolated(image_size, noise_d_low, noise_d_high):
    high = image_size if noise_d_high is None else noise_d_high
    _positive("cosine_interpolated", image_size=image_size, noise_d_low=noise_d_low)
    _positive("cosine_interpolated", noise_d_high=high)
    if not noise_d_low / high < np.exp(np.pi):
        raise ValueError(
            "schedule 'cosine_interpolated': noise_d_low / noise_d_high must be < e^π "
            f"for λ to decrease, got {noise_d_low} / {high}"
        )


def _interp_shifts(image_size, noise_d_low, noise_d_high) -> tuple[float, float]:
    """(a, b) = (2·log(noise_d_low/image_size), 2·log(noise_d_high/image_size))."""
    high = image_size if noise_d_high is None else noise_d_high
    return 2.0 * float(np.log(noise_d_low / image_size)), 2.0 * float(np.log(high / image_size))


def _interp_folded(w, a, b, upper):
    """λ at u = w/2 from the near end (t = u if upper else 1 − u), written in u, negated on
    the lower side so that both are decreasing in w ∈ [0, 1]."""
    u = 0.5 * w
    if upper:
        return -2.0 * jnp.log(jnp.tan(0.5 * jnp.pi * u)) + b + u * (a - b)
    return -(2.0 * jnp.log(jnp.tan(0.5 * jnp.pi * u)) + a - u * (a - b))


def _interp_u(lam, image_size, noise_d_low, noise_d_high):
    """(u, upper): t(λ) = u if upper else 1 − u, u ∈ [0, ½] found by bisection in u itself,
    so it keeps float32's relative accuracy near both ends."""
    a, b = _interp_shifts(image_size, noise_d_low, noise_d_high)
    upper = lam >= 0.5 * (a + b)  # λ(½) = (a + b)/2
    fn_up = functools.partial(_interp_folded, a=a, b=b, upper=True)
    fn_dn = functools.partial(_interp_folded, a=a, b=b, upper=False)
    u_up = 0.5 * bisect_inverse(fn_up, jnp.where(upper, lam, 0.5 * (a + b) + 1.0))
    u_dn = 0.5 * bisect_inverse(fn_dn, -jnp.where(upper, 0.5 * (a + b) - 1.0, lam))
    return jnp.where(upper, u_up, u_dn), upper


def _interp_inv(lam, image_size, noise_d_low, noise_d_high):
    u, upper = _interp_u(lam, image_size, noise_d_low, noise_d_high)
    return jnp.where(upper, u, 1.0 - u)


def _interp_density(lam, image_size, noise_d_low, noise_d_high):
    """p = 1/|λ'(t)| = 1/(2π/sin(πu) − (a − b)) at the folded u of t(λ)."""
    a, b = _interp_shifts(image_size, noise_d_low, noise_d_high)
    u, _ = _interp_u(lam, image_size, noise_d_low, noise_d_high)
    dens = 1.0 / (2.0 * jnp.pi / jnp.sin(jnp.pi * u) - (a - b))
    return jnp.where(u > 0, dens, 0.0)


@register_schedule(
    "cosine_interpolated",
    inverse=_interp_inv,
    density=_interp_density,
    validate=_check_interpolated,
)
def _cosine_interpolated(t, image_size=64.0, noise_d_low=32.0, noise_d_high=None):
    """simple diffusion (Hoogeboom et al. 2023): λ = t·λ_d(low) + (1 − t)·λ_d(high).

    λ_d(d) = 2·log cot(πt/2) + 2·log(d/image_size); noise_d_high defaults to image_size.
    No closed-form inverse: t_from_logsnr bisects in the folded u = min(t, 1 − t) (one side
    each, chosen by λ vs λ(½)), and p(λ) = 1/(2π/sin(πu) − 2·log(noise_d_low/noise_d_high)).
    """
    a, b = _interp_shifts(image_size, noise_d_low, noise_d_high)
    return _cosine(t) + t * a + (1.0 - t) * b
