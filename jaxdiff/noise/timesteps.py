"""Timestep samplers: draw a batch of noise levels λ with a per-example weight.

One signature for every sampler: `get_timestep_sampler(name, schedule, **params)` returns an
immutable, hashable object with
- `stateful: bool` (class attribute);
- `init_state() -> pytree` (`{}` when stateless; stateful samplers take
  `init_state(key, x0_shape)`: use `init_sampler_state(sampler, key, x0_shape)` for any);
- `draw(key, n, state, x0=None) -> (lam, weight, info)`: lam and weight of shape (n,),
  info a dict of per-example arrays with leading dim n (`{}` when stateless);
- `sample(key, n, state=None) -> (lam, weight)`, the older form (samplers that need x0 raise).
`lam` is the schedule's (unscaled) λ; `weight` multiplies the example's loss so that
E[weight·f(λ)] = E_{λ~p_schedule}[f(λ)], or the sampler's own documented objective.
Stateful samplers also have `update_every: int` and `update(state, ctx: SamplerContext) ->
(state, metrics)` (pure, jit-able, to call after every optimizer update: it only does the
work on steps that are multiples of `update_every`) and `refresh(state, ctx)` (the same
update, unconditionally, for a separately jitted call on those steps). The learned samplers
live in `adaptive.py` (Kim et al. 2024), `adaptive_bins.py` (VDM++) and `speed.py` (SpeeD).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.noise.schedules import Schedule, get_schedule

_SAMPLERS: dict[str, Callable[..., Any]] = {}


def register_timestep_sampler(name: str):
    """Decorator registering a sampler factory `make(schedule, **params)` under `name`."""

    def decorator(make):
        if name in _SAMPLERS:
            raise ValueError(f"timestep sampler {name!r} is already registered")
        _SAMPLERS[name] = make
        return make

    return decorator


def list_timestep_samplers() -> list[str]:
    """Sorted names of the registered timestep samplers."""
    return sorted(_SAMPLERS)


def get_timestep_sampler(name: str, schedule: Schedule, **params: Any):
    """The sampler `name` drawing λ for `schedule`; see `list_timestep_samplers()`."""
    try:
        make = _SAMPLERS[name]
    except KeyError:
        raise ValueError(
            f"unknown timestep sampler {name!r}; known: {list_timestep_samplers()}"
        ) from None
    if not isinstance(schedule, Schedule):
        raise ValueError(
            f"timestep sampler {name!r}: schedule must be a Schedule, got {schedule!r}"
        )
    return make(schedule, **params)


def _no_params(name: str, params: Mapping[str, Any]) -> None:
    if params:
        raise ValueError(f"timestep sampler {name!r}: unknown parameter(s) {sorted(params)}; none")


def check_int(sampler: str, field: str, value: Any, minimum: int) -> int:
    """`value` as an int >= minimum, else ValueError naming the sampler and field."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(
            f"timestep sampler {sampler!r}: {field} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def check_float(
    sampler: str,
    field: str,
    value: Any,
    minimum: float,
    *,
    strict: bool = False,
    maximum: float | None = None,
) -> float:
    """`value` as a finite float >= minimum (> if strict, <= maximum if given), else ValueError."""
    ok = not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)
    ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        bound += "" if maximum is None else f" and <= {maximum}"
        raise ValueError(
            f"timestep sampler {sampler!r}: {field} must be a finite number {bound}, got {value!r}"
        )
    return float(value)


