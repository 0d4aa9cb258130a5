"""The built-in noise schedules, registered on import (see `jaxdiff.noise.schedules`).

Each is a formula t ↦ λ(t) = logSNR with t ∈ [0, 1] (0 clean), strictly decreasing, plus where
known its closed-form inverse t(λ), density p(λ) = |dt/dλ| and a parameter validator. Importing
`jaxdiff.noise.schedules` (or `jaxdiff.noise`) imports this module, so `get_schedule` always
sees every built-in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.noise.schedules import register_schedule

# Formulas fold t onto u = min(t, 1 − t) where that keeps float32 accurate near both ends
# (1 − t is exact for t ≥ ½).


def _fold(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(u, sign): u = min(t, 1 − t) and sign = +1 for t < ½, −1 otherwise."""
    return jnp.minimum(t, 1.0 - t), jnp.where(t < 0.5, 1.0, -1.0).astype(t.dtype)


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
    half_tail = 0.5 * jnp.exp(-jnp.abs(x))
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


def _check_clip_min(schedule: str, clip_min: float) -> None:
    if not 0.0 < clip_min < 0.5:
        raise ValueError(f"schedule {schedule!r}: clip_min must be in (0, 0.5), got {clip_min}")


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


@register_schedule(
    "linear",
    inverse=lambda lam, clip_min: jax.nn.sigmoid(-lam),
    density=lambda lam, clip_min: jax.nn.sigmoid(lam) * jax.nn.sigmoid(-lam),
    validate=lambda clip_min: _check_clip_min("linear", clip_min),
)
def _linear(t, clip_min=1e-9):
    """Chen 2023 Algorithm 1: γ = clip(1 − t, clip_min, 1), λ = log(γ/(1 − γ))."""
    return jnp.maximum(jnp.log1p(-t) - jnp.log(t), _logit(clip_min))


_LOG2 = float(np.log(2.0))


def _log_sinh(y):
    """log sinh(y) for y > 0, stable for tiny and large y."""
    return y - _LOG2 + jnp.log(-jnp.expm1(-2.0 * y))


def _log_cosh(y):
    y = jnp.abs(y)
    return y - _LOG2 + jnp.log1p(jnp.exp(-2.0 * y))


def _sigmoid_inv(lam, start, end, tau, clip_min):
    v_start, v_end = jax.nn.sigmoid(start / tau), jax.nn.sigmoid(end / tau)
    v = v_end - jax.nn.sigmoid(lam) * (v_end - v_start)
    return (tau * (jnp.log(v) - jnp.log1p(-v)) - start) / (end - start)


def _check_sigmoid(start, end, tau, clip_min):
    _positive("sigmoid", tau=tau)
    _check_clip_min("sigmoid", clip_min)
    if not end > start:
        raise ValueError(f"schedule 'sigmoid': end must be > start, got start={start}, end={end}")


@register_schedule("sigmoid", inverse=_sigmoid_inv, validate=_check_sigmoid)
def _sigmoid(t, start=-3.0, end=3.0, tau=1.0, clip_min=1e-9):
    """Chen 2023 Algorithm 1: v(x) = sigmoid(x/τ), γ = (v(end) − v(x))/(v(end) − v(start)).

    With x = start + t·(end − start) and σ(a) − σ(b) = sinh((a−b)/2)/(2·cosh(a/2)·cosh(b/2)):
    λ = log sinh((1−t)(end−start)/2τ) − log sinh(t(end−start)/2τ) + log cosh(start/2τ)
    − log cosh(end/2τ), clipped below at logit(clip_min).
    """
    width = (end - start) / (2.0 * tau)
    lam = _log_sinh((1.0 - t) * width) - _log_sinh(t * width)
    lam = lam + _log_cosh(start / (2.0 * tau)) - _log_cosh(end / (2.0 * tau))
    return jnp.maximum(lam, _logit(clip_min))


