"""Samplers against closed forms for Gaussian data, Chen 2023 Algorithm 3 by hand, and CFG."""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import noise, sampling

# Data x0 ~ N(M, S²) per channel; samples have shape (B, 1, 1, 2) (NHWC).
M = np.array([0.5, -0.3], np.float32)
S = np.array([0.2, 0.6], np.float32)
COSINE = noise.get_schedule("cosine")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _cosine_lam(t):
    """λ of the cosine schedule, by hand: 2·log(cot(πt/2))."""
    return 2.0 * np.log(1.0 / np.tan(np.pi * t / 2.0))


def gaussian_denoiser(target, scale=1.0, normalize=False, m=M, s=S):
    """Exact E[target | x_in] for x0 ~ N(m, s²), written from the sampler's documented contract.

    The network sees λ_eff = λ + 2 log b and x_in = x̃·(1 if normalize else c), where
    x̃ = α_e·x0 + σ_e·ε is VP at λ_eff and c = sqrt((b² − 1)·sigmoid(λ) + 1).
    """
    m, s = jnp.asarray(m), jnp.asarray(s)

    def fn(x_in, lam_eff):
        lam_eff = lam_eff.reshape(-1, *(1,) * (x_in.ndim - 1))
        g = jax.nn.sigmoid(lam_eff - 2.0 * math.log(scale))
        c = jnp.sqrt((scale**2 - 1.0) * g + 1.0)
        xt = x_in if normalize else x_in / c
        a = jnp.sqrt(jax.nn.sigmoid(lam_eff))
        sg = jnp.sqrt(jax.nn.sigmoid(-lam_eff))
        var = a**2 * s**2 + sg**2
        x0 = m + a * s**2 / var * (xt - a * m)
        eps = sg / var * (xt - a * m)
        return {"eps": eps, "x0": x0, "v": a * eps - sg * x0, "flow": eps - x0}[target]

    return fn


def _ode_endpoint(z_init, lam0, scale=1.0):
    """Probability-flow ODE for Gaussian data in closed form.

    In EDM coordinates x = z/α = b·x0 + σ_E·ε the ODE dx/dσ_E = (x − D)/σ_E with
    D = bm + b²s²/(b²s² + σ_E²)·(x − bm) gives d(x − bm)/dσ_E = (x − bm)·σ_E/(b²s² + σ_E²),
    so (x − bm)/sqrt(b²s² + σ_E²) is constant: x0 = m + s·(z − α·bm)/sqrt(α²b²s² + σ²).
    """
    a2 = _sigmoid(lam0)
    k = (z_init - np.sqrt(a2) * scale * M) / np.sqrt(a2 * scale**2 * S**2 + 1.0 - a2)
    return M + S * k


def _grid(steps, t_start=1.0):
    """The sampler's λ grid by hand: cosine λ at linspace(t_start, 0, steps + 1), clipped."""
    with np.errstate(divide="ignore"):
        return np.clip(_cosine_lam(np.linspace(t_start, 0.0, steps + 1)), -20.0, 20.0)


def _posterior_gain(lam, scale):
    """x̂0 = m + gain·(z − α·b·m) with gain = α·b·s²/(α²b²s² + σ²) (z in the sampler's space)."""
    a2 = _sigmoid(lam)
    return np.sqrt(a2) * scale * S**2 / (a2 * scale**2 * S**2 + 1.0 - a2)


