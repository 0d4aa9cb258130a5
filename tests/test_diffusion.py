"""diffusion_loss and make_noise_spec: validation, hand-computed loss, jit without retrace,
and "change p(λ)" (importance sampling) vs "change w(λ)" (density mode) objectives."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tiny_config import noise_fields

from jaxdiff import diffusion, noise
from jaxdiff.errors import ConfigError


def _config(**overrides):
    """The base config's noise section on Laplace (b = 0.5), with ``overrides``."""
    return noise_fields(**{"schedule": "laplace", "schedule_params": {"b": 0.5}, **overrides})


def test_make_noise_spec_from_config_dict_and_dict():
    cfg = ml_collections.ConfigDict(_config(weighting="min_snr", weighting_params={"gamma": 4}))
    spec = diffusion.make_noise_spec(cfg)
    assert spec == diffusion.make_noise_spec(
        _config(weighting="min_snr", weighting_params={"gamma": 4.0})
    )
    assert hash(spec) == hash(diffusion.make_noise_spec(cfg))
    assert spec.schedule == noise.get_schedule("laplace", b=0.5)
    assert spec.weighting == noise.get_weighting("min_snr", gamma=4.0)
    assert isinstance(spec.timestep_sampler, noise.UniformSampler)
    defaults = diffusion.make_noise_spec(noise_fields(schedule="cosine"))
    assert (defaults.input_scale, defaults.normalize_input, defaults.weight_mode) == (
        1.0,
        False,
        "sample",
    )
    scaled = diffusion.make_noise_spec(_config(input_scale=0.5))
    assert scaled.effective_schedule == noise.input_scaled(scaled.schedule, 0.5)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"schedule": "foo"}, r"noise.schedule: unknown 'foo'; allowed: .*laplace"),
        ({"schedule_params": {"b": -1.0}}, "noise.schedule_params: .*b must be > 0"),
        ({"schedule_params": {"q": 1.0}}, r"noise.schedule_params: .*unknown parameter.*'q'"),
        ({"input_scale": -1}, "noise.input_scale: got -1; allowed: a finite number > 0"),
        ({"input_scale": 0.0}, "noise.input_scale: got 0.0"),
        ({"input_scale": "big"}, "noise.input_scale: got 'big'"),
        ({"input_scale": True}, "noise.input_scale: got True"),
        ({"normalize_input": "yes"}, "noise.normalize_input: got 'yes'; allowed: True, False"),
        ({"target": "score"}, "noise.target: unknown 'score'; allowed: eps, x0, v, flow$"),
        ({"weighting": "lsnr"}, "noise.weighting: unknown 'lsnr'; allowed: "),
        (
            {"weighting": "min_snr", "weighting_params": {"gamma": 0}},
            "noise.weighting_params: .*gamma",
        ),
        ({"weight_mode": "both"}, "noise.weight_mode: unknown 'both'; allowed: sample, density$"),
        ({"timesteps": "learned"}, "noise.timesteps: unknown 'learned'; allowed: "),
        ({"timesteps": "importance"}, "noise.timesteps_params: .*'proposal'"),
        ({"schedule_params": 3}, "noise.schedule_params: got 3; allowed: a dict of parameters"),
        ({"typo": 1}, r"noise: unknown field\(s\) \['typo'\]; allowed: "),
    ],
)
def test_make_noise_spec_errors_name_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        diffusion.make_noise_spec(_config(**overrides))


@pytest.mark.parametrize("field", diffusion.NOISE_FIELDS)
def test_every_noise_field_is_required(field):
    """The base config is the one place with defaults: a section without a field is refused,
    naming it, instead of falling back to a second copy of the default."""
    partial = {k: v for k, v in _config().items() if k != field}
    with pytest.raises(ConfigError, match=f"^noise.{field}: missing; allowed: start from"):
        diffusion.make_noise_spec(partial)
    assert set(_config()) == set(diffusion.NOISE_FIELDS)  # the base config has every field


