"""The pure train step and the network-application wrapper it differentiates."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxdiff.diffusion import NoiseSpec, diffusion_loss
from jaxdiff.models.conditioning import logsnr_to_cond
from jaxdiff.training.state import TrainState, update_ema

# Fixed λ-bins for the per-noise-level loss: edges at -20, -18, ..., 20.
LAM_BIN_EDGES = tuple(float(e) for e in range(-20, 21, 2))

ApplyFn = Callable[..., jax.Array]


def make_apply_fn(
    model,
    *,
    is_rin: bool = False,
    self_cond_rate: float = 0.9,
    compute_dtype=jnp.float32,
    cond_fn=None,
    keep_variance: bool = False,
) -> ApplyFn:
    """``apply(params, x_t, lam, y, key, train) -> prediction`` (float32).

    Maps λ to the network's conditioning (``logsnr_to_cond`` by default), optionally runs
    the network in bf16 with float32 params, and for RIN performs latent self-conditioning
    (two passes, the first under ``stop_gradient``, chosen by a Bernoulli draw) in training.
    A learned-σ network (official DiT) returns 2C channels; the first C are kept unless
    ``keep_variance`` (sampling with ``variance="learned"``).
    """
    cond_fn = logsnr_to_cond if cond_fn is None else cond_fn

    def apply(params, x_t, lam, y, key, train):
        cond = cond_fn(lam)
        if compute_dtype != jnp.float32:
            params = jax.tree_util.tree_map(lambda p: p.astype(compute_dtype), params)
            x_t = x_t.astype(compute_dtype)
        variables = {"params": params}
        k_sc, k_drop = jax.random.split(key)
        if is_rin:
            from jaxdiff.models.rin import rin_self_conditioned_apply

            rate = self_cond_rate if train else 0.0
            out = rin_self_conditioned_apply(
                model,
                variables,
                x_t,
                cond,
                y,
                k_sc,
                rate=rate,
                train=train,
                rngs={"dropout": k_drop},
            )
            out = out[0] if isinstance(out, tuple) else out
        else:
            out = model.apply(variables, x_t, cond, y, train=train, rngs={"dropout": k_drop})
        # Learned-σ checkpoints (official DiT) output 2C channels: the first C are the mean.
        if not keep_variance:
            out = out[..., : x_t.shape[-1]]
        return out.astype(jnp.float32)

    return apply


def _bin_stats(values, lam, edges):
    idx = jnp.clip(jnp.searchsorted(jnp.asarray(edges), lam, side="right") - 1, 0, len(edges) - 2)
    onehot = jax.nn.one_hot(idx, len(edges) - 1, dtype=jnp.float32)
    return onehot.T @ values.astype(jnp.float32), onehot.sum(0)


def _grads(params, images, labels, key, *, apply_fn, spec, sampler_state, grad_accum):
    """Loss, aux and gradients; with ``grad_accum`` > 1 over interleaved micro-batches."""

    def loss_fn(p, x0, y, k):
        k_noise, k_model = jax.random.split(k)
        denoise = lambda x_t, lam: apply_fn(p, x_t, lam, y, k_model, True)
        return diffusion_loss(denoise, x0, k_noise, spec, sampler_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum == 1:
        return grad_fn(params, images, labels, key)

    def micro(x):  # (B, ...) -> (A, B/A, ...), micro-batch i holds rows i, i+A, ...
        return jnp.swapaxes(x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]), 0, 1)

    keys = jax.random.split(key, grad_accum)

    def body(acc, inp):
        x0, y, k = inp
        (loss, aux), g = grad_fn(params, x0, y, k)
        acc = jax.tree_util.tree_map(lambda a, b: a + b / grad_accum, acc, (loss, g))
        return acc, aux

    zeros = (jnp.zeros((), jnp.float32), jax.tree_util.tree_map(jnp.zeros_like, params))
    (loss, grads), aux = jax.lax.scan(body, zeros, (micro(images), micro(labels), keys))
    aux = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1).reshape(-1, *a.shape[2:]), aux)
    return (loss, aux), grads


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    apply_fn: ApplyFn,
    spec: NoiseSpec,
    optimizer: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    ema_decays: Sequence[float],
    num_classes: int,
    label_dropout: float = 0.0,
    grad_accum: int = 1,
    skip_nonfinite: bool = False,
    ema_warmup: bool = True,
) -> tuple[TrainState, dict]:
    """One optimisation step (pure). ``rng`` is the root key's data; the step key is
    ``fold_in(root, step)``, split into label-dropout and loss keys."""
    key = jax.random.fold_in(jax.random.wrap_key_data(rng), state.step)
    k_label, k_loss = jax.random.split(key)
    labels = batch["label"].astype(jnp.int32)
    drop = jax.random.bernoulli(k_label, label_dropout, labels.shape)
    labels = jnp.where(drop, num_classes, labels)

    (loss, aux), grads = _grads(
        state.params,
        batch["image"],
        labels,
        k_loss,
        apply_fn=apply_fn,
        spec=spec,
        sampler_state=state.sampler_state,
        grad_accum=grad_accum,
    )
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(
        step=state.step + 1,
        params=params,
        ema=update_ema(state.ema, params, ema_decays, state.step, warmup=ema_warmup),
        opt_state=opt_state,
    )
    # Finite loss, gradient AND new state: an update can overflow the weights (a huge lr)
    # with a finite loss; such a state must never be kept or saved.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new)
    if skip_nonfinite:  # the prior state exactly (bitwise); only the step counter advances
        keep = lambda n, o: jnp.where(finite, n, o)
        new = new.replace(
            params=jax.tree_util.tree_map(keep, new.params, state.params),
            ema=jax.tree_util.tree_map(keep, new.ema, state.ema),
            opt_state=jax.tree_util.tree_map(keep, new.opt_state, state.opt_state),
            sampler_state=jax.tree_util.tree_map(keep, new.sampler_state, state.sampler_state),
        )
    bin_sum, bin_count = _bin_stats(aux["loss_per_example"], aux["lam"], LAM_BIN_EDGES)
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": lr_schedule(state.step),
        "finite": finite,
        "lam_min": aux["lam"].min(),
        "lam_max": aux["lam"].max(),
        "lam_bin_loss_sum": bin_sum,
        "lam_bin_count": bin_count,
    }
    return new, metrics


def _all_finite(state: TrainState) -> jax.Array:
    """Whether every floating-point value of the params, EMA, optimizer and sampler state is
    finite (one fused reduction)."""
    leaves = jax.tree_util.tree_leaves(
        (state.params, state.ema, state.opt_state, state.sampler_state)
    )
    flags = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def jit_train_step(step_fn, state_shardings, mesh) -> Callable:
    """jit with explicit shardings: state as given, batch over the batch axes, donated state."""
    from jaxdiff.training.sharding import batch_sharding, replicated

    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding(mesh), replicated(mesh)),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=(0,),
    )


def bind_train_step(**kwargs) -> Callable:
    """``train_step`` with its static configuration bound."""
    return functools.partial(train_step, **kwargs)