def _exact_output_moments(method, steps, scale, variance="small"):
    """Mean and std of the sampler's output for Gaussian data, by hand, per channel.

    With the exact denoiser every DDPM (Chen 2023 Algorithm 3) or DDIM step is affine in z
    plus Gaussian noise, so z stays Gaussian: (μ, V) -> (Aμ + B, A²V + v). Heun is taken as
    the exact ODE to λ_{N−1} (closed form) followed by the final denoising.
    """
    lams = _grid(steps)
    if method == "heun":
        a2 = _sigmoid(lams[-2])
        return M, _posterior_gain(lams[-2], scale) * np.sqrt(a2 * scale**2 * S**2 + 1.0 - a2)
    mu, var = np.zeros(2), np.ones(2)
    for lam, lam_next in zip(lams[:-2], lams[1:-1], strict=True):
        g, g_next = _sigmoid(lam), _sigmoid(lam_next)
        k = _posterior_gain(lam, scale)  # ŷ0 = b·m + b·k·(z − √g·b·m)
        y0_a, y0_b = scale * k, scale * (M - k * np.sqrt(g) * scale * M)  # ŷ0 = y0_a·z + y0_b
        eps_a, eps_b = (1 - np.sqrt(g) * y0_a) / np.sqrt(1 - g), -np.sqrt(g) * y0_b / np.sqrt(1 - g)
        if method == "ddim":
            a_z = np.sqrt(g_next) * y0_a + np.sqrt(1 - g_next) * eps_a
            b_z, v = np.sqrt(g_next) * y0_b + np.sqrt(1 - g_next) * eps_b, 0.0
        else:
            a_z, v = _chen_ddpm_step(1.0, eps_a, g, g_next, variance)
            b_z = _chen_ddpm_step(0.0, eps_b, g, g_next, variance)[0]
        mu, var = a_z * mu + b_z, a_z**2 * var + v
    k = _posterior_gain(lams[-2], scale)
    return M + k * (mu - np.sqrt(_sigmoid(lams[-2])) * scale * M), k * np.sqrt(var)


MOMENT_CASES = [("ddim", t, 1.0, False, "small") for t in ("eps", "x0", "v", "flow")] + [
    ("ddpm", "eps", 1.0, False, "small"),
    ("ddpm", "x0", 1.0, False, "large"),
    ("heun", "v", 1.0, False, "small"),
    ("ddpm", "eps", 0.5, True, "small"),
    ("ddpm", "v", 0.5, False, "large"),
    ("ddim", "flow", 0.5, True, "small"),
    ("ddim", "eps", 2.0, False, "small"),
    ("heun", "eps", 0.5, False, "small"),
    ("heun", "x0", 2.0, True, "small"),
]


@pytest.mark.parametrize("method,target,scale,normalize,variance", MOMENT_CASES)
def test_gaussian_data_moments(method, target, scale, normalize, variance):
    n = 8192
    steps = 40 if method == "heun" else 100
    out = sampling.sample(
        jax.random.key(0),
        gaussian_denoiser(target, scale, normalize),
        (n, 1, 1, 2),
        COSINE,
        steps,
        method=method,
        target=target,
        variance=variance,
        input_scale=scale,
        normalize_input=normalize,
    )
    out = np.asarray(out).reshape(n, 2)
    assert out.shape == (n, 2) and np.isfinite(out).all()
    mean, std = _exact_output_moments(method, steps, scale, variance)
    np.testing.assert_allclose(std, S, rtol=0.15)  # the discretisation itself is near the data
    np.testing.assert_allclose(out.mean(0), mean, atol=4.5 * S.max() / np.sqrt(n))
    np.testing.assert_allclose(out.std(0), std, rtol=4.5 / np.sqrt(2 * n))


def _ideal_endpoint(z_init, steps, t_start, scale):
    """Exact ODE from λ_0 to λ_{N−1} (closed form), then the sampler's final x̂0."""
    exact = _ode_endpoint(z_init, max(_cosine_lam(t_start), -20.0), scale)
    a2 = _sigmoid(_grid(steps, t_start)[-2])
    shrink = np.sqrt(a2) * scale * S / np.sqrt(a2 * scale**2 * S**2 + 1 - a2)
    return M + (exact - M) * shrink, exact


