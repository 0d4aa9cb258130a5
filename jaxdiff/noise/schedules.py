"""Noise schedules as maps t ↦ λ(t) = logSNR, with their inverses and densities.

Convention: t ∈ [0, 1], t = 0 clean, t = 1 noise; λ = log(α²/σ²) is strictly
decreasing in t. With t ~ U(0, 1) a schedule induces the density p(λ) = |dt/dλ| over noise
levels (Hang et al. 2024, arXiv:2407.03297). λ(t) is clipped to the schedule's range
[lo, hi] = [max(LOGSNR_MIN, inf formula), min(LOGSNR_MAX, sup formula)] (`logsnr_range`);
`t_from_logsnr` and `density` are those of the unclipped formula, so λ(U) is the continuous
density `density` on (lo, hi) plus two atoms, of masses 1 − t(lo) at lo and t(hi) at hi
(`clip_masses`, e.g. 3.2% in all for the Cauchy schedule).

Every schedule is registered under a name with one function `formula(t, **params) -> λ`
(finite and strictly decreasing on the open interval (0, 1)). A closed-form inverse and
density may be given; otherwise the inverse is a jit-able bisection and the density is
1/|dλ/dt| at t(λ) through `jax.jvp`. The built-in formulas live in
`jaxdiff.noise.schedule_library`, `schedule_chen` (Chen 2023) and `ddpm` (the linear-β DDPM),
registered when `jaxdiff.noise` (the package, imported before any of its modules) imports them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


class FrozenParams(Mapping):
    """An immutable, hashable mapping of schedule parameters (name -> float or None)."""

    def __init__(self, items: Mapping[str, Any] | None = None):
        self._items = tuple(sorted(dict(items or {}).items()))

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenParams({dict(self._items)!r})"


@dataclasses.dataclass(frozen=True)
class _Entry:
    formula: Callable[..., jax.Array]
    inverse: Callable[..., jax.Array] | None
    density: Callable[..., jax.Array] | None
    validate: Callable[..., None] | None
    defaults: dict[str, Any]
    logsnr_range: Callable[..., tuple[float, float]] | None = None
    closed: bool = False


_SCHEDULES: dict[str, _Entry] = {}


def _as_float(x: jax.typing.ArrayLike) -> jax.Array:
    """`x` as a JAX array of floating dtype (the default float for ints and Python scalars)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_unit_interval(t: jax.typing.ArrayLike, name: str = "t") -> None:
    """Raise ValueError if a concrete (non-traced) `t` lies outside [0, 1]."""
    if isinstance(t, jax.core.Tracer):
        return
    arr = np.asarray(t)
    if arr.size and (np.nanmin(arr) < 0.0 or np.nanmax(arr) > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1] (0 clean, 1 noise); got values in "
            f"[{np.nanmin(arr)}, {np.nanmax(arr)}]"
        )


def _bisect_iterations(dtype: Any) -> int:
    return 90 if jnp.finfo(dtype).bits > 32 else 50


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def bisect_inverse(fn: Callable[[jax.Array], jax.Array], lam: jax.Array) -> jax.Array:
    """t with fn(t) = lam for a strictly decreasing `fn` on (0, 1), by bisection.

    Jit-able (a fixed number of steps: 50 in float32, 90 in float64, so tiny t near the
    ends stays relatively accurate); lam beyond fn's range gives t near 0 or 1. The
    derivative is the implicit one, dt/dλ = 1/fn'(t).
    """
    lam = _as_float(lam)
    lo = jnp.zeros_like(lam)
    hi = jnp.ones_like(lam)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = fn(mid) > lam  # λ(mid) too large: the answer lies at larger t
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _bisect_iterations(lam.dtype), body, (lo, hi))
    return 0.5 * (lo + hi)


@bisect_inverse.defjvp
def _bisect_inverse_jvp(fn, primals, tangents):
    (lam,), (dlam,) = primals, tangents
    t = bisect_inverse(fn, lam)
    _, dlam_dt = jax.jvp(fn, (t,), (jnp.ones_like(t),))
    return t, dlam / dlam_dt


