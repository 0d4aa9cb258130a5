"""Timestep samplers: uniform, stratified, importance (one signature, jit-able)."""

import functools

import jax
import numpy as np
import pytest
from scipy import stats

from jaxdiff import noise


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param).type


def _sample(sampler, key, n):
    return jax.jit(functools.partial(sampler.sample, n=n))(key, state=sampler.init_state())


def test_registry():
    assert {"uniform", "stratified", "importance"} <= set(noise.list_timestep_samplers())
    assert {"adaptive", "adaptive_bins", "speed"} <= set(noise.list_timestep_samplers())


def test_uniform_is_logsnr_of_uniform_t(dtype):
    s = noise.get_schedule("laplace")
    sampler = noise.get_timestep_sampler("uniform", s)
    assert sampler.init_state() == {}
    key = jax.random.key(3)
    lam, weight = _sample(sampler, key, 4096)
    assert lam.shape == (4096,) and lam.dtype == dtype and weight.dtype == dtype
    np.testing.assert_array_equal(weight, 1.0)
    np.testing.assert_allclose(lam, s.logsnr(jax.random.uniform(key, (4096,), dtype)), rtol=1e-6)
    cdf = 1.0 - np.asarray(jax.jit(s.t_from_logsnr)(lam))
    assert stats.kstest(cdf, "uniform").pvalue > 1e-3  # λ ~ p(λ): its CDF 1 − t(λ) is U(0, 1)


def test_stratified_one_t_per_stratum():
    s = noise.get_schedule("cosine")
    sampler = noise.get_timestep_sampler("stratified", s)
    n = 64
    lams = [_sample(sampler, jax.random.key(i), n) for i in range(2)]
    t = np.asarray(jax.jit(s.t_from_logsnr)(lams[0][0]))
    np.testing.assert_array_equal(np.sort(np.floor(t * n).astype(int)), np.arange(n))
    np.testing.assert_array_equal(lams[0][1], 1.0)
    assert not np.all(np.diff(t) > 0)  # randomly permuted, not sorted
    assert not np.allclose(lams[0][0], lams[1][0])
    # Marginally still U(0, 1): pooled t over many draws passes KS.
    keys = jax.random.split(jax.random.key(9), 500)
    draws = jax.jit(jax.vmap(lambda k: noise.stratified_t(k, 8)))(keys)
    assert stats.kstest(np.asarray(draws).ravel(), "uniform").pvalue > 1e-3


def test_importance_weights_are_density_ratios():
    target = noise.get_schedule("laplace", b=0.5)
    sampler = noise.get_timestep_sampler(
        "importance", target, proposal="cauchy", proposal_params={"gamma": 1.5}
    )
    flat = noise.get_timestep_sampler("importance", target, proposal="cauchy", proposal_gamma=1.5)
    assert flat == sampler and sampler.proposal == noise.get_schedule("cauchy", gamma=1.5)
    lam, weight = _sample(sampler, jax.random.key(0), 2000)
    lam = np.asarray(lam, np.float64)
    p_target = np.exp(-np.abs(lam) / 0.5) / (2 * 0.5)
    p_prop = 1.5 / (np.pi * (lam**2 + 1.5**2))
    # At the clip points ±20 (atoms of both): the ratio of the tail masses beyond them.
    mass_ratio = 0.5 * np.exp(-20 / 0.5) / stats.cauchy.sf(20.0, scale=1.5)
    want = np.where(np.abs(lam) == 20.0, mass_ratio, p_target / p_prop)
    assert np.sum(np.abs(lam) == 20.0) > 10  # Cauchy(1.5) has 4.8% of its mass there
    np.testing.assert_allclose(weight, want, rtol=1e-4, atol=1e-30)
    # λ itself follows the proposal.
    cdf = 1.0 - np.asarray(jax.jit(sampler.proposal.t_from_logsnr)(lam))
    assert stats.kstest(cdf, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("stratified", [False, True])
def test_importance_expectation_equals_target(stratified):
    """E_proposal[weight·f(λ)] = E_target[f(λ)] (Monte Carlo vs numerical integral)."""
    target = noise.get_schedule("laplace", mu=0.5, b=0.6)
    sampler = noise.get_timestep_sampler(
        "importance", target, proposal="cosine", stratified=stratified
    )
    f = lambda lam: 1.0 / (1.0 + np.exp(-lam)) + 0.2 * np.tanh(lam) ** 2
    lam, weight = _sample(sampler, jax.random.key(1), 200_000)
    mc = np.mean(np.asarray(weight, np.float64) * f(np.asarray(lam, np.float64)))
    grid = np.linspace(-30, 30, 200_001)
    exact = np.trapezoid(f(grid) * np.exp(-np.abs(grid - 0.5) / 0.6) / 1.2, grid)
    assert mc == pytest.approx(exact, rel=5e-3)
    # Without the weights the estimate is the proposal's expectation instead.
    assert np.mean(f(np.asarray(lam, np.float64))) != pytest.approx(exact, rel=2e-2)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda s: noise.get_timestep_sampler("adaptive_x", s), r"unknown timestep sampler.*\["),
        (lambda s: noise.get_timestep_sampler("uniform", s, k=1), r"unknown parameter.*'k'"),
        (lambda s: noise.get_timestep_sampler("importance", s), "'proposal'.*required"),
        (
            lambda s: noise.get_timestep_sampler("importance", s, proposal="nope"),
            "unknown noise schedule 'nope'",
        ),
        (
            lambda s: noise.get_timestep_sampler("importance", s, proposal="laplace", b=1.0),
            r"unknown parameter.*'b'",
        ),
        (
            lambda s: noise.get_timestep_sampler("importance", s, proposal="laplace", proposal_q=1),
            r"schedule 'laplace': unknown parameter.*'q'",
        ),
        (lambda s: noise.get_timestep_sampler("uniform", "cosine"), "must be a Schedule"),
        (lambda s: noise.register_timestep_sampler("uniform")(len), "already registered"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(noise.get_schedule("cosine"))
