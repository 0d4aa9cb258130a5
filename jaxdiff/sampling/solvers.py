"""Euler, EDM's stochastic Heun, DPM-Solver++(2M) (ODE and SDE) and UniPC, in λ-parameterisation.

Registered in ``jaxdiff.sampling.samplers``, so each runs through ``sample(..., method=...)``
(any schedule or ``lams`` grid, target, guidance, input scaling, RIN's carry, sharding).

Notation: z is the VP state at logSNR λ (α² = sigmoid(λ), σ² = sigmoid(−λ)), D = ŷ0 the
network's denoised estimate at (z, λ), and ``h = (λ' − λ)/2`` the step in DPM-Solver's time
t = log(α/σ) (half our λ). EDM's coordinates are x = z/α with noise level σ_E = σ/α = e^{−λ/2}.

* ``euler``: EDM's Euler step x' = x + (σ_E' − σ_E)·ε̂ (Karras et al. 2022), as z' = (α'/α)·z +
  (σ' − (α'/α)·σ)·ε̂. It equals DDIM(η = 0) and the Euler step of the flow-matching ODE
  dx/dt = ε − x0 on x_t = (1 − t)·x0 + t·ε: the same first-order update, since the states
  differ by a per-level factor. With ``churn`` it is EDM's stochastic Euler.
* ``heun``: EDM's Heun step (``updates.heun_update``); with ``churn``, ``s_tmin``, ``s_tmax``,
  ``s_noise`` EDM's stochastic sampler (Algorithm 2, k-diffusion's ``sample_heun``): at a
  level σ_E with s_tmin <= σ_E/b <= s_tmax the state gets noise up to σ̂_E = σ_E·(1 + γ),
  γ = min(churn/steps, √2 − 1), i.e. λ̂ = λ − 2·log(1 + γ) and
  ẑ = (α̂/α)·z + α̂·σ_E·sqrt((1 + γ)² − 1)·s_noise·ξ, and the step starts from (ẑ, λ̂),
  the last one too (x̂0 at λ̂). churn = 0 is the deterministic sampler exactly.
* ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2):
  z' = (σ'/σ)·z − α'·expm1(−h)·D̄, D̄ = D + (D − D_prev)/(2r), r = h_prev/h; the first step
  is first order (D̄ = D), the last goes to σ = 0 (first order: x̂0 at the last grid point),
  as diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
  lower_order_final=True, final_sigmas_type="zero")``.
* ``dpmpp_2m_sde``: the SDE variant with the midpoint rule (k-diffusion's
  ``sample_dpmpp_2m_sde``, η = 1; diffusers' ``"sde-dpmsolver++"``):
  z' = (σ'/σ)·e^{−h}·z − α'·expm1(−2h)·D̄ + σ'·sqrt(−expm1(−2h))·s_noise·ξ.
* ``unipc``: UniPC (Zhao et al. 2023, arXiv 2302.04867) with B(h) = e^h − 1 ("bh2"), order 2,
  data prediction, as diffusers' ``UniPCMultistepScheduler(solver_type="bh2", solver_order=2,
  predict_x0=True, lower_order_final=True, final_sigmas_type="zero")``. The predictor UniP-2
  with bh2 is the 2M update above. At each level after the first, the state predicted there
  is first corrected (UniC, ``_unic``) with the new evaluation D at it, and the predictor
  starts from the corrected state; the network is not evaluated again at the corrected state
  (its evaluation count is one per step), and the last step returns that D.

The stochastic rules draw ξ ~ N(0, I) from the step's key (see ``samplers._run``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxdiff.sampling.samplers import register
from jaxdiff.sampling.updates import heun_update

# EDM's largest noise level; a step from a grid level above it skips the Heun correction.
EDM_SIGMA_MAX = 80.0
# λ of that level, with a relative tolerance of 1e-4 in σ_E so that a grid starting at
# σ_E = 80 in float32 counts as inside.
_HEUN_LAM_MIN = -2.0 * math.log(EDM_SIGMA_MAX * (1.0 + 1e-4))


def _sigma_ratio(lam: jax.Array, lam_next: jax.Array) -> jax.Array:
    """σ'/σ = exp((log σ'² − log σ²)/2)."""
    return jnp.exp(0.5 * (jax.nn.log_sigmoid(-lam_next) - jax.nn.log_sigmoid(-lam)))


def _draw(key, z, opts):
    return opts["constrain"](jax.random.normal(key, z.shape, z.dtype))


# ----------------------------------------------------------------------------- EDM (churn)


def _churn(z, lam, key, opts):
    """EDM's noise injection (Algorithm 2, lines 4–6) -> (ẑ, λ̂); γ = 0 leaves (z, λ)."""
    gamma_max = min(opts["churn"] / opts["steps"], math.sqrt(2.0) - 1.0)
    sigma_data = jnp.exp(-0.5 * lam) / opts["scale"]  # EDM's σ of the unscaled data
    inside = (sigma_data >= opts["s_tmin"]) & (sigma_data <= opts["s_tmax"])
    gamma = jnp.where(inside, jnp.asarray(gamma_max, z.dtype), jnp.zeros((), z.dtype))
    lam_hat = lam - 2.0 * jnp.log1p(gamma)
    ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(lam_hat) - jax.nn.log_sigmoid(lam)))  # α̂/α
    std = jnp.sqrt(jax.nn.sigmoid(lam_hat)) * jnp.exp(-0.5 * lam) * jnp.sqrt(gamma * (2 + gamma))
    return ratio * z + (std * opts["s_noise"]) * _draw(key, z, opts), lam_hat