def _elementwise_derivative(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """d fn(x)/dx for an elementwise `fn`, any shape (forward mode)."""
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A registered noise schedule with bound parameters; immutable and hashable.

    `shift` adds a constant to λ after clipping (input scaling by b is shift = 2·log b, see
    `jaxdiff.noise.input_scaled`): logsnr(t) = clip(formula(t)) + shift.
    """

    name: str
    params: FrozenParams
    shift: float = 0.0

    @property
    def _entry(self) -> _Entry:
        return _SCHEDULES[self.name]

    def _formula(self, t: jax.Array) -> jax.Array:
        return self._entry.formula(t, **self.params)

    @property
    def logsnr_range(self) -> tuple[float, float]:
        """(lo, hi): λ(1) and λ(0), the clip bounds of λ(t), shift included.

        lo = max(−20, inf formula) and hi = min(20, sup formula): (−20, 20) for schedules
        that reach ±∞, the formula's own limits otherwise (e.g. `ddpm_linear`, or
        logit(clip_min) for Chen's schedules with clip_min > 2e−9).
        """
        lo, hi = self._bounds()
        return lo + self.shift, hi + self.shift

    def _bounds(self) -> tuple[float, float]:
        f_lo, f_hi = (-np.inf, np.inf)
        if self._entry.logsnr_range is not None:
            f_lo, f_hi = self._entry.logsnr_range(**self.params)
        return max(LOGSNR_MIN, float(f_lo)), min(LOGSNR_MAX, float(f_hi))

    def clip_masses(self) -> tuple[float, float]:
        """(P(λ = lo), P(λ = hi)) for t ~ U(0, 1): the atoms the clip puts at `logsnr_range`.

        P(λ = hi) = t(hi) and P(λ = lo) = 1 − t(lo) of the unclipped formula, computed once in
        float64 on the host (a tail below 1e−6 by integrating `density` below lo instead, so
        tiny lower tails keep their relative accuracy); (0, 0) for a `closed` schedule whose
        formula stays inside [LOGSNR_MIN, LOGSNR_MAX] (e.g. `ddpm_linear` with a table beyond
        −20 has an atom at −20). Python floats, usable inside jit.
        """
        return _clip_masses(dataclasses.replace(self, shift=0.0))

    def logsnr(self, t: jax.typing.ArrayLike) -> jax.Array:
        """λ(t) = clip(formula(t), lo, hi) + shift, (lo, hi) = `logsnr_range`.

        λ(0) = hi and λ(1) = lo exactly ((20, −20) for schedules reaching ±∞); the derivative
        is 0 where the clip applies (a one-sided 0 at t = 0 and 1 for those schedules).
        """
        _check_unit_interval(t)
        t = _as_float(t)
        lo, hi = self._bounds()
        if self._entry.closed:  # finite with a finite derivative on [0, 1]: evaluate there
            lam = self._formula(t)
        else:
            at_zero, at_one = t <= 0.0, t >= 1.0
            t_safe = jnp.where(at_zero | at_one, jnp.asarray(0.5, t.dtype), t)
            lam = self._formula(t_safe)
            lam = jnp.where(at_zero, hi, jnp.where(at_one, lo, lam))
        # A where-clip, not jnp.clip: at a tie (t = 0 of a closed schedule) the gradient
        # stays the formula's instead of being halved.
        lam = jnp.where(lam > hi, hi, jnp.where(lam < lo, lo, lam)).astype(t.dtype)
        return lam + self.shift

    def t_from_logsnr(self, lam: jax.typing.ArrayLike) -> jax.Array:
        """Inverse of the (unclipped) formula: t with λ(t) = lam; values in [0, 1]."""
        lam = _as_float(lam) - self.shift
        entry = self._entry
        if entry.inverse is not None:
            t = entry.inverse(lam, **self.params)
        else:
            t = bisect_inverse(functools.partial(entry.formula, **self.params), lam)
        # a closed-form inverse can round a few ulps past the ends for λ outside the range
        # (sigmoid in float32, cosine_power with start > 0): keep the documented [0, 1]
        return jnp.clip(t, 0.0, 1.0)

    def density(self, lam: jax.typing.ArrayLike) -> jax.Array:
        """p(λ) = |dt/dλ| of λ(t) for t ~ U(0, 1) (the unclipped formula's density)."""
        lam = _as_float(lam) - self.shift
        entry = self._entry
        if entry.density is not None:
            return entry.density(lam, **self.params)
        if entry.inverse is not None:
            inv = functools.partial(entry.inverse, **self.params)
            dens = jnp.abs(_elementwise_derivative(inv, lam))
        else:
            fn = functools.partial(entry.formula, **self.params)
            t = bisect_inverse(fn, lam)
            dens = 1.0 / jnp.abs(_elementwise_derivative(fn, t))
        # Far in the tails (|λ| ≫ 20) the derivative can under/overflow to nan or inf where the
        # true density is ~0.
        return jnp.where(jnp.isfinite(dens), dens, 0.0)


_SMALL_TAIL = 1e-6


def _lower_tail_integral(schedule: Schedule, lo: float) -> float:
    """∫_{−∞}^{lo} density dλ in float64 (midpoints of sinh-spaced panels out to lo − 1e6)."""
    u = np.linspace(0.0, np.arcsinh(1e6), 20_001)
    mid, du = 0.5 * (u[1:] + u[:-1]), u[1] - u[0]
    dens = np.asarray(jax.jit(schedule.density)(lo - np.sinh(mid)), np.float64)
    return float(np.sum(dens * np.cosh(mid)) * du)


@functools.lru_cache(maxsize=512)
def _clip_masses(schedule: Schedule) -> tuple[float, float]:
    lo, hi = schedule.logsnr_range
    entry = schedule._entry
    if entry.closed:  # strictly decreasing on [0, 1]: clipped only where it leaves [lo, hi]
        f_lo, f_hi = (-np.inf, np.inf)
        if entry.logsnr_range is not None:
            f_lo, f_hi = entry.logsnr_range(**schedule.params)
        if f_lo >= lo and f_hi <= hi:
            return 0.0, 0.0
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        t_of = jax.jit(schedule.t_from_logsnr)
        t = np.asarray(t_of(np.array([lo, hi], np.float64)), np.float64)
        m_lo = 1.0 - float(t[0])
        if m_lo < _SMALL_TAIL:
            m_lo = _lower_tail_integral(schedule, lo)
    return max(m_lo, 0.0), max(float(t[1]), 0.0)


def register_schedule(
    name: str,
    *,
    inverse: Callable[..., jax.Array] | None = None,
    density: Callable[..., jax.Array] | None = None,
    validate: Callable[..., None] | None = None,
    logsnr_range: Callable[..., tuple[float, float]] | None = None,
    closed: bool = False,
) -> Callable[[Callable[..., jax.Array]], Callable[..., jax.Array]]:
    """Decorator registering `formula(t, **params) -> λ` as schedule `name`.

    The formula must be elementwise, finite and strictly decreasing on (0, 1); its keyword
    parameters with defaults become the schedule's parameters. Without `inverse` the inverse
    is a jit-able bisection; without `density` it is |d inverse/dλ| (autodiff). `validate`
    (called with all parameters) raises ValueError for bad values. `logsnr_range(**params)`
    gives (inf, sup) of the formula on (0, 1) when finite (default (−inf, inf)); `closed=True`
    says the formula is finite and differentiable at t = 0 and 1, so λ(0), λ(1) and their
    one-sided derivatives come from it. Duplicate names raise.
    """

    def decorator(formula: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
        if name in _SCHEDULES:
            raise ValueError(f"noise schedule {name!r} is already registered")
        sig = inspect.signature(formula)
        defaults = {
            p.name: p.default
            for p in list(sig.parameters.values())[1:]
            if p.default is not inspect.Parameter.empty
        }
        _SCHEDULES[name] = _Entry(
            formula, inverse, density, validate, defaults, logsnr_range, bool(closed)
        )
        return formula

    return decorator


def list_schedules() -> list[str]:
    """Sorted names of the registered schedules."""
    return sorted(_SCHEDULES)


def _to_param(name: str, key: str, value: Any, default: Any) -> float | None:
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"schedule {name!r}: parameter {key!r} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"schedule {name!r}: parameter {key!r} must be finite, got {value}")
    return value


def get_schedule(name: str, **params: Any) -> Schedule:
    """The schedule `name` with `params` (others at their defaults); see `list_schedules()`."""
    try:
        entry = _SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown noise schedule {name!r}; known: {list_schedules()}") from None
    unknown = sorted(set(params) - set(entry.defaults))
    if unknown:
        raise ValueError(
            f"schedule {name!r}: unknown parameter(s) {unknown}; allowed: {sorted(entry.defaults)}"
        )
    full = {**entry.defaults, **params}
    full = {k: _to_param(name, k, v, entry.defaults[k]) for k, v in full.items()}
    if entry.validate is not None:
        entry.validate(**full)
    return Schedule(name=name, params=FrozenParams(full))
