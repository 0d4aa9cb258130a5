"""`timesteps="speed"` (SpeeD, Wang et al. 2024): p(t) is the paper's formula; dual pairs; the
sampler/* scalars it logs."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from tiny_config import noise_fields

from jaxdiff import diffusion, noise
from jaxdiff.training import loop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import digits  # noqa: E402


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param).type


def _reference(name, steps=1000, threshold=1e-4):
    """λ_t, p(t) and τ from closed-form schedules, with an explicit finite difference."""
    t = np.arange(steps) / (steps - 1)
    with np.errstate(divide="ignore"):
        lam = {
            "cosine": 2.0 * np.log(1.0 / np.tan(0.5 * np.pi * t)),
            "flow": 2.0 * np.log((1.0 - t) / t),
        }[name]
    lam = np.clip(lam, -20.0, 20.0)
    f = np.sqrt(1.0 - 1.0 / (1.0 + np.exp(-lam)))  # √(1 − ᾱ), ᾱ = sigmoid(λ)
    grad = np.empty_like(f)
    grad[1:-1] = 0.5 * (f[2:] - f[:-2])
    grad[0], grad[-1] = f[1] - f[0], f[-1] - f[-2]
    p = np.tanh(1e6 * (grad - threshold)) + 1.5
    tau = int(np.nonzero(grad < threshold)[0][0]) + 1
    return lam, p / p.sum(), tau


@pytest.mark.parametrize("name", ["cosine", "flow"])
def test_step_probabilities_are_the_papers_formula(name):
    smp = noise.get_timestep_sampler("speed", noise.get_schedule(name))
    p, tau, lam, weight = smp.tables()
    ref_lam, ref_p, ref_tau = _reference(name)
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p, ref_p, rtol=1e-9)
    assert tau == ref_tau and 1 < tau < 1000
    # ≈ 5× more mass per step before the threshold than after it.
    np.testing.assert_allclose(p[: tau - 10].mean() / p[tau + 10 :].mean(), 5.0, rtol=1e-6)
    np.testing.assert_allclose(weight, 1.0 / (1.0 + np.exp(ref_lam)), rtol=1e-12)  # P2, k=γ=1


def test_draws_are_p_then_their_duals(dtype):
    smp = noise.get_timestep_sampler("speed", noise.get_schedule("cosine"))
    p, tau, lam_table, w_table = smp.tables()
    n, m = 64, 33
    keys = jax.random.split(jax.random.key(0), 400)
    t = np.asarray(jax.jit(jax.vmap(lambda k: smp.draw_steps(k, n)))(keys))
    np.testing.assert_array_equal(t[:, m:], np.where(t[:, : n - m] < tau, tau - t[:, : n - m],
                                                     t[:, : n - m] - tau))  # fmt: skip
    # The first m of each batch follow p (chi-square over 10 equal-mass groups of steps).
    groups = np.minimum((np.cumsum(p) * 10).astype(int), 9)
    chi = stats.chisquare(np.bincount(groups[t[:, :m].ravel()], minlength=10))
    assert chi.pvalue > 1e-3, chi
    dual = smp.dual_probs()
    np.testing.assert_allclose(dual.sum(), 1.0)
    lam, weight, info = jax.jit(smp.draw, static_argnums=1)(jax.random.key(1), 7)
    assert info == {} and lam.dtype == dtype and lam.shape == weight.shape == (7,)
    steps = np.asarray(smp.draw_steps(jax.random.key(1), 7))
    np.testing.assert_allclose(lam, lam_table[steps], rtol=1e-6)
    np.testing.assert_allclose(weight, w_table[steps], rtol=1e-6)


def test_options():
    cos = noise.get_schedule("cosine")
    plain = noise.get_timestep_sampler("speed", cos, p2_gamma=0.0, dual=False, num_steps=100)
    p, tau, lam, w = plain.tables()
    np.testing.assert_array_equal(w, 1.0)
    assert p.shape == (100,)
    t = plain.draw_steps(jax.random.key(0), 9)
    assert t.shape == (9,) and t.dtype == jnp.int32
    assert noise.get_timestep_sampler("speed", cos) == noise.get_timestep_sampler("speed", cos)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"num_steps": 1}, "num_steps"),
        ({"sharpness": 0.0}, "sharpness"),
        ({"offset": 1.0}, "offset"),
        ({"p2_gamma": -1.0}, "p2_gamma"),
        ({"p2_k": -1.0}, "p2_k"),
        ({"dual": "yes"}, "dual"),
        ({"k": 5}, "k"),
    ],
)
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        noise.get_timestep_sampler("speed", noise.get_schedule("cosine"), **params)
    with pytest.raises(ValueError, match=f"noise.timesteps_params.*{field}"):
        diffusion.make_noise_spec(noise_fields(timesteps="speed", timesteps_params=params))


@pytest.mark.parametrize("name", ["cosine", "flow"])
def test_update_reports_the_fixed_scalars(name, dtype):
    """No state; every step's metrics: τ, the acceleration area's size and p-mass (from the
    explicit finite difference), the batch's mean λ and largest P2 weight 1/(1 + SNR)."""
    smp = noise.get_timestep_sampler("speed", noise.get_schedule(name))
    assert smp.stateful and smp.update_every == 1
    assert noise.init_sampler_state(smp, jax.random.key(0), (4, 8, 8, 1)) == {}
    ref_lam, ref_p, ref_tau = _reference(name)
    lam, _ = smp.sample(jax.random.key(0), 16)
    ctx = noise.SamplerContext(step=jnp.int32(3), lam=lam)
    state, metrics = jax.jit(smp.update)({}, ctx)
    assert state == {}
    f = np.sqrt(1.0 / (1.0 + np.exp(ref_lam)))
    accel = np.gradient(f) > 1e-4
    assert 0 < accel.sum() < 1000
    assert float(metrics["tau"]) == ref_tau
    assert float(metrics["accel_steps"]) == accel.sum()
    np.testing.assert_allclose(metrics["accel_mass"], ref_p[accel].sum(), rtol=1e-6)
    assert metrics["accel_mass"] > 0.5  # ≈ 5× the draws per step of the convergence area
    lam64 = np.asarray(lam, np.float64)
    np.testing.assert_allclose(metrics["mean_lam"], lam64.mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        metrics["max_weight"], np.max(1.0 / (1.0 + np.exp(lam64))), rtol=1e-5
    )
    assert metrics["mean_lam"].dtype == dtype


def test_the_training_loop_logs_the_sampler_scalars(tmp_path):
    """Like the learned samplers, `speed`'s sampler/* scalars reach metrics.jsonl."""
    c = digits.get_config("tiny")
    c.data.batch_size, c.sample_every_steps = 16, 0
    c.total_steps, c.log_every_steps = 2, 1
    c.noise.timesteps = "speed"
    loop.train(c, str(tmp_path / "run"), devices=jax.devices()[:1])
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    rows = [r for r in rows if "sampler/tau" in r]
    assert [r["step"] for r in rows] == [1, 2]
    smp = noise.get_timestep_sampler("speed", noise.get_schedule(c.noise.schedule))
    assert rows[-1]["sampler/tau"] == smp.tables()[1]
    assert {"sampler/accel_mass", "sampler/mean_lam", "sampler/max_weight"} <= set(rows[-1])
