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
update, unconditionally, for a separately jitted call on those steps). Those with
`update_every` > 1 also take `update(state, ctx, due)`, due a Python bool: the caller decided
(a step compiled with or without the refresh, `train_step(sampler_due=...)`). The learned samplers
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
class _ScheduleTimeSampler(StatelessSampler):
    """λ = schedule.logsnr(t) with t from the subclass's `draw_t(key, n)`; weight 1."""

    schedule: Schedule
    draw_t: ClassVar[Callable[[jax.Array, int], jax.Array]]

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        lam = self.schedule.logsnr(self.draw_t(key, n))
        return lam, jnp.ones_like(lam)


@dataclasses.dataclass(frozen=True)
class UniformSampler(_ScheduleTimeSampler):
    """λ = schedule.logsnr(t), t ~ U(0, 1); weight 1 (the default)."""

    draw_t = staticmethod(uniform_t)


@dataclasses.dataclass(frozen=True)
class StratifiedSampler(_ScheduleTimeSampler):
    """λ = schedule.logsnr(t), t stratified over [0, 1] (`stratified_t`); weight 1."""

    draw_t = staticmethod(stratified_t)


def _atom_weight(target: Schedule, proposal: Schedule, side: int) -> float:
    """dP_target/dP_proposal at the proposal's clip point (side 0: lo, 1: hi): the target's
    mass at that λ over the proposal's; 0 where the proposal never draws it."""
    m_prop = proposal.clip_masses()[side]
    same_point = target.logsnr_range[side] == proposal.logsnr_range[side]
    m_target = target.clip_masses()[side] if same_point else 0.0
    return m_target / m_prop if m_prop > 0 else 0.0


def _check_coverage(target: Schedule, proposal: Schedule) -> None:
    """ValueError unless every λ the target draws can be drawn by the proposal."""
    (lo_b, hi_b), (lo_a, hi_a) = target.logsnr_range, proposal.logsnr_range
    if lo_b < lo_a or hi_b > hi_a:
        raise ValueError(
            f"timestep sampler 'importance': proposal {proposal.name!r} draws λ in "
            f"[{lo_a:.4g}, {hi_a:.4g}] but the target {target.name!r} has mass on "
            f"[{lo_b:.4g}, {hi_b:.4g}]; choose a proposal whose range covers the target's"
        )
    for side, (point_b, point_a) in enumerate([(lo_b, lo_a), (hi_b, hi_a)]):
        mass = target.clip_masses()[side]
        if mass > 0 and point_b != point_a:
            raise ValueError(
                f"timestep sampler 'importance': the target {target.name!r} puts mass "
                f"{mass:.3g} on λ = {point_b:.4g} (its clip point), where proposal "
                f"{proposal.name!r} has only a density; choose one with the same clip point"
            )


@dataclasses.dataclass(frozen=True)
class ImportanceSampler(StatelessSampler):
    """λ from the proposal schedule A; weight dP_B/dP_A(λ) for the target schedule B.

    E_A[weight·f(λ)] = E_B[f(λ)]: the objective is B's while compute follows A's p(λ)
    (Hang et al. 2024's "change p(λ)" vs "change w(λ)"). `stratified` draws A's t stratified.
    A clipped schedule's λ has a density on the open range plus atoms at the clip points
    (`Schedule.clip_masses`), so the weight is p_B(λ)/p_A(λ) inside and the ratio of the
    atoms' masses at them (Cauchy: 3.2% of its mass sits at ±20). The proposal must cover the
    target's range (checked on construction). The weights' variance is unbounded in practice
    where A's tails are lighter than B's (e.g. Laplace proposal, cosine target):
    `weight_moments()` measures it before training.
    """

    schedule: Schedule
    proposal: Schedule
    stratified: bool = False

    def __post_init__(self):
        _check_coverage(self.schedule, self.proposal)

    def weight(self, lam: jax.Array) -> jax.Array:
        """dP_B/dP_A at λ drawn from A: p_B/p_A strictly inside A's range (0 outside B's),
        m_B/m_A at A's clip points; same shape and dtype as lam."""
        return self.weight_from_densities(
            lam, self.schedule.density(lam), self.proposal.density(lam)
        )

    def weight_from_densities(
        self, lam: jax.Array, p_target: jax.Array, p_proposal: jax.Array
    ) -> jax.Array:
        """`weight(lam)` given p_B(λ) and p_A(λ) (e.g. computed once for many samplers)."""
        (lo_a, hi_a), (lo_b, hi_b) = self.proposal.logsnr_range, self.schedule.logsnr_range
        inside = (lam > lo_b) & (lam < hi_b) & (p_proposal > 0)
        ratio = jnp.where(inside, p_target / jnp.where(inside, p_proposal, 1.0), 0.0)
        w_lo = _atom_weight(self.schedule, self.proposal, 0)
        w_hi = _atom_weight(self.schedule, self.proposal, 1)
        return jnp.where(lam >= hi_a, w_hi, jnp.where(lam <= lo_a, w_lo, ratio))

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        t = stratified_t(key, n) if self.stratified else uniform_t(key, n)
        # Off the float grid's exact 0 and 1: there λ would be a clip atom with the grid's
        # probability (2^-23 in float32) instead of the atom's own mass (2e−9 for `linear`).
        tiny = 0.5 * jnp.finfo(t.dtype).eps
        lam = self.proposal.logsnr(jnp.clip(t, tiny, 1.0 - tiny))
        return lam, self.weight(lam)

    def weight_moments(self, num: int = 40_001) -> dict[str, float]:
        """E_A[w] and E_A[w²] by quadrature (float64, on the host), for a check before training.

        E_A[w^k] = ∫ p_B^k p_A^{1−k} dλ over B's open range (trapezoid on `num` points) plus,
        per clip atom of B, m_B^k m_A^{1−k}. "mean" is 1 up to quadrature error when A covers
        B; "second_moment" = E_A[w²] = 1 + Var_A[w] is inf where B has mass that A draws with
        probability 0 (a target atom or density where the proposal's underflows);
        "ess_fraction" = mean²/second_moment, the effective sample size per draw (Kish).
        """
        (lo_b, hi_b), (lo_a, hi_a) = self.schedule.logsnr_range, self.proposal.logsnr_range
        with jax.enable_x64(True):
            grid = np.linspace(lo_b, hi_b, num)
            p_b = np.asarray(jax.jit(self.schedule.density)(grid), np.float64)
            p_a = np.asarray(jax.jit(self.proposal.density)(grid), np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            sq = np.where(p_b > 0, p_b * p_b / p_a, 0.0)
        mean = float(np.trapezoid(np.where(p_a > 0, p_b, 0.0), grid))
        second = float(np.trapezoid(sq, grid))
        for side in (0, 1):
            m_b = self.schedule.clip_masses()[side]
            same_point = (lo_b, hi_b)[side] == (lo_a, hi_a)[side]
            m_a = self.proposal.clip_masses()[side] if same_point else 0.0
            if m_b > 0:
                mean += m_b if m_a > 0 else 0.0
                second += m_b * m_b / m_a if m_a > 0 else np.inf
        return {"mean": mean, "second_moment": second, "ess_fraction": mean * mean / second}


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
