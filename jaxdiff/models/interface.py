"""The one protocol through which the trainer and the samplers call a network.

Every registered model (a Flax module) is a :class:`DiffusionModel`:

- ``__call__(x, cond, y, train=False) -> out``: the plain forward pass, the same for every
  model, so ``model.init(rngs, x, cond, y)`` creates the variables and
  ``model.apply(variables, x, cond, y, train=...)`` returns the prediction (no
  self-conditioning, no carried state);
- ``train_apply(variables, x, cond, y, key, *, train) -> out``: one training evaluation
  (RIN runs its two self-conditioning passes here, at its own ``self_cond_rate``; ``key``
  feeds the model's own draws and dropout);
- ``initial_carry(batch_size) -> carry``: the state a sampler threads through its steps
  (``()`` for a stateless network, RIN's latents);
- ``sample_apply(variables, x, cond, y, carry) -> (out, carry)``: one sampling evaluation;

and has the fields ``conditioning`` (the name of its λ → cond map, `conditioning.get_cond_fn`),
``learn_sigma`` (2C output channels: mean then variance), ``image_size``, ``in_channels`` and
``num_classes``. ``x`` is NHWC, ``cond`` (B,), ``y`` (B,) int with ``num_classes`` the null
label; ``out`` is (B, H, W, C or 2C). Settings only one model has (RIN's ``self_cond_rate``)
are fields of that model, never arguments of these methods. A new model is one module
implementing these plus an entry in the registry table (`jaxdiff.models.registry`).

This module builds the two callables the rest of jaxdiff uses: :func:`make_apply_fn` for the
train step and :func:`make_sample_fn` for the samplers (both take λ, not cond).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxdiff.models.conditioning import get_cond_fn

ApplyFn = Callable[..., jax.Array]
SampleFn = Callable[[jax.Array, jax.Array, jax.Array, Any], tuple[jax.Array, Any]]
Variables = Mapping[str, Any]  # Flax variables: {"params": ...}
Carry = Any  # a pytree of arrays (``()`` when there is no state)


@runtime_checkable
class DiffusionModel(Protocol):
    """What jaxdiff needs of a network (see the module docstring for the shapes)."""

    conditioning: str
    learn_sigma: bool
    image_size: int
    in_channels: int
    num_classes: int

    def __call__(
        self, x: jax.Array, cond: jax.Array, y: jax.Array, train: bool = False
    ) -> jax.Array:
        """The prediction (B, H, W, C or 2C), run through Flax's ``init`` / ``apply``."""
        ...

    def init(self, rngs: Any, *args: Any, **kwargs: Any) -> Any:
        """Flax's ``Module.init``: ``init(rngs, x, cond, y)`` creates the variables."""
        ...

    def train_apply(
        self,
        variables: Variables,
        x: jax.Array,
        cond: jax.Array,
        y: jax.Array,
        key: jax.Array,
        *,
        train: bool = True,
    ) -> jax.Array:
        """One training-time evaluation: the prediction (B, H, W, C or 2C)."""
        ...

    def initial_carry(self, batch_size: int) -> Carry:
        """The carry of a sampler's first step for ``batch_size`` rows."""
        ...

    def sample_apply(
        self, variables: Variables, x: jax.Array, cond: jax.Array, y: jax.Array, carry: Carry
    ) -> tuple[jax.Array, Carry]:
        """One sampling-step evaluation: ``(prediction, next carry)``."""
        ...


def _cast(params, x, dtype):
    if dtype == jnp.float32:
        return params, x
    return jax.tree_util.tree_map(lambda p: p.astype(dtype), params), x.astype(dtype)


def make_apply_fn(model: DiffusionModel, *, compute_dtype=jnp.float32) -> ApplyFn:
    """``apply(params, x_t, lam, y, key, train) -> prediction`` (float32, C channels).

    Maps λ to the network's conditioning (``model.conditioning``), optionally runs the
    network in ``compute_dtype`` with float32 params, and calls ``model.train_apply``. A
    learned-σ network returns 2C channels; the first C (the mean) are kept.
    """
    cond_fn = get_cond_fn(model.conditioning)

    def apply(params, x_t, lam, y, key, train):
        channels = x_t.shape[-1]
        params, x_in = _cast(params, x_t, compute_dtype)
        out = model.train_apply({"params": params}, x_in, cond_fn(lam), y, key, train=train)
        return out[..., :channels].astype(jnp.float32)

    return apply


def make_sample_fn(model: DiffusionModel, params, *, keep_variance: bool = False) -> SampleFn:
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
