"""The train state: step, params, EMA params, optimizer state, timestep-sampler state."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position.

    ``ema`` is a tuple aligned with ``config.ema.decays``. ``sampler_state`` is a stateful
    timestep sampler's (``{}`` otherwise); ``weighting_state`` holds a learned weighting's
    parameters and their optimizer state (``{"params", "opt"}``, ``{}`` without one), trained
    with the model. Randomness is not state: step keys are ``fold_in(key(seed), step)``, so
    a resumed run draws what an uninterrupted one would.
    """

    step: jax.Array
    params: Any
    ema: tuple
    opt_state: Any
    sampler_state: Any
    weighting_state: Any


def create_train_state(
    params, optimizer, num_ema: int, sampler_state, weighting_state=None
) -> TrainState:
    """A fresh state (a pure function: jit it with ``out_shardings`` to place it)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema=tuple(jax.tree_util.tree_map(jnp.copy, params) for _ in range(num_ema)),
        opt_state=optimizer.init(params),
        sampler_state=sampler_state,
        weighting_state={} if weighting_state is None else weighting_state,
    )


def ema_decay(decay: float, step: jax.Array, warmup: bool = True) -> jax.Array:
    """The decay used at optimizer step ``step`` (0-based count of updates so far).

    With ``warmup``, d_t = min(d, (1 + t) / (10 + t)) (TensorFlow's ExponentialMovingAverage
    ``num_updates`` rule), so that early EMA weights are not dominated by the initialisation.
    """
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def update_ema(ema: tuple, params, decays, step=None, warmup: bool = False) -> tuple:
    """ema ← d·ema + (1 − d)·params for each decay d (warmed up by ``step`` if asked)."""
    out = []
    for e_tree, d in zip(ema, decays, strict=True):
        d = ema_decay(d, step, warmup) if warmup else d
        out.append(jax.tree_util.tree_map(lambda e, p, d=d: d * e + (1.0 - d) * p, e_tree, params))
    return tuple(out)
