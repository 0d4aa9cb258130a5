"""The diffusion training loss: sample λ, corrupt, predict, weight (pure, jit-able).

`make_noise_spec(config.noise)` validates the noise config once, on the host, into a frozen
(hashable) `NoiseSpec`; `diffusion_loss(denoise_fn, x0, key, spec)` is then a pure function
with no Python branching on traced values. λ conventions (see jaxdiff/noise/scaling.py): the
sampler draws the unscaled schedule's λ; x_t follows Chen 2023 Algorithm 2 with
b = input_scale; the network, the targets and the weighting see λ_eff = λ + 2·log b.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import noise
from jaxdiff.errors import ConfigError, read_section

# The fields of `config.noise`; their defaults are the base config's
# (jaxdiff.training.config.base_config), the one place that holds them.
NOISE_FIELDS = (
    "schedule", "schedule_params", "input_scale", "normalize_input", "target", "weighting",
    "weighting_params", "weight_mode", "timesteps", "timesteps_params", "learned_weighting",
    "learned_weighting_params",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
    """Everything the loss needs to know about noise levels; immutable and hashable.

    schedule: the training schedule (unscaled); input_scale: Chen's b; normalize_input:
    divide x_t by its std; target: one of noise.TARGETS; weighting: a noise.Weighting;
    weight_mode: "sample" (w(λ)) or "density" (w(λ)/p(λ)); timestep_sampler: draws λ;
    learned_weighting: None or EDM2's uncertainty u(λ) (`noise.learned_weighting`), whose
    parameters the train state holds.
    """

    schedule: noise.Schedule
    input_scale: float
    normalize_input: bool
    target: str
    weighting: noise.Weighting
    weight_mode: str
    timestep_sampler: Any
    learned_weighting: Any = None

    @property
    def effective_schedule(self) -> noise.Schedule:
        """The schedule of the λ the network sees: input_scaled(schedule, input_scale)."""
        return noise.input_scaled(self.schedule, self.input_scale)


def _as_dict(field: str, value: Any) -> dict:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"noise.{field}", f"got {value!r}", "a dict of parameters")
    return dict(value)


def _choice(field: str, value: Any, known: list[str] | tuple[str, ...]) -> str:
    if value not in known:
        raise ConfigError(f"noise.{field}", f"unknown {value!r}", list(known))
    return value


def _params(field: str, make: Callable[..., Any], *args: Any, params: Any) -> Any:
    """``make(*args, **params)``; a bad parameter (the registry's ValueError: an unknown name
    or a value out of range) becomes a ConfigError on ``noise.<field>``."""
    try:
        return make(*args, **_as_dict(field, params))
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"noise.{field}", str(err)) from None


def make_noise_spec(noise_config: Any) -> NoiseSpec:
    """Validate `config.noise` (ConfigDict or dict with every field of NOISE_FIELDS, as the base
    config holds them; unset parameters may be left out of the ``*_params`` dicts).

    Every invalid field raises ConfigError naming it, e.g.
    "noise.schedule: unknown 'foo'; allowed: ..." or "noise.input_scale: got -1; allowed: ...".
    """
    c = read_section("noise", noise_config, NOISE_FIELDS)
    name = _choice("schedule", c["schedule"], noise.list_schedules())
    schedule = _params("schedule_params", noise.get_schedule, name, params=c["schedule_params"])
    scale = c["input_scale"]
    is_number = isinstance(scale, int | float | np.integer | np.floating)
    if isinstance(scale, bool) or not is_number or not (scale > 0 and math.isfinite(scale)):
        raise ConfigError("noise.input_scale", f"got {scale!r}", "a finite number > 0")
    if not isinstance(c["normalize_input"], bool):
        raise ConfigError("noise.normalize_input", f"got {c['normalize_input']!r}", "True, False")
    target = _choice("target", c["target"], noise.TARGETS)
    wname = _choice("weighting", c["weighting"], noise.list_weightings())
    weighting = _params(
        "weighting_params", noise.get_weighting, wname, params=c["weighting_params"]
    )
    weight_mode = _choice("weight_mode", c["weight_mode"], noise.WEIGHT_MODES)
    tname = _choice("timesteps", c["timesteps"], noise.list_timestep_samplers())
    sampler = _params(
        "timesteps_params", noise.get_timestep_sampler, tname, schedule,
        params=c["timesteps_params"],
    )  # fmt: skip
    learned = noise.learned_weighting.get_learned_weighting(  # errors name the field
        c["learned_weighting"],
        **_as_dict("learned_weighting_params", c["learned_weighting_params"]),
    )
    return NoiseSpec(
        schedule=schedule,
        input_scale=float(scale),
        normalize_input=c["normalize_input"],
        target=target,
        weighting=weighting,
        weight_mode=weight_mode,
        timestep_sampler=sampler,
        learned_weighting=learned,
    )


def loss_weight(spec: NoiseSpec, lam: jax.Array, lam_eff: jax.Array) -> jax.Array:
    """Per-example loss weight from the weighting: w(λ_eff) in `spec.target` space, divided by
    the training schedule's p(λ) in "density" mode, so the objective is ∫_lo^hi w·MSE dλ over
    the schedule's open range (lo, hi) = `spec.schedule.logsnr_range`.

    In "density" mode a λ at a clip point (an atom of the schedule, e.g. the 3.2% of Cauchy
    draws at ±20) gets weight 0: a point has no λ-width, so it carries no part of the integral,
    and w/p(λ) there would weight the atom's whole tail mass as if it were density (×1260 for
    Cauchy at 20); w/(atom mass) would instead add a point term w(±20)·MSE(±20) whose size
    depends on the schedule and whose weight explodes for tiny atoms (1e−13 for lognormal).
    λ where p(λ) = 0 (outside a bounded schedule's range) also gets 0.
    """
    w = spec.weighting(lam_eff, spec.target)
    if spec.weight_mode == "density":
        lo, hi = spec.schedule.logsnr_range
        p = spec.schedule.density(lam)
        inside = (lam > lo) & (lam < hi) & (p > 0)
        w = jnp.where(inside, w / jnp.where(inside, p, 1.0), 0.0)
    return w


def diffusion_loss(
    denoise_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x0: jax.Array,
    key: jax.Array,
    spec: NoiseSpec,
    sampler_state: Any = None,
    weighting_params: Any = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted denoising loss of one batch; returns (loss, aux).

    x0: (B, H, W, C). λ ~ spec.timestep_sampler (``draw``: per-example factor s_i, which
    may read x0), ε ~ N(0, I), x_t = corrupt(x0, ε, λ, scale=b, normalize), prediction =
    denoise_fn(x_t, λ_eff) with λ_eff = λ + 2·log b of shape (B,); per-example loss ℓ_i =
    mean over non-batch dims of (prediction − target)² × loss_weight × s_i. With a learned
    weighting (EDM2's uncertainty u, parameters ``weighting_params``) example i contributes
    ℓ_i·e^{−u(λ_eff)} + u(λ_eff); loss = the batch mean.
    aux: "loss_per_example" (ℓ, before u), "lam" (λ_eff, (B,)), "weight" (total per-example
    weight), "mse" (unweighted per-example MSE), "sampler_lam" (the sampler's unscaled λ) and
    "sampler_info" (its per-example draw information, for a stateful sampler's update).
    """
    batch = x0.shape[0]
    k_t, k_eps = jax.random.split(key)
    sampler = spec.timestep_sampler
    state = {} if sampler_state is None else sampler_state
    lam, sample_weight, info = sampler.draw(k_t, batch, state, x0)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    x_t = noise.corrupt(x0, eps, lam, scale=spec.input_scale, normalize=spec.normalize_input)
    lam_eff = noise.effective_logsnr(lam, spec.input_scale)
    pred = denoise_fn(x_t, lam_eff)
    target = noise.make_target(x0, eps, lam_eff, spec.target)
    mse = jnp.mean(jnp.square(pred - target), axis=tuple(range(1, x0.ndim)))
    weight = (loss_weight(spec, lam, lam_eff) * sample_weight).astype(mse.dtype)
    per_example = mse * weight
    total = per_example
    if spec.learned_weighting is not None:
        total = spec.learned_weighting.loss(weighting_params, lam_eff, per_example)
    aux = {
        "loss_per_example": per_example,
        "lam": lam_eff,
        "weight": weight,
        "mse": mse,
        "sampler_lam": lam,
        "sampler_info": info,
    }
    return jnp.mean(total), aux