def _edm_final(z, predict, lam, key, opts):
    """The last step of EDM's samplers: churn at the last level, then x̂0 (the step to σ = 0)."""
    if opts["churn"] > 0.0:
        z, lam = _churn(z, lam, key, opts)
    return predict(z, lam)[0]


@register("euler", final=_edm_final)
def _euler_rule(z, predict, lam, lam_next, key, opts):
    """EDM's (stochastic with ``churn``) Euler step, one network evaluation."""
    if opts["churn"] > 0.0:
        z, lam = _churn(z, lam, key, opts)
    y0_hat, eps_hat = predict(z, lam)
    return heun_update(z, eps_hat, None, lam, lam_next), y0_hat


@register("heun", evals_per_step=2, final=_edm_final)
def _heun_rule(z, predict, lam, lam_next, key, opts):
    """EDM's Heun step (two network evaluations), see ``heun_update``; churn as Algorithm 2.

    A step from a grid level above EDM's σ_max = 80 (λ < −2·log 80 ≈ −8.8, e.g. the first
    step from the cosine schedule's λ(1) = −20, σ_E = e^{10}) keeps the Euler result: the
    trapezoid over [σ_E', e^{10}] weights the slope at σ_E' by half the interval and is far
    off with few steps, while there the ODE is nearly linear in σ_E and Euler is accurate.
    EDM's own grids never start above σ_max, where this is exactly EDM's Algorithm 1 (2).
    """
    lam_grid = lam
    if opts["churn"] > 0.0:
        z, lam = _churn(z, lam, key, opts)
    y0_hat, eps_hat = predict(z, lam)
    z_euler = heun_update(z, eps_hat, None, lam, lam_next)
    _, eps_next = predict(z_euler, lam_next)
    z_heun = heun_update(z, eps_hat, eps_next, lam, lam_next)
    return jnp.where(lam_grid >= _HEUN_LAM_MIN, z_heun, z_euler), y0_hat


# ----------------------------------------------------------------------------- multistep


def _two_step_history(z, lams):
    """(D_prev, λ_prev, evaluations so far); λ_prev starts finite so masked terms stay 0."""
    return jnp.zeros_like(z), lams[0] - 1.0, jnp.zeros((), jnp.int32)


def _extrapolated(d, d_prev, lam_prev, lam, lam_next, second):
    """D̄ = D + (D − D_prev)/(2r), r = (λ − λ_prev)/(λ' − λ); D where ``second`` is False."""
    r = (lam - lam_prev) / (lam_next - lam)
    return d + jnp.where(second, 0.5 / r, jnp.zeros((), d.dtype)) * (d - d_prev)


def dpmpp_2m_update(z, d_bar, lam, lam_next):
    """DPM-Solver++ step z' = (σ'/σ)·z − α'·expm1(−h)·D̄, h = (λ' − λ)/2 (first order with
    D̄ = D, which is DDIM(η = 0)); scalars λ < λ', any z shape."""
    h = 0.5 * (lam_next - lam)
    alpha_next = jnp.sqrt(jax.nn.sigmoid(lam_next))
    return _sigma_ratio(lam, lam_next) * z - (alpha_next * jnp.expm1(-h)) * d_bar


def dpmpp_2m_sde_update(z, d_bar, lam, lam_next, noise_draw, s_noise=1.0):
    """DPM-Solver++(2M) SDE step (η = 1, midpoint): z' = (σ'/σ)·e^{−h}·z − α'·expm1(−2h)·D̄
    + σ'·sqrt(−expm1(−2h))·s_noise·ξ, h = (λ' − λ)/2."""
    h = 0.5 * (lam_next - lam)
    e2 = -jnp.expm1(-2.0 * h)
    alpha_next, sigma_next = jnp.sqrt(jax.nn.sigmoid(lam_next)), jnp.sqrt(jax.nn.sigmoid(-lam_next))
    z_next = (_sigma_ratio(lam, lam_next) * jnp.exp(-h)) * z + (alpha_next * e2) * d_bar
    return z_next + (sigma_next * jnp.sqrt(e2) * s_noise) * noise_draw


