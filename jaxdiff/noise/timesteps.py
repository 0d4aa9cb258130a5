"""Timestep samplers: draw a batch of noise levels λ with a per-example weight.

One signature for every sampler: `get_timestep_sampler(name, schedule, **params)` returns an
immutable object with `init_state() -> pytree` and `sample(key, n, state) -> (lam, weight)`,
lam and weight of shape (n,). `lam` is the schedule's (unscaled) λ; `weight` multiplies the
example's loss so that E[weight·f(λ)] = E_{λ~p_schedule}[f(λ)]. The state slot carries
learned sampler state (the adaptive sampler keeps it in the train state); these are stateless.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

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
class UniformSampler:
    """λ = schedule.logsnr(t), t ~ U(0, 1); weight 1 (the default)."""

    schedule: Schedule

    def init_state(self) -> dict:
        return {}

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        lam = self.schedule.logsnr(uniform_t(key, n))
        return lam, jnp.ones_like(lam)


@dataclasses.dataclass(frozen=True)
class StratifiedSampler:
    """λ = schedule.logsnr(t), t stratified over [0, 1] (`stratified_t`); weight 1."""

    schedule: Schedule

    def init_state(self) -> dict:
        return {}

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        lam = self.schedule.logsnr(stratified_t(key, n))
        return lam, jnp.ones_like(lam)


@dataclasses.dataclass(frozen=True)
class ImportanceSampler:
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
