"""Euler, EDM's stochastic Heun, DPM-Solver++(2M) (ODE, SDE) and UniPC against references.

References: diffusers' schedulers stepping the same closed-form Gaussian denoiser in torch
float64 (DPMSolverMultistepScheduler, UniPCMultistepScheduler, EulerDiscreteScheduler); the
EDM paper's Algorithm 2 written here in NumPy in EDM's own σ coordinates (k-diffusion, whose
``sample_heun`` it is, would downgrade numpy to 1.26 here and is not installed); the exact
probability-flow ODE solution for Gaussian data (closed form) for the convergence orders.

diffusers upcasts the state to float32 inside ``step``; the schedulers' modules see a
``torch`` whose ``float32`` is float64 here, so the reference runs wholly in float64.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import sampling

# Data x0 ~ N(M, S²) per channel; states have shape (B, 1, 1, 3) (NHWC).
M = np.array([0.5, -0.3, 0.1])
S = np.array([0.2, 0.6, 1.0])
SHAPE = (16, 1, 1, 3)
X_INIT = np.random.default_rng(0).standard_normal(SHAPE)
NEW_METHODS = ["euler", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc"]


def gaussian_denoiser(target, scale=1.0, normalize=False):
    """Exact E[target | x_in] for x0 ~ N(M, S²), from the sampler's documented contract.

    The network sees λ_eff = λ + 2·log b and x_in = x̃·(1 if normalize else c), x̃ the VP
    state of the unscaled data at λ_eff, c = sqrt((b² − 1)·sigmoid(λ) + 1). Any float dtype.
    """

    def fn(x, lam):
        lam = lam.reshape(-1, 1, 1, 1)
        c = jnp.sqrt((scale**2 - 1.0) * jax.nn.sigmoid(lam - 2.0 * math.log(scale)) + 1.0)
        x = x if normalize else x / c
        m, s = jnp.asarray(M, x.dtype), jnp.asarray(S, x.dtype)
        a, sg = jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))
        var = a**2 * s**2 + sg**2
        x0 = m + a * s**2 / var * (x - a * m)
        eps = sg / var * (x - a * m)
        return {"eps": eps, "x0": x0, "v": a * eps - sg * x0, "flow": eps - x0}[target]

    return fn


def _run(method, lams, dtype, target="eps", scale=1.0, normalize=False, **kw):
    """Our sampler from X_INIT on the grid ``lams``; (samples, states z_i) as float64."""
    with jax.enable_x64(dtype == np.float64):
        out, traj = sampling.sample(
            jax.random.key(3),
            gaussian_denoiser(target, scale, normalize),
            SHAPE,
            None,
            None,
            lams=np.asarray(lams, dtype),
            method=method,
            target=target,
            x_init=jnp.asarray(X_INIT, dtype),
            return_trajectory=True,
            input_scale=scale,
            normalize_input=normalize,
            **kw,
        )
        assert out.dtype == dtype
        return np.asarray(out, np.float64), np.asarray(traj["x_t"], np.float64)


def _draws(steps, dtype):
    """The sampler's per-step noise: step i draws normal(keys[i]) (``samplers._run``)."""
    with jax.enable_x64(dtype == np.float64):
        keys = jax.random.split(jax.random.split(jax.random.key(3))[1], steps)
        return [np.asarray(jax.random.normal(k, SHAPE, dtype), np.float64) for k in keys]


def _close(got, want, rtol):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


# ----------------------------------------------------------------------------- diffusers


