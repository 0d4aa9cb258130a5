"""The one protocol through which the trainer and the samplers call a network.

Every registered model (a Flax module) implements

- ``train_apply(variables, x, cond, y, key, *, train, self_cond_rate) -> out``: one training
  evaluation (RIN runs its two self-conditioning passes here; ``key`` feeds its own draws
  and dropout);
- ``initial_carry(batch_size) -> carry``: the state a sampler threads through its steps
  (``()`` for a stateless network, RIN's latents);
- ``sample_apply(variables, x, cond, y, carry) -> (out, carry)``: one sampling evaluation;

and has the fields ``conditioning`` (the name of its λ → cond map, `conditioning.get_cond_fn`),
``learn_sigma`` (2C output channels: mean then variance), ``image_size``, ``in_channels`` and
``num_classes``. ``x`` is NHWC, ``cond`` (B,), ``y`` (B,) int with ``num_classes`` the null
label. A new model is one module implementing these plus a registry entry.

This module builds the two callables the rest of jaxdiff uses: :func:`make_apply_fn` for the
train step and :func:`make_sample_fn` for the samplers (both take λ, not cond).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdiff.models.conditioning import get_cond_fn

ApplyFn = Callable[..., jax.Array]


def _cast(params, x, dtype):
    if dtype == jnp.float32:
        return params, x
    return jax.tree_util.tree_map(lambda p: p.astype(dtype), params), x.astype(dtype)


def make_apply_fn(model, *, self_cond_rate: float = 0.9, compute_dtype=jnp.float32) -> ApplyFn:
    """``apply(params, x_t, lam, y, key, train) -> prediction`` (float32, C channels).

    Maps λ to the network's conditioning (``model.conditioning``), optionally runs the
    network in ``compute_dtype`` with float32 params, and calls ``model.train_apply``. A
    learned-σ network returns 2C channels; the first C (the mean) are kept.
    """
    cond_fn = get_cond_fn(model.conditioning)

    def apply(params, x_t, lam, y, key, train):
        channels = x_t.shape[-1]
        params, x_in = _cast(params, x_t, compute_dtype)
        out = model.train_apply(
            {"params": params},
            x_in,
            cond_fn(lam),
            y,
            key,
            train=train,
            self_cond_rate=self_cond_rate,
        )
        return out[..., :channels].astype(jnp.float32)

    return apply


def make_sample_fn(model, params, *, keep_variance: bool = False):
    """``model_fn(x, lam, y, carry) -> (prediction, carry)`` for the samplers (float32).

    The first C output channels unless ``keep_variance`` (a learned-σ network's 2C channels,
    for ``variance="learned"``).
    """
    cond_fn = get_cond_fn(model.conditioning)

    def model_fn(x, lam, y, carry):
        out, carry = model.sample_apply({"params": params}, x, cond_fn(lam), y, carry)
        if not keep_variance:
            out = out[..., : x.shape[-1]]
        return out.astype(jnp.float32), carry

    return model_fn
