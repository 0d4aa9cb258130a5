"""Loss weightings w(λ) by name, defined in x0 space and divided per target (Min-SNR paper).

A weighting's name defines w_x0(λ), the weight of ‖x̂0 − x0‖² (Hang et al. 2023,
arXiv:2303.09556). Since ‖ε̂ − ε‖² = SNR·‖x̂0 − x0‖², ‖v̂ − v‖² = (SNR + 1)·‖x̂0 − x0‖² and
‖û − u‖² = (1 + e^{λ/2})²·‖x̂0 − x0‖², the weight of an MSE in target space is w_x0 divided by
SNR ("eps"), SNR + 1 ("v"), (1 + e^{λ/2})² ("flow") or 1 ("x0"). Everything is computed in
log space, so it stays finite in float32 for any λ in [−40, 40].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.noise.schedules import FrozenParams, _as_float
from jaxdiff.noise.targets import check_target

_WEIGHTINGS: dict[str, tuple[Callable[..., jax.Array], dict[str, float], tuple[str, ...]]] = {}


def register_weighting(name: str, *, positive: tuple[str, ...] = (), **defaults: float):
    """Decorator registering `log_w_x0(lam, **params) -> log w_x0(λ)` as weighting `name`.

    `defaults` are its parameters; those named in `positive` must be > 0.
    """

    def decorator(fn):
        if name in _WEIGHTINGS:
            raise ValueError(f"weighting {name!r} is already registered")
        _WEIGHTINGS[name] = (fn, defaults, positive)
        return fn

    return decorator


def list_weightings() -> list[str]:
    """Sorted names of the registered weightings."""
    return sorted(_WEIGHTINGS)


def log_target_factor(lam: jax.Array, target: str) -> jax.Array:
    """log of ‖target MSE‖/‖x0 MSE‖: λ (eps), 0 (x0), log(1+e^λ) (v), 2·log(1+e^{λ/2}) (flow)."""
    check_target(target)
    return {
        "eps": lambda: lam,
        "x0": lambda: jnp.zeros_like(lam),
        "v": lambda: jax.nn.softplus(lam),
        "flow": lambda: 2.0 * jax.nn.softplus(0.5 * lam),
    }[target]()


@dataclasses.dataclass(frozen=True)
class Weighting:
    """A named weighting with bound parameters; `w(lam, target)` is the weight of the MSE
    in `target` space: w_x0(λ) / (target factor). Immutable and hashable."""

    name: str
    params: FrozenParams

    def log_x0(self, lam: jax.typing.ArrayLike) -> jax.Array:
        """log w_x0(λ)."""
        return _WEIGHTINGS[self.name][0](_as_float(lam), **self.params)

    def __call__(self, lam: jax.typing.ArrayLike, target: str = "x0") -> jax.Array:
        """w(λ) for an MSE in `target` space: exp(log w_x0(λ) − log target factor(λ))."""
        lam = _as_float(lam)
        return jnp.exp(self.log_x0(lam) - log_target_factor(lam, target))


def _check_param(name: str, key: str, value: Any, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"weighting {name!r}: {key} must be a number, got {value!r}")
    if not math.isfinite(value) or (positive and not value > 0):
        need = "a finite number > 0" if positive else "finite"
        raise ValueError(f"weighting {name!r}: {key} must be {need}, got {value}")
    return float(value)


def get_weighting(name: str, **params: Any) -> Weighting:
    """The weighting `name` with `params` (others at their defaults); see `list_weightings()`."""
    try:
        _, defaults, positive = _WEIGHTINGS[name]
    except KeyError:
        raise ValueError(f"unknown weighting {name!r}; known: {list_weightings()}") from None
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"weighting {name!r}: unknown parameter(s) {unknown}; allowed: {sorted(defaults)}"
        )
    full = {k: _check_param(name, k, v, k in positive) for k, v in {**defaults, **params}.items()}
    return Weighting(name=name, params=FrozenParams(full))


@register_weighting("snr")
def _snr(lam):
    """w_x0 = SNR: the plain ε-prediction loss (weight 1 in ε space)."""
    return lam


@register_weighting("min_snr", positive=("gamma",), gamma=5.0)
def _min_snr(lam, gamma):
    """Min-SNR-γ: w_x0 = min(SNR, γ) (Hang et al. 2023)."""
    return jnp.minimum(lam, math.log(gamma))


@register_weighting("max_snr", positive=("gamma",), gamma=1.0)
def _max_snr(lam, gamma):
    """Max-SNR-γ: w_x0 = max(SNR, γ) (Hang et al. 2023)."""
    return jnp.maximum(lam, math.log(gamma))


@register_weighting("soft_min_snr", positive=("gamma",), gamma=5.0)
def _soft_min_snr(lam, gamma):
    """Soft-Min-SNR (HDiT): w_x0 = SNR·γ/(SNR + γ)."""
    log_gamma = math.log(gamma)
    return lam + log_gamma - jnp.logaddexp(lam, log_gamma)


@register_weighting("x0")
def _x0(lam):
    """Constant weight in x0 space: the plain x0-prediction loss."""
    return jnp.zeros_like(lam)


@register_weighting("v")
def _v(lam):
    """w_x0 = SNR + 1: the plain v-prediction loss."""
    return jax.nn.softplus(lam)


@register_weighting("flow")
def _flow(lam):
    """w_x0 = (1 + e^{λ/2})²: the plain rectified-flow velocity loss."""
    return 2.0 * jax.nn.softplus(0.5 * lam)


@register_weighting("edm", positive=("sigma_data",), sigma_data=0.5)
def _edm(lam, sigma_data):
    """EDM: (σ² + σ_d²)/(σ·σ_d)² with σ = e^{−λ/2}, i.e. w_x0 = SNR + 1/σ_d² (Karras 2022)."""
    return jnp.logaddexp(lam, -2.0 * math.log(sigma_data))


@register_weighting("sigmoid", bias=2.0)
def _sigmoid(lam, bias):
    """Kingma & Gao 2023: w_x0 = SNR·sigmoid(bias − λ) (sigmoid weighting of the ε loss)."""
    return lam + jax.nn.log_sigmoid(bias - lam)
