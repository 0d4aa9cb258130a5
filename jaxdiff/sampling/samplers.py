"""The sampler loop over any inference schedule, in λ-parameterisation; DDPM and DDIM.

EDM's Euler/Heun, DPM-Solver++(2M) (ODE, SDE) and UniPC are in ``solvers.py``, the closed-form
updates in ``updates.py``.

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
from jaxdiff.sampling.updates import (
    _alpha_sigma2,
    ddim_update,
    ddpm_moments,
    heun_update,
    learned_range_variance,
)

__all__ = [
    "ddim_update",
    "ddpm_moments",
    "get_sampler",
    "heun_update",
    "learned_range_variance",
    "list_samplers",
    "num_evaluations",
    "register",
    "sample",
]

TARGETS = noise.TARGETS
VARIANCES = ("small", "large", "learned")

# A step rule: (z, predict, lam, lam_next, key, opts) -> (z_next, y0_hat), see `_ddpm_rule`.
StepRule = Callable[..., tuple[jax.Array, jax.Array]]
_RULES: dict[str, StepRule] = {}
_EVALS_PER_STEP: dict[str, int] = {}
_HISTORY: dict[str, Callable] = {}  # multistep rules: init(z, lams) -> history pytree
_FINAL: dict[str, Callable] = {}  # final(z, predict, lam, key, opts) -> ŷ0, default x̂0(z)


def register(
    name: str,
    evals_per_step: int = 1,
    *,
    history: Callable | None = None,
    final: Callable | None = None,
) -> Callable[[StepRule], StepRule]:
    """Registers a step rule under ``name``; duplicate names raise ``ValueError``.

    A rule is ``rule(z, predict, lam, lam_next, key, opts) -> (z_next, y0_hat)``: z the
    state (VP on b·x0 at the schedule's λ, scalar), ``predict(z, lam) -> (ŷ0, ε̂)`` one
    network evaluation, opts holds "eta", "variance", "constrain" (apply to new noise
    draws for sharding), "predict_with_variance" (``-> (ŷ0, ε̂, v)`` when
    ``variance == "learned"``), "steps" (of the whole run), "scale" (b) and the EDM
    options "churn", "s_tmin", "s_tmax", "s_noise". ``evals_per_step`` counts its
    ``predict`` calls. A multistep rule gives ``history(z, lams) -> h`` (a pytree carried
    through the scan, lams the run's grid) and is called ``rule(..., opts, h) -> (z_next,
    y0_hat, h)``. ``final(z, predict, lam, key, opts) -> ŷ0`` replaces the last step (the
    x̂0 of the state at the last grid point) where a method changes it (EDM's churn).
    """

    def wrap(rule: StepRule) -> StepRule:
        if name in _RULES:
            raise ValueError(f"sampler {name!r} is already registered")
        _RULES[name] = rule
        _EVALS_PER_STEP[name] = evals_per_step
        if history is not None:
            _HISTORY[name] = history
        if final is not None:
            _FINAL[name] = final
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
    pred = denoise_fn(x_in, jnp.full((z.shape[0],), lam_eff, z.dtype))
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
        "edm",
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
    edm,
):
    """The compiled sampler: ``lax.scan`` over the steps, then the final denoising.

    The state has the dtype of ``lams`` (float32, or float64 from a float64 ``x_init``).
    Step i (0 … steps − 2) gets ``keys[i]`` and the final step ``keys[steps − 1]``, with
    ``keys = jax.random.split(jax.random.split(key)[1], steps)``.
    """
    constrain = _identity
    if sharding is not None:
        constrain = lambda x: jax.lax.with_sharding_constraint(x, sharding)
    k_init, k_steps = jax.random.split(key)
    if x_init is None:
        z = jax.random.normal(k_init, shape, lams.dtype)
    else:
        z = jnp.asarray(x_init, lams.dtype)
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
    steps = lams.shape[0] - 1
    opts = {
        "eta": eta,
        "variance": variance,
        "constrain": constrain,
        "predict_with_variance": predict_full,
        "steps": steps,
        "scale": scale,
        **dict(edm),
    }
    rule, history = _RULES[method], _HISTORY.get(method)

    def body(state, inputs):
        z, box["carry"], hist = state
        lam, lam_next, k = inputs
        if history is None:
            z_next, y0_hat = rule(z, predict, lam, lam_next, k, opts)
        else:
            z_next, y0_hat, hist = rule(z, predict, lam, lam_next, k, opts, hist)
        z_next = constrain(z_next)
        return (z_next, box["carry"], hist), (z, y0_hat) if return_trajectory else None

    keys = jax.random.split(k_steps, steps)
    hist0 = () if history is None else history(z, lams)
    (z_last, box["carry"], _), hist = jax.lax.scan(
        body, (z, carry, hist0), (lams[:-2], lams[1:-1], keys[:-1])
    )
    if method in _FINAL:
        y0_final = _FINAL[method](z_last, predict, lams[-2], keys[-1], opts)
    else:
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


# Methods that take EDM's churn (s_churn, s_tmin, s_tmax) and the noise scale s_noise.
CHURN_METHODS = ("euler", "heun")
NOISE_SCALE_METHODS = ("dpmpp_2m_sde", "euler", "heun")


def _check_edm(method, churn, s_tmin, s_tmax, s_noise):
    """EDM's stochastic options (Karras et al. 2022 Algorithm 2): ``ValueError`` naming one."""
    if not (churn >= 0.0 and math.isfinite(churn)):
        raise ValueError(f"churn must be a finite number >= 0, got {churn!r}")
    if not (0.0 <= s_tmin <= s_tmax):
        raise ValueError(f"need 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
    if not (s_noise >= 0.0 and math.isfinite(s_noise)):
        raise ValueError(f"s_noise must be a finite number >= 0, got {s_noise!r}")
    if churn > 0.0 and method not in CHURN_METHODS:
        raise ValueError(f"churn applies to the methods {CHURN_METHODS}, not {method!r}")
    if s_noise != 1.0 and method not in NOISE_SCALE_METHODS:
        raise ValueError(f"s_noise applies to the methods {NOISE_SCALE_METHODS}, not {method!r}")


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
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
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
        ``shape``, lam_eff (B,) in the state's dtype, float32 by default (see the module
        docstring for what x_in and lam_eff are). A ``jax.tree_util.Partial`` (e.g. from
        ``cfg_denoise_fn``) is passed to the compiled sampler as a pytree, so new
        parameters/labels in it do not recompile; a plain function is keyed by identity
        (wrap calls with fresh closures in your own jit).
      shape: output shape, batch first.
      schedule: inference schedule (``.logsnr(t)``), e.g. ``noise.get_schedule("cosine")``;
        None when ``lams`` is given.
      steps: number of steps (network evaluations: ``num_evaluations(method, steps)``); with
        ``lams`` None or ``len(lams)``.
      lams: optional explicit grid (steps,) of increasing logSNR values at which the network
        is evaluated, replacing ``schedule`` and the t grid: steps move ``lams[i] →
        lams[i+1]`` and the last returns x̂0 at ``lams[-1]`` (e.g.
        ``respace.respaced_logsnr("250")``, the official DiT 250-step DDPM).
      method: "ddpm" (ancestral), "ddim" (η), "heun" (EDM 2nd order; the last step Euler),
        "euler" (EDM's Euler, = DDIM(0) = the flow-matching Euler sampler), "dpmpp_2m",
        "dpmpp_2m_sde", "unipc" (multistep solvers, see ``jaxdiff.sampling.solvers``).
      target: "eps", "x0", "v" or "flow", what the network predicts.
      eta: DDIM noise (0 deterministic, 1 = DDPM "small").
      churn, s_tmin, s_tmax: EDM's stochastic sampler (Karras et al. 2022 Algorithm 2, as
        k-diffusion's ``s_churn``) for "euler" and "heun": at each level σ with s_tmin <= σ
        <= s_tmax (σ = e^{−λ_eff/2}, EDM's noise level of the data) noise is added up to
        σ·(1 + γ), γ = min(churn/steps, √2 − 1), before the step. churn = 0 is deterministic.
      s_noise: scale of the added noise ("euler", "heun", "dpmpp_2m_sde").
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
      x_init: optional start state z (default standard normal from ``key``); its floating
        dtype sets the sampler's (a float64 x_init samples in float64 under jax_enable_x64).
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
    _check_edm(method, churn, s_tmin, s_tmax, s_noise)
    shape, steps = tuple(int(d) for d in shape), int(steps)
    if x_init is not None and tuple(x_init.shape) != shape:
        raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
    # The state's dtype: float32, or that of a floating x_init (float64 under x64).
    dtype = jnp.float32 if x_init is None else jnp.promote_types(jnp.asarray(x_init).dtype, "f4")
    if lams is not None:  # the last grid point is never evaluated (the final step is x̂0)
        grid = jnp.asarray(lams, dtype)
        lams = jnp.concatenate([grid, grid[-1:]])
    else:
        if schedule is None:
            raise ValueError("give an inference schedule or an explicit lams grid")
        t = jnp.linspace(t_start, t_end, steps + 1, dtype=dtype)
        lams = jnp.asarray(schedule.logsnr(t), dtype)
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
        edm=(
            ("churn", float(churn)),
            ("s_tmin", float(s_tmin)),
            ("s_tmax", float(s_tmax)),
            ("s_noise", float(s_noise)),
        ),
    )
