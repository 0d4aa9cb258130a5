"""The pure train step: draw noise levels, differentiate the diffusion loss, update.

The network is applied through ``apply_fn(params, x_t, lam, y, key, train)``
(`jaxdiff.models.make_apply_fn`, the model protocol), so the step knows no model by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxdiff import noise
from jaxdiff.diffusion import NoiseSpec, diffusion_loss
from jaxdiff.training.posthoc import update_profiles
from jaxdiff.training.sharding import batch_sharding, replicated
from jaxdiff.training.state import TrainState, update_ema

# Fixed λ-bins for the per-noise-level loss: edges at -20, -18, ..., 20.
LAM_BIN_EDGES = tuple(float(e) for e in range(-20, 21, 2))

ApplyFn = Callable[..., jax.Array]


def _bin_stats(values, lam, edges):
    idx = jnp.clip(jnp.searchsorted(jnp.asarray(edges), lam, side="right") - 1, 0, len(edges) - 2)
    onehot = jax.nn.one_hot(idx, len(edges) - 1, dtype=jnp.float32)
    return onehot.T @ values.astype(jnp.float32), onehot.sum(0)


def _grads(trainable, images, labels, key, *, apply_fn, spec, sampler_state, grad_accum):
    """Loss, aux and gradients of ``trainable = (params, weighting params)``; with
    ``grad_accum`` > 1 over interleaved micro-batches."""

    def loss_fn(tp, x0, y, k):
        params, weighting_params = tp
        k_noise, k_model = jax.random.split(k)
        denoise = lambda x_t, lam: apply_fn(params, x_t, lam, y, k_model, True)
        return diffusion_loss(denoise, x0, k_noise, spec, sampler_state, weighting_params)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum == 1:
        return grad_fn(trainable, images, labels, key)

    def micro(x):  # (B, ...) -> (A, B/A, ...), micro-batch i holds rows i, i+A, ...
        return jnp.swapaxes(x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]), 0, 1)

    keys = jax.random.split(key, grad_accum)

    def body(acc, inp):
        x0, y, k = inp
        (loss, aux), g = grad_fn(trainable, x0, y, k)
        acc = jax.tree_util.tree_map(lambda a, b: a + b / grad_accum, acc, (loss, g))
        return acc, aux

    zeros = (jnp.zeros((), jnp.float32), jax.tree_util.tree_map(jnp.zeros_like, trainable))
    (loss, grads), aux = jax.lax.scan(body, zeros, (micro(images), micro(labels), keys))
    aux = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1).reshape(-1, *a.shape[2:]), aux)
    return (loss, aux), grads


def weighting_optimizer(optimizer, params) -> optax.GradientTransformation:
    """The model's optimizer on a learned weighting's trainable parameters (EDM2 trains u with
    the network's optimizer); its fixed Fourier features are left alone (no weight decay)."""
    return optax.masked(optimizer, noise.learned_weighting.trainable_mask(params))


def _update_weighting(weighting_state, grads, optimizer):
    if not weighting_state:
        return weighting_state
    opt = weighting_optimizer(optimizer, weighting_state["params"])
    updates, opt_state = opt.update(grads, weighting_state["opt"], weighting_state["params"])
    return {"params": optax.apply_updates(weighting_state["params"], updates), "opt": opt_state}


def x0_error_fn(apply_fn, spec: NoiseSpec):
    """``x0_error(params, x0, eps, lam, y) -> (N,)``: the mean over dims of (x̂0 − x0)² of the
    network at the sampler's (unscaled) λ with noise ``eps``, for stateful samplers. The
    target-space MSE divided by its factor over the x0 MSE (SNR for ε, ...) is the x0 MSE."""

    def x0_error(params, x0, eps, lam, y):
        x_t = noise.corrupt(x0, eps, lam, scale=spec.input_scale, normalize=spec.normalize_input)
        lam_eff = noise.effective_logsnr(lam, spec.input_scale)
        pred = apply_fn(params, x_t, lam_eff, y, jax.random.key(0), False)
        target = noise.make_target(x0, eps, lam_eff, spec.target)
        mse = jnp.mean(jnp.square(pred - target), axis=tuple(range(1, x0.ndim)))
        return mse * jnp.exp(-noise.log_target_factor(lam_eff, spec.target))

    return x0_error


def _sampler_inputs(state, images, labels, aux, key) -> dict:
    """The SamplerContext fields of a stateful sampler's update other than the parameters."""
    return dict(step=state.step, key=key, x0=images, labels=labels, lam=aux["sampler_lam"],
                info=aux["sampler_info"], loss_per_example=aux["loss_per_example"],
                mse=aux["mse"])  # fmt: skip


def _update_sampler(state, params, inputs, *, apply_fn, spec, due=None):
    """A stateful sampler's update after the optimizer step: (sampler state, metrics).
    ``due``: None lets the sampler decide on the device; True / False is passed on."""
    sampler = spec.timestep_sampler
    if not sampler.stateful:
        return state.sampler_state, {}
    ctx = noise.SamplerContext(
        **inputs,
        params_before=state.params,
        params_after=params,
        x0_error=x0_error_fn(apply_fn, spec),
    )
    kw = {} if due is None else {"due": due}
    sampler_state, metrics = sampler.update(state.sampler_state, ctx, **kw)
    return sampler_state, {f"sampler/{k}": v for k, v in metrics.items()}


def refresh_sampler(
    sampler_state, inputs, x0, params_before, params_after, finite, *, apply_fn, spec,
    skip_nonfinite: bool = False,
) -> tuple[dict, dict]:  # fmt: skip
    """A stateful sampler's refresh as a call of its own, after a step compiled without it
    (``train_step(..., sampler_due=False, sampler_context=True)`` returns ``inputs``): the
    update a due step's lax.cond runs, on the same context. x0: the batch's images; finite:
    that step's ``finite``. Returns (sampler state, metrics): a due step's ``sampler/*`` and
    ``finite`` (the step's and the new sampler state's). With ``skip_nonfinite`` a
    non-finite result leaves the sampler state as it was (the step's model update stands:
    unlike the one-step path, which would revert it too)."""
    ctx = noise.SamplerContext(
        **inputs, x0=x0, params_before=params_before, params_after=params_after,
        x0_error=x0_error_fn(apply_fn, spec),
    )  # fmt: skip
    new, metrics = spec.timestep_sampler.update(sampler_state, ctx, due=True)
    ok = finite & _all_finite(new)
    if skip_nonfinite:
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, sampler_state)
    return new, {**{f"sampler/{k}": v for k, v in metrics.items()}, "finite": ok}


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
    sampler_due: bool | None = None,
    sampler_context: bool = False,
    posthoc_gammas: Sequence[float] = (),
) -> tuple[TrainState, dict] | tuple[TrainState, dict, dict]:
    """One optimisation step (pure). ``rng`` is the root key's data; the step key is
    ``fold_in(root, step)``, split into label-dropout, loss and sampler-update keys.

    ``sampler_due``: None (default) lets a stateful sampler decide on the device whether this
    step refreshes it (``step % update_every == 0``, a ``lax.cond``); True / False compiles
    the step with / without the refresh, for a caller that makes that choice on the host.
    ``sampler_context``: also return the sampler's update inputs (for ``refresh_sampler``;
    all but x0, which is ``batch["image"]``). ``posthoc_gammas``: the exponents of the
    power-function EMA profiles in ``state.posthoc`` (`jaxdiff.training.posthoc`)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(rng), state.step)
    k_label, k_loss = jax.random.split(key)
    labels = batch["label"].astype(jnp.int32)
    drop = jax.random.bernoulli(k_label, label_dropout, labels.shape)
    labels = jnp.where(drop, num_classes, labels)

    trainable = (state.params, state.weighting_state.get("params", {}))
    (loss, aux), (grads, weighting_grads) = _grads(
        trainable,
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
    inputs = _sampler_inputs(state, batch["image"], labels, aux, jax.random.fold_in(key, 0x5A3))
    sampler_state, sampler_metrics = _update_sampler(
        state, params, inputs, apply_fn=apply_fn, spec=spec, due=sampler_due
    )
    new = state.replace(
        step=state.step + 1,
        params=params,
        ema=update_ema(state.ema, params, ema_decays, state.step, warmup=ema_warmup),
        opt_state=opt_state,
        sampler_state=sampler_state,
        weighting_state=_update_weighting(state.weighting_state, weighting_grads, optimizer),
        posthoc=update_profiles(state.posthoc, params, posthoc_gammas, state.step + 1),
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
            weighting_state=jax.tree_util.tree_map(
                keep, new.weighting_state, state.weighting_state
            ),
            posthoc=jax.tree_util.tree_map(keep, new.posthoc, state.posthoc),
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
        **sampler_metrics,
    }
    if sampler_context:
        return new, metrics, {k: v for k, v in inputs.items() if k != "x0"}
    return new, metrics


def _all_finite(tree) -> jax.Array:
    """Whether every floating-point value of a pytree (a TrainState: params, EMA, optimizer,
    sampler and weighting state) is finite (one fused reduction)."""
    if isinstance(tree, TrainState):
        tree = (tree.params, tree.ema, tree.opt_state, tree.sampler_state, tree.weighting_state,
                tree.posthoc)  # fmt: skip
    leaves = jax.tree_util.tree_leaves(tree)
    flags = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def jit_train_step(step_fn, state_shardings, mesh, context: bool = False) -> Callable:
    """jit with explicit shardings: state as given, batch over the batch axes, donated state;
    ``context``: a third output (``sampler_context=True``), placed as XLA chooses."""
    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding(mesh), replicated(mesh)),
        out_shardings=(state_shardings, replicated(mesh)) + ((None,) if context else ()),
        donate_argnums=(0,),
    )


def bind_train_step(**kwargs) -> Callable:
    """``train_step`` with its static configuration bound."""
    return functools.partial(train_step, **kwargs)
