"""Everything built from a config before training: mesh, model, noise spec, optimizer,
state shardings and the jitted train step. Shared by training, sampling and evaluation."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxdiff.diffusion import NoiseSpec, make_noise_spec
from jaxdiff.training import config as config_lib
from jaxdiff.training import sharding
from jaxdiff.training.optim import learning_rate_schedule, make_optimizer
from jaxdiff.training.state import TrainState, create_train_state
from jaxdiff.training.step import bind_train_step, jit_train_step, make_apply_fn


@dataclasses.dataclass(eq=False)
class Experiment:
    config: Any
    mesh: Mesh
    model: Any
    spec: NoiseSpec
    optimizer: optax.GradientTransformation
    lr_schedule: optax.Schedule
    apply_fn: Any
    abstract_state: TrainState
    state_shardings: Any
    root_rng: jax.Array  # raw key data, replicated

    @property
    def num_classes(self) -> int:
        return int(self.config.data.num_classes)

    def init_state(self) -> TrainState:
        """A fresh, sharded train state (params initialised from ``seed``)."""
        return jax.jit(self._init_fn, out_shardings=self.state_shardings)()

    def _init_fn(self) -> TrainState:
        c = self.config
        init_key = jax.random.fold_in(jax.random.key(c.seed), 0x1A17)
        x = jnp.zeros((1, c.data.image_size, c.data.image_size, c.data.channels), jnp.float32)
        cond = jnp.zeros((1,), jnp.float32)
        y = jnp.zeros((1,), jnp.int32)
        k1, k2 = jax.random.split(init_key)
        params = self.model.init({"params": k1, "dropout": k2}, x, cond, y)["params"]
        sampler_state = self.spec.timestep_sampler.init_state()
        return create_train_state(
            params,
            self.optimizer,
            len(self.config.ema.decays),
            sampler_state,
            _root_key_data(c.seed),
        )

    @functools.cached_property
    def train_step(self):
        """The jitted, sharded ``train_step(state, batch, rng) -> (state, metrics)``."""
        c = self.config
        fn = bind_train_step(
            apply_fn=self.apply_fn,
            spec=self.spec,
            optimizer=self.optimizer,
            lr_schedule=self.lr_schedule,
            ema_decays=tuple(float(d) for d in c.ema.decays),
            num_classes=self.num_classes,
            label_dropout=float(c.train.label_dropout),
            grad_accum=int(c.optim.grad_accum_steps),
            skip_nonfinite=c.on_nonfinite == "skip",
            ema_warmup=bool(c.ema.warmup),
        )
        return jit_train_step(fn, self.state_shardings, self.mesh)


def _root_key_data(seed: int) -> jax.Array:
    return jax.random.key_data(jax.random.key(seed))


def build_experiment(config, devices=None) -> Experiment:
    """Validates ``config`` and builds the experiment over ``devices`` (all by default)."""
    devices = list(jax.devices() if devices is None else devices)
    config_lib.validate_config(config, num_devices=len(devices))
    mesh = sharding.make_mesh(config.mesh.shape, config.mesh.axes, devices=devices)
    model = config_lib.build_model(config)
    spec = make_noise_spec(config_lib.noise_config(config))
    optimizer = make_optimizer(config.optim, config.total_steps)
    dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
    from jaxdiff.models.conditioning import get_cond_fn

    apply_fn = make_apply_fn(
        model,
        cond_fn=get_cond_fn(getattr(model, "conditioning", "logsnr")),
        is_rin=config_lib.is_rin(config),
        self_cond_rate=float(config.train.self_cond_rate),
        compute_dtype=dtype,
    )
    exp = Experiment(
        config=config,
        mesh=mesh,
        model=model,
        spec=spec,
        optimizer=optimizer,
        lr_schedule=learning_rate_schedule(config.optim, config.total_steps),
        apply_fn=apply_fn,
        abstract_state=None,
        state_shardings=None,
        root_rng=None,
    )
    exp.abstract_state = jax.eval_shape(exp._init_fn)
    rules = [tuple(r) for r in config.mesh.partition_rules]
    exp.state_shardings = sharding.shardings_for(
        exp.abstract_state, mesh, rules=rules, min_fsdp_size=int(config.mesh.min_fsdp_size)
    )
    exp.root_rng = jax.device_put(_root_key_data(config.seed), sharding.replicated(mesh))
    return exp
