"""Classifier-free guidance (Ho & Salimans 2022) as a denoise function for the samplers.

Convention (DiT, Peebles & Xie 2023): ``guided = uncond + scale·(cond − uncond)``, so
``scale = 1`` is the plain conditional model and ``scale = 0`` the unconditional one.
Ho & Salimans write ``(1 + w)·cond − w·uncond``: ``scale = 1 + w`` (their w = 0.3 is
scale 1.3). Guidance is linear in the prediction, so it is applied in the network's own
target space (eps, x0, v or flow all give the same guided x̂0 at a fixed x_t and λ).

Guidance interval (Kynkäänniemi et al. 2024): with ``lam_interval=(lo, hi)`` guidance is
applied only where ``lo <= λ <= hi``, λ being the value the denoise function receives
(``λ_eff`` of the sampler, i.e. including input scaling); elsewhere the conditional
prediction is returned.

Guided channels: with ``channels=k`` only the first k output channels (last axis) are
guided, the rest are the conditional prediction's. A network with a learned variance guides
its C mean channels (k = C) and takes the variance from the conditional row; the official
DiT code guides only the first 3 of its 4 latent channels (``channels=3``, a known quirk
kept "for exact reproducibility"), which is needed to reproduce its FID exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.tree_util import Partial


def guided_prediction(
    cond: jax.Array,
    uncond: jax.Array,
    lam: jax.Array,
    scale: jax.typing.ArrayLike,
    lam_lo: jax.typing.ArrayLike = -jnp.inf,
    lam_hi: jax.typing.ArrayLike = jnp.inf,
    channels: int | None = None,
) -> jax.Array:
    """``uncond + scale·(cond − uncond)`` where ``lam_lo <= λ <= lam_hi``, else ``cond``.

    cond, uncond: (B, ..., C); lam: (B,); ``channels``: None (all) or k, guide only
    ``[..., :k]`` and keep ``cond`` in the rest. No Python branching on traced values.
    """
    guided = uncond + scale * (cond - uncond)
    inside = (lam >= lam_lo) & (lam <= lam_hi)
    inside = inside.reshape(inside.shape + (1,) * (cond.ndim - inside.ndim))
    if channels is not None:
        keep = jnp.arange(cond.shape[-1]) < channels
        inside = inside & keep
    return jnp.where(inside, guided, cond)


def _doubled(x, lam, y, null_label):
    """The [cond; uncond] rows of one batched network call."""
    y2 = jnp.concatenate([y, jnp.full_like(y, null_label)])
    return jnp.concatenate([x, x]), jnp.concatenate([lam, lam]), y2


def _cfg_apply(model_fn, y, null_label, scale, lam_lo, lam_hi, channels, x, lam):
    """One batched network call on [cond; uncond] rows, then ``guided_prediction``."""
    out = model_fn(*_doubled(x, lam, y, null_label))
    cond, uncond = jnp.split(out, 2)
    return guided_prediction(cond, uncond, lam, scale, lam_lo, lam_hi, channels)


def _cfg_apply_carry(model_fn, y, null_label, scale, lam_lo, lam_hi, channels, x, lam, carry):
    """As `_cfg_apply` for a stateful network: the carry holds both rows' states."""
    out, carry = model_fn(*_doubled(x, lam, y, null_label), carry)
    cond, uncond = jnp.split(out, 2)
    return guided_prediction(cond, uncond, lam, scale, lam_lo, lam_hi, channels), carry


def cfg_denoise_fn(
    model_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    y: jax.Array,
    null_label: int,
    scale: float,
    lam_interval: tuple[float, float] | None = None,
    channels: int | None = None,
    with_carry: bool = False,
) -> Partial:
    """A guided ``denoise_fn(x, lam)`` for ``jaxdiff.sampling.sample``.

    Args:
      model_fn: ``model_fn(x, lam, y) -> prediction``, x (N, ...), lam (N,), y (N,) int.
        Pass a ``jax.tree_util.Partial`` holding the parameters (e.g.
        ``Partial(apply, params)``) so new parameters do not recompile the sampler.
      y: (B,) int labels of the batch.
      null_label: the unconditional class (``num_classes`` for DiT).
      scale: guidance scale (DiT convention, 1 = no guidance; Ho & Salimans' w is scale − 1).
      lam_interval: optional (lam_lo, lam_hi); guidance only for λ inside, else conditional.
      channels: None (guide every output channel) or k: guide only the first k channels
        (the mean of a learned-variance network; 3 for the official DiT's quirk).
      with_carry: a stateful network (the model protocol's ``sample_apply``):
        ``model_fn(x, lam, y, carry) -> (prediction, carry)`` and the result is
        ``denoise_fn(x, lam, carry) -> (guided, carry)``, the carry covering the 2B rows
        (start it from ``model.initial_carry(2 * B)``).

    Returns:
      a ``Partial`` (a pytree: y, scale and the interval are data, not compile-time constants).
    """
    if lam_interval is None:
        lam_lo, lam_hi = -jnp.inf, jnp.inf
    else:
        if len(lam_interval) != 2 or not lam_interval[0] <= lam_interval[1]:
            raise ValueError(
                f"lam_interval must be (lam_lo, lam_hi) with lo <= hi, got {lam_interval}"
            )
        lam_lo, lam_hi = lam_interval
    if channels is not None and (isinstance(channels, bool) or int(channels) < 1):
        raise ValueError(f"channels must be None or a positive integer, got {channels!r}")
    if not isinstance(model_fn, Partial):
        model_fn = Partial(model_fn)
    y = jnp.asarray(y, jnp.int32)
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    channels = None if channels is None else int(channels)
    return Partial(
        _cfg_apply_carry if with_carry else _cfg_apply,
        model_fn,
        y,
        jnp.int32(null_label),
        f32(scale),
        f32(lam_lo),
        f32(lam_hi),
        channels,
    )