@pytest.mark.parametrize(
    "scale,normalize,t_start", [(1.0, False, 1.0), (0.5, True, 0.7), (2.0, False, 0.7)]
)
def test_ode_transport_matches_closed_form(scale, normalize, t_start):
    z_init = np.linspace(-2.5, 2.5, 64, dtype=np.float32)[:, None, None, None] * np.ones(
        2, np.float32
    )
    kw = dict(target="v", input_scale=scale, normalize_input=normalize, t_start=t_start)
    kw["x_init"] = jnp.asarray(z_init)
    den = gaussian_denoiser("v", scale, normalize)
    run = lambda method, steps, seed: np.asarray(
        sampling.sample(jax.random.key(seed), den, z_init.shape, COSINE, steps, method=method, **kw)
    )
    ddim, ddim_b = run("ddim", 400, 1), run("ddim", 400, 2)
    np.testing.assert_array_equal(ddim, ddim_b)  # η = 0 is deterministic: the key is unused
    ideal, exact = _ideal_endpoint(z_init, 400, t_start, scale)
    np.testing.assert_allclose(ddim, ideal, atol=1e-2)
    np.testing.assert_allclose(ddim, exact, atol=2e-2)
    # Heun is second order: error vs the closed form shrinks ~4x per doubling of steps.
    errors = [
        np.abs(run("heun", n, 3) - _ideal_endpoint(z_init, n, t_start, scale)[0]).max()
        for n in (20, 40, 80)
    ]
    assert errors[2] < 2.5e-3 and errors[1] < errors[0] / 2.5 and errors[2] < errors[1] / 2.5, (
        errors
    )
    np.testing.assert_allclose(run("heun", 80, 4), ddim, atol=1.2e-2)


def _chen_ddpm_step(z, eps_hat, gamma_now, gamma_next, variance):
    """Chen 2023 Algorithm 3 `ddpm_step`, by hand."""
    a = np.clip(gamma_now / gamma_next, 0.0, 1.0)
    mean = (z - (1.0 - a) / np.sqrt(1.0 - gamma_now) * eps_hat) / np.sqrt(a)
    var = (1.0 - a) if variance == "large" else (1.0 - gamma_next) / (1.0 - gamma_now) * (1.0 - a)
    return mean, var


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_moments_equal_chen_algorithm3(variance):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 3)).astype(np.float32)
    y0 = rng.normal(size=(5, 3)).astype(np.float32)
    for lam, lam_next in [(-3.0, -1.0), (0.5, 0.7), (2.0, 6.0), (-20.0, -6.9)]:
        g, g_next = _sigmoid(lam), _sigmoid(lam_next)
        eps = (z - np.sqrt(g) * y0) / np.sqrt(1.0 - g)
        want_mean, want_var = _chen_ddpm_step(z, eps, g, g_next, variance)
        mean, var = jax.jit(sampling.ddpm_moments, static_argnums=4)(
            z, y0, jnp.float32(lam), jnp.float32(lam_next), variance
        )
        np.testing.assert_allclose(mean, want_mean, rtol=2e-4, atol=2e-4 * np.abs(want_mean).max())
        np.testing.assert_allclose(var, want_var, rtol=1e-4)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_one_step_from_known_state(variance):
    """Step t=0.7 -> 0.4 of `sample` from a fixed z, input scale 0.5 with normalisation."""
    n, scale, z0 = 16384, 0.5, 0.7
    x_init = jnp.full((n, 1, 1, 2), z0, jnp.float32)
    den = gaussian_denoiser("x0", scale, True)
    _, traj = sampling.sample(
        jax.random.key(4), den, x_init.shape, COSINE, 2, method="ddpm", target="x0",
        variance=variance, input_scale=scale, normalize_input=True, t_start=0.7, t_end=0.1,
        x_init=x_init, return_trajectory=True,
    )  # fmt: skip
    z1 = np.asarray(traj["x_t"][1]).reshape(n, 2)
    g0, g1 = _sigmoid(_cosine_lam(0.7)), _sigmoid(_cosine_lam(0.4))
    # ε̂ = E[ε | z] for z = √γ·b·x0 + √(1−γ)·ε, b·x0 ~ N(bm, b²s²).
    eps_hat = np.sqrt(1 - g0) * (z0 - np.sqrt(g0) * scale * M) / (g0 * scale**2 * S**2 + 1 - g0)
    want_mean, want_var = _chen_ddpm_step(z0, eps_hat, g0, g1, variance)
    np.testing.assert_allclose(z1.mean(0), want_mean, atol=4.5 * np.sqrt(want_var / n))
    np.testing.assert_allclose(z1.var(0), np.broadcast_to(want_var, (2,)), rtol=0.05)


