"""DDPM, DDIM and EDM-Heun samplers over any inference schedule, in λ-parameterisation.

Spaces and input scaling (Chen 2023, arXiv 2301.10972, Algorithms 2 and 3)
--------------------------------------------------------------------------
With input scale ``b`` the training corruption is ``z = α·b·x0 + σ·ε`` with
``α² = sigmoid(λ)``, ``σ² = sigmoid(−λ)`` and λ the schedule's logSNR. The sampler iterates
this unnormalised state ``z`` (Chen's ``x_t``), a variance-preserving process on the scaled
data ``b·x0`` with logSNR λ. Dividing by ``c(λ) = sqrt(b²α² + σ²) = sqrt((b²−1)γ + 1)``
gives ``x̃ = z / c``, which is exactly a VP process on the *unscaled* data ``x0`` with
logSNR ``λ_eff = λ + 2·log b``.

At every evaluation the network gets

* noise level ``λ_eff = λ + 2·log b``, shape (B,);
* input ``x̃ = z / c(λ)`` if ``normalize_input`` else ``z``;

and its prediction (in ``target`` space) is read as a target of the VP process ``x̃`` at
``λ_eff`` on unscaled ``x0`` (``x0``-target = ``x0``, ``v = α_eff·ε − σ_eff·x0``,
``flow = ε − x0``; ``eps`` is the same in every reading). It is turned into ``x̂0`` and
``ε̂`` with ``jaxdiff.noise.convert(pred, target, ..., x̃, λ_eff)``. Samples are ``x̂0``
in data units (the final ``z`` divided by ``b``).

The time grid is ``t_i = linspace(t_start, t_end, steps + 1)``, ``λ_i = schedule.logsnr(t_i)``
(the inference schedule, free to differ from the training one). Steps ``0 … steps−2`` move
``λ_i → λ_{i+1}`` with the method's rule; the last step returns the denoised ``x̂0`` of
the state at ``λ_{steps−1}`` (DDIM/DDPM to γ = 1, EDM's final Euler step to σ = 0).
The start state is ``z ~ N(0, I)`` (exact as λ(t_start) → −∞), or ``x_init``.
Instead of a schedule, an explicit grid ``lams`` of the ``steps`` evaluation levels may be
given (e.g. ``respace.respaced_logsnr("250")``, the official DiT protocol).

Learned variance (Nichol & Dhariwal 2021, "learned range"): with ``variance="learned"`` the
network returns 2C channels, the prediction then ``v ∈ [−1, 1]``, and the DDPM step variance
is ``exp(f·log β + (1 − f)·log β̃)``, ``f = (v + 1)/2``, between the step's "large" variance
``β = 1 − γ/γ_next`` and its posterior ("small") variance ``β̃ = σ²_next/σ²·β``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from jaxdiff import noise

TARGETS = noise.TARGETS
VARIANCES = ("small", "large", "learned")

# A step rule: (z, predict, lam, lam_next, key, opts) -> (z_next, y0_hat), see `_ddpm_rule`.
StepRule = Callable[..., tuple[jax.Array, jax.Array]]
_RULES: dict[str, StepRule] = {}
_EVALS_PER_STEP: dict[str, int] = {}


def register(name: str, evals_per_step: int = 1) -> Callable[[StepRule], StepRule]:
    """Registers a step rule under ``name``; duplicate names raise ``ValueError``.

    A rule is ``rule(z, predict, lam, lam_next, key, opts) -> (z_next, y0_hat)``: z the
    state (VP on b·x0 at the schedule's λ, scalar), ``predict(z, lam) -> (ŷ0, ε̂)`` one
    network evaluation, opts holds "eta", "variance", "constrain" (apply to new noise
    draws for sharding) and "predict_with_variance" (``-> (ŷ0, ε̂, v)`` when
    ``variance == "learned"``). ``evals_per_step`` counts its ``predict`` calls.
    """

    def wrap(rule: StepRule) -> StepRule:
        if name in _RULES:
            raise ValueError(f"sampler {name!r} is already registered")
        _RULES[name] = rule
        _EVALS_PER_STEP[name] = evals_per_step
        return rule

    return wrap


def list_samplers() -> list[str]:
    """Names of the registered samplers."""
    return sorted(_RULES)


def get_sampler(name: str) -> Callable[..., jax.Array]:
    """``sample`` with ``method=name`` bound; unknown names raise ``ValueError``."""
    if name not in _RULES:
        raise ValueError(f"unknown sampler {name!r}; known: {list_samplers()}")
    return functools.partial(sample, method=name)


def num_evaluations(method: str, steps: int) -> int:
    """Network evaluations of ``steps`` steps (Heun: 2·(steps − 1) + 1, EDM's 35 for 18)."""
    if method not in _RULES:
        raise ValueError(f"unknown sampler {method!r}; known: {list_samplers()}")
    return _EVALS_PER_STEP[method] * (steps - 1) + 1


# ----------------------------------------------------------------------------- coefficients


def _alpha_sigma2(lam: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(α², σ²) = (sigmoid(λ), sigmoid(−λ))."""
    return jax.nn.sigmoid(lam), jax.nn.sigmoid(-lam)


def _signal_ratio2(lam: jax.Array, lam_next: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a, 1 − a) with a = α²/α²_next = γ_now/γ_next clipped to [0, 1] (Chen 2023 Alg. 3).

    1 − a = −expm1(log γ_now − log γ_next), accurate for small steps.
    """
    log_a = jnp.minimum(jax.nn.log_sigmoid(lam) - jax.nn.log_sigmoid(lam_next), 0.0)
    return jnp.exp(log_a), -jnp.expm1(log_a)


def ddpm_moments(
    z: jax.Array, y0_hat: jax.Array, lam: jax.Array, lam_next: jax.Array, variance: str
) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of one ancestral step z(λ) → z(λ_next), λ < λ_next.

    Posterior form of Chen 2023 Algorithm 3 (Ho et al. 2020 eq. 7), with a = γ/γ_next:
    mean = α_next·(1−a)/σ²·ŷ0 + √a·σ²_next/σ²·z, which equals Chen's
    (z − (1−a)/σ·ε̂)/√a when ε̂ = (z − α·ŷ0)/σ. Variance 1−a ("large") or
    σ²_next/σ²·(1−a) ("small", the true posterior variance). Scalars λ; any z shape.
    """
    a, one_minus_a = _signal_ratio2(lam, lam_next)
    _, s2 = _alpha_sigma2(lam)
    a2_next, s2_next = _alpha_sigma2(lam_next)
    mean = jnp.sqrt(a2_next) * one_minus_a / s2 * y0_hat + jnp.sqrt(a) * s2_next / s2 * z
    var = one_minus_a if variance == "large" else s2_next / s2 * one_minus_a
    return mean, var


def learned_range_variance(v: jax.Array, lam: jax.Array, lam_next: jax.Array) -> jax.Array:
    """``exp(f·log β + (1 − f)·log β̃)``, f = (v + 1)/2: the learned-range step variance.

    β = 1 − γ/γ_next ("large"), β̃ = σ²_next/σ²·β (the posterior, "small"); v the network's
    variance output (any shape), λ < λ_next scalars. Computed in logs (log β̃ = log β +
    log σ²_next − log σ²), so tiny variances near λ_max do not underflow.
    """
    _, one_minus_a = _signal_ratio2(lam, lam_next)
    log_large = jnp.log(one_minus_a)
    log_small = log_large + jax.nn.log_sigmoid(-lam_next) - jax.nn.log_sigmoid(-lam)
    frac = (v.astype(jnp.float32) + 1.0) / 2.0
    return jnp.exp(frac * log_large + (1.0 - frac) * log_small)


def ddim_update(
    y0_hat: jax.Array,
    eps_hat: jax.Array,
    lam: jax.Array,
    lam_next: jax.Array,
    noise_draw: jax.Array | None,
    eta: float,
) -> jax.Array:
    """DDIM(η) (Song et al. 2021 eq. 12, 16): α_n·ŷ0 + sqrt(σ_n² − s²)·ε̂ + s·ξ.

    s = η·(σ_n/σ)·sqrt(1 − α²/α_n²); η = 0 is the deterministic probability-flow
    discretisation, η = 1 equals DDPM with the "small" variance.
    """
    a2_next, s2_next = _alpha_sigma2(lam_next)
    _, s2 = _alpha_sigma2(lam)
    var = eta**2 * s2_next / s2 * _signal_ratio2(lam, lam_next)[1]
    z_next = jnp.sqrt(a2_next) * y0_hat + jnp.sqrt(jnp.maximum(s2_next - var, 0.0)) * eps_hat
    if eta > 0.0:
        z_next = z_next + jnp.sqrt(var) * noise_draw
    return z_next


def heun_update(
    z: jax.Array,
    eps_hat: jax.Array,
    eps_hat_next: jax.Array | None,
    lam: jax.Array,
    lam_next: jax.Array,
) -> jax.Array:
    """One EDM step (Karras et al. 2022 Algorithm 1) in VP coordinates.

    EDM's state is x = z/α with noise σ_E = σ/α = e^{−λ/2}; its ODE is dx/dσ_E = (x − D)/σ_E
    = ε̂. Euler (``eps_hat_next`` None): x' = x + (σ_E' − σ_E)·ε̂, which is DDIM(η = 0);
    Heun: x' = x + (σ_E' − σ_E)·(ε̂ + ε̂')/2, ε̂' evaluated at the Euler point. Returned as
    z' = α'·x' = (α'/α)·z + (σ' − (α'/α)·σ)·ε̄. Scalars λ; any z shape.
    """
    ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(lam_next) - jax.nn.log_sigmoid(lam)))
    h = jnp.sqrt(jax.nn.sigmoid(-lam_next)) - ratio * jnp.sqrt(jax.nn.sigmoid(-lam))
    slope = eps_hat if eps_hat_next is None else 0.5 * (eps_hat + eps_hat_next)
    return ratio * z + h * slope


# ----------------------------------------------------------------------------- step rules


@register("ddpm")
def _ddpm_rule(z, predict, lam, lam_next, key, opts):
    """Ancestral DDPM step (Chen 2023 Algorithm 3); learned-range variance if asked."""
    if opts["variance"] == "learned":
        y0_hat, _, v = opts["predict_with_variance"](z, lam)
        mean, _ = ddpm_moments(z, y0_hat, lam, lam_next, "small")
        var = learned_range_variance(v, lam, lam_next)
    else:
        y0_hat, _ = predict(z, lam)
        mean, var = ddpm_moments(z, y0_hat, lam, lam_next, opts["variance"])
    draw = opts["constrain"](jax.random.normal(key, z.shape, z.dtype))
    return mean + jnp.sqrt(var) * draw, y0_hat


@register("ddim")
def _ddim_rule(z, predict, lam, lam_next, key, opts):
    """DDIM(η) step (Song et al. 2021)."""
    y0_hat, eps_hat = predict(z, lam)
    draw = None
    if opts["eta"] > 0.0:
        draw = opts["constrain"](jax.random.normal(key, z.shape, z.dtype))
    return ddim_update(y0_hat, eps_hat, lam, lam_next, draw, opts["eta"]), y0_hat


# EDM's largest noise level; above it the Heun correction is skipped (see `_heun_rule`).
EDM_SIGMA_MAX = 80.0


@register("heun", evals_per_step=2)
def _heun_rule(z, predict, lam, lam_next, key, opts):
    """EDM's Heun step (two network evaluations), see ``heun_update``.

    A step that starts above EDM's σ_max = 80 (λ < −2·log 80 ≈ −8.8, e.g. the first step
    from the cosine schedule's λ(1) = −20, σ_E = e^{10}) keeps the Euler result: the
    trapezoid over [σ_E', e^{10}] weights the slope at σ_E' by half the interval and is far
    off with few steps, while there the ODE is nearly linear in σ_E and Euler is accurate.
    EDM's own grids never start above σ_max, where this is exactly EDM's Algorithm 1.
    """
    del key, opts
    y0_hat, eps_hat = predict(z, lam)
    z_euler = heun_update(z, eps_hat, None, lam, lam_next)
    _, eps_next = predict(z_euler, lam_next)
    z_heun = heun_update(z, eps_hat, eps_next, lam, lam_next)
    return jnp.where(lam >= -2.0 * math.log(EDM_SIGMA_MAX), z_heun, z_euler), y0_hat


# ----------------------------------------------------------------------------- prediction


def _predict(denoise_fn, z, lam, *, target, scale, normalize, clip, learned=False):
    """Network call at state z and schedule logSNR λ (scalar) -> (ŷ0 = b·x̂0, ε̂) in z-space.

    With ``learned`` the network returns 2C channels and the result is (ŷ0, ε̂, v), v the
    last C channels (the learned-range variance output).
    """
    a2, s2 = _alpha_sigma2(lam)
    alpha, sigma = jnp.sqrt(a2), jnp.sqrt(s2)
    lam_eff = noise.effective_logsnr(lam, scale)  # λ + 2·log b
    x_tilde = z / noise.input_norm(lam, scale)  # sqrt((b² − 1)·γ + 1)
    x_in = x_tilde if normalize else z
    pred = denoise_fn(x_in, jnp.full((z.shape[0],), lam_eff, jnp.float32))
    if learned:
        channels = z.shape[-1]
        if pred.shape[-1] != 2 * channels:
            raise ValueError(
                f"variance='learned' needs a network output of 2×{channels} channels (mean, "
                f"variance), got shape {pred.shape}"
            )
        pred, var_out = pred[..., :channels], pred[..., channels:]
    pred = pred.astype(z.dtype)
    y0_hat = scale * noise.convert(pred, target, "x0", x_tilde, lam_eff)
    eps_hat = noise.convert(pred, target, "eps", x_tilde, lam_eff)
    if clip is not None:
        y0_hat = jnp.clip(y0_hat, -clip, clip)
        eps_hat = (z - alpha * y0_hat) / sigma
    if learned:
        return y0_hat, eps_hat, var_out
    return y0_hat, eps_hat


def _identity(x):
    return x


@functools.partial(
    jax.jit,
    static_argnames=(
        "shape",
        "method",
        "target",
        "eta",
        "variance",
        "clip",
        "scale",
        "normalize",
        "return_trajectory",
        "sharding",
    ),
)
def _run(
    key,
    lams,
    denoise_fn,
    x_init,
    carry,
    *,
    shape,
    method,
    target,
    eta,
    variance,
    clip,
    scale,
    normalize,
    return_trajectory,
    sharding,
):
    """The compiled sampler: ``lax.scan`` over the steps, then the final denoising."""
    constrain = _identity
    if sharding is not None:
        constrain = lambda x: jax.lax.with_sharding_constraint(x, sharding)
    k_init, k_steps = jax.random.split(key)
    if x_init is None:
        z = jax.random.normal(k_init, shape, jnp.float32)
    else:
        z = jnp.asarray(x_init, jnp.float32)
    z = constrain(z)
    box = {"carry": carry}  # the stateful denoiser's latest carry, threaded through the scan

    def call(x_in, lam_vec):
        if carry is None:
            return denoise_fn(x_in, lam_vec)
        pred, box["carry"] = denoise_fn(x_in, lam_vec, box["carry"])
        return pred

    kw = dict(target=target, scale=scale, normalize=normalize, clip=clip)
    learned = variance == "learned"
    predict_full = functools.partial(_predict, call, learned=learned, **kw)
    predict = (lambda z, lam: predict_full(z, lam)[:2]) if learned else predict_full
    opts = {
        "eta": eta,
        "variance": variance,
        "constrain": constrain,
        "predict_with_variance": predict_full,
    }
    rule = _RULES[method]
    steps = lams.shape[0] - 1

    def body(state, inputs):
        z, box["carry"] = state
        lam, lam_next, k = inputs
        z_next, y0_hat = rule(z, predict, lam, lam_next, k, opts)
        z_next = constrain(z_next)
        return (z_next, box["carry"]), (z, y0_hat) if return_trajectory else None

    keys = jax.random.split(k_steps, steps)
    (z_last, box["carry"]), hist = jax.lax.scan(
        body, (z, carry), (lams[:-2], lams[1:-1], keys[:-1])
    )
    y0_final, _ = predict(z_last, lams[-2])
    samples = constrain(y0_final / scale)
    if not return_trajectory:
        return samples
    states = jnp.concatenate([hist[0], z_last[None], y0_final[None]])
    x0_preds = jnp.concatenate([hist[1], y0_final[None]]) / scale
    return samples, {"x_t": states, "x0_pred": x0_preds}


# ----------------------------------------------------------------------------- public entry


def _check_args(method, target, steps, eta, variance, clip_x0, input_scale, t_start, t_end):
    """Raises ``ValueError`` naming the offending field."""
    if method not in _RULES:
        raise ValueError(f"unknown sampler method {method!r}; known: {list_samplers()}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not eta >= 0.0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if clip_x0 is not None and not clip_x0 > 0.0:
        raise ValueError(f"clip_x0 must be None or > 0, got {clip_x0!r}")
    if not input_scale > 0.0:
        raise ValueError(f"input_scale must be > 0, got {input_scale!r}")
    if not 0.0 <= t_end < t_start <= 1.0:
        raise ValueError(f"need 0 <= t_end < t_start <= 1, got t_start={t_start}, t_end={t_end}")


def sample(
    key: jax.Array,
    denoise_fn: Callable[[jax.Array, jax.Array], jax.Array],
    shape: tuple[int, ...],
    schedule,
    steps: int | None,
    *,
    lams: jax.typing.ArrayLike | None = None,
    method: str = "ddpm",
    target: str = "eps",
    eta: float = 0.0,
    variance: str = "small",
    clip_x0: float | None = None,
    input_scale: float = 1.0,
    normalize_input: bool = False,
    t_start: float = 1.0,
    t_end: float = 0.0,
    return_trajectory: bool = False,
    x_init: jax.Array | None = None,
    sharding: jax.sharding.Sharding | None = None,
    carry=None,
):
    """Draws samples of ``shape`` (B, ...) with ``steps`` steps of ``method``.

    Args:
      key: PRNG key (initial noise and the stochastic steps).
      denoise_fn: ``denoise_fn(x_in, lam_eff) -> prediction`` in ``target`` space, x_in of
        ``shape``, lam_eff (B,) float32 (see the module docstring for what x_in and lam_eff
        are). A ``jax.tree_util.Partial`` (e.g. from ``cfg_denoise_fn``) is passed to the
        compiled sampler as a pytree, so new parameters/labels in it do not recompile; a
        plain function is keyed by identity (wrap calls with fresh closures in your own jit).
      shape: output shape, batch first.
      schedule: inference schedule (``.logsnr(t)``), e.g. ``noise.get_schedule("cosine")``;
        None when ``lams`` is given.
      steps: number of steps (network evaluations: ``num_evaluations(method, steps)``); with
        ``lams`` None or ``len(lams)``.
      lams: optional explicit grid (steps,) of increasing logSNR values at which the network
        is evaluated, replacing ``schedule`` and the t grid: steps move ``lams[i] →
        lams[i+1]`` and the last returns x̂0 at ``lams[-1]`` (e.g.
        ``respace.respaced_logsnr("250")``, the official DiT 250-step DDPM).
      method: "ddpm" (ancestral), "ddim" (η) or "heun" (EDM 2nd order; the last step Euler).
      target: "eps", "x0", "v" or "flow", what the network predicts.
      eta: DDIM noise (0 deterministic, 1 = DDPM "small").
      variance: DDPM step variance, "small" (posterior), "large" (1 − γ/γ_next) or
        "learned" (the network returns 2C channels: prediction, then v ∈ [−1, 1] of the
        learned range, see ``learned_range_variance``; other methods ignore v).
      clip_x0: None, or bound B: ŷ0 = b·x̂0 is clipped to [−B, B] and ε̂ recomputed (Chen
        2023 clips to [−b, b], so pass ``clip_x0=input_scale`` for data in [−1, 1]).
      input_scale: b of Chen 2023 (the network was trained on b·x0).
      normalize_input: divide the network input by sqrt((b²−1)γ + 1), as in training.
      t_start, t_end: the time grid ``linspace(t_start, t_end, steps + 1)``.
      return_trajectory: also return ``{"x_t": (steps+1, *shape) states z_i in the
        sampler's space (the last is b·samples), "x0_pred": (steps, *shape) x̂0 in data units}``.
      x_init: optional start state z (default standard normal from ``key``).
      sharding: optional sharding of ``shape`` (e.g. ``NamedSharding(mesh, P("data"))``)
        constrained on the state and the noise, so a batch splits over devices.
      carry: optional initial state (a pytree) of a stateful denoiser, e.g. RIN's latents
        for latent self-conditioning. With it ``denoise_fn(x_in, lam_eff, carry) ->
        (prediction, carry)``, and each evaluation receives the carry the previous one
        returned (in order, Heun's two evaluations included).

    Returns:
      samples of ``shape`` in data units (float32), or ``(samples, trajectory)``.
    """
    if lams is not None:
        grid = jnp.asarray(lams, jnp.float32)
        if grid.ndim != 1 or grid.shape[0] < 1:
            raise ValueError(f"lams must be a 1-D grid of logSNR values, got shape {grid.shape}")
        if steps is not None and steps != grid.shape[0]:
            raise ValueError(f"steps={steps} does not match len(lams)={grid.shape[0]}")
        if not isinstance(grid, jax.core.Tracer) and not bool(jnp.all(jnp.diff(grid) > 0)):
            raise ValueError("lams must be strictly increasing (noisiest level first)")
        steps = int(grid.shape[0])
    _check_args(method, target, steps, eta, variance, clip_x0, input_scale, t_start, t_end)
    shape, steps = tuple(int(d) for d in shape), int(steps)
    if x_init is not None and tuple(x_init.shape) != shape:
        raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
    if lams is not None:  # the last grid point is never evaluated (the final step is x̂0)
        lams = jnp.concatenate([grid, grid[-1:]])
    else:
        if schedule is None:
            raise ValueError("give an inference schedule or an explicit lams grid")
        t = jnp.linspace(t_start, t_end, steps + 1, dtype=jnp.float32)
        lams = jnp.asarray(schedule.logsnr(t), jnp.float32)
    if not isinstance(denoise_fn, Partial):
        denoise_fn = Partial(denoise_fn)
    return _run(
        key,
        lams,
        denoise_fn,
        x_init,
        carry,
        shape=shape,
        method=method,
        target=target,
        eta=float(eta),
        variance=variance,
        clip=None if clip_x0 is None else float(clip_x0),
        scale=float(input_scale),
        normalize=bool(normalize_input),
        return_trajectory=bool(return_trajectory),
        sharding=sharding,
    )
