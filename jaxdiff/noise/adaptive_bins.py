"""`noise.timesteps="adaptive_bins"`: VDM++'s adaptive noise schedule (Kingma & Gao 2023).

For an objective J = ∫ g(λ) dλ with g ≥ 0 the integrand over λ, the importance-sampling
proposal q(λ) ∝ g(λ) has zero variance over λ; VDM++ keeps a histogram of the loss over λ
and samples from it. Here q is a mixture of a histogram and the training schedule p_s:

    q(λ) = m·p_s(λ) + (1 − m)·π_b/width   for λ in bin b of (lam_min, lam_max),
    q(λ) = m·p_s(λ)                         outside (including the clipped ends λ = ±20),

with `num_bins` equal bins over (lam_min, lam_max) and the mixture weight m = `mix` > 0 keeping
q > 0 wherever p_s > 0 (so every weight is ≤ 1/m). Each example gets the importance weight
s = p_s(λ)/q(λ) (1/m at the clipped ends, which are point masses of both p_s and q), so
E_q[s·f(λ)] = E_{p_s}[f(λ)]: the objective is the configured one, whatever the weight mode;
with weight_mode="density" (loss weight w/p_s) the per-example loss becomes w·MSE/q and the
sampler only moves compute.

State: "ema" (num_bins,) and "count" (num_bins,) float32. `update` (every step) bins the
batch by λ and tracks, per bin, an exponential moving average of g_i = loss_i·q(λ_i), the
objective's integrand over λ at the drawn point (loss_i already includes s_i, so
g = MSE·loss_weight·p_s: w·MSE in "density" mode, p_s·w·MSE in "sample" mode). Each sample
counts as one EMA step: a bin with c samples this step moves by decay^c toward their mean,
and the EMA is bias-corrected by 1 − decay^count (so no initial value enters). Then
π_b ∝ H_b (the bias-corrected EMA; equal widths), and a bin never seen uses the schedule's
shape at the average level of the seen bins, H_b = p_s(center_b)·Σ_seen H / Σ_seen p_s(center):
before any data q is (a histogram of) the schedule.

Our choices (the paper gives no numbers we could confirm): 100 bins over (−20, 20), decay
0.99 per sample, mix 0.1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxdiff.noise.schedules import Schedule
from jaxdiff.noise.timesteps import (
    SamplerContext,
    check_float,
    check_int,
    check_unknown,
    register_timestep_sampler,
)


@dataclasses.dataclass(frozen=True)
class AdaptiveBinsSampler:
    """Histogram-over-λ proposal mixed with the schedule; see the module docstring."""

    schedule: Schedule
    num_bins: int = 100
    lam_min: float = -20.0
    lam_max: float = 20.0
    decay: float = 0.99
    mix: float = 0.1

    stateful: ClassVar[bool] = True
    update_every: ClassVar[int] = 1

    @property
    def width(self) -> float:
        return (self.lam_max - self.lam_min) / self.num_bins

    def centers(self) -> jax.Array:
        """(num_bins,) bin centres."""
        return self.lam_min + (jnp.arange(self.num_bins) + 0.5) * self.width

    def init_state(self, key: Any = None, x0_shape: Any = None) -> dict:
        zeros = jnp.zeros((self.num_bins,), jnp.float32)
        return {"ema": zeros, "count": zeros}

    def bin_probs(self, state: dict) -> jax.Array:
        """π (num_bins,), the histogram's bin masses (sum 1)."""
        count = state["count"]
        seen = count > 0
        debias = 1.0 - jnp.power(jnp.float32(self.decay), jnp.maximum(count, 1.0))
        h = jnp.where(seen, state["ema"] / debias, 0.0)
        p_c = self.schedule.density(self.centers()).astype(jnp.float32)
        ratio = jnp.sum(h) / jnp.maximum(jnp.sum(jnp.where(seen, p_c, 0.0)), 1e-30)
        ratio = jnp.where(jnp.any(seen), ratio, 1.0)
        h = jnp.where(seen, h, ratio * p_c)
        total = jnp.sum(h)
        fallback = p_c / jnp.sum(p_c)
        return jnp.where(total > 0, h / jnp.where(total > 0, total, 1.0), fallback)

    def _bin_index(self, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
        inside = (lam > self.lam_min) & (lam < self.lam_max)
        idx = jnp.floor((lam - self.lam_min) / self.width).astype(jnp.int32)
        return jnp.clip(idx, 0, self.num_bins - 1), inside

    def _parts(self, state: dict, lam: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(p_s(λ), histogram density h(λ), inside)."""
        idx, inside = self._bin_index(lam)
        hist = jnp.where(inside, self.bin_probs(state)[idx] / self.width, 0.0)
        return self.schedule.density(lam), hist.astype(lam.dtype), inside

    def density(self, state: dict, lam: jax.Array, x0: Any = None) -> jax.Array:
        """q(λ) (the continuous part; the clipped ends carry mix × the schedule's end masses)."""
        p_s, hist, _ = self._parts(state, jnp.asarray(lam))
        return self.mix * p_s + (1.0 - self.mix) * hist

    def weight(self, state: dict, lam: jax.Array) -> jax.Array:
        """s = p_s(λ)/q(λ) = 1/(m + (1 − m)·h(λ)/p_s(λ)) inside, 1/m outside."""
        p_s, hist, inside = self._parts(state, lam)
        ratio = jnp.where(hist > 0, hist / jnp.where(p_s > 0, p_s, 1.0), 0.0)
        ratio = jnp.where((hist > 0) & (p_s <= 0), jnp.inf, ratio)
        s = 1.0 / (self.mix + (1.0 - self.mix) * ratio)
        return jnp.where(inside, s, 1.0 / self.mix)

    def draw(
        self, key: jax.Array, n: int, state: dict, x0: Any = None
    ) -> tuple[jax.Array, jax.Array, dict]:
        """λ from q (a schedule draw with probability mix, else a bin ~ π and λ uniform in it),
        weight p_s/q; info {}."""
        k_c, k_t, k_b, k_u = jax.random.split(key, 4)
        dtype = jnp.result_type(float)
        from_schedule = jax.random.uniform(k_c, (n,), dtype) < self.mix
        lam_s = self.schedule.logsnr(jax.random.uniform(k_t, (n,), dtype))
        b = jax.random.categorical(k_b, jnp.log(self.bin_probs(state)), shape=(n,))
        v = jax.random.uniform(k_u, (n,), dtype, minval=jnp.finfo(dtype).eps)
        lam_h = self.lam_min + (b.astype(dtype) + v) * self.width
        lam_h = jnp.clip(
            lam_h,
            jnp.nextafter(jnp.asarray(self.lam_min, dtype), jnp.inf),
            jnp.nextafter(jnp.asarray(self.lam_max, dtype), -jnp.inf),
        )
        lam = jnp.where(from_schedule, lam_s, lam_h)
        return lam, self.weight(state, lam).astype(dtype), {}

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        state = self.init_state() if state is None else state
        lam, weight, _ = self.draw(key, n, state)
        return lam, weight

    def refresh(self, state: dict, ctx: SamplerContext) -> dict:
        """Fold the batch's g_i = loss_i·q(λ_i) into the per-bin EMAs."""
        lam = jnp.asarray(ctx.lam)
        g = (ctx.loss_per_example * self.density(state, lam)).astype(jnp.float32)
        idx, inside = self._bin_index(lam)
        valid = inside & jnp.isfinite(g)
        onehot = jax.nn.one_hot(idx, self.num_bins, dtype=jnp.float32) * valid[:, None]
        c = jnp.sum(onehot, 0)
        mean = (onehot.T @ jnp.where(valid, jnp.maximum(g, 0.0), 0.0)) / jnp.maximum(c, 1.0)
        d = jnp.power(jnp.float32(self.decay), c)
        return {"ema": d * state["ema"] + (1.0 - d) * mean, "count": state["count"] + c}

    def update(self, state: dict, ctx: SamplerContext) -> tuple[dict, dict]:
        """`refresh` (every step); metrics: entropy (of π, nats), mean_lam, max_weight,
        bins_seen."""
        weights = self.weight(state, jnp.asarray(ctx.lam))
        state = self.refresh(state, ctx)
        pi = self.bin_probs(state)
        metrics = {
            "entropy": -jnp.sum(jnp.where(pi > 0, pi * jnp.log(jnp.where(pi > 0, pi, 1.0)), 0.0)),
            "mean_lam": jnp.mean(ctx.lam),
            "max_weight": jnp.max(weights),
            "bins_seen": jnp.sum(state["count"] > 0).astype(jnp.float32),
        }
        return state, metrics


@register_timestep_sampler("adaptive_bins")
def _make_adaptive_bins(schedule: Schedule, **params: Any) -> AdaptiveBinsSampler:
    name = "adaptive_bins"
    check_unknown(name, params, ("num_bins", "lam_min", "lam_max", "decay", "mix"))
    lam_min = check_float(name, "lam_min", params.get("lam_min", -20.0), -float("inf"))
    lam_max = check_float(name, "lam_max", params.get("lam_max", 20.0), lam_min, strict=True)
    return AdaptiveBinsSampler(
        schedule=schedule,
        num_bins=check_int(name, "num_bins", params.get("num_bins", 100), 1),
        lam_min=lam_min,
        lam_max=lam_max,
        decay=_decay(params.get("decay", 0.99)),
        mix=check_float(name, "mix", params.get("mix", 0.1), 0.0, strict=True, maximum=1.0),
    )


def _decay(value: Any) -> float:
    value = check_float("adaptive_bins", "decay", value, 0.0, maximum=1.0)
    if value >= 1.0:
        raise ValueError(f"timestep sampler 'adaptive_bins': decay must be < 1, got {value}")
    return value