def test_ddim_eta_one_is_ddpm_small():
    rng = np.random.default_rng(1)
    z, y0, xi = (rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3))
    lam, lam_next = jnp.float32(-1.0), jnp.float32(1.5)
    eps = (z - np.sqrt(_sigmoid(-1.0)) * y0) / np.sqrt(_sigmoid(1.0))
    mean, var = sampling.ddpm_moments(z, y0, lam, lam_next, "small")
    got = sampling.ddim_update(y0, eps, lam, lam_next, xi, 1.0)
    np.testing.assert_allclose(got, mean + np.sqrt(var) * xi, rtol=1e-4, atol=1e-5)


def test_clipping_bounds_and_recomputes_eps():
    n, scale, clip = 256, 0.5, 0.5
    den = gaussian_denoiser("x0", scale, False, m=np.array([0.9, -0.9]), s=np.array([0.5, 0.5]))
    x_init = jax.random.normal(jax.random.key(5), (n, 1, 1, 2))
    out, traj = sampling.sample(
        jax.random.key(6), den, (n, 1, 1, 2), COSINE, 3, method="ddim", target="x0",
        input_scale=scale, clip_x0=clip, t_start=0.6, t_end=0.0, x_init=x_init,
        return_trajectory=True,
    )  # fmt: skip
    assert np.abs(np.asarray(out)).max() <= clip / scale + 1e-6
    assert np.abs(np.asarray(out)).max() > 0.99 * clip / scale  # the bound is active
    g0, g1 = _sigmoid(_cosine_lam(0.6)), _sigmoid(_cosine_lam(0.4))
    lam_eff0 = jnp.full((n,), _cosine_lam(0.6) + 2 * np.log(scale))
    y0 = np.clip(scale * np.asarray(den(x_init, lam_eff0), np.float64), -clip, clip)
    eps = (np.asarray(x_init) - np.sqrt(g0) * y0) / np.sqrt(1 - g0)
    want = np.sqrt(g1) * y0 + np.sqrt(1 - g1) * eps
    np.testing.assert_allclose(traj["x_t"][1], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(traj["x0_pred"][-1], out)


TRAINING_CASES = [
    ("ddim", "eps", 1.0, False),
    ("heun", "v", 0.5, True),
    ("ddim", "x0", 2.0, False),
    ("heun", "flow", 0.5, False),
]


@pytest.mark.parametrize("method,target,scale,normalize", TRAINING_CASES)
def test_agrees_with_training_corruption(method, target, scale, normalize):
    """An oracle trained-network output (noise.make_target at λ_eff, as diffusion_loss does)
    for a state made by noise.corrupt keeps the deterministic samplers on x0 exactly."""
    x0 = jax.random.uniform(jax.random.key(8), (3, 4, 4, 2), minval=-1.0, maxval=1.0)
    eps = jax.random.normal(jax.random.key(9), x0.shape)
    seen = []

    def oracle(x_in, lam_eff):
        seen.append((x_in, lam_eff))
        return noise.make_target(x0, eps, lam_eff, target)

    lam0 = COSINE.logsnr(jnp.float32(0.6))
    z0 = noise.corrupt(x0, eps, lam0, scale=scale, normalize=False)
    kw = dict(method=method, target=target, input_scale=scale, normalize_input=normalize)
    out, traj = sampling.sample(
        jax.random.key(0), oracle, x0.shape, COSINE, 4, t_start=0.6, x_init=z0,
        return_trajectory=True, **kw,
    )  # fmt: skip
    np.testing.assert_allclose(out, x0, atol=2e-5)
    np.testing.assert_allclose(traj["x0_pred"], jnp.broadcast_to(x0, (4, *x0.shape)), atol=2e-5)
    lam1 = COSINE.logsnr(jnp.float32(0.45))
    np.testing.assert_allclose(traj["x_t"][1], noise.corrupt(x0, eps, lam1, scale=scale), atol=2e-5)
    with jax.disable_jit():  # the network input and λ of the first call, as in training
        seen.clear()
        sampling.sample(
            jax.random.key(0), oracle, x0.shape, COSINE, 2, t_start=0.6, x_init=z0, **kw
        )
    x_in, lam_eff = seen[0]
    np.testing.assert_allclose(
        lam_eff, noise.effective_logsnr(jnp.full((3,), lam0), scale), atol=1e-5
    )
    want = noise.corrupt(x0, eps, lam0, scale=scale, normalize=normalize)
    np.testing.assert_allclose(x_in, want, atol=1e-5)


def _toy_model(x, lam, y):
    return x * (y.astype(jnp.float32) + 1.0)[:, None] + 0.1 * lam[:, None]


def test_cfg_formula_interval_and_single_batched_call():
    calls = []

    def model_fn(x, lam, y):
        calls.append(x.shape[0])
        return _toy_model(x, lam, y)

    x = jnp.arange(12.0).reshape(4, 3)
    y = jnp.array([0, 1, 2, 1])
    lam = jnp.array([-5.0, -1.0, 0.5, 4.0])
    fn = sampling.cfg_denoise_fn(model_fn, y, 3, 2.5, lam_interval=(-2.0, 1.0))
    got = np.asarray(fn(x, lam))
    cond = np.asarray(_toy_model(x, lam, y))
    uncond = np.asarray(_toy_model(x, lam, jnp.full((4,), 3)))
    guided = uncond + 2.5 * (cond - uncond)
    inside = np.array([False, True, True, False])
    np.testing.assert_allclose(got, np.where(inside[:, None], guided, cond), rtol=1e-6)
    assert calls == [8]
    np.testing.assert_allclose(
        sampling.cfg_denoise_fn(model_fn, y, 3, 2.5)(x, lam), guided, rtol=1e-6
    )
    np.testing.assert_allclose(
        sampling.cfg_denoise_fn(model_fn, y, 3, 1.0)(x, lam), cond, rtol=1e-6
    )
    with pytest.raises(ValueError, match="lam_interval"):
        sampling.cfg_denoise_fn(model_fn, y, 3, 2.0, lam_interval=(1.0, -1.0))


def test_compiles_once_across_keys_labels_and_scales():
    traces = []

    def model_fn(x, lam, y):
        traces.append(1)
        return _toy_model(x.reshape(x.shape[0], -1), lam, y).reshape(x.shape) * 0.01

    shape = (4, 2, 2, 1)
    for i, scale in enumerate([1.0, 3.0, 1.5]):
        y = jnp.array([i, 1, 0, 2])
        fn = sampling.cfg_denoise_fn(model_fn, y, 3, scale, lam_interval=(-3.0, 3.0))
        for method in ("heun", "ddpm"):
            out = sampling.sample(jax.random.key(i), fn, shape, COSINE, 4, method=method)
            assert out.shape == shape and np.isfinite(np.asarray(out)).all()
        if i == 0:
            first = len(traces)
    assert len(traces) == first  # later labels, scales and keys reuse the compiled samplers


def test_bad_arguments_name_the_field():
    den = gaussian_denoiser("eps")
    call = lambda **kw: sampling.sample(jax.random.key(0), den, (2, 1, 1, 2), COSINE, **kw)
    for kw, field in [
        (dict(steps=4, method="euler_ancestral"), "method"),
        (dict(steps=4, target="score"), "target"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=4, variance="medium"), "variance"),
        (dict(steps=4, eta=-0.1), "eta"),
        (dict(steps=4, input_scale=0.0), "input_scale"),
        (dict(steps=4, clip_x0=-1.0), "clip_x0"),
        (dict(steps=4, t_start=0.2, t_end=0.5), "t_start"),
    ]:
        with pytest.raises(ValueError, match=field):
            call(**kw)
    with pytest.raises(ValueError, match="ddim"):
        sampling.get_sampler("euler_ancestral")