@pytest.fixture
def torch64(monkeypatch):
    """torch, with diffusers' scheduler modules computing in float64 (see the docstring)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    import diffusers.schedulers.scheduling_dpmsolver_multistep as dpm
    import diffusers.schedulers.scheduling_euler_discrete as euler
    import diffusers.schedulers.scheduling_unipc_multistep as unipc

    class Float64Torch:
        float32 = torch.float64

        def __getattr__(self, name):
            return getattr(torch, name)

    for module in (dpm, euler, unipc):
        monkeypatch.setattr(module, "torch", Float64Torch())
    return torch


def _scheduler(torch, method, steps):
    from diffusers import (
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    common = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    if method == "euler":
        sched = EulerDiscreteScheduler(**common)
    elif method == "unipc":
        sched = UniPCMultistepScheduler(
            solver_type="bh2", solver_order=2, predict_x0=True, lower_order_final=True,
            final_sigmas_type="zero", **common,
        )  # fmt: skip
    else:
        sched = DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++" if method == "dpmpp_2m" else "sde-dpmsolver++",
            solver_type="midpoint", solver_order=2, lower_order_final=True,
            final_sigmas_type="zero", **common,
        )  # fmt: skip
    sched.set_timesteps(steps)
    sched.sigmas = sched.sigmas.to(torch.float64)
    return sched


def _diffusers_run(torch, method, steps, draws):
    """diffusers' loop on the 1000-step linear-β grid; returns (its λ grid, output, states)."""
    sched = _scheduler(torch, method, steps)
    sigmas = sched.sigmas.numpy()  # VE σ = sqrt((1 − ᾱ)/ᾱ) at the kept steps, then 0
    assert len(sigmas) == steps + 1 and sigmas[-1] == 0.0
    lams = -2.0 * np.log(sigmas[:-1])
    eps_fn = gaussian_denoiser("eps")
    alpha0 = 1.0 / np.sqrt(sigmas[0] ** 2 + 1.0)
    ve = method == "euler"  # EulerDiscrete iterates x = z/α, the model sees z
    x = torch.from_numpy(X_INIT / alpha0 if ve else X_INIT.copy())
    states = []
    for i, t in enumerate(sched.timesteps):
        states.append(x.numpy() * (1.0 / np.sqrt(sigmas[i] ** 2 + 1.0) if ve else 1.0))
        z = sched.scale_model_input(x, t).numpy()
        with jax.enable_x64(True):
            eps = eps_fn(jnp.asarray(z), jnp.full((SHAPE[0],), lams[i]))
        eps = torch.from_numpy(np.asarray(eps, np.float64))
        kw = {}
        if method == "dpmpp_2m_sde":
            noise = draws[i] if i < steps - 1 else np.zeros(SHAPE)
            kw["variance_noise"] = torch.from_numpy(noise)
        x = sched.step(eps, t, x, **kw).prev_sample
        assert x.dtype == torch.float64
    return lams, x.numpy(), np.stack(states)


@pytest.mark.parametrize("method", ["euler", "dpmpp_2m", "dpmpp_2m_sde", "unipc"])
@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 1e-4)])
def test_equals_diffusers_scheduler(torch64, method, steps, dtype, rtol):
    lams, want, want_states = _diffusers_run(torch64, method, steps, _draws(steps, dtype))
    got, got_states = _run(method, lams, dtype)
    _close(got, want, rtol)
    _close(got_states[:-1], want_states, rtol)  # every state on the way (z before each step)
    assert np.abs(want - X_INIT).max() > 0.1  # the sampler moved


# ----------------------------------------------------------------------------- EDM Algorithm 2


