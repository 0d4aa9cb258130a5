"""`noise.timesteps="speed"`: SpeeD's asymmetric sampling (Wang et al. 2024, arXiv 2405.17403).

On a grid of T = num_steps discrete steps t ∈ {0, …, T−1} at λ_t = schedule.logsnr(t/(T−1))
(so ᾱ_t = sigmoid(λ_t); the endpoints are the clipped ends λ = ±20), as the official code
(NUS-HPC-AI-Lab/SpeeD, SpeeDiffusion) does for DDPM's 1000 steps:

    g_t = d√(1 − ᾱ_t)/dt   (numpy.gradient: central differences, one-sided at the ends)
    p(t) ∝ tanh(sharpness·(g_t − threshold)) + offset        (defaults 1e6, 1e−4, 1.5)

i.e. ≈ 2.5 for the steps where √(1 − ᾱ) still changes faster than the threshold per step
(the "acceleration" area) and ≈ 0.5 in the flat "convergence" area (5× fewer draws).
τ = (first t with g_t < threshold) + 1. With `dual` (default), a batch of n draws
m = n//2 + 1 steps t ~ p and appends their duals t' = τ − t (t < τ) or t − τ (t ≥ τ),
keeping the first n (clipped to T − 1 if τ = T).

Weight: the official SpeeDiffusion (README / Speed_Mask_IDDPM, weighting="p2") multiplies the
ε-MSE by P2's 1/(k + SNR_t)^γ with k = γ = 1 (Choi et al. 2022). We return it as the sampler
weight (p2_gamma = 0 turns it off, as the repository's later SpeeDiffusion.t_sample does).
It multiplies the configured weighting, so the paper's loss is target="eps" with
weighting="snr" (the plain ε loss). The paper's "change-aware" weighting of Speed_IDDPM is not
implemented. The sampler changes the objective (like the paper): E[weight·f] is not the
schedule's expectation.

It keeps no state (`{}`) but is `stateful` with `update_every = 1` so that, like the learned
samplers, the train step logs its `sampler/*` scalars every step: the fixed `tau` (τ),
`accel_steps` (the number of steps with g_t > threshold), `accel_mass` (p's mass on them) and
the batch's `mean_lam` and `max_weight` (of the P2 weight).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.noise.schedules import Schedule
from jaxdiff.noise.timesteps import (
    SamplerContext,
    check_float,
    check_int,
    check_unknown,
    register_timestep_sampler,
)


def speed_step_probs(
    sqrt_one_minus_abar: np.ndarray, threshold: float, sharpness: float, offset: float
) -> tuple[np.ndarray, int]:
    """(p (T,), τ) from √(1 − ᾱ_t) on the step grid (float64 numpy)."""
    grad = np.gradient(np.asarray(sqrt_one_minus_abar, np.float64))
    tau = int(np.argmax(grad < threshold)) + 1
    p = np.tanh(sharpness * (grad - threshold)) + offset
    return p / p.sum(), tau


@functools.lru_cache(maxsize=32)
def _tables(
    schedule: Schedule,
    num_steps: int,
    threshold: float,
    sharpness: float,
    offset: float,
    p2_k: float,
    p2_gamma: float,
):
    # Eagerly, in float64, even when first called while a train step is being traced.
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        t = np.arange(num_steps, dtype=np.float64) / (num_steps - 1)
        lam = np.asarray(schedule.logsnr(t), np.float64)
    sqrt_sigma2 = np.sqrt(1.0 / (1.0 + np.exp(lam)))  # √(1 − ᾱ) = √sigmoid(−λ)
    p, tau = speed_step_probs(sqrt_sigma2, threshold, sharpness, offset)
    log_k_snr = lam if p2_k == 0 else np.logaddexp(np.log(p2_k), lam)  # log(k + SNR)
    weight = np.exp(-p2_gamma * log_k_snr)
    accel = np.gradient(sqrt_sigma2) > threshold  # the "acceleration area"
    for a in (p, lam, weight, accel):
        a.setflags(write=False)
    return p, tau, lam, weight, accel


@dataclasses.dataclass(frozen=True)
class SpeedSampler:
    """SpeeD's asymmetric, dual sampling of T discrete steps; see the module docstring."""

    schedule: Schedule
    num_steps: int = 1000
    threshold: float = 1e-4
    sharpness: float = 1e6
    offset: float = 1.5
    dual: bool = True
    p2_k: float = 1.0
    p2_gamma: float = 1.0

    stateful: ClassVar[bool] = True  # no state; `update` only reports its metrics
    update_every: ClassVar[int] = 1

    def _all_tables(self):
        return _tables(
            self.schedule,
            self.num_steps,
            self.threshold,
            self.sharpness,
            self.offset,
            self.p2_k,
            self.p2_gamma,
        )

    def tables(self) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """(p (T,), τ, λ_t (T,), weight_t (T,)), float64 numpy (cached, read-only)."""
        return self._all_tables()[:4]

    def accel_steps(self) -> np.ndarray:
        """(T,) bool: the steps of the acceleration area, g_t > threshold (read-only)."""
        return self._all_tables()[4]

    def init_state(self, key: Any = None, x0_shape: Any = None) -> dict:
        return {}

    def dual_step(self, t: jax.Array) -> jax.Array:
        """t' = τ − t for t < τ, t − τ otherwise (clipped to T − 1)."""
        tau = self.tables()[1]
        return jnp.minimum(jnp.where(t < tau, tau - t, t - tau), self.num_steps - 1)

    def dual_probs(self) -> np.ndarray:
        """The distribution of the dual t' of t ~ p (T,)."""
        p, tau = self.tables()[:2]
        t = np.arange(self.num_steps)
        dual = np.minimum(np.where(t < tau, tau - t, t - tau), self.num_steps - 1)
        return np.bincount(dual, weights=p, minlength=self.num_steps)

    def draw_steps(self, key: jax.Array, n: int) -> jax.Array:
        """(n,) int32 steps: m = n//2 + 1 draws from p then their duals (first n), or n draws."""
        p = self.tables()[0]
        m = n // 2 + 1 if self.dual else n
        t = jax.random.categorical(key, jnp.log(jnp.asarray(p, jnp.float32)), shape=(m,))
        if self.dual:
            t = jnp.concatenate([t, self.dual_step(t)])[:n]
        return t.astype(jnp.int32)

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        """(λ_t, P2 weight_t) of `draw_steps`."""
        _, _, lam, weight = self.tables()
        t = self.draw_steps(key, n)
        dtype = jnp.result_type(float)
        return jnp.asarray(lam, dtype)[t], jnp.asarray(weight, dtype)[t]

    def draw(
        self, key: jax.Array, n: int, state: Any = None, x0: Any = None
    ) -> tuple[jax.Array, jax.Array, dict]:
        """(lam, weight, {}): `sample` in the `draw` signature (x0 unused)."""
        lam, weight = self.sample(key, n, state)
        return lam, weight, {}

    def refresh(self, state: dict, ctx: SamplerContext) -> dict:
        """Nothing to learn: the state ({}) as it is."""
        return state

    def update(self, state: dict, ctx: SamplerContext) -> tuple[dict, dict]:
        """(state, metrics) every step: tau, accel_steps, accel_mass (fixed), mean_lam and
        max_weight of the batch (ctx.lam, the P2 weight at it)."""
        p, tau, _, _, accel = self._all_tables()
        lam = jnp.asarray(ctx.lam)
        log_k_snr = lam if self.p2_k == 0 else jnp.logaddexp(math.log(self.p2_k), lam)
        metrics = {
            "tau": jnp.float32(tau),
            "accel_steps": jnp.float32(accel.sum()),
            "accel_mass": jnp.float32(p[accel].sum()),
            "mean_lam": jnp.mean(lam),
            "max_weight": jnp.max(jnp.exp(-self.p2_gamma * log_k_snr)),
        }
        return state, metrics


@register_timestep_sampler("speed")
def _make_speed(schedule: Schedule, **params: Any) -> SpeedSampler:
    name = "speed"
    check_unknown(
        name, params, ("num_steps", "threshold", "sharpness", "offset", "dual", "p2_k", "p2_gamma")
    )
    dual = params.get("dual", True)
    if not isinstance(dual, bool):
        raise ValueError(f"timestep sampler {name!r}: dual must be True or False, got {dual!r}")
    return SpeedSampler(
        schedule=schedule,
        num_steps=check_int(name, "num_steps", params.get("num_steps", 1000), 2),
        threshold=check_float(name, "threshold", params.get("threshold", 1e-4), -np.inf),
        sharpness=check_float(name, "sharpness", params.get("sharpness", 1e6), 0.0, strict=True),
        offset=check_float(name, "offset", params.get("offset", 1.5), 1.0, strict=True),
        dual=dual,
        p2_k=check_float(name, "p2_k", params.get("p2_k", 1.0), 0.0),
        p2_gamma=check_float(name, "p2_gamma", params.get("p2_gamma", 1.0), 0.0),
    )
