"""The train state: step, params, EMA params, optimizer state, timestep-sampler state, RNG."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position.

    ``ema`` is a tuple aligned with ``config.ema.decays``. ``rng`` is the root key's raw
    data (uint32); step keys are ``fold_in(root, step)``.
    """

    step: jax.Array
    params: Any
    ema: tuple
    opt_state: Any
    sampler_state: Any
    rng: jax.Array


def create_train_state(params, optimizer, num_ema: int, sampler_state, rng) -> TrainState:
    """A fresh state (a pure function: jit it with ``out_shardings`` to place it)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema=tuple(jax.tree_util.tree_map(jnp.copy, params) for _ in range(num_ema)),
        opt_state=optimizer.init(params),
        sampler_state=sampler_state,
        rng=rng,
    )


def update_ema(ema: tuple, params, decays) -> tuple:
    """ema ← d·ema + (1 − d)·params for each decay d."""
    return tuple(
        jax.tree_util.tree_map(lambda e, p, d=d: d * e + (1.0 - d) * p, e_tree, params)
        for e_tree, d in zip(ema, decays, strict=True)
    )
