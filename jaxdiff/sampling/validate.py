"""Checks a ``sampling`` config section against the samplers and the network.

Raises ConfigError naming the field (``sampling.<name>``) and the allowed values, so a bad
value is reported before anything is compiled, not at the first sample step.
"""

from __future__ import annotations

import math
import numbers

from jaxdiff import noise
from jaxdiff.errors import ConfigError
from jaxdiff.sampling.respace import DDPM_LINEAR_GRID, NUM_TRAIN_STEPS
from jaxdiff.sampling.samplers import (
    CHURN_METHODS,
    NOISE_SCALE_METHODS,
    VARIANCES,
    list_samplers,
)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(s, name: str, lo: float, allowed: str, optional: bool = False) -> None:
    value = s.get(name)
    if optional and value is None:
        return
    if not _number(value) or not math.isfinite(value) or value < lo:
        raise ConfigError(f"sampling.{name}", f"got {value!r}", allowed)


def _count(s, name: str, hi: int | None = None) -> None:
    value = s.get(name)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"sampling.{name}", f"got {value!r}", "an integer >= 1")
    if hi is not None and value > hi:
        raise ConfigError(f"sampling.{name}", f"got {value}", f"an integer in [1, {hi}]")


def _edm_fields(s) -> None:
    """EDM's stochastic options: churn (euler, heun), its σ range, the noise scale."""
    _finite(s, "churn", 0.0, "a finite number >= 0 (0 = deterministic)")
    _finite(s, "s_tmin", 0.0, "a finite σ >= 0")
    if not _number(s.s_tmax) or not s.s_tmax >= s.s_tmin:
        raise ConfigError("sampling.s_tmax", f"got {s.s_tmax!r}", f"a σ >= s_tmin={s.s_tmin}")
    _finite(s, "s_noise", 0.0, "a finite number >= 0 (1 = EDM's default)")
    if s.churn > 0.0 and s.method not in CHURN_METHODS:
        raise ConfigError("sampling.churn", f"{s.churn} for {s.method!r}", list(CHURN_METHODS))
    if s.s_noise != 1.0 and s.method not in NOISE_SCALE_METHODS:
        raise ConfigError(
            "sampling.s_noise", f"{s.s_noise} for {s.method!r}", list(NOISE_SCALE_METHODS)
        )


def validate_sampling(s, *, learn_sigma: bool, channels: int) -> None:
    """Checks ``config.sampling`` (``s``) for a network with ``channels`` data channels that
    does (``learn_sigma``) or does not return a learned variance."""
    if s.method not in list_samplers():
        raise ConfigError("sampling.method", f"unknown {s.method!r}", list_samplers())
    schedules = [*noise.list_schedules(), DDPM_LINEAR_GRID]
    if s.schedule not in schedules:
        raise ConfigError("sampling.schedule", f"unknown {s.schedule!r}", sorted(set(schedules)))
    _count(s, "steps", NUM_TRAIN_STEPS if s.schedule == DDPM_LINEAR_GRID else None)
    _count(s, "num_grid")
    _count(s, "batch_size")
    _finite(s, "eta", 0.0, "a finite number >= 0 (0 = DDIM, 1 = DDPM posterior variance)")
    _finite(s, "guidance_scale", 0.0, "a finite number >= 0 (1 = no guidance)")
    for name in ("guidance_lam_min", "guidance_lam_max"):
        _finite(s, name, -math.inf, "None or a finite logSNR", optional=True)
    lo, hi = s.get("guidance_lam_min"), s.get("guidance_lam_max")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(
            "sampling.guidance_lam_min", f"{lo} > guidance_lam_max={hi}", "lam_min <= lam_max"
        )
    _edm_fields(s)
    if s.variance not in VARIANCES:
        raise ConfigError("sampling.variance", f"unknown {s.variance!r}", list(VARIANCES))
    if s.variance == "learned" and not learn_sigma:
        raise ConfigError(
            "sampling.variance",
            "'learned' needs a network with a learned variance output (a converted official "
            "DiT checkpoint in init_from)",
            ["small", "large"],
        )
    k = s.get("guidance_channels")
    if k is not None and (
        not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= channels
    ):
        raise ConfigError(
            "sampling.guidance_channels", f"got {k!r}", f"None or an integer in [1, {channels}]"
        )
    if not isinstance(s.clip_x0, bool):
        raise ConfigError("sampling.clip_x0", f"got {s.clip_x0!r}", "True, False")