def _karras_lams(steps, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    ramp = np.linspace(0.0, 1.0, steps)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return -2.0 * np.log(inv**rho)


def _edm_algorithm2(lams, draws, heun, churn, s_tmin, s_tmax, s_noise):
    """Karras et al. 2022 Algorithm 2 in EDM's x = z/α, σ (σ_{N} = 0), float64 NumPy."""
    sigmas = np.append(np.exp(-0.5 * lams), 0.0)
    n = len(lams)
    denoise = lambda x, sigma: M + S**2 / (S**2 + sigma**2) * (x - M)  # exact D(x; σ)
    x = X_INIT * np.sqrt(sigmas[0] ** 2 + 1.0)
    for i in range(n):
        gamma = min(churn / n, math.sqrt(2) - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        sigma_hat = sigmas[i] * (1 + gamma)
        x_hat = x + math.sqrt(sigma_hat**2 - sigmas[i] ** 2) * s_noise * draws[i]
        d = (x_hat - denoise(x_hat, sigma_hat)) / sigma_hat
        x = x_hat + (sigmas[i + 1] - sigma_hat) * d
        if heun and sigmas[i + 1] > 0:
            d_next = (x - denoise(x, sigmas[i + 1])) / sigmas[i + 1]
            x = x_hat + (sigmas[i + 1] - sigma_hat) * (d + d_next) / 2
    return x


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize(
    "churn,s_tmin,s_tmax,s_noise",
    [(0.0, 0.0, math.inf, 1.0), (4.0, 0.05, 50.0, 1.003), (40.0, 0.0, math.inf, 0.9)],
)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-5), (np.float32, 1e-4)])
def test_edm_stochastic_sampler_equals_algorithm2(
    method, churn, s_tmin, s_tmax, s_noise, dtype, rtol
):  # noqa: E501 fmt: skip
    steps = 18
    lams = _karras_lams(steps)
    kw = dict(churn=churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
    got, _ = _run(method, lams, dtype, **kw)
    draws = _draws(steps, dtype)
    want = _edm_algorithm2(lams, draws, method == "heun", churn, s_tmin, s_tmax, s_noise)
    _close(got, want, rtol)
    if churn > 0:  # the noise matters: the deterministic sampler lands elsewhere
        assert (
            np.abs(_edm_algorithm2(lams, draws, method == "heun", 0, 0, 1, 1) - want).max() > 1e-2
        )


def test_churn_without_levels_in_range_is_the_deterministic_sampler():
    lams = _karras_lams(12)
    plain, _ = _run("heun", lams, np.float32)
    outside, _ = _run("heun", lams, np.float32, churn=40.0, s_tmin=100.0, s_tmax=200.0)
    np.testing.assert_array_equal(outside, plain)


# ----------------------------------------------------------------------------- convergence


def _exact_endpoint(lams, b=1.0):
    """The PF-ODE from X_INIT at λ_0 to λ_{N−1} in closed form, then x̂0 there (data units).

    In x = z/α = b·x0 + σ_E·ε the ODE dx/dσ_E = (x − D)/σ_E with D = bm + b²s²/(b²s² + σ_E²)·
    (x − bm) keeps (x − bm)/sqrt(b²s² + σ_E²) constant (tests/test_sampling.py).
    """
    sig0, sig1, bs2 = np.exp(-0.5 * lams[0]), np.exp(-0.5 * lams[-1]), (b * S) ** 2
    x0 = X_INIT * np.sqrt(sig0**2 + 1.0)
    x1 = b * M + (x0 - b * M) * np.sqrt(bs2 + sig1**2) / np.sqrt(bs2 + sig0**2)
    return M + b * S**2 / (bs2 + sig1**2) * (x1 - b * M)


# UniPC-2's corrector raises the order by one (Zhao et al. 2023, Theorem 3.1): 3 here.
@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2), ("unipc", 3)])
def test_error_falls_at_the_solver_order(method, order):
    errors = []
    for steps in (21, 41, 81):
        lams = np.linspace(-8.0, 8.0, steps)
        got, _ = _run(method, lams, np.float64, target="v")
        errors.append(np.abs(got - _exact_endpoint(lams)).max())
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < (0.1 if order == 1 else 5e-3), errors
    assert (rates > order - 0.3).all() and (rates < order + 0.5).all(), (rates, errors)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_targets_agree_and_input_scaling_solves_the_scaled_ode(method):
    """The exact denoiser read as eps, x0, v or flow gives the same samples (the SDE too:
    same noise); with input scaling (and normalisation) an ODE solver follows the ODE of
    the scaled data b·x0, whose endpoint here is ≥ 0.1 away from the unscaled one."""
    lams = np.linspace(-2.0, 8.0, 41)
    ref, _ = _run(method, lams, np.float64, target="eps")
    for target in ("x0", "v", "flow"):
        _close(_run(method, lams, np.float64, target=target)[0], ref, 1e-9)
    if method == "dpmpp_2m_sde":
        return
    atol = 0.07 if method == "euler" else 5e-3
    for b, normalize in ((0.5, True), (2.0, False)):
        want = _exact_endpoint(lams, b)
        assert np.abs(want - _exact_endpoint(lams)).max() > 0.1
        got, _ = _run(method, lams, np.float64, target="v", scale=b, normalize=normalize)
        np.testing.assert_allclose(got, want, atol=atol)