@register("dpmpp_2m", history=_two_step_history)
def _dpmpp_2m_rule(z, predict, lam, lam_next, key, opts, hist):
    """DPM-Solver++(2M): one evaluation, the previous D from the history."""
    del key, opts
    d_prev, lam_prev, n = hist
    d, _ = predict(z, lam)
    d_bar = _extrapolated(d, d_prev, lam_prev, lam, lam_next, n >= 1)
    return dpmpp_2m_update(z, d_bar, lam, lam_next), d, (d, lam, n + 1)


@register("dpmpp_2m_sde", history=_two_step_history)
def _dpmpp_2m_sde_rule(z, predict, lam, lam_next, key, opts, hist):
    """DPM-Solver++(2M) SDE (midpoint): one evaluation and one noise draw per step."""
    d_prev, lam_prev, n = hist
    d, _ = predict(z, lam)
    d_bar = _extrapolated(d, d_prev, lam_prev, lam, lam_next, n >= 1)
    draw = _draw(key, z, opts)
    z_next = dpmpp_2m_sde_update(z, d_bar, lam, lam_next, draw, opts["s_noise"])
    return z_next, d, (d, lam, n + 1)


# ----------------------------------------------------------------------------- UniPC


def unic_bh2(z_start, d_prev2, d_prev, d, lam_prev2, lam_prev, lam, second):
    """UniC corrector (B(h) = e^h − 1) of the state at λ reached from ``z_start`` at λ_prev.

    With h = (λ − λ_prev)/2, hh = −h, B = expm1(hh): z_c = (σ/σ_prev)·z_start − α·B·D_prev
    − α·B·(ρ₀·D₁ + ρ₁·(D − D_prev)), D₁ = (D_prev2 − D_prev)/r, r = (λ_prev2 − λ_prev)/
    (λ − λ_prev); (ρ₀, ρ₁) solves [[1, 1], [r, 1]]·ρ = (φ₁/B, 2φ₂/B) with φ₁ = B/hh − 1,
    φ₂ = φ₁/hh − 1/2 (order 2, ``second``), else ρ = (0, 1/2) (order 1).
    """
    h = 0.5 * (lam - lam_prev)
    hh = -h
    b_h = jnp.expm1(hh)
    phi1 = b_h / hh - 1.0
    phi2 = phi1 / hh - 0.5
    b1, b2 = phi1 / b_h, 2.0 * phi2 / b_h
    r = (lam_prev2 - lam_prev) / (lam - lam_prev)
    rho0 = (b1 - b2) / (1.0 - r)
    zero, half = jnp.zeros((), d.dtype), jnp.full((), 0.5, d.dtype)
    c_1, c_t = jnp.where(second, rho0, zero), jnp.where(second, b1 - rho0, half)
    alpha = jnp.sqrt(jax.nn.sigmoid(lam))
    base = _sigma_ratio(lam_prev, lam) * z_start - (alpha * b_h) * d_prev
    return base - (alpha * b_h) * (c_1 * ((d_prev2 - d_prev) / r) + c_t * (d - d_prev))


def _unipc_history(z, lams):
    """(corrected state at λ_prev, D_prev, D_prev2, λ_prev, λ_prev2, evaluations so far)."""
    zeros = jnp.zeros_like(z)
    return z, zeros, zeros, lams[0] - 1.0, lams[0] - 2.0, jnp.zeros((), jnp.int32)


@register("unipc", history=_unipc_history)
def _unipc_rule(z, predict, lam, lam_next, key, opts, hist):
    """UniPC-2 (bh2): evaluate at the predicted state, correct it, predict the next."""
    del key, opts
    z_start, d_prev, d_prev2, lam_prev, lam_prev2, n = hist
    d, _ = predict(z, lam)
    z_c = unic_bh2(z_start, d_prev2, d_prev, d, lam_prev2, lam_prev, lam, n >= 2)
    z_c = jnp.where(n >= 1, z_c, z)
    d_bar = _extrapolated(d, d_prev, lam_prev, lam, lam_next, n >= 1)
    z_next = dpmpp_2m_update(z_c, d_bar, lam, lam_next)
    return z_next, d, (z_c, d, d_prev, lam, lam_prev, n + 1)
