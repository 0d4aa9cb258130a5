"""`noise.timesteps="adaptive"`: Kim et al. 2024's learned timestep sampler (arXiv 2411.09998).

A policy π_φ(u | x0) = Beta(α(x0), β(x0)) (`adaptive_policy`) draws u per example;
`version="continuous"` (default) uses u as the schedule's t (λ = schedule.logsnr(u));
`version="discrete"` rounds it to one of T = num_levels steps, k = round(u·(T−1)), at the
level grid's λ_k (below).

Level grid. Uniform in the schedule's t on [t_top, 1], t_top = t(lam_max): K + 1 points
t_0 = t_top < … < t_K = 1 (continuous, K = num_levels intervals) or the T points
t_0 = t_top < … < t_{T−1} = 1 (discrete, the T steps). `lam_max=None` (default) is the
schedule's λ at t = 1/K, so the discrete steps are t = (k + 1)/T; a lam_max at or above λ(0)
gives t_top = 0, the grid up to the schedule's clipped end (λ = 20 for cosine). Why not
t_top = 0: the first term's coefficient is ½·(SNR(λ_0) − SNR(λ_1)), and with λ_0 = 20 (the
clip) it is ~3.5e8 bits per unit x0-MSE against a median of 0.035, so one level held 99.99%
(continuous) or 98.8% (discrete) of the bound of an exact Gaussian denoiser; VDM's λ_max =
13.3 still gives 92% (continuous, K = 128); λ(1/K) gives at most 29% / 19% (docs/noise.md).

Every `update_every` (f_S) steps, after the model update θ → θ':
1. Levels: the K levels λ_1 > … > λ_K of the grid (continuous: k = 1..K; discrete: the T
   steps k = 0..T−1). The discrete-time variational bound term of level k ≥ 1 (VDM's T-step
   loss; on the step grid exactly DDPM's L_{k−1} with the posterior variance σ̃²) is
       L_k(x0, ε) = ½·(SNR(λ_{k−1}) − SNR(λ_k))·mean_dims (x̂0(z_{λ_k}) − x0)² / ln 2
   in bits per dimension (the official code's unit). The discrete step 0 has the official
   code's t = 0 term, the Gaussian KL between q = N(x0, σ̃²_1) and p = N(x̂0, σ̃²_1) with the
   "clipped" variance σ̃²_1 = σ²(λ_0)·(1 − SNR(λ_1)/SNR(λ_0)) (the posterior variance of step 1):
       L_0 = mean_dims (x̂0(z_{λ_0}) − x0)² / (2·σ̃²_1·ln 2).
   The continuous grid has no such term (VDM's T-step loss has only the K interval terms).
   (The official code uses the "fixed-large" variance β_t for k ≥ 1, which scales each term
   by (1 − ᾱ_{t−1})/(1 − ᾱ_t) and adds a θ-independent constant that cancels in Δ. The SNRs
   are the unscaled schedule's: with input scaling b the bound of the scaled process is b²
   times this, a constant factor.)
2. Δ = L(θ) − L(θ') on the same (x0, ε): for all K levels on ONE example of the batch
   (chosen with ctx.key) and for every example of the batch at the |S| selected levels.
3. The row (Δ_1..Δ_K, ΣΔ) enters a ring queue of `queue_size` rows; once it holds ≥ 3 rows,
   S is re-selected as the |S| levels whose Δ best predicts ΣΔ by a univariate F-test
   (`f_regression_scores`, `select_k_best`: scikit-learn's SelectKBest(f_regression) over the
   filled rows). With < 3 rows every F is 0 and sklearn's tie-break would return the last
   |S| levels (which the official code does at its second update); we keep S instead.
   S starts at |S| levels evenly spread over the grid (the official code starts at 0, 1, 2).
4. REINFORCE on the batch of this step: r_i = Σ_{s∈S_old} Δ^s(x_i) + c·H[Beta(α_i, β_i)],
   loss = −mean_i log Beta(u_i; α_i, β_i)·r_i with u_i from `draw`'s info, Adam(policy_lr)
   after global-norm clipping (grad_clip). As in the official code, Δ is a constant but the
   entropy term keeps its gradient; in expectation over u it adds c·H² to the loss, which
   pulls π toward U(0, 1) (H = 0 is the maximum entropy on [0, 1]).

The objective changes with π (no importance weight: weight = 1), as in the paper.
Cost of one update: 2 forward passes (θ and θ') over K + B·|S| inputs, plus the policy's
backward pass on B inputs; the policy forward pass runs in every step's `draw`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.noise import adaptive_policy as policy
from jaxdiff.noise.schedules import Schedule
from jaxdiff.noise.timesteps import (
    SamplerContext,
    check_float,
    check_int,
    check_unknown,
    register_timestep_sampler,
)

VERSIONS = ("continuous", "discrete")
DEFAULT_LEVELS = {"continuous": 128, "discrete": 1000}
MIN_QUEUE_ROWS = 3  # an F-test needs n − 2 ≥ 1 degrees of freedom


def f_regression_scores(x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """F-statistics of scikit-learn's `f_regression(x[mask], y[mask])` (center=True,
    force_finite=True), with static shapes: rows where `mask` is False are ignored.

    x: (R, F), y: (R,). With n valid rows and r_j the Pearson correlation of column j with y,
    F_j = r_j²/(1 − r_j²)·(n − 2); constant columns or constant y give r = 0 (F = 0), n ≤ 2
    gives F = 0, and r_j² = 1 with n > 2 gives the dtype's largest finite value.
    """
    m = jnp.ones(x.shape[:1], x.dtype) if mask is None else jnp.asarray(mask, x.dtype)
    n = jnp.sum(m)
    safe_n = jnp.maximum(n, 1.0)
    xc = (x - jnp.sum(m[:, None] * x, 0) / safe_n) * m[:, None]
    yc = (y - jnp.sum(m * y) / safe_n) * m
    x_norm, y_norm = jnp.sqrt(jnp.sum(xc * xc, 0)), jnp.sqrt(jnp.sum(yc * yc))
    defined = (x_norm > 0) & (y_norm > 0)
    r = jnp.where(defined, (yc @ xc) / jnp.where(defined, x_norm * y_norm, 1.0), 0.0)
    r2 = r * r
    dof = n - 2.0
    denom = 1.0 - r2
    f = r2 / jnp.where(denom == 0, 1.0, denom) * dof
    f = jnp.where(denom == 0, jnp.finfo(x.dtype).max, f)
    f = jnp.where(dof > 0, f, 0.0)
    return jnp.where(jnp.isnan(f), 0.0, f)


@functools.lru_cache(maxsize=64)
def _grid_t(schedule: Schedule, version: str, num_levels: int, lam_max: float | None):
    """The level grid's t (float64, read-only): K + 1 points (continuous) or the K steps
    (discrete), uniform on [t_top, 1]; t_top = 1/K, or t(lam_max) (0 if lam_max ≥ λ(0))."""
    k = num_levels
    if lam_max is None:
        t_top = 1.0 / k
    elif lam_max >= schedule.logsnr_range[1]:
        t_top = 0.0
    else:
        # Eagerly, in float64, even when first called while a train step is being traced.
        with jax.ensure_compile_time_eval(), jax.enable_x64(True):
            t_top = float(schedule.t_from_logsnr(jnp.asarray(lam_max, jnp.float64)))
    intervals = k if version == "continuous" else k - 1
    t = t_top + np.arange(intervals + 1, dtype=np.float64) * ((1.0 - t_top) / intervals)
    t[-1] = 1.0
    t.setflags(write=False)
    return t


def select_k_best(scores: jax.Array, k: int) -> jax.Array:
    """Sorted indices of the k largest scores; ties go to the larger index, as in
    SelectKBest (stable ascending argsort, last k)."""
    num = scores.shape[0]
    _, rev = jax.lax.top_k(scores[::-1], k)  # top_k prefers lower (reversed) indices on ties
    return jnp.sort(num - 1 - rev).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class AdaptiveSampler:
    """Kim et al. 2024's Beta-policy timestep sampler; see the module docstring.

    State (a dict of arrays, fixed structure): "policy" (params), "opt" (optax Adam state),
    "queue" (queue_size, K + 1) float32, "queue_fill" / "queue_pos" int32, "selected" (|S|,)
    int32 indices into the level grid, "num_updates" int32, "last_reward" float32.
    """

    schedule: Schedule
    version: str = "continuous"
    update_every: int = 40
    num_selected: int = 3
    queue_size: int = 20
    policy_lr: float = 1e-2
    entropy_coef: float = 1e-2
    grad_clip: float = 1.0
    num_levels: int = 128
    channels: tuple[int, ...] = (32, 64, 128)
    hidden_width: int = 256
    hidden_depth: int = 2
    pool_size: int = 4
    lam_max: float | None = None

    stateful: ClassVar[bool] = True

    # --- pieces ---------------------------------------------------------------------------
    def optimizer(self) -> optax.GradientTransformation:
        """Global-norm clipping, then Adam(policy_lr) (β = 0.9, 0.999, ε = 1e−8)."""
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), optax.adam(self.policy_lr))

    def grid_t(self) -> np.ndarray:
        """The level grid's t (float64, read-only; see the module docstring): K + 1 points
        t_0 = t_top < … < t_K = 1 (continuous) or the K steps t_0 = t_top < … = 1 (discrete)."""
        return _grid_t(self.schedule, self.version, self.num_levels, self.lam_max)

    def level_t(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_k, t_{k−1}) of the K grid levels (float64, increasing t = decreasing λ); the
        discrete step 0 has t_{k−1} = t_0 (its term is the t = 0 term)."""
        t = self.grid_t()
        if self.version == "discrete":
            return t, np.concatenate([t[:1], t[:-1]])
        return t[1:], t[:-1]

    def levels(self) -> tuple[jax.Array, jax.Array]:
        """(λ_k, bound coefficient c_k) of the grid, each (K,): the VLB term of level k is
        c_k·mean_dims(x̂0 − x0)² in bits per dim, c_k = ½·(SNR(λ_{k−1}) − SNR(λ_k))/ln 2, and
        for the discrete step 0 c_0 = 1/(2·σ̃²_1·ln 2), σ̃²_1 = σ²(λ_0)·(1 − SNR(λ_1)/SNR(λ_0))."""
        dtype = jnp.result_type(float)
        lam_grid = self.schedule.logsnr(jnp.asarray(self.grid_t(), dtype))
        lam, lam_prev = lam_grid[1:], lam_grid[:-1]
        coef = 0.5 * jnp.exp(lam) * jnp.expm1(lam_prev - lam) / math.log(2.0)
        if self.version == "continuous":
            return lam, coef
        # 1/(2σ̃²_1) = ½·(1 + SNR(λ_0))/(1 − e^{λ_1 − λ_0})
        c0 = 0.5 * (1.0 + jnp.exp(lam_grid[0])) / -jnp.expm1(lam_grid[1] - lam_grid[0])
        return lam_grid, jnp.concatenate([(c0 / math.log(2.0))[None], coef])

    def t_top(self) -> float:
        """t of the grid's top level λ_0 (0 when it is the schedule's clipped end)."""
        return float(self.grid_t()[0])

    def lam_of_u(self, u: jax.Array) -> jax.Array:
        """λ of the policy's u: schedule.logsnr(u), or the rounded discrete step's λ_k."""
        if self.version == "discrete":
            step = jnp.round(u * (self.num_levels - 1)).astype(jnp.int32)
            return self.levels()[0][step]
        return self.schedule.logsnr(u)

    def _t_to_u(self, t: jax.Array) -> jax.Array:
        """The policy's u (before rounding) of the schedule's t: t itself (continuous), or
        (t − t_top)/(1 − t_top) (discrete: u·(T−1) is the continuous step index)."""
        if self.version == "continuous":
            return t
        t_top = self.t_top()
        return (t - t_top) / (1.0 - t_top)

    # --- sampler interface ----------------------------------------------------------------
    def init_state(self, key: jax.Array | None = None, x0_shape: Any = None) -> dict:
        """Fresh state; x0_shape is the data batch shape (B, H, W, C) (C sizes the policy)."""
        if key is None or x0_shape is None or len(x0_shape) < 3:
            raise ValueError(
                "timestep sampler 'adaptive': init_state needs key and x0_shape=(B, H, W, C) "
                f"(the policy reads x0); got key={key!r}, x0_shape={x0_shape!r}"
            )
        params = policy.init_policy(
            key,
            int(x0_shape[-1]),
            self.channels,
            self.hidden_width,
            self.hidden_depth,
            self.pool_size,
        )
        k, s = self.num_levels, self.num_selected
        return {
            "policy": params,
            "opt": self.optimizer().init(params),
            "queue": jnp.zeros((self.queue_size, k + 1), jnp.float32),
            "queue_fill": jnp.zeros((), jnp.int32),
            "queue_pos": jnp.zeros((), jnp.int32),
            "selected": jnp.asarray(np.floor((np.arange(s) + 0.5) * k / s), jnp.int32),
            "num_updates": jnp.zeros((), jnp.int32),
            "last_reward": jnp.zeros((), jnp.float32),
        }

    def draw(
        self, key: jax.Array, n: int, state: dict, x0: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, dict]:
        """u_i ~ Beta(α(x0_i), β(x0_i)) clipped to [ε, 1 − ε]; returns (λ, 1,
        {"u", "alpha", "beta"}), all (n,). x0: (n, H, W, C), required."""
        if x0 is None:
            raise ValueError("timestep sampler 'adaptive': draw needs x0 (the policy reads it)")
        if x0.shape[0] != n:
            raise ValueError(f"timestep sampler 'adaptive': x0 has {x0.shape[0]} rows, n={n}")
        a, b = policy.policy_apply(state["policy"], x0, self.pool_size)
        dtype = jnp.result_type(float)
        eps = jnp.finfo(jnp.float32).eps
        u = jnp.clip(jax.random.beta(key, a, b, (n,), dtype), eps, 1.0 - eps)
        lam = self.lam_of_u(u)
        return lam, jnp.ones_like(lam), {"u": u, "alpha": a, "beta": b}

    def sample(self, key: jax.Array, n: int, state: Any = None) -> tuple[jax.Array, jax.Array]:
        raise ValueError("timestep sampler 'adaptive' needs x0: call draw(key, n, state, x0)")

    def density(self, state: dict, lam: jax.Array, x0: jax.Array) -> jax.Array:
        """Batch-averaged density of λ over x0's rows (M,): mean_i Beta(t(λ); α_i, β_i)·p(λ)
        with p the schedule's density; for "discrete" the density before rounding,
        mean_i Beta(u(λ); α_i, β_i)·p(λ)/(1 − t_top) with u = (t − t_top)/(1 − t_top), 0 above
        the grid's top."""
        a, b = policy.policy_apply(state["policy"], x0, self.pool_size)
        u = self._t_to_u(self.schedule.t_from_logsnr(lam))
        inside = u > 0.0
        u = jnp.clip(u, 1e-7, 1.0 - 1e-7)
        log_pdf = policy.beta_log_prob(u[None, :], a[:, None], b[:, None])
        stretch = 1.0 if self.version == "continuous" else 1.0 - self.t_top()
        p = self.schedule.density(lam) / stretch
        return jnp.where(inside, jnp.mean(jnp.exp(log_pdf), 0) * p, 0.0)

    def cdf(self, state: dict, t: jax.Array, x0: jax.Array) -> jax.Array:
        """Batch-averaged P(t_u ≤ t) (M,) for t ∈ [0, 1] (the schedule's t; for "discrete"
        t_u is the unrounded step's t, t_top + u·(1 − t_top))."""
        a, b = policy.policy_apply(state["policy"], x0, self.pool_size)
        u = jnp.clip(self._t_to_u(jnp.asarray(t)), 0.0, 1.0)
        return jnp.mean(policy.beta_cdf(u[None, :], a[:, None], b[:, None]), 0)

    # --- update ---------------------------------------------------------------------------
    def _deltas(self, selected: jax.Array, ctx: SamplerContext) -> tuple[jax.Array, jax.Array]:
        """Δ on every level for one example (K,) and at S for the batch (B, |S|)."""
        x0 = ctx.x0
        n, k, s = x0.shape[0], self.num_levels, self.num_selected
        lam, coef = self.levels()
        k_idx, k_eps = jax.random.split(ctx.key)
        i = jax.random.randint(k_idx, (), 0, n)
        one = jax.lax.dynamic_index_in_dim(x0, i, keepdims=False)
        xs = jnp.concatenate([jnp.broadcast_to(one, (k, *x0.shape[1:])), jnp.repeat(x0, s, 0)])
        lams = jnp.concatenate([lam, jnp.tile(lam[selected], n)])
        coefs = jnp.concatenate([coef, jnp.tile(coef[selected], n)])
        ys = None
        if ctx.labels is not None:
            y_one = jax.lax.dynamic_index_in_dim(ctx.labels, i, keepdims=False)
            ys = jnp.concatenate([jnp.broadcast_to(y_one, (k,)), jnp.repeat(ctx.labels, s)])
        eps = jax.random.normal(k_eps, xs.shape, xs.dtype)
        before = ctx.x0_error(ctx.params_before, xs, eps, lams, ys)
        after = ctx.x0_error(ctx.params_after, xs, eps, lams, ys)
        delta = (coefs * (before - after)).astype(jnp.float32)
        return delta[:k], delta[k:].reshape(n, s)

    def _push_and_select(self, state: dict, delta_all: jax.Array) -> dict:
        row = jnp.concatenate([delta_all, jnp.sum(delta_all, keepdims=True)])
        queue = state["queue"].at[state["queue_pos"]].set(row)
        fill = jnp.minimum(state["queue_fill"] + 1, self.queue_size)
        mask = jnp.arange(self.queue_size) < fill
        scores = f_regression_scores(queue[:, :-1], queue[:, -1], mask)
        chosen = select_k_best(scores, self.num_selected)
        selected = jnp.where(fill >= MIN_QUEUE_ROWS, chosen, state["selected"])
        pos = (state["queue_pos"] + 1) % self.queue_size
        return {**state, "queue": queue, "queue_fill": fill, "queue_pos": pos, "selected": selected}

    def _policy_step(self, state: dict, ctx: SamplerContext, delta_sel: jax.Array):
        gain = jax.lax.stop_gradient(jnp.sum(delta_sel, 1))
        u = ctx.info["u"].astype(jnp.float32)

        def loss_fn(params):
            a, b = policy.policy_apply(params, ctx.x0, self.pool_size)
            reward = gain + self.entropy_coef * policy.beta_entropy(a, b)
            return -jnp.mean(policy.beta_log_prob(u, a, b) * reward), jnp.mean(reward)

        grads, reward = jax.grad(loss_fn, has_aux=True)(state["policy"])
        updates, opt = self.optimizer().update(grads, state["opt"], state["policy"])
        params = optax.apply_updates(state["policy"], updates)
        return params, opt, reward

    def refresh(self, state: dict, ctx: SamplerContext) -> dict:
        """One sampler update (steps 1–4 of the module docstring), unconditionally."""
        delta_all, delta_sel = self._deltas(state["selected"], ctx)
        params, opt, reward = self._policy_step(state, ctx, delta_sel)
        state = self._push_and_select(state, delta_all)
        return {
            **state,
            "policy": params,
            "opt": opt,
            "num_updates": state["num_updates"] + 1,
            "last_reward": reward.astype(jnp.float32),
        }

    def update(
        self, state: dict, ctx: SamplerContext, due: bool | None = None
    ) -> tuple[dict, dict]:
        """`refresh` on steps with ctx.step % update_every == 0, else the same state.

        due: None decides on the device (a lax.cond on ctx.step); a Python bool is the
        caller's decision (no cond: the step is compiled with or without the refresh).
        Metrics (every step): entropy (batch mean of H[Beta]), mean_lam, selected_lam (|S|,),
        reward_mean (of the last update), updated (1.0 / 0.0)."""
        if due is None:
            due = jnp.asarray(ctx.step) % self.update_every == 0
            state = jax.lax.cond(due, lambda: self.refresh(state, ctx), lambda: state)
        elif due:
            state = self.refresh(state, ctx)
        due = jnp.asarray(due)
        if "alpha" in ctx.info and "beta" in ctx.info:
            a, b = ctx.info["alpha"], ctx.info["beta"]
        else:
            a, b = policy.policy_apply(state["policy"], ctx.x0, self.pool_size)
        lam, _ = self.levels()
        metrics = {
            "entropy": jnp.mean(policy.beta_entropy(a, b)),
            "mean_lam": jnp.mean(ctx.lam),
            "selected_lam": lam[state["selected"]],
            "reward_mean": state["last_reward"],
            "updated": due.astype(jnp.float32),
        }
        return state, metrics


