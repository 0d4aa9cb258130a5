"""The discrete linear-β DDPM (Ho et al. 2020; the official DiT and ADM) as a schedule.

β_k = linspace(beta_start, beta_end, num_steps)_k, ᾱ_k = Π_{i≤k} (1 − β_i) and
λ_k = log(ᾱ_k/(1 − ᾱ_k)) for k = 0 … T−1 (T = num_steps), computed in float64 exactly as the
official code does (`np.cumprod` of float64 1 − β). The continuous schedule `ddpm_linear`
puts step k at t_k = k/(T − 1) and is piecewise linear in λ between steps:

    λ(t) = λ_k + (x − k)·(λ_{k+1} − λ_k),  x = t·(T − 1), k = min(⌊x⌋, T − 2),

so λ(t_k) = λ_k, the density is piecewise constant, p(λ) = 1/((T − 1)·(λ_k − λ_{k+1})) on
[λ_{k+1}, λ_k], and the inverse is closed-form. Its range is [λ_{T−1}, λ_0] ≈ [−10.1, 9.21]
for the defaults, inside [−20, 20]: t = 0 is step 0 (λ_0, not 20) and t = 1 is step T − 1,
nothing is clipped and λ(U) has no atoms. Training on it with t ~ U(0, 1) draws the official
steps' λ uniformly over the continuous step index, as the official code draws integer steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.noise.schedules import register_schedule


def ddpm_linear_alphas_cumprod(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
    """ᾱ_k = Π_{i≤k}(1 − β_i), β = linspace(beta_start, beta_end, num_steps); float64 (T,)."""
    betas = np.linspace(beta_start, beta_end, int(num_steps), dtype=np.float64)
    return np.cumprod(1.0 - betas)


def ddpm_linear_logsnr_table(
    num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
    """λ_k = log(ᾱ_k / (1 − ᾱ_k)) of the linear-β DDPM, float64 (num_steps,), decreasing in k.

    The defaults are the DDPM (Ho et al. 2020) / official DiT schedule: λ_0 ≈ 9.21,
    λ_999 ≈ −10.1.
    """
    alphas_cumprod = ddpm_linear_alphas_cumprod(num_steps, beta_start, beta_end)
    return np.log(alphas_cumprod) - np.log1p(-alphas_cumprod)


@functools.lru_cache(maxsize=16)
def _tables(num_steps: float, beta_start: float, beta_end: float) -> dict[str, np.ndarray]:
    """Float64 table λ_k, its float32 split λ_k = hi_k + lo_k, and the widths λ_k − λ_{k+1}."""
    lam = ddpm_linear_logsnr_table(int(num_steps), beta_start, beta_end)
    hi = lam.astype(np.float32).astype(np.float64)
    out = dict(lam=lam, hi=hi, lo=lam - hi, width=lam[:-1] - lam[1:])
    for value in out.values():
        value.setflags(write=False)
    return out


def _const(table: np.ndarray, like: jax.Array) -> jax.Array:
    return jnp.asarray(table, like.dtype)


def _check_ddpm(num_steps, beta_start, beta_end):
    if not (float(num_steps).is_integer() and num_steps >= 2):
        raise ValueError(
            f"schedule 'ddpm_linear': num_steps must be an integer >= 2, got {num_steps}"
        )
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            "schedule 'ddpm_linear': need 0 < beta_start <= beta_end < 1, got "
            f"beta_start={beta_start}, beta_end={beta_end}"
        )


def _ddpm_range(num_steps, beta_start, beta_end) -> tuple[float, float]:
    lam = _tables(num_steps, beta_start, beta_end)["lam"]
    return float(lam[-1]), float(lam[0])


def _segment(lam: jax.Array, tab: dict[str, np.ndarray]) -> jax.Array:
    """k with λ_{k+1} ≤ λ ≤ λ_k (clamped to 0 … T − 2), int32 of λ's shape."""
    increasing = _const(tab["lam"][::-1], lam)
    j = jnp.searchsorted(increasing, lam, side="right") - 1  # increasing[j] ≤ λ
    return jnp.clip(len(tab["lam"]) - 2 - j, 0, len(tab["lam"]) - 2)


def _ddpm_inv(lam, num_steps, beta_start, beta_end):
    """t = (k + (λ_k − λ)/(λ_k − λ_{k+1}))/(T − 1), clamped to [0, 1]; λ_k − λ is taken as
    (hi_k − λ) + lo_k so that t near 0 keeps float32's relative accuracy."""
    tab = _tables(num_steps, beta_start, beta_end)
    k = _segment(lam, tab)
    diff = (jnp.take(_const(tab["hi"], lam), k) - lam) + jnp.take(_const(tab["lo"], lam), k)
    step = k.astype(lam.dtype) + diff / jnp.take(_const(tab["width"], lam), k)
    return jnp.clip(step / (len(tab["lam"]) - 1), 0.0, 1.0)


def _ddpm_density(lam, num_steps, beta_start, beta_end):
    """1/((T − 1)·(λ_k − λ_{k+1})) on [λ_{T−1}, λ_0], 0 outside."""
    tab = _tables(num_steps, beta_start, beta_end)
    width = jnp.take(_const(tab["width"], lam), _segment(lam, tab))
    inside = (lam >= float(tab["lam"][-1])) & (lam <= float(tab["lam"][0]))
    return jnp.where(inside, 1.0 / ((len(tab["lam"]) - 1) * width), 0.0)


@register_schedule(
    "ddpm_linear",
    inverse=_ddpm_inv,
    density=_ddpm_density,
    validate=_check_ddpm,
    logsnr_range=_ddpm_range,
    closed=True,
)
def _ddpm_linear(t, num_steps=1000, beta_start=1e-4, beta_end=0.02):
    """λ(t) = λ_k + (x − k)·(λ_{k+1} − λ_k), x = t·(T − 1), k = min(⌊x⌋, T − 2) (see module)."""
    tab = _tables(num_steps, beta_start, beta_end)
    x = t * (len(tab["lam"]) - 1)
    k = jnp.clip(jnp.floor(x), 0, len(tab["lam"]) - 2).astype(jnp.int32)
    lam_k = jnp.take(_const(tab["lam"], t), k)
    return lam_k - (x - k.astype(t.dtype)) * jnp.take(_const(tab["width"], t), k)
