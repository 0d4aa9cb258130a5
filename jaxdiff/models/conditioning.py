"""Maps from the noise level λ (logSNR) to the scalar `cond` the networks embed.

Networks are conditioned on the noise level, not on a schedule's t. The default
map `logsnr_to_cond` is a fixed affine map of λ ∈ [−20, 20] onto [0, 1000], the range the
DiT frequency embedder was designed for. Official DiT checkpoints were trained on the
integer step of the 1000-step linear-β DDPM schedule (its table λ_k is
`jaxdiff.noise.ddpm_linear_logsnr_table`); `ddpm_timestep_from_logsnr` is its continuous
inverse, so those networks can be queried at any λ.

A model carries the name of its map in its `conditioning` field; callers use
`get_cond_fn(model.conditioning)(lam)`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdiff.noise import LOGSNR_MAX, LOGSNR_MIN, ddpm_linear_logsnr_table

COND_SCALE = 1000.0 / (LOGSNR_MAX - LOGSNR_MIN)  # 25


def logsnr_to_cond(lam: jax.typing.ArrayLike) -> jax.Array:
    """cond = 25·(20 − clip(λ, −20, 20)) ∈ [0, 1000]; decreasing in λ, 0 = clean (λ = 20)."""
    lam = jnp.clip(jnp.asarray(lam, jnp.float32), LOGSNR_MIN, LOGSNR_MAX)
    return COND_SCALE * (LOGSNR_MAX - lam)


_TABLE = ddpm_linear_logsnr_table()


def ddpm_linear_logsnr(t: jax.typing.ArrayLike) -> jax.Array:
    """λ of the official 1000-step linear-β schedule at step t ∈ [0, 999].

    Integer t reads the table exactly; fractional t interpolates linearly between steps.
    """
    t = jnp.asarray(t, jnp.float32)
    steps = jnp.arange(_TABLE.shape[0], dtype=jnp.float32)
    return jnp.interp(t, steps, jnp.asarray(_TABLE, jnp.float32))


def ddpm_timestep_from_logsnr(lam: jax.typing.ArrayLike) -> jax.Array:
    """Continuous inverse of `ddpm_linear_logsnr`: the (fractional) step t whose λ_t = λ.

    Linear interpolation on the discrete table; λ above λ_0 ≈ 9.21 gives 0, below
    λ_999 ≈ −10.1 gives 999. Feed the result as `cond` to an imported official DiT.
    """
    lam = jnp.asarray(lam, jnp.float32)
    steps = jnp.arange(_TABLE.shape[0], dtype=jnp.float32)
    table = jnp.asarray(_TABLE[::-1].copy(), jnp.float32)  # increasing, as jnp.interp needs
    return jnp.interp(lam, table, steps[::-1])


_COND_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "logsnr": logsnr_to_cond,
    "ddpm_linear": ddpm_timestep_from_logsnr,
}


def get_cond_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The λ -> cond map called `name` ("logsnr" default, "ddpm_linear" for official DiT)."""
    try:
        return _COND_FNS[name]
    except KeyError:
        raise ValueError(f"unknown conditioning {name!r}; known: {sorted(_COND_FNS)}") from None