def check_unknown(sampler: str, params: Mapping[str, Any], allowed: Any) -> None:
    """ValueError listing `params` keys not in `allowed`."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"timestep sampler {sampler!r}: unknown parameter(s) {unknown}; "
            f"allowed: {sorted(allowed)}"
        )


def _context_fields(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(
        cls, data_fields=[n for n in names if n != "x0_error"], meta_fields=["x0_error"]
    )


@_context_fields
@dataclasses.dataclass(frozen=True)
class SamplerContext:
    """What a stateful sampler's `update` sees after one optimizer update (a pytree).

    step: int32 scalar, the train step index BEFORE this update (0 at the first step);
    key: a PRNG key for the update's own randomness (e.g. fold_in(step_key, "sampler"));
    x0: (B, H, W, C) the batch the loss saw (rows aligned with `info`, `lam`, ...);
    labels: (B,) int labels or None; lam: (B,) the UNSCALED λ the sampler drew (not λ_eff);
    info: the dict `draw` returned (per-example arrays, leading dim B);
    loss_per_example: (B,) the per-example loss the gradient used (all weights included);
    mse: (B,) its unweighted MSE in target space;
    params_before / params_after: the model parameters before and after this update;
    x0_error: `(params, x0, eps, lam, y) -> (N,)`, the per-example mean over non-batch dims of
    (x̂0 − x0)² of the model at unscaled λ (N,) with noise eps (N, H, W, C) (the step builds it
    from apply_fn, input scaling and target conversion). Static (not a pytree leaf).
    Fields a sampler does not use may be None.
    """

    step: Any = None
    key: Any = None
    x0: Any = None
    labels: Any = None
    lam: Any = None
    info: Any = None
    loss_per_example: Any = None
    mse: Any = None
    params_before: Any = None
    params_after: Any = None
    x0_error: Callable[..., jax.Array] | None = None


class StatelessSampler:
    """Mixin of the stateless samplers: `draw` is `sample` with empty info; no update."""

    stateful: ClassVar[bool] = False

    def init_state(self, key: Any = None, x0_shape: Any = None) -> dict:
        return {}

    def draw(
        self, key: jax.Array, n: int, state: Any = None, x0: Any = None
    ) -> tuple[jax.Array, jax.Array, dict]:
        """(lam, weight, {}): `sample` in the `draw` signature (x0 unused)."""
        lam, weight = self.sample(key, n, state)
        return lam, weight, {}


def init_sampler_state(sampler: Any, key: jax.Array | None = None, x0_shape: Any = None) -> Any:
    """The initial state of any sampler: `{}` if stateless, else `init_state(key, x0_shape)`.

    x0_shape: the data batch shape (B, H, W, C) (the adaptive policy needs C).
    """
    if not getattr(sampler, "stateful", False):
        return sampler.init_state()
    return sampler.init_state(key=key, x0_shape=x0_shape)


def uniform_t(key: jax.Array, n: int) -> jax.Array:
    """t ~ U(0, 1), shape (n,)."""
    return jax.random.uniform(key, (n,))


def stratified_t(key: jax.Array, n: int) -> jax.Array:
    """One t per stratum [i/n, (i+1)/n), in random order: (perm(i) + U_i)/n, shape (n,).

    Each t is still marginally U(0, 1); the batch covers [0, 1] evenly (low discrepancy).
    """
    k_perm, k_u = jax.random.split(key)
    strata = jax.random.permutation(k_perm, n)
    u = jax.random.uniform(k_u, (n,))
    return (strata.astype(u.dtype) + u) / n


@dataclasses.dataclass(frozen=True)
class UniformSampler(StatelessSampler):
    """λ = schedule.logsnr(t), t ~ U(0, 1); weight 1 (the default)."""

    schedule: Schedule

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        lam = self.schedule.logsnr(uniform_t(key, n))
        return lam, jnp.ones_like(lam)


@dataclasses.dataclass(frozen=True)
class StratifiedSampler(StatelessSampler):
    """λ = schedule.logsnr(t), t stratified over [0, 1] (`stratified_t`); weight 1."""

    schedule: Schedule

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        lam = self.schedule.logsnr(stratified_t(key, n))
        return lam, jnp.ones_like(lam)


@dataclasses.dataclass(frozen=True)
class ImportanceSampler(StatelessSampler):
    """λ from the proposal schedule A; weight p_B(λ)/p_A(λ) for the target schedule B.

    E_A[weight·f(λ)] = E_B[f(λ)]: the objective is B's while compute follows A's p(λ)
    (Hang et al. 2024's "change p(λ)" vs "change w(λ)"). `stratified` draws A's t stratified.
    The ratio is unbounded where A's tails are lighter than B's (e.g. Laplace proposal,
    cosine target): unbiased but high variance there.
    """

    schedule: Schedule
    proposal: Schedule
    stratified: bool = False

    def init_state(self) -> dict:
        return {}

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        t = stratified_t(key, n) if self.stratified else uniform_t(key, n)
        lam = self.proposal.logsnr(t)
        log_ratio = jnp.log(self.schedule.density(lam)) - jnp.log(self.proposal.density(lam))
        return lam, jnp.exp(log_ratio)


@register_timestep_sampler("uniform")
def _make_uniform(schedule: Schedule, **params: Any) -> UniformSampler:
    _no_params("uniform", params)
    return UniformSampler(schedule)


@register_timestep_sampler("stratified")
def _make_stratified(schedule: Schedule, **params: Any) -> StratifiedSampler:
    _no_params("stratified", params)
    return StratifiedSampler(schedule)


@register_timestep_sampler("importance")
def _make_importance(
    schedule: Schedule,
    proposal: str | None = None,
    proposal_params: Mapping[str, Any] | None = None,
    stratified: bool = False,
    **params: Any,
) -> ImportanceSampler:
    """Proposal parameters come as `proposal_params={"b": 0.5}` or flat as `proposal_b=0.5`
    (command-line friendly: --config.noise.timesteps_params.proposal_b=0.5)."""
    flat = {k[len("proposal_") :]: v for k, v in params.items() if k.startswith("proposal_")}
    unknown = sorted(k for k in params if not k.startswith("proposal_"))
    if unknown:
        raise ValueError(
            f"timestep sampler 'importance': unknown parameter(s) {unknown}; allowed: "
            "['proposal', 'proposal_params', 'proposal_<name>', 'stratified']"
        )
    if proposal is None:
        raise ValueError(
            "timestep sampler 'importance': parameter 'proposal' (a schedule name) is required"
        )
    if schedule.shift != 0.0:
        raise ValueError("timestep sampler 'importance': give the unscaled schedule")
    prop = get_schedule(proposal, **{**dict(proposal_params or {}), **flat})
    return ImportanceSampler(schedule, prop, bool(stratified))


# Register the learned samplers. Imported last: they import this (by then fully defined) module.
from jaxdiff.noise import adaptive as _adaptive  # noqa: E402, F401
from jaxdiff.noise import adaptive_bins as _adaptive_bins  # noqa: E402, F401
from jaxdiff.noise import speed as _speed  # noqa: E402, F401
