"""Input scaling and the variance-preserving corruption (Chen 2023, arXiv:2301.10972).

Chen's Algorithm 2 corrupts with the *unscaled* schedule's γ = α² = sigmoid(λ):
    x_t = √γ·b·x0 + √(1−γ)·ε,    optionally divided by √((b² − 1)·γ + 1).
Scaling x0 by b multiplies the SNR by b², so the noise level the data actually sees is the
*effective* logSNR λ_eff = λ + 2·log b, and `input_scaled(s, b)` is the schedule of λ_eff.
The normalised x_t equals exactly α_eff·x0 + σ_eff·ε with (α_eff, σ_eff) = alpha_sigma(λ_eff):
the VP form of the original x0 at λ_eff. jaxdiff therefore feeds λ_eff to the network and
builds targets (`targets.py`) and weights (`weighting.py`) at λ_eff with the original x0
(Chen's x0 prediction of b·x0, divided by b). Without normalisation the network input is that
VP x_t times `input_norm(lam, scale)`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.noise.schedules import Schedule


def _check_scale(scale: float, name: str = "scale") -> float:
    if isinstance(scale, jax.core.Tracer):
        raise ValueError(f"{name} must be a Python number > 0, not a traced value")
    scale = float(np.asarray(scale))
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"{name} must be a finite number > 0, got {scale}")
    return scale


def logsnr_shift(scale: float) -> float:
    """The λ shift of input scaling by b: 2·log b (Chen 2023)."""
    return 2.0 * math.log(_check_scale(scale))


def input_scaled(schedule: Schedule, scale: float) -> Schedule:
    """The schedule of λ_eff(t) = λ(t) + 2·log(scale): x0 multiplied by `scale` (b > 0).

    For the cosine schedule this equals cosine_shifted(mu=2·log b) wherever λ is unclipped.
    """
    shift = schedule.shift + logsnr_shift(scale)
    return dataclasses.replace(schedule, shift=shift)


def alpha_sigma(lam: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(α, σ) with α² = sigmoid(λ), σ² = sigmoid(−λ), computed in log space."""
    lam = jnp.asarray(lam)
    return jnp.exp(0.5 * jax.nn.log_sigmoid(lam)), jnp.exp(0.5 * jax.nn.log_sigmoid(-lam))


def effective_logsnr(lam: jax.typing.ArrayLike, scale: float = 1.0) -> jax.Array:
    """λ_eff = λ + 2·log b: the logSNR of x_t produced by `corrupt(..., lam, scale=b)`."""
    return jnp.asarray(lam) + logsnr_shift(scale)


def input_norm(lam: jax.typing.ArrayLike, scale: float = 1.0) -> jax.Array:
    """√((b² − 1)·γ + 1) with γ = sigmoid(λ): the std of Chen's x_t for unit-variance data."""
    b2 = _check_scale(scale) ** 2
    return jnp.sqrt((b2 - 1.0) * jax.nn.sigmoid(jnp.asarray(lam)) + 1.0)


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    """Reshape per-example `a` (leading dims of x) to broadcast against x."""
    a = jnp.asarray(a)
    dtype = jax.dtypes.canonicalize_dtype(jnp.result_type(x))
    return a.reshape(a.shape + (1,) * (jnp.ndim(x) - a.ndim)).astype(dtype)


def corrupt(
    x0: jax.Array,
    eps: jax.Array,
    lam: jax.typing.ArrayLike,
    *,
    scale: float = 1.0,
    normalize: bool = False,
) -> jax.Array:
    """Chen 2023 Algorithm 2: x_t = √γ·b·x0 + √(1−γ)·ε, γ = sigmoid(lam) of the unscaled λ.

    x0, eps: (B, ...); lam: (B,) or scalar. With `normalize`, x_t is divided by
    √((b² − 1)·γ + 1), giving exactly α_eff·x0 + σ_eff·ε at λ_eff = lam + 2·log b
    (unit variance for unit-variance data). scale = 1 gives α·x0 + σ·ε either way.
    """
    b = _check_scale(scale)
    alpha, sigma = alpha_sigma(lam)
    x_t = _bcast(alpha * b, x0) * x0 + _bcast(sigma, eps) * eps
    if normalize and b != 1.0:
        x_t = x_t / _bcast(input_norm(lam, b), x_t)
    return x_t