def test_registry_and_evaluation_counts():
    assert sampling.list_samplers() == [
        "ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde", "euler", "heun", "unipc"
    ]  # fmt: skip
    assert sampling.num_evaluations("heun", 18) == 35
    assert sampling.num_evaluations("ddpm", 250) == 250
    den = gaussian_denoiser("eps")
    a = sampling.get_sampler("ddim")(jax.random.key(0), den, (8, 1, 1, 2), COSINE, 6, eta=0.5)
    b = sampling.sample(jax.random.key(0), den, (8, 1, 1, 2), COSINE, 6, method="ddim", eta=0.5)
    np.testing.assert_array_equal(a, b)
    # steps=1 is the single denoising of the start state: x̂0 at λ = −20 is the data mean.
    one = sampling.sample(
        jax.random.key(0), gaussian_denoiser("x0"), (8, 1, 1, 2), COSINE, 1, target="x0"
    )
    np.testing.assert_allclose(np.asarray(one).reshape(8, 2), np.broadcast_to(M, (8, 2)), atol=1e-3)


_SHARDED_SCRIPT = """
import numpy as np, jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxdiff import noise, sampling
assert len(jax.devices()) == 2
sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
den = lambda x, lam: 0.5 * x
cos = noise.get_schedule("cosine")
out = sampling.sample(jax.random.key(7), den, (8, 4, 4, 2), cos, 6, sharding=sharding)
ref = sampling.sample(jax.random.key(7), den, (8, 4, 4, 2), cos, 6)
assert out.sharding.is_equivalent_to(sharding, 4), out.sharding
assert [s.data.shape for s in out.addressable_shards] == [(4, 4, 4, 2)] * 2
np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
print("OK")
"""


