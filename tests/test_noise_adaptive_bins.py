"""`timesteps="adaptive_bins"` (VDM++'s adaptive noise schedule): convergence, unbiasedness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from tiny_config import noise_fields

from jaxdiff import diffusion, noise

COSINE = noise.get_schedule("cosine")


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param).type


def _cosine_density(lam):
    return 1.0 / (2.0 * np.pi * np.cosh(0.5 * lam))


def _sampler(**params):
    return noise.get_timestep_sampler("adaptive_bins", COSINE, **params)


def test_starts_as_the_schedule():
    smp = _sampler(num_bins=8, lam_min=-4.0, lam_max=4.0)
    state = smp.init_state()
    pc = _cosine_density(np.asarray(smp.centers()))
    np.testing.assert_allclose(smp.bin_probs(state), pc / pc.sum(), rtol=1e-5)


def _fold_fixed_loss(smp, c_bin, noise_scale, steps=300, batch=256):
    """Run `steps` updates where the objective integrand over λ in bin b is c_bin[b]·(1 + noise):
    loss_i = g_i / q(λ_i) (what the step gives the sampler)."""

    def step(carry, key):
        state, c, scale = carry
        k_draw, k_noise = jax.random.split(key)
        lam, _, _ = smp.draw(k_draw, batch, state)
        idx = jnp.clip(jnp.floor((lam - smp.lam_min) / smp.width).astype(int), 0, len(c) - 1)
        g = c[idx].astype(lam.dtype) * (1.0 + scale * jax.random.normal(k_noise, lam.shape))
        ctx = noise.SamplerContext(lam=lam, loss_per_example=g / smp.density(state, lam))
        state, metrics = smp.update(state, ctx)
        return (state, c, scale), metrics

    @jax.jit
    def run(c, scale):
        keys = jax.random.split(jax.random.key(0), steps)
        (state, _, _), metrics = jax.lax.scan(step, (smp.init_state(), c, scale), keys)
        return state, metrics

    return run(jnp.asarray(c_bin, jnp.float32), jnp.float32(noise_scale))


def test_converges_to_the_normalised_weighted_loss(dtype):
    smp = _sampler(num_bins=12, lam_min=-6.0, lam_max=6.0, decay=0.98, mix=0.1)
    c_bin = np.random.default_rng(0).uniform(0.2, 2.0, 12)
    state, metrics = _fold_fixed_loss(smp, c_bin, 0.3)
    pi = np.asarray(smp.bin_probs(state))
    np.testing.assert_allclose(pi, c_bin / c_bin.sum(), rtol=0.1)
    # q(λ) = mix·p_s + (1 − mix)·π_b/width inside the range.
    lam = np.linspace(-5.9, 5.9, 50)
    q = np.asarray(smp.density(state, jnp.asarray(lam, dtype)))
    idx = np.floor((lam + 6.0) / 1.0).astype(int)
    np.testing.assert_allclose(q, 0.1 * _cosine_density(lam) + 0.9 * pi[idx], rtol=1e-5)
    assert metrics["bins_seen"][-1] == 12 and np.all(np.isfinite(metrics["entropy"]))
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(smp.init_state())
    # Without noise the bias-corrected EMA is exact: π is the normalised loss.
    state, _ = _fold_fixed_loss(smp, c_bin, 0.0)
    np.testing.assert_allclose(smp.bin_probs(state), c_bin / c_bin.sum(), rtol=1e-4)


def test_weight_is_the_density_ratio(dtype):
    smp = _sampler(num_bins=10, lam_min=-5.0, lam_max=5.0, mix=0.25)
    state = {"ema": jnp.linspace(0.1, 2.0, 10, dtype=jnp.float32), "count": jnp.full(10, 50.0)}
    lam = np.array([-20.0, -7.0, -5.0, -4.99, -0.3, 0.0, 2.2, 4.99, 5.0, 11.0, 20.0])
    w = jax.jit(smp.weight)(state, jnp.asarray(lam, dtype))
    assert w.dtype == dtype
    pi = np.asarray(smp.bin_probs(state))
    inside = (lam > -5) & (lam < 5)
    idx = np.clip(np.floor(lam + 5).astype(int), 0, 9)
    p = _cosine_density(lam)
    want = np.where(inside, p / (0.25 * p + 0.75 * pi[idx]), 1 / 0.25)
    np.testing.assert_allclose(w, want, rtol=2e-5)


def test_objective_is_preserved_monte_carlo_vs_integral():
    """E_q[s·f(λ)] = E_schedule[f(λ)] (sample mode) and, with f = g/p_s, = ∫ g dλ (density
    mode: the sampler only moves compute)."""
    smp = _sampler(num_bins=20, lam_min=-8.0, lam_max=8.0, mix=0.1)
    rng = np.random.default_rng(1)
    state = {"ema": jnp.asarray(rng.uniform(0.0, 3.0, 20), jnp.float32),
             "count": jnp.asarray(rng.integers(0, 40, 20), jnp.float32)}  # fmt: skip
    n = 1 << 18
    lam, s, info = jax.jit(smp.draw, static_argnums=1)(jax.random.key(3), n, state)
    assert info == {} and lam.shape == s.shape == (n,)
    lam, s = np.asarray(lam, np.float64), np.asarray(s, np.float64)

    def f(x):
        return np.sin(x) ** 2 + 0.1 * np.abs(x)

    t_end = 2.0 / np.pi * np.arctan(np.exp(-10.0))  # P(λ ≥ 20) = P(λ ≤ −20) for cosine
    target = integrate.quad(lambda x: _cosine_density(x) * f(x), -20, 20, limit=400)[0]
    target += t_end * (f(20.0) + f(-20.0))
    est = s * f(lam)
    assert abs(est.mean() - target) < 4 * est.std() / np.sqrt(n), (est.mean(), target)

    def g(x):
        return np.exp(-0.5 * ((x - 1.0) / 1.5) ** 2)  # ∫ g = 1.5·√(2π)

    est = s * g(lam) / _cosine_density(lam)
    assert abs(est.mean() - 1.5 * np.sqrt(2 * np.pi)) < 4 * est.std() / np.sqrt(n)
    # λ follows q: bin frequencies = mix·P_s(bin) + (1 − mix)·π_b.
    edges = np.linspace(-8, 8, 21)
    t_edges = 2.0 / np.pi * np.arctan(np.exp(-0.5 * edges))
    mass = 0.1 * -np.diff(t_edges) + 0.9 * np.asarray(smp.bin_probs(state))
    counts = np.histogram(lam, edges)[0]
    chi = stats.chisquare(counts, mass / mass.sum() * counts.sum())
    assert chi.pvalue > 1e-3, chi


def test_update_ignores_out_of_range_and_non_finite():
    smp = _sampler(num_bins=4, lam_min=-2.0, lam_max=2.0)
    state = smp.init_state()
    lam = jnp.array([-20.0, -2.0, 2.0, 3.0, 0.5, 0.5])
    loss = jnp.array([1.0, 1.0, 1.0, 1.0, jnp.nan, 2.0])
    new, metrics = jax.jit(smp.update)(state, noise.SamplerContext(lam=lam, loss_per_example=loss))
    np.testing.assert_array_equal(new["count"], [0, 0, 1, 0])
    assert float(metrics["bins_seen"]) == 1.0


@pytest.mark.parametrize(
    "params, field",
    [
        ({"num_bins": 0}, "num_bins"),
        ({"lam_min": 3.0, "lam_max": 3.0}, "lam_max"),
        ({"decay": 1.0}, "decay"),
        ({"decay": -0.5}, "decay"),
        ({"mix": 0.0}, "mix"),
        ({"mix": 1.5}, "mix"),
        ({"bins": 10}, "bins"),
    ],
)
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        _sampler(**params)
    with pytest.raises(ValueError, match=f"noise.timesteps_params.*{field}"):
        diffusion.make_noise_spec(noise_fields(timesteps="adaptive_bins", timesteps_params=params))


def test_works_in_the_existing_loss():
    """`sample(key, n, state)` keeps the old signature, so diffusion_loss can use it now."""
    spec = diffusion.make_noise_spec(
        noise_fields(timesteps="adaptive_bins", weight_mode="density", target="x0", weighting="x0")
    )
    smp = spec.timestep_sampler
    assert smp.stateful and smp.update_every == 1
    x0 = jnp.ones((8, 4, 4, 1))
    loss_fn = jax.jit(
        lambda k: diffusion.diffusion_loss(
            lambda x, lam: jnp.zeros_like(x), x0, k, spec, smp.init_state()
        )
    )
    _, aux = loss_fn(jax.random.key(0))
    # x0 target, zero prediction: MSE 1, weight 1/q(λ).
    np.testing.assert_allclose(aux["weight"], 1.0 / smp.density(smp.init_state(), aux["lam"]),
                               rtol=1e-5)  # fmt: skip