def _toy_denoiser(x_t, lam):
    return 0.3 * x_t + 0.1 * jnp.tanh(lam)[:, None, None, None]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"target": "v", "weighting": "min_snr", "input_scale": 0.5, "normalize_input": True},
        {"target": "x0", "weighting": "soft_min_snr", "input_scale": 2.0, "weight_mode": "density"},
        {"target": "flow", "weighting": "edm", "timesteps": "stratified", "input_scale": 0.7},
        {
            "target": "eps",
            "weighting": "sigmoid",
            "timesteps": "importance",
            "timesteps_params": {"proposal": "cosine"},
            "weight_mode": "density",
        },
    ],
)
def test_loss_equals_hand_computation(overrides):
    spec = diffusion.make_noise_spec(_config(**overrides))
    c = _config(**overrides)
    x0 = jax.random.uniform(jax.random.key(5), (6, 4, 4, 3), minval=-1, maxval=1)
    key = jax.random.key(7)

    @jax.jit
    def run(x0, key):
        loss, aux = diffusion.diffusion_loss(_toy_denoiser, x0, key, spec)
        # The random draws, recomputed from the documented key split, for the NumPy version.
        k_t, k_eps = jax.random.split(key)
        lam, s_w = spec.timestep_sampler.sample(k_t, 6, spec.timestep_sampler.init_state())
        return loss, aux, lam, s_w, jax.random.normal(k_eps, x0.shape), spec.schedule.density(lam)

    loss, aux, lam, s_w, eps, density = run(x0, key)
    # Independent recomputation in NumPy (float64), sharing only the random draws.
    lam, s_w, eps = (np.asarray(a, np.float64) for a in (lam, s_w, eps))
    x0 = np.asarray(x0, np.float64)
    b = c["input_scale"]
    g = (1 / (1 + np.exp(-lam)))[:, None, None, None]
    x_t = np.sqrt(g) * b * x0 + np.sqrt(1 - g) * eps
    if c["normalize_input"]:
        x_t = x_t / np.sqrt((b**2 - 1) * g + 1)
    lam_eff = lam + 2 * np.log(b)
    pred = 0.3 * x_t + 0.1 * np.tanh(lam_eff)[:, None, None, None]
    a_eff = np.sqrt(1 / (1 + np.exp(-lam_eff)))[:, None, None, None]
    s_eff = np.sqrt(1 / (1 + np.exp(lam_eff)))[:, None, None, None]
    target = {"eps": eps, "x0": x0, "v": a_eff * eps - s_eff * x0, "flow": eps - x0}[c["target"]]
    snr = np.exp(lam_eff)
    w_x0 = {
        "snr": snr,
        "min_snr": np.minimum(snr, 5.0),
        "soft_min_snr": snr * 5 / (snr + 5),
        "edm": snr + 4.0,
        "sigmoid": snr / (1 + np.exp(lam_eff - 2.0)),
    }[c["weighting"]]
    factor = {"eps": snr, "x0": 1.0, "v": snr + 1, "flow": (1 + np.exp(lam_eff / 2)) ** 2}
    w = w_x0 / factor[c["target"]]
    if c["weight_mode"] == "density":
        np.testing.assert_allclose(density, np.exp(-np.abs(lam) / 0.5) / 1.0, rtol=1e-5)
        w = w / np.asarray(density, np.float64)
    if c["timesteps"] == "importance":  # p_laplace / p_cosine
        ratio = (np.exp(-np.abs(lam) / 0.5) / 1.0) / (1 / (2 * np.pi * np.cosh(lam / 2)))
        np.testing.assert_allclose(s_w, ratio, rtol=1e-4)
    else:
        np.testing.assert_array_equal(s_w, 1.0)
    per_example = np.mean((pred - target) ** 2, axis=(1, 2, 3)) * w * s_w
    np.testing.assert_allclose(aux["lam"], lam_eff, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aux["weight"], w * s_w, rtol=1e-4)
    np.testing.assert_allclose(aux["loss_per_example"], per_example, rtol=1e-4)
    np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-4)
    np.testing.assert_allclose(aux["sampler_lam"], lam, rtol=1e-5, atol=1e-5)  # unscaled λ
    assert aux["sampler_info"] == {}  # a stateless sampler draws nothing else
    assert all(v.shape == (6,) for k, v in aux.items() if k != "sampler_info")