_PARAMS = (
    "version",
    "update_every",
    "num_selected",
    "queue_size",
    "policy_lr",
    "entropy_coef",
    "grad_clip",
    "num_levels",
    "channels",
    "hidden_width",
    "hidden_depth",
    "pool_size",
    "lam_max",
)


@register_timestep_sampler("adaptive")
def _make_adaptive(schedule: Schedule, **params: Any) -> AdaptiveSampler:
    """Validate the parameters (ValueError naming the field) and build the sampler."""
    name = "adaptive"
    check_unknown(name, params, _PARAMS)
    version = params.get("version", "continuous")
    if version not in VERSIONS:
        raise ValueError(
            f"timestep sampler {name!r}: version must be one of {list(VERSIONS)}, got {version!r}"
        )
    levels = params.get("num_levels", DEFAULT_LEVELS[version])
    levels = check_int(name, "num_levels", levels, 2)
    channels = params.get("channels", (32, 64, 128))
    if not isinstance(channels, list | tuple) or not channels:
        raise ValueError(
            f"timestep sampler {name!r}: channels must be a non-empty list of "
            f"integers >= 1, got {channels!r}"
        )
    return AdaptiveSampler(
        schedule=schedule,
        version=version,
        update_every=check_int(name, "update_every", params.get("update_every", 40), 1),
        num_selected=_num_selected(params.get("num_selected", 3), levels),
        queue_size=check_int(name, "queue_size", params.get("queue_size", 20), MIN_QUEUE_ROWS),
        policy_lr=check_float(name, "policy_lr", params.get("policy_lr", 1e-2), 0.0, strict=True),
        entropy_coef=check_float(name, "entropy_coef", params.get("entropy_coef", 1e-2), 0.0),
        grad_clip=check_float(name, "grad_clip", params.get("grad_clip", 1.0), 0.0, strict=True),
        num_levels=levels,
        channels=tuple(check_int(name, "channels", c, 1) for c in channels),
        hidden_width=check_int(name, "hidden_width", params.get("hidden_width", 256), 1),
        hidden_depth=check_int(name, "hidden_depth", params.get("hidden_depth", 2), 1),
        pool_size=check_int(name, "pool_size", params.get("pool_size", 4), 1),
        lam_max=_lam_max(params.get("lam_max"), schedule),
    )


def _lam_max(value: Any, schedule: Schedule) -> float | None:
    """None (the schedule's λ at t = 1/K) or a finite float above the schedule's λ(1)."""
    if value is None:
        return None
    lo = schedule.logsnr_range[0]
    return check_float("adaptive", "lam_max", value, lo, strict=True)


def _num_selected(value: Any, levels: int) -> int:
    value = check_int("adaptive", "num_selected", value, 1)
    if value > levels:
        raise ValueError(
            f"timestep sampler 'adaptive': num_selected must be <= num_levels "
            f"({levels}), got {value}"
        )
    return value