@pytest.mark.slow
def test_batch_sharded_over_two_devices():
    """A batch sharded over two (forced host) devices: same samples, split per device."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("method", ["ddpm", "ddim", "heun"])
def test_stateful_denoiser_carry_is_threaded_through_every_evaluation(method):
    """A carry counts the evaluations and records the λ sequence it saw; an ignored carry
    gives exactly the stateless result."""
    schedule = noise.get_schedule("cosine")
    steps, shape = 6, (3, 2)
    net = lambda x, lam: 0.3 * x
    ref = sampling.sample(jax.random.key(0), net, shape, schedule, steps, method=method)

    def stateful(x, lam, carry):
        count, lams = carry
        return net(x, lam), (count + 1, lams.at[count].set(lam[0]))

    n = sampling.num_evaluations(method, steps)
    carry0 = (jnp.int32(0), jnp.zeros((n,), jnp.float32))
    out = sampling.sample(
        jax.random.key(0), stateful, shape, schedule, steps, method=method, carry=carry0
    )
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))

    # Each evaluation must receive the count the previous one returned: 0, 1, ..., n − 1.
    got = []

    def cb(c):
        got.append(int(c))

    def counting(x, lam, carry):
        jax.debug.callback(cb, carry[0])
        return stateful(x, lam, carry)

    sampling.sample(
        jax.random.key(0), counting, shape, schedule, steps, method=method, carry=carry0
    )
    jax.effects_barrier()
    assert sorted(got) == list(range(n))  # every evaluation saw the previous one's carry
