"""Closed-form updates of one sampler step in λ-parameterisation (VP state z at logSNR λ).

α² = sigmoid(λ), σ² = sigmoid(−λ); λ < λ_next (a step moves towards the data). Every function
is pure and elementwise in the state: scalar λ, any z shape, float32 or float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _alpha_sigma2(lam: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(α², σ²) = (sigmoid(λ), sigmoid(−λ))."""
    return jax.nn.sigmoid(lam), jax.nn.sigmoid(-lam)


def _signal_ratio2(lam: jax.Array, lam_next: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a, 1 − a) with a = α²/α²_next = γ_now/γ_next clipped to [0, 1] (Chen 2023 Alg. 3).

    1 − a = −expm1(log γ_now − log γ_next), accurate for small steps.
    """
    log_a = jnp.minimum(jax.nn.log_sigmoid(lam) - jax.nn.log_sigmoid(lam_next), 0.0)
    return jnp.exp(log_a), -jnp.expm1(log_a)


def ddpm_moments(
    z: jax.Array, y0_hat: jax.Array, lam: jax.Array, lam_next: jax.Array, variance: str
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of one ancestral step z(λ) → z(λ_next), λ < λ_next.

    Posterior form of Chen 2023 Algorithm 3 (Ho et al. 2020 eq. 7), with a = γ/γ_next:
    mean = α_next·(1−a)/σ²·ŷ0 + √a·σ²_next/σ²·z, which equals Chen's
    (z − (1−a)/σ·ε̂)/√a when ε̂ = (z − α·ŷ0)/σ. Variance 1−a ("large") or
    σ²_next/σ²·(1−a) ("small", the true posterior variance). Scalars λ; any z shape.
    """
    a, one_minus_a = _signal_ratio2(lam, lam_next)
    _, s2 = _alpha_sigma2(lam)
    a2_next, s2_next = _alpha_sigma2(lam_next)
    mean = jnp.sqrt(a2_next) * one_minus_a / s2 * y0_hat + jnp.sqrt(a) * s2_next / s2 * z
    var = one_minus_a if variance == "large" else s2_next / s2 * one_minus_a
    return mean, var


def learned_range_variance(v: jax.Array, lam: jax.Array, lam_next: jax.Array) -> jax.Array:
    """``exp(f·log β + (1 − f)·log β̃)``, f = (v + 1)/2: the learned-range step variance.

    β = 1 − γ/γ_next ("large"), β̃ = σ²_next/σ²·β (the posterior, "small"); v the network's
    variance output (any shape), λ < λ_next scalars. Computed in logs (log β̃ = log β +
    log σ²_next − log σ²), so tiny variances near λ_max do not underflow.
    """
    _, one_minus_a = _signal_ratio2(lam, lam_next)
    log_large = jnp.log(one_minus_a)
    log_small = log_large + jax.nn.log_sigmoid(-lam_next) - jax.nn.log_sigmoid(-lam)
    frac = (v.astype(jnp.float32) + 1.0) / 2.0
    return jnp.exp(frac * log_large + (1.0 - frac) * log_small)


def ddim_update(
    y0_hat: jax.Array,
    eps_hat: jax.Array,
    lam: jax.Array,
    lam_next: jax.Array,
    noise_draw: jax.Array | None,
    eta: float,
) -> jax.Array:
    """DDIM(η) (Song et al. 2021 eq. 12, 16): α_n·ŷ0 + sqrt(σ_n² − s²)·ε̂ + s·ξ.

    s = η·(σ_n/σ)·sqrt(1 − α²/α_n²); η = 0 is the deterministic probability-flow
    discretisation, η = 1 equals DDPM with the "small" variance.
    """
    a2_next, s2_next = _alpha_sigma2(lam_next)
    _, s2 = _alpha_sigma2(lam)
    var = eta**2 * s2_next / s2 * _signal_ratio2(lam, lam_next)[1]
    z_next = jnp.sqrt(a2_next) * y0_hat + jnp.sqrt(jnp.maximum(s2_next - var, 0.0)) * eps_hat
    if eta > 0.0:
        z_next = z_next + jnp.sqrt(var) * noise_draw
    return z_next


def heun_update(
    z: jax.Array,
    eps_hat: jax.Array,
    eps_hat_next: jax.Array | None,
    lam: jax.Array,
    lam_next: jax.Array,
) -> jax.Array:
    """One EDM step (Karras et al. 2022 Algorithm 1) in VP coordinates.

    EDM's state is x = z/α with noise σ_E = σ/α = e^{−λ/2}; its ODE is dx/dσ_E = (x − D)/σ_E
    = ε̂. Euler (``eps_hat_next`` None): x' = x + (σ_E' − σ_E)·ε̂, which is DDIM(η = 0);
    Heun: x' = x + (σ_E' − σ_E)·(ε̂ + ε̂')/2, ε̂' evaluated at the Euler point. Returned as
    z' = α'·x' = (α'/α)·z + (σ' − (α'/α)·σ)·ε̄. Scalars λ; any z shape.
    """
    ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(lam_next) - jax.nn.log_sigmoid(lam)))
    h = jnp.sqrt(jax.nn.sigmoid(-lam_next)) - ratio * jnp.sqrt(jax.nn.sigmoid(-lam))
    slope = eps_hat if eps_hat_next is None else 0.5 * (eps_hat + eps_hat_next)
    return ratio * z + h * slope
