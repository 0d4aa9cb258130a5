"""The linear-β DDPM as a schedule: the table at integer steps, the official conditioning map,
and the respaced grids all read one table (`noise.ddpm_linear_logsnr_table`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import noise
from jaxdiff.models import conditioning
from jaxdiff.sampling import respace


def _official_table(n=1000, b0=1e-4, b1=0.02):
    """Ho et al. 2020 / the official DiT code: betas = linspace, alphas_cumprod = cumprod."""
    abar = np.cumprod(1.0 - np.linspace(b0, b1, n, dtype=np.float64))
    return abar, np.log(abar / (1.0 - abar))


@pytest.mark.parametrize("params", [{}, {"num_steps": 50, "beta_start": 1e-3, "beta_end": 0.1}])
def test_schedule_reads_the_table_at_integer_steps(params):
    n = int(params.get("num_steps", 1000))
    abar, table = _official_table(n, params.get("beta_start", 1e-4), params.get("beta_end", 0.02))
    np.testing.assert_allclose(noise.ddpm_linear_alphas_cumprod(**params), abar, rtol=1e-15)
    np.testing.assert_allclose(noise.ddpm_linear_logsnr_table(**params), table, rtol=1e-12)
    s = noise.get_schedule("ddpm_linear", **params)
    np.testing.assert_allclose(s.logsnr_range, (table[-1], table[0]), rtol=1e-15)
    assert s.clip_masses() == (0.0, 0.0)
    k = np.arange(n)
    with jax.enable_x64(True):
        lam64, t64 = jax.jit(lambda t, lam: (s.logsnr(t), s.t_from_logsnr(lam)))(k / (n - 1), table)
        half = np.asarray(s.logsnr((k[:-1] + 0.5) / (n - 1)))
    np.testing.assert_allclose(lam64, table, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(t64, k / (n - 1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(half, 0.5 * (table[1:] + table[:-1]), rtol=1e-12)  # linear in λ
    lam32 = np.asarray(jax.jit(s.logsnr)(np.float32(k / (n - 1))))
    np.testing.assert_allclose(lam32, table, rtol=2e-6, atol=2e-6)
    # Piecewise-constant density: 1/((T − 1)·(λ_k − λ_{k+1})) inside each step, 0 outside.
    mids = 0.5 * (table[1:] + table[:-1])
    outside = np.array([table[0] + 0.1, table[-1] - 0.1, 20.0, -20.0])
    dens = np.asarray(s.density(np.concatenate([mids, outside]).astype(np.float32)))
    np.testing.assert_allclose(dens[:-4], 1.0 / ((n - 1) * -np.diff(table)), rtol=1e-5)
    np.testing.assert_array_equal(dens[-4:], 0.0)
    np.testing.assert_array_equal(s.t_from_logsnr(np.float32([30.0, -30.0])), [0.0, 1.0])


def test_conditioning_and_respacing_use_the_noise_table():
    table = noise.ddpm_linear_logsnr_table()
    np.testing.assert_array_equal(conditioning.ddpm_linear_logsnr_table(), table)
    assert (
        conditioning.LOGSNR_MIN == noise.LOGSNR_MIN and conditioning.LOGSNR_MAX == noise.LOGSNR_MAX
    )
    np.testing.assert_array_equal(respace.respaced_logsnr("1000"), table[::-1])
    # The official map (fractional step of λ) agrees with the schedule's t·(T − 1).
    lam = jnp.linspace(-10.0, 9.0, 301)
    s = noise.get_schedule("ddpm_linear")
    np.testing.assert_allclose(
        conditioning.ddpm_timestep_from_logsnr(lam), 999.0 * s.t_from_logsnr(lam), atol=2e-3
    )


def test_training_on_ddpm_linear_matches_integer_step_sampling():
    """t ~ U(0, 1) on the schedule draws the continuous step index uniformly: its λ
    quantiles at k/(T−1) are the table's."""
    s = noise.get_schedule("ddpm_linear")
    sampler = noise.get_timestep_sampler("uniform", s)
    lam, w = jax.jit(lambda k: sampler.sample(k, 200_000))(jax.random.key(0))
    steps = np.asarray(conditioning.ddpm_timestep_from_logsnr(lam))
    counts = np.histogram(steps, bins=10, range=(0, 999))[0]
    assert np.all(np.abs(counts / 20_000 - 1) < 0.05) and np.all(np.asarray(w) == 1)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"num_steps": 1.5}, "num_steps must be an integer >= 2"),
        ({"num_steps": 1}, "num_steps must be an integer >= 2"),
        ({"beta_start": 0.0}, "0 < beta_start <= beta_end < 1"),
        ({"beta_start": 0.03}, "0 < beta_start <= beta_end < 1"),
        ({"beta_end": 1.0}, "0 < beta_start <= beta_end < 1"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        noise.get_schedule("ddpm_linear", **params)


def test_importance_proposal_must_cover_the_target():
    with pytest.raises(ValueError, match=r"proposal 'ddpm_linear' draws λ in \[-10.12, 9.21\]"):
        noise.get_timestep_sampler(
            "importance", noise.get_schedule("cosine"), proposal="ddpm_linear"
        )
    target = noise.get_schedule("linear", clip_min=0.01)
    with pytest.raises(ValueError, match=r"puts mass 0.01 on λ = -4.595 \(its clip point\)"):
        noise.get_timestep_sampler("importance", target, proposal="cosine")
    ok = noise.get_timestep_sampler(
        "importance", noise.get_schedule("ddpm_linear"), proposal="cosine"
    )
    assert ok.weight_moments()["mean"] == pytest.approx(1.0, abs=1e-5)


def test_ddpm_linear_logsnr_matches_closed_form():
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    expected = np.log(abar / (1 - abar))
    steps = np.arange(1000)
    got = np.asarray(conditioning.ddpm_linear_logsnr(steps))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(conditioning.ddpm_timestep_from_logsnr(jnp.asarray(expected))),
        steps,
        atol=2e-2,
    )
    frac = jnp.array([0.25, 10.5, 998.75])
    back = conditioning.ddpm_timestep_from_logsnr(conditioning.ddpm_linear_logsnr(frac))
    np.testing.assert_allclose(np.asarray(back), np.asarray(frac), atol=2e-2)
    ends = conditioning.ddpm_timestep_from_logsnr(jnp.array([20.0, -20.0]))
    np.testing.assert_array_equal(np.asarray(ends), [0.0, 999.0])