def test_jit_compiles_once_across_calls():
    traces = []

    def denoiser(x_t, lam):
        traces.append(1)  # runs at trace time only
        return _toy_denoiser(x_t, lam)

    step = jax.jit(diffusion.diffusion_loss, static_argnums=(0, 3))
    for i in range(3):
        spec = diffusion.make_noise_spec(_config(target="v", weighting="min_snr"))  # equal, new
        x0 = jax.random.normal(jax.random.key(i), (4, 4, 4, 1))
        loss, _ = step(denoiser, x0, jax.random.key(10 + i), spec)
        assert np.isfinite(loss)
    assert len(traces) == 1


def test_float64():
    with jax.enable_x64(True):
        spec = diffusion.make_noise_spec(_config(target="v", weighting="min_snr"))
        x0 = jax.random.normal(jax.random.key(0), (4, 2, 2, 1), jnp.float64)
        loss, aux = jax.jit(lambda x, k: diffusion.diffusion_loss(_toy_denoiser, x, k, spec))(
            x0, jax.random.key(1)
        )
        assert loss.dtype == jnp.float64 and aux["lam"].dtype == jnp.float64


def _expected_objective(schedule, weighting, mode, x0):
    """Exact E over ε of the toy loss, integrated over λ in float64 NumPy.

    Denoiser ε̂ = x_t (eps target): error = α·x0 + (σ − 1)·ε, E‖·‖² = α²·x0² + (σ − 1)².
    "sample": ∫ p(λ)·w(λ)·E[mse] dλ; "density": ∫ w(λ)·E[mse] dλ.
    """
    lam = np.linspace(-40, 40, 400_001)
    a2 = 1 / (1 + np.exp(-lam))
    mse = a2 * np.mean(x0**2) + (np.sqrt(1 - a2) - 1) ** 2
    w = np.asarray(noise.get_weighting(weighting)(lam, "eps"), np.float64)
    p = np.asarray(schedule.density(lam), np.float64) if mode == "sample" else 1.0
    return np.trapezoid(p * w * mse, lam)


@pytest.mark.parametrize(
    "mode,schedule,timesteps",
    [
        ("sample", "laplace", "uniform"),
        (
            "sample",
            "laplace",
            "importance",
        ),  # train with cosine's p(λ), optimise Laplace's objective
        ("density", "cosine", "uniform"),
        ("density", "flow", "uniform"),
        ("density", "laplace", "importance"),
    ],
)
def test_monte_carlo_objective(mode, schedule, timesteps):
    """Changing p(λ) by importance sampling keeps schedule B's objective; in density mode the
    objective ∫ w·MSE dλ does not depend on the schedule that samples λ."""
    params = {"b": 0.5} if schedule == "laplace" else {}
    t_params = {"proposal": "cosine"} if timesteps == "importance" else {}
    spec = diffusion.make_noise_spec(
        _config(
            schedule=schedule,
            schedule_params=params,
            weighting="min_snr",
            weight_mode=mode,
            timesteps=timesteps,
            timesteps_params=t_params,
        )
    )
    n = 100_000
    x0 = jnp.tile(jnp.array([0.9, -0.4, 0.1, -1.0]).reshape(1, 2, 2, 1), (n, 1, 1, 1))
    loss, _ = jax.jit(lambda x, k: diffusion.diffusion_loss(lambda x_t, lam: x_t, x, k, spec))(
        x0, jax.random.key(0)
    )
    exact = _expected_objective(spec.schedule, "min_snr", mode, np.asarray(x0[0]))
    assert float(loss) == pytest.approx(exact, rel=2e-2)
