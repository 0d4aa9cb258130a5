"""Learned loss weightings: EDM2's uncertainty weighting (Karras et al. 2024, arXiv 2312.02696).

Config: `noise.learned_weighting` ("none" default | "uncertainty") and
`noise.learned_weighting_params` (dict). It composes with any `noise.weighting` w(λ):

    loss_i = w(λ_i)·MSE_i / e^{u(λ_i)} + u(λ_i)            (`uncertainty_loss`)

u(λ) is a small network of λ's Fourier features trained jointly with the model (same
optimizer). For a fixed λ the minimiser of E[a·e^{−u} + u] is u = log E[a]: u tracks the log
of the expected weighted loss at each noise level, and e^{−u} rebalances the levels so each
contributes ≈ 1 (EDM2 §"uncertainty").

u(λ) (EDM2's logvar head, networks_edm2.py): c = −λ/8 (EDM2's c_noise = log σ / 4 with
σ = e^{−λ/2}); fixed Fourier features φ_j(c) = √2·cos(f_j·c + φ_j), f_j = 2π·bandwidth·N(0, 1),
φ_j = 2π·U(0, 1), j < channels (128); then `hidden_depth` SiLU layers of `hidden_width`
(0 by default: EDM2's head is linear) and a linear head to one output. Our deviations: a
plain linear head with a bias, initialised to zero (so training starts at the configured
weighting, u ≡ 0), instead of EDM2's bias-free, weight-normalised, randomly initialised one.
Pass λ_eff, the λ the network sees.

Parameters: {"fourier": {"freqs", "phases"} (fixed: stop_gradient inside `logvar`; exclude
them from weight decay with `trainable_mask`), "hidden_j": {"w", "b"}, "head": {"w", "b"}}.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import ConfigError

LEARNED_WEIGHTINGS = ("none", "uncertainty")


@dataclasses.dataclass(frozen=True)
class UncertaintyWeighting:
    """EDM2's u(λ) with bound hyperparameters (immutable, hashable)."""

    channels: int = 128
    bandwidth: float = 1.0
    hidden_width: int = 128
    hidden_depth: int = 0

    def init(self, key: jax.Array) -> dict:
        return init(key, self.channels, self.bandwidth, self.hidden_width, self.hidden_depth)

    def logvar(self, params: dict, lam: jax.Array) -> jax.Array:
        return logvar(params, lam)

    def loss(self, params: dict, lam: jax.Array, weighted_mse: jax.Array) -> jax.Array:
        return uncertainty_loss(params, lam, weighted_mse)


def init(
    key: jax.Array,
    channels: int = 128,
    bandwidth: float = 1.0,
    hidden_width: int = 128,
    hidden_depth: int = 0,
) -> dict:
    """Parameters of u (float32): fixed Fourier features, hidden layers, zero head."""
    k_f, k_p, k_h = jax.random.split(key, 3)
    params = {
        "fourier": {
            "freqs": 2 * math.pi * bandwidth * jax.random.normal(k_f, (channels,), jnp.float32),
            "phases": 2 * math.pi * jax.random.uniform(k_p, (channels,), jnp.float32),
        }
    }
    width = channels
    for j, k in enumerate(jax.random.split(k_h, hidden_depth)):
        bound = 1.0 / np.sqrt(width)
        params[f"hidden_{j}"] = {
            "w": jax.random.uniform(k, (width, hidden_width), jnp.float32, -bound, bound),
            "b": jnp.zeros((hidden_width,), jnp.float32),
        }
        width = hidden_width
    params["head"] = {"w": jnp.zeros((width,), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return params


def logvar(params: dict, lam: jax.Array) -> jax.Array:
    """u(λ) (B,) for λ (B,): the head of SiLU layers of √2·cos(f·(−λ/8) + φ)."""
    freqs = jax.lax.stop_gradient(params["fourier"]["freqs"])
    phases = jax.lax.stop_gradient(params["fourier"]["phases"])
    c = -jnp.asarray(lam, jnp.float32) / 8.0
    h = math.sqrt(2.0) * jnp.cos(c[:, None] * freqs + phases)
    j = 0
    while f"hidden_{j}" in params:
        h = jax.nn.silu(h @ params[f"hidden_{j}"]["w"] + params[f"hidden_{j}"]["b"])
        j += 1
    return h @ params["head"]["w"] + params["head"]["b"]


def uncertainty_loss(params: dict, lam: jax.Array, weighted_mse: jax.Array) -> jax.Array:
    """Per-example loss (B,): weighted_mse·e^{−u(λ)} + u(λ) (EDM2 eq. 21, averaged over dims).

    weighted_mse (B,): the per-example loss the step would use without u (all weights
    included); its gradient flows to both the model (through weighted_mse) and u.
    """
    u = logvar(params, lam)
    return weighted_mse * jnp.exp(-u).astype(weighted_mse.dtype) + u.astype(weighted_mse.dtype)


def trainable_mask(params: dict) -> dict:
    """A pytree of bools like params: False for the fixed Fourier features (for optax.masked)."""
    return {
        k: jax.tree_util.tree_map(lambda _, keep=(k != "fourier"): keep, v)
        for k, v in params.items()
    }


def get_learned_weighting(name: str, **params: Any) -> UncertaintyWeighting | None:
    """None for "none"; the `UncertaintyWeighting` for "uncertainty" (params: channels,
    bandwidth, hidden_width, hidden_depth). Bad input raises ConfigError naming the field."""
    field = "noise.learned_weighting_params"
    if name not in LEARNED_WEIGHTINGS:
        raise ConfigError("noise.learned_weighting", f"unknown {name!r}", list(LEARNED_WEIGHTINGS))
    if name == "none":
        if params:
            raise ConfigError(field, f"'none' takes no parameters, got {sorted(params)}", "{}")
        return None
    defaults = dataclasses.asdict(UncertaintyWeighting())
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(field, f"unknown parameter(s) {unknown}", sorted(defaults))
    full = {**defaults, **params}
    for key in ("channels", "hidden_width", "hidden_depth"):
        v = full[key]
        low = 0 if key == "hidden_depth" else 1
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
            raise ConfigError(f"{field}.{key}", f"got {v!r}", f"an integer >= {low}")
    bw = full["bandwidth"]
    is_number = isinstance(bw, int | float) and not isinstance(bw, bool)
    if not (is_number and math.isfinite(bw) and bw > 0):
        raise ConfigError(f"{field}.bandwidth", f"got {bw!r}", "a finite number > 0")
    return UncertaintyWeighting(
        channels=int(full["channels"]),
        bandwidth=float(bw),
        hidden_width=int(full["hidden_width"]),
        hidden_depth=int(full["hidden_depth"]),
    )