# ----------------------------------------------------------------------------- plumbing


def test_registry_counts_and_argument_checks():
    assert set(NEW_METHODS) <= set(sampling.list_samplers())
    assert [sampling.num_evaluations(m, 10) for m in NEW_METHODS] == [10, 19, 10, 10, 10]
    den = gaussian_denoiser("eps")
    lams = [-3.0, 0.0, 3.0]
    call = lambda **kw: sampling.sample(jax.random.key(0), den, SHAPE, None, None, lams=lams, **kw)
    for kw, field in [
        (dict(method="dpmpp_2m", churn=1.0), "churn"),
        (dict(method="heun", churn=-1.0), "churn"),
        (dict(method="heun", s_tmin=2.0, s_tmax=1.0), "s_tmin"),
        (dict(method="ddim", s_noise=0.5), "s_noise"),
    ]:
        with pytest.raises(ValueError, match=field):
            call(**kw)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_carry_guidance_and_float32_default(method):
    """Every evaluation gets the previous one's carry (RIN); CFG with scale 1 is the
    conditional model; the default state is float32."""
    steps, y = 6, jnp.arange(SHAPE[0]) % 2
    lams = np.linspace(-6.0, 6.0, steps)
    base = gaussian_denoiser("v")
    model = lambda x, lam, y: base(x, lam) * (1.0 + 0.0 * y[:, None, None, None])
    key = jax.random.key(1)
    ref = sampling.sample(key, base, SHAPE, None, None, lams=lams, method=method, target="v")
    assert ref.dtype == jnp.float32
    guided = sampling.cfg_denoise_fn(model, y, 2, 1.0)
    out = sampling.sample(key, guided, SHAPE, None, None, lams=lams, method=method, target="v")
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)

    seen = []

    def stateful(x, lam, count):  # the carry counts the evaluations
        jax.debug.callback(lambda c: seen.append(int(c)), count)
        return base(x, lam), count + 1

    kw = dict(lams=lams, method=method, target="v", carry=jnp.int32(0))
    out = sampling.sample(key, stateful, SHAPE, None, None, **kw)
    jax.effects_barrier()
    np.testing.assert_array_equal(out, ref)
    assert sorted(seen) == list(range(sampling.num_evaluations(method, steps)))


def test_config_edm_options_reach_the_sampler():
    """sampling.churn / s_tmin / s_tmax / s_noise are config fields the run's sampler gets
    (the base config: EDM's deterministic sampler, churn 0, no σ bound, noise scale 1)."""
    from tiny_config import tiny

    from jaxdiff.training import generate

    kw = generate._sampling_kwargs(tiny())
    assert (kw["churn"], kw["s_tmin"], kw["s_tmax"], kw["s_noise"]) == (0.0, 0.0, math.inf, 1.0)
    c = tiny(**{"sampling.method": "heun", "sampling.churn": 40.0, "sampling.s_tmin": 0.05,
                "sampling.s_tmax": 50.0, "sampling.s_noise": 1.003})  # fmt: skip
    kw = generate._sampling_kwargs(c)
    assert (kw["churn"], kw["s_tmin"], kw["s_tmax"], kw["s_noise"]) == (40.0, 0.05, 50.0, 1.003)
