"""Chen 2023 ("On the importance of noise scheduling", Algorithm 1): linear, sigmoid, cosine_power.

γ(t) = α² is built from a monotone v(x), x = start + t·(end − start):
γ = (v(end) − v(x))/(v(end) − v(start)), λ = log(γ/(1 − γ)), clipped below at logit(clip_min)
(so λ(1) = max(−20, logit(clip_min))). Every formula, inverse and density here is written
without cancellation, so float32 keeps its relative accuracy for t near 0 (λ near +20) and
its absolute accuracy for t near 1: constants are computed in float64 on the host from the
(Python float) parameters, and differences of nearly equal quantities are taken in closed form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.noise.schedules import register_schedule

_LOG2 = float(np.log(2.0))


def _check_clip_min(schedule: str, clip_min: float) -> None:
    if not 0.0 < clip_min < 0.5:
        raise ValueError(f"schedule {schedule!r}: clip_min must be in (0, 0.5), got {clip_min}")


def _check_tau(schedule: str, tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"schedule {schedule!r}: tau must be > 0, got {tau}")


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def _clip_range(*_, clip_min: float, **__) -> tuple[float, float]:
    """(inf, sup) of a formula clipped below at logit(clip_min)."""
    return _logit(clip_min), float("inf")


@register_schedule(
    "linear",
    inverse=lambda lam, clip_min: jax.nn.sigmoid(-lam),
    density=lambda lam, clip_min: jax.nn.sigmoid(lam) * jax.nn.sigmoid(-lam),
    validate=lambda clip_min: _check_clip_min("linear", clip_min),
    logsnr_range=_clip_range,
)
def _linear(t, clip_min=1e-9):
    """Chen 2023 Algorithm 1: γ = clip(1 − t, clip_min, 1), λ = log(γ/(1 − γ))."""
    return jnp.maximum(jnp.log1p(-t) - jnp.log(t), _logit(clip_min))


# ----------------------------------------------------------------------------- sigmoid


def _log_sinh(y):
    """log sinh(y) for y > 0, stable for tiny and large y (NumPy or JAX arrays)."""
    xp = jnp if isinstance(y, jax.Array) else np
    return y - _LOG2 + xp.log(-xp.expm1(-2.0 * y))


def _log_cosh(y):
    xp = jnp if isinstance(y, jax.Array) else np
    y = xp.abs(y)
    return y - _LOG2 + xp.log1p(xp.exp(-2.0 * y))


def _sigmoid_consts(start, end, tau):
    """Float64 constants with s = start/τ, e = end/τ, v = sigmoid: (s, e, log Δv, log v(s),
    log(1 − v(s)), log(1 − v(e))), Δv = v(e) − v(s) = sinh((e−s)/2)/(2·cosh(e/2)·cosh(s/2))."""
    s, e = start / tau, end / tau
    log_dv = _log_sinh(0.5 * (e - s)) - _LOG2 - _log_cosh(0.5 * e) - _log_cosh(0.5 * s)
    log_sig = lambda x: -float(np.logaddexp(0.0, -x))
    return s, e, float(log_dv), log_sig(s), log_sig(-s), log_sig(-e)


def _sigmoid_inv(lam, start, end, tau, clip_min):
    """t = (logit v − s)/(e − s), v = v(e) − sigmoid(λ)·Δv, without cancellation.

    With a = v − v(s) = sigmoid(−λ)·Δv: logit v − s = log(1 + a/v(s)) − log(1 − a/(1 − v(s))),
    the second term for λ < 0 as log(1 − v) − log(1 − v(s)) with 1 − v = 1 − v(e) + sigmoid(λ)·Δv.
    """
    s, e, log_dv, log_vs, log_1mvs, log_1mve = _sigmoid_consts(start, end, tau)
    log_a = jax.nn.log_sigmoid(-lam) + log_dv
    log_1mv = jnp.logaddexp(log_1mve, jax.nn.log_sigmoid(lam) + log_dv)
    down = jnp.where(lam >= 0, -jnp.log1p(-jnp.exp(log_a - log_1mvs)), log_1mvs - log_1mv)
    return (jax.nn.softplus(log_a - log_vs) + down) / (e - s)


def _sigmoid_density(lam, start, end, tau, clip_min):
    """p(λ) = τ·sigmoid(λ)·sigmoid(−λ)·Δv / ((end − start)·v·(1 − v)), in log space."""
    s, e, log_dv, log_vs, log_1mvs, log_1mve = _sigmoid_consts(start, end, tau)
    log_sp, log_sm = jax.nn.log_sigmoid(lam), jax.nn.log_sigmoid(-lam)
    log_v = jnp.logaddexp(log_vs, log_sm + log_dv)
    log_1mv = jnp.logaddexp(log_1mve, log_sp + log_dv)
    return jnp.exp(log_sp + log_sm + log_dv - float(np.log(e - s)) - log_v - log_1mv)


def _check_sigmoid(start, end, tau, clip_min):
    _check_tau("sigmoid", tau)
    _check_clip_min("sigmoid", clip_min)
    if not end > start:
        raise ValueError(f"schedule 'sigmoid': end must be > start, got start={start}, end={end}")


@register_schedule(
    "sigmoid",
    inverse=_sigmoid_inv,
    density=_sigmoid_density,
    validate=_check_sigmoid,
    logsnr_range=_clip_range,
)
def _sigmoid(t, start=-3.0, end=3.0, tau=1.0, clip_min=1e-9):
    """Chen 2023 Algorithm 1: v(x) = sigmoid(x/τ), γ = (v(end) − v(x))/(v(end) − v(start)).

    With x = start + t·(end − start) and σ(a) − σ(b) = sinh((a−b)/2)/(2·cosh(a/2)·cosh(b/2)):
    λ = log sinh((1−t)(end−start)/2τ) − log sinh(t(end−start)/2τ) + log cosh(start/2τ)
    − log cosh(end/2τ), clipped below at logit(clip_min).
    """
    width = (end - start) / (2.0 * tau)
    lam = _log_sinh((1.0 - t) * width) - _log_sinh(t * width)
    lam = lam + float(_log_cosh(start / (2.0 * tau)) - _log_cosh(end / (2.0 * tau)))
    return jnp.maximum(lam, _logit(clip_min))


# ----------------------------------------------------------------------------- cosine_power


def _cos_power_consts(start, end, tau):
    """Float64 constants with S = start·π/2, E = end·π/2, v(u) = cos(uπ/2)^{2τ}: a dict of
    cos S, sin S, tan S, log cos S, W = E − S, tan E, C = log(v(start)/v(end)) (inf at
    end = 1) and log q, q = 1 − v(end)/v(start) = Δv/v(start)."""
    big_s, big_e = 0.5 * np.pi * start, 0.5 * np.pi * end
    c = dict(cos_s=np.cos(big_s), sin_s=np.sin(big_s), tan_s=np.tan(big_s))
    c.update(log_cos_s=np.log(np.cos(big_s)), width=big_e - big_s, open_end=end == 1.0)
    if end < 1.0:
        c.update(tan_e=np.tan(big_e), big_c=2.0 * tau * (c["log_cos_s"] - np.log(np.cos(big_e))))
        c["log_q"] = np.log(-np.expm1(-c["big_c"]))
    else:
        c.update(tan_e=np.inf, big_c=np.inf, log_q=0.0)
    return {k: (v if isinstance(v, bool) else float(v)) for k, v in c.items()}


def _cosine_power(t, start=0.0, end=1.0, tau=1.0, clip_min=1e-9):
    """Chen 2023 Algorithm 1 cosine: v(u) = cos(uπ/2)^(2τ), γ = (v(end) − v(x))/(v(end) − v(start)).

    λ = log(v(x) − v(end)) − log(v(start) − v(x)) = d_s + log(1 − e^{−d_e}) − log(1 − e^{d_s}),
    d_s = log(v(x)/v(start)), d_e = log(v(x)/v(end)). For t ≤ ½, d_s = 2τ·log(cos(S + δ)/cos S)
    = 2τ·log1p(−2sin²(δ/2) − tan S·sin δ) with δ = t·W (no rounding of x near start);
    for t > ½ the same from the end with ε = (1 − t)·W. Clipped below at logit(clip_min).
    Defaults give γ = cos²(πt/2), the cosine schedule.
    """
    c = _cos_power_consts(start, end, tau)
    near0 = t <= 0.5
    delta = jnp.where(near0, t, 0.25) * c["width"]
    eps = (1.0 - jnp.where(near0, 0.75, t)) * c["width"]
    d_s0 = 2.0 * tau * jnp.log1p(-2.0 * jnp.sin(0.5 * delta) ** 2 - c["tan_s"] * jnp.sin(delta))
    if c["open_end"]:
        d_s = jnp.where(near0, d_s0, 2.0 * tau * (jnp.log(jnp.sin(eps)) - c["log_cos_s"]))
        lam = d_s - jnp.log(-jnp.expm1(d_s))
    else:
        d_e1 = 2.0 * tau * jnp.log1p(-2.0 * jnp.sin(0.5 * eps) ** 2 + c["tan_e"] * jnp.sin(eps))
        d_s = jnp.where(near0, d_s0, d_e1 - c["big_c"])
        d_e = jnp.where(near0, d_s0 + c["big_c"], d_e1)
        lam = d_s + jnp.log(-jnp.expm1(-d_e)) - jnp.log(-jnp.expm1(d_s))
    return jnp.maximum(lam, _logit(clip_min))


def _cos_power_angle(lam, start, end, tau):
    """(log(v(x)/v(start)), sin x', 1 − ρ², ρ) at t(λ), x' = xπ/2, ρ = cos x'/cos S.

    v(x)/v(start) = 1 − sigmoid(−λ)·q (for λ < 0: e^{−C} + sigmoid(λ)·q, no cancellation).
    """
    c = _cos_power_consts(start, end, tau)
    if c["open_end"]:
        log_ratio = jax.nn.log_sigmoid(lam)
    else:
        pos = jnp.log1p(-jax.nn.sigmoid(-lam) * np.exp(c["log_q"]))
        neg = jnp.logaddexp(jax.nn.log_sigmoid(lam) + c["log_q"], -c["big_c"])
        log_ratio = jnp.where(lam >= 0, pos, neg)
    one_m_rho2 = -jnp.expm1(log_ratio / tau)
    rho = jnp.exp(log_ratio / (2.0 * tau))
    sin_x = jnp.sqrt(c["sin_s"] ** 2 + one_m_rho2 * c["cos_s"] ** 2)
    return log_ratio, sin_x, one_m_rho2, rho


def _cosine_power_inv(lam, start, end, tau, clip_min):
    """t = δ/W with δ = x' − S = atan2(sin δ, cos δ), from cos x' = ρ·cos S:
    sin δ = cos S·(1 − ρ²)/(sin x' + ρ·sin S), cos δ = ρ·cos² S + sin x'·sin S."""
    c = _cos_power_consts(start, end, tau)
    _, sin_x, one_m_rho2, rho = _cos_power_angle(lam, start, end, tau)
    num = c["cos_s"] * one_m_rho2 / (sin_x + rho * c["sin_s"])
    den = rho * c["cos_s"] ** 2 + sin_x * c["sin_s"]
    return jnp.arctan2(num, den) / c["width"]


def _cosine_power_density(lam, start, end, tau, clip_min):
    """p(λ) = sigmoid(λ)·sigmoid(−λ)·Δv / (τπ·(end − start)·v(x)·tan x'), in log space."""
    c = _cos_power_consts(start, end, tau)
    log_ratio, sin_x, _, _ = _cos_power_angle(lam, start, end, tau)
    log_tan = jnp.log(sin_x) - (0.5 * log_ratio / tau + c["log_cos_s"])
    log_p = jax.nn.log_sigmoid(lam) + jax.nn.log_sigmoid(-lam) + c["log_q"] - log_ratio - log_tan
    dens = jnp.exp(log_p - float(np.log(tau * np.pi * (end - start))))
    # sin x' = 0 only once sigmoid(−λ) underflows (λ ≳ 88 in float32), where p < e^{−40}.
    return jnp.where(sin_x > 0, dens, 0.0)


def _check_cosine_power(start, end, tau, clip_min):
    _check_tau("cosine_power", tau)
    _check_clip_min("cosine_power", clip_min)
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(
            f"schedule 'cosine_power': need 0 <= start < end <= 1, got start={start}, end={end}"
        )


register_schedule(
    "cosine_power",
    inverse=_cosine_power_inv,
    density=_cosine_power_density,
    validate=_check_cosine_power,
    logsnr_range=_clip_range,
)(_cosine_power)
