"""Post-hoc EMA (Karras et al. 2024, EDM2, arXiv:2312.02696, Sec. 3 and App. C): the math.

A *power-function EMA profile* with exponent γ averages the parameters θ₁ … θ_t of the first
t optimizer updates with the update rule

    ema_t = β_t · ema_{t−1} + (1 − β_t) · θ_t,   β_t = (1 − 1/t)^(γ+1)   (t = 1, 2, …),

so β₁ = 0 (the initial weights get no weight) and, telescoping, the weight of θ_τ is

    w_t(τ) = (τ^(γ+1) − (τ−1)^(γ+1)) / t^(γ+1),   Σ_τ w_t(τ) = 1,

the discretisation of the continuous profile p_{t,γ}(τ) = (γ+1) τ^γ / t^(γ+1) on [0, t].
Its width relative to the length of training, σ_rel = std(p)/t, is

    σ_rel² = (γ+1) / ((γ+2)² (γ+3)),

so γ is the largest real root of γ³ + 7γ² + (16 − σ_rel⁻²)γ + (12 − σ_rel⁻²) = 0. This is
defined for 0 < σ_rel < 1/√12 (γ > 0; the uniform average, γ = 0, has σ_rel = 1/√12).

Post-hoc reconstruction: snapshots of a few tracked profiles (t_i, γ_i) are combined,
Σ x_i · snapshot_i, so that Σ x_i p_i approximates a target profile p_r in L²(0, ∞): the
normal equations A x = b with A_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p_r⟩ and, for t_a ≤ t_b,

    ⟨p_{t_a,γ_a}, p_{t_b,γ_b}⟩ = (γ_a+1)(γ_b+1) / (γ_a+γ_b+1) · (t_a/t_b)^γ_b / t_b.

All functions are pure; the update runs inside the jitted train step, the rest on the host
in float64 NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

MAX_STD = 1.0 / math.sqrt(12.0)  # σ_rel of the uniform average (γ = 0): the widest profile


def gamma_to_std(gamma: np.typing.ArrayLike) -> np.ndarray:
    """σ_rel = sqrt((γ+1) / ((γ+2)²(γ+3))) of the power-function profile with exponent γ."""
    g = np.asarray(gamma, np.float64)
    return np.sqrt((g + 1.0) / ((g + 2.0) ** 2 * (g + 3.0)))


def std_to_gamma(std: np.typing.ArrayLike) -> np.ndarray:
    """The exponent γ > 0 of the profile of relative width ``std`` (0 < std < 1/√12): the
    largest real root of γ³ + 7γ² + (16 − std⁻²)γ + (12 − std⁻²)."""
    s = np.asarray(std, np.float64)
    if np.any(~np.isfinite(s)) or np.any(s <= 0) or np.any(s >= MAX_STD):
        raise ValueError(f"sigma_rel must be in (0, {MAX_STD:.4f}), got {s.tolist()}")
    out = []
    for v in s.ravel():
        k = 1.0 / (v * v)
        roots = np.roots([1.0, 7.0, 16.0 - k, 12.0 - k])
        real = roots[np.abs(roots.imag) <= 1e-9 * np.maximum(1.0, np.abs(roots.real))].real
        out.append(float(real.max()))
    return np.asarray(out, np.float64).reshape(s.shape)


def decay_to_std(decay: float, step: int) -> float:
    """σ_rel at ``step`` of a classic EMA with constant ``decay`` β (its profile ∝ β^(t−τ)).

    The continuous profile is an exponential of rate k = −log β truncated to [0, t], whose
    variance is 1/k² − t² e^{−kt} / (1 − e^{−kt})²; σ_rel = sqrt(variance) / t.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    k, t = -math.log(decay), float(step)
    kt = k * t
    if kt < 1e-4:  # nearly uniform: the series of the variance, t²/12 − k²t⁴/720
        var = t * t / 12.0 - k * k * t**4 / 720.0
    else:
        var = 1.0 / (k * k) - t * t * math.exp(-kt) / (-math.expm1(-kt)) ** 2
    return math.sqrt(max(var, 0.0)) / t


# --- tracking (inside the train step) -------------------------------------------------------


def power_beta(step: jax.typing.ArrayLike, gamma: float, dtype=jnp.float32):
    """(β_t, 1 − β_t) with β_t = (1 − 1/t)^(γ+1) at update t ≥ 1 (t = 1 gives β = 0).

    Computed as exp / −expm1 of (γ+1)·log1p(−1/t): in float32, 1 − 1/t itself would lose
    1/t's digits (6% of them at t = 10⁶), and 1 − β with them."""
    t = jnp.asarray(step, dtype)
    x = (gamma + 1.0) * jnp.log1p(-1.0 / t)
    return jnp.exp(x), -jnp.expm1(x)


def update_profiles(profiles: tuple, params, gammas: Sequence[float], step) -> tuple:
    """Each profile ← β_t·profile + (1 − β_t)·params, with t = ``step`` the number of
    updates so far including this one (the new ``state.step``); β in the profile's dtype."""
    out = []
    for tree, g in zip(profiles, gammas, strict=True):
        leaves = jax.tree_util.tree_leaves(tree)
        dtype = jnp.result_type(leaves[0]) if leaves else jnp.float32
        b, one_minus_b = power_beta(step, float(g), dtype)
        update = lambda e, p, b=b, c=one_minus_b: (b * e + c * p).astype(e.dtype)  # noqa: E731
        out.append(jax.tree_util.tree_map(update, tree, params))
    return tuple(out)


# --- reconstruction (on the host) -----------------------------------------------------------


def profile_inner(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """⟨p_{t_a,γ_a}, p_{t_b,γ_b}⟩ = ∫ p_a p_b dτ in closed form (broadcasting; float64)."""
    t_a, g_a, t_b, g_b = (np.asarray(v, np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    lo, hi = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
    g_hi = np.where(t_a <= t_b, g_b, g_a)  # the exponent of the longer profile
    return (g_a + 1.0) * (g_b + 1.0) / (g_a + g_b + 1.0) * (lo / hi) ** g_hi / hi


def solve_coefficients(
    steps: Sequence[float], gammas: Sequence[float], target_step: float, target_gamma: float
) -> np.ndarray:
    """x minimising ‖Σ x_i p_{t_i,γ_i} − p_{t_r,γ_r}‖² (least squares over the snapshots'
    profiles; the minimum-norm solution when they are linearly dependent)."""
    t = np.asarray(steps, np.float64)
    g = np.asarray(gammas, np.float64)
    if t.shape != g.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"need matching 1-d steps and gammas, got {t.shape} and {g.shape}")
    scale = float(target_step)  # A and b scale as 1/t: keep them O(1)
    a = profile_inner(t[:, None], g[:, None], t[None, :], g[None, :]) * scale
    b = profile_inner(t, g, float(target_step), float(target_gamma)) * scale
    x, *_ = np.linalg.lstsq(a, b, rcond=1e-12)
    return x
