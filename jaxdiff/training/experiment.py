"""Everything built from a config before training: mesh, model, noise spec, optimizer,
state shardings and the jitted train step. Shared by training, sampling and evaluation.

An :class:`Experiment` is immutable and built whole by :func:`build_experiment`. Compiled
samplers and decoders are kept in its explicit ``cache`` (a dict owned by the experiment,
keyed by what they depend on), so they live exactly as long as the experiment.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxdiff import models, noise
from jaxdiff.diffusion import NoiseSpec, make_noise_spec
from jaxdiff.training import sharding
from jaxdiff.training.config import build_model, noise_config
from jaxdiff.training.optim import learning_rate_schedule, make_optimizer
from jaxdiff.training.posthoc import std_to_gamma
from jaxdiff.training.state import TrainState, create_train_state
from jaxdiff.training.step import (
    bind_train_step,
    jit_train_step,
    refresh_sampler,
    weighting_optimizer,
)
from jaxdiff.training.validate import validate_config


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """The built pieces of one config (see the module docstring)."""

    config: Any
    mesh: Mesh
    model: Any
    spec: NoiseSpec
    optimizer: optax.GradientTransformation
    lr_schedule: optax.Schedule
    apply_fn: Any
    abstract_state: TrainState
    state_shardings: Any
    root_rng: jax.Array  # raw key data of key(seed), replicated
    train_step: Any  # jitted, sharded train_step(state, batch, rng) -> (state, metrics)
    step_fn: Any  # the pure train_step with the config bound (to jit variants of it)
    cache: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.config.data.num_classes)

    def train_step_at(self, step: int) -> Any:
        """The train step the loop runs on a state whose ``step`` is ``step`` (a host int):
        ``train_step``, except with a stateful timestep sampler refreshed every
        ``update_every`` > 1 steps: then a step compiled without the refresh and, on
        multiples of ``update_every``, the refresh as its own jitted call after it
        (``step.refresh_sampler``; the same update and metrics as ``train_step``'s lax.cond,
        up to float32 rounding). On XLA:CPU the cond ran the refresh 1.8× slower for the digits
        default, the same for DiT-S/2 (benchmarks/adaptive.py). Same signature."""
        sampler = self.spec.timestep_sampler
        every = int(getattr(sampler, "update_every", 1)) if sampler.stateful else 1
        if every <= 1:
            return self.train_step
        if "refresh_apart" not in self.cache:
            self.cache["refresh_apart"] = _refresh_apart(self)
        return self.cache["refresh_apart"][step % every == 0]

    def init_state(self) -> TrainState:
        """A fresh, sharded train state (params initialised from ``seed``)."""
        init = functools.partial(_init_state, self.config, self.model, self.spec, self.optimizer)
        return jax.jit(init, out_shardings=self.state_shardings)()


def _init_state(config, model, spec: NoiseSpec, optimizer) -> TrainState:
    """A fresh train state (pure; jit it with ``out_shardings`` to place it)."""
    d = config.data
    init_key = jax.random.fold_in(jax.random.key(config.seed), 0x1A17)
    x = jnp.zeros((1, d.image_size, d.image_size, d.channels), jnp.float32)
    cond = jnp.zeros((1,), jnp.float32)
    y = jnp.zeros((1,), jnp.int32)
    k1, k2, k_sampler, k_weighting = jax.random.split(init_key, 4)
    params = model.init({"params": k1, "dropout": k2}, x, cond, y)["params"]
    x0_shape = (d.batch_size, d.image_size, d.image_size, d.channels)
    sampler_state = noise.init_sampler_state(spec.timestep_sampler, k_sampler, x0_shape)
    weighting_state = {}
    if spec.learned_weighting is not None:
        u = spec.learned_weighting.init(k_weighting)
        opt = weighting_optimizer(optimizer, u)
        weighting_state = {"params": u, "opt": opt.init(u)}
    return create_train_state(
        params, optimizer, len(config.ema.decays), sampler_state, weighting_state,
        num_posthoc=len(posthoc_stds(config)),
    )  # fmt: skip


def posthoc_stds(config) -> tuple[float, ...]:
    """``ema.posthoc.std``: the σ_rel of the tracked power-function EMA profiles (may be ())."""
    posthoc = config.ema.get("posthoc")
    return tuple(float(s) for s in (posthoc.get("std", ()) if posthoc else ()) or ())


def _refresh_apart(exp: Experiment) -> dict:
    """{False: the step without the sampler's refresh, True: it then the refresh}, each
    ``(state, batch, rng) -> (state, metrics)``; see ``Experiment.train_step_at``."""
    shard = exp.state_shardings
    bound = functools.partial(exp.step_fn, sampler_due=False, sampler_context=True)
    step = jit_train_step(bound, shard, exp.mesh, context=True)
    copy = jax.jit(lambda p: jax.tree_util.tree_map(jnp.copy, p), out_shardings=shard.params)
    refresh = jax.jit(
        functools.partial(
            refresh_sampler, apply_fn=exp.apply_fn, spec=exp.spec,
            skip_nonfinite=exp.config.on_nonfinite == "skip",
        ),
        out_shardings=(shard.sampler_state, sharding.replicated(exp.mesh)),
        donate_argnums=(0,),
    )  # fmt: skip

    def without(state, batch, rng):
        state, metrics, _ = step(state, batch, rng)
        return state, metrics

    def with_refresh(state, batch, rng):
        before = copy(state.params)  # the step donates the state
        state, metrics, inputs = step(state, batch, rng)
        sampler_state, m = refresh(
            state.sampler_state, inputs, batch["image"], before, state.params, metrics["finite"]
        )
        return state.replace(sampler_state=sampler_state), {**metrics, **m}

    return {False: without, True: with_refresh}


def root_key_data(seed: int) -> jax.Array:
    """The raw data of ``jax.random.key(seed)`` (step keys are ``fold_in(root, step)``)."""
    return jax.random.key_data(jax.random.key(seed))


def build_experiment(config, devices=None) -> Experiment:
    """Validates ``config`` and builds the experiment over ``devices`` (all by default)."""
    devices = list(jax.devices() if devices is None else devices)
    validate_config(config, num_devices=len(devices))
    mesh = sharding.make_mesh(config.mesh.shape, config.mesh.axes, devices=devices)
    model = build_model(config)
    spec = make_noise_spec(noise_config(config))
    optimizer = make_optimizer(config.optim, config.total_steps)
    lr_schedule = learning_rate_schedule(config.optim, config.total_steps)
    dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
    apply_fn = models.make_apply_fn(model, compute_dtype=dtype)
    abstract_state = jax.eval_shape(functools.partial(_init_state, config, model, spec, optimizer))
    state_shardings = sharding.shardings_for(
        abstract_state,
        mesh,
        rules=[tuple(r) for r in config.mesh.partition_rules],
        min_fsdp_size=int(config.mesh.min_fsdp_size),
    )
    step_fn = bind_train_step(
        apply_fn=apply_fn,
        spec=spec,
        optimizer=optimizer,
        lr_schedule=lr_schedule,
        ema_decays=tuple(float(d) for d in config.ema.decays),
        num_classes=int(config.data.num_classes),
        label_dropout=float(config.train.label_dropout),
        grad_accum=int(config.optim.grad_accum_steps),
        skip_nonfinite=config.on_nonfinite == "skip",
        ema_warmup=bool(config.ema.warmup),
        posthoc_gammas=tuple(float(g) for g in std_to_gamma(posthoc_stds(config))),
    )
    return Experiment(
        config=config,
        mesh=mesh,
        model=model,
        spec=spec,
        optimizer=optimizer,
        lr_schedule=lr_schedule,
        apply_fn=apply_fn,
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        root_rng=jax.device_put(root_key_data(config.seed), sharding.replicated(mesh)),
        train_step=jit_train_step(step_fn, state_shardings, mesh),
        step_fn=step_fn,
    )
