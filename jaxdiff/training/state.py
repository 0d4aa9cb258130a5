"""The train state: step, params, EMA params, optimizer state, timestep-sampler state."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax import serialization


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position.

    ``ema`` is a tuple aligned with ``config.ema.decays``; ``posthoc`` one with
    ``config.ema.posthoc.std`` (EDM2's power-function profiles, `jaxdiff.training.posthoc`;
    empty when off, and then absent from checkpoints, which keep their earlier layout).
    ``sampler_state`` is a stateful timestep sampler's (``{}`` otherwise); ``weighting_state``
    holds a learned weighting's parameters and their optimizer state (``{"params", "opt"}``,
    ``{}`` without one), trained with the model. Randomness is not state: step keys are
    ``fold_in(key(seed), step)``, so a resumed run draws what an uninterrupted one would.
    """

    step: jax.Array
    params: Any
    ema: tuple
    opt_state: Any
    sampler_state: Any
    weighting_state: Any
    posthoc: tuple = ()


def _state_dict(state: TrainState) -> dict:
    """The state as a checkpoint's nested dict; without ``posthoc`` when there are no
    profiles, so checkpoints from before post-hoc EMA existed restore unchanged."""
    names = [f.name for f in dataclasses.fields(state)]
    out = {n: serialization.to_state_dict(getattr(state, n)) for n in names}
    if not state.posthoc:
        del out["posthoc"]
    return out


def _from_state_dict(target: TrainState, saved: dict) -> TrainState:
    saved = dict(saved)
    if not target.posthoc:
        saved.setdefault("posthoc", {})
    names = [f.name for f in dataclasses.fields(target)]
    if set(saved) != set(names):
        raise ValueError(f"train state fields {sorted(saved)} != {sorted(names)}")
    return target.replace(
        **{n: serialization.from_state_dict(getattr(target, n), saved[n], name=n) for n in names}
    )


serialization.register_serialization_state(TrainState, _state_dict, _from_state_dict, override=True)


def create_train_state(
    params, optimizer, num_ema: int, sampler_state, weighting_state=None, num_posthoc: int = 0
) -> TrainState:
    """A fresh state (a pure function: jit it with ``out_shardings`` to place it)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema=tuple(jax.tree_util.tree_map(jnp.copy, params) for _ in range(num_ema)),
        opt_state=optimizer.init(params),
        sampler_state=sampler_state,
        weighting_state={} if weighting_state is None else weighting_state,
        posthoc=tuple(jax.tree_util.tree_map(jnp.copy, params) for _ in range(num_posthoc)),
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