def _log_cos_half_pi(x):
    """log cos(x·π/2) for x in [0, 1], accurate at both ends."""
    lo = jnp.where(x <= 0.5, x, 0.25)
    hi = jnp.where(x > 0.5, x, 0.75)
    near0 = 0.5 * jnp.log1p(-(jnp.sin(0.5 * jnp.pi * lo) ** 2))
    near1 = jnp.log(jnp.sin(0.5 * jnp.pi * (1.0 - hi)))
    return jnp.where(x <= 0.5, near0, near1)


def _cosine_power_inv(lam, start, end, tau, clip_min):
    lv_start = 2.0 * tau * _log_cos_half_pi(jnp.asarray(start, lam.dtype))
    lv_end = 2.0 * tau * _log_cos_half_pi(jnp.asarray(end, lam.dtype))
    # v = γ·v(start) + (1 − γ)·v(end), in log space.
    log_v = jnp.logaddexp(jax.nn.log_sigmoid(lam) + lv_start, jax.nn.log_sigmoid(-lam) + lv_end)
    cos2, sin2 = jnp.exp(log_v / tau), -jnp.expm1(log_v / tau)
    x = (2.0 / jnp.pi) * jnp.arctan2(jnp.sqrt(sin2), jnp.sqrt(cos2))
    return (x - start) / (end - start)


def _check_cosine_power(start, end, tau, clip_min):
    _positive("cosine_power", tau=tau)
    _check_clip_min("cosine_power", clip_min)
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(
            f"schedule 'cosine_power': need 0 <= start < end <= 1, got start={start}, end={end}"
        )


@register_schedule("cosine_power", inverse=_cosine_power_inv, validate=_check_cosine_power)
def _cosine_power(t, start=0.0, end=1.0, tau=1.0, clip_min=1e-9):
    """Chen 2023 Algorithm 1 cosine: v(u) = cos(uπ/2)^(2τ), γ = (v(end) − v(x))/(v(end) − v(start)).

    x = start + t·(end − start); λ = log(v(x) − v(end)) − log(v(start) − v(x)) in log space,
    clipped below at logit(clip_min). Defaults give γ = cos²(πt/2), the cosine schedule.
    """
    x = start + t * (end - start)
    lv_x = 2.0 * tau * _log_cos_half_pi(x)
    lv_start = 2.0 * tau * _log_cos_half_pi(jnp.asarray(start, t.dtype))
    lv_end = 2.0 * tau * _log_cos_half_pi(jnp.asarray(end, t.dtype))
    log_num = lv_x + jnp.log(-jnp.expm1(lv_end - lv_x))
    log_den = lv_start + jnp.log(-jnp.expm1(lv_x - lv_start))
    return jnp.maximum(log_num - log_den, _logit(clip_min))


def _check_interpolated(image_size, noise_d_low, noise_d_high):
    high = image_size if noise_d_high is None else noise_d_high
    _positive("cosine_interpolated", image_size=image_size, noise_d_low=noise_d_low)
    _positive("cosine_interpolated", noise_d_high=high)
    if not noise_d_low / high < np.exp(np.pi):
        raise ValueError(
            "schedule 'cosine_interpolated': noise_d_low / noise_d_high must be < e^π "
            f"for λ to decrease, got {noise_d_low} / {high}"
        )


@register_schedule("cosine_interpolated", validate=_check_interpolated)
def _cosine_interpolated(t, image_size=64.0, noise_d_low=32.0, noise_d_high=None):
    """simple diffusion (Hoogeboom et al. 2023): λ = t·λ_d(low) + (1 − t)·λ_d(high).

    λ_d(d) = 2·log cot(πt/2) + 2·log(d/image_size); noise_d_high defaults to image_size.
    No closed-form inverse: t_from_logsnr bisects and density uses autodiff.
    """
    high = image_size if noise_d_high is None else noise_d_high
    shift_low = 2.0 * float(np.log(noise_d_low / image_size))
    shift_high = 2.0 * float(np.log(high / image_size))
    return _cosine(t) + t * shift_low + (1.0 - t) * shift_high
