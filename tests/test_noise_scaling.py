"""Input scaling and Chen 2023 Algorithm 2 corruption, float32 and float64, under jax.jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import noise


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param).type


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_alpha_sigma(dtype):
    lam = np.linspace(-30.0, 30.0, 61).astype(dtype)
    alpha, sigma = jax.jit(noise.alpha_sigma)(lam)
    assert alpha.dtype == dtype and sigma.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(alpha**2, _sigmoid(lam.astype(np.float64)), rtol=tol * 10)
    np.testing.assert_allclose(sigma**2, _sigmoid(-lam.astype(np.float64)), rtol=tol * 10)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=tol)
    np.testing.assert_allclose(np.log(alpha**2 / sigma**2), lam, rtol=1e-5, atol=1e-4)


def test_input_scaled_shifts_logsnr(dtype):
    base = noise.get_schedule("laplace", mu=0.2, b=0.6)
    t = np.linspace(0.02, 0.98, 49).astype(dtype)
    lam = np.linspace(-5, 5, 21).astype(dtype)
    scales = (0.3, 1.0, 2.5)

    @jax.jit
    def run(t, lam):
        out = []
        for b in scales:
            s, shift = noise.input_scaled(base, b), 2 * np.log(b)
            out.append(
                (
                    (s.logsnr(t), s.t_from_logsnr(lam), s.density(lam)),
                    (
                        base.logsnr(t) + shift,
                        base.t_from_logsnr(lam - shift),
                        base.density(lam - shift),
                    ),
                )
            )
        return out

    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for got, want in run(t, lam):
        for x, y in zip(got, want, strict=True):
            np.testing.assert_allclose(x, y, **tol)
    assert noise.input_scaled(noise.input_scaled(base, 2.0), 0.5) == base
    assert noise.effective_logsnr(1.0, 0.5) == pytest.approx(1.0 + 2 * np.log(0.5))


def test_corrupt_matches_chen_algorithm_2(dtype):
    key = jax.random.key(0)
    x0 = jax.random.normal(key, (3, 4, 4, 2), dtype)
    eps = jax.random.normal(jax.random.fold_in(key, 1), (3, 4, 4, 2), dtype)
    lam = np.array([-3.0, 0.5, 4.0], dtype)
    g = _sigmoid(lam.astype(np.float64))[:, None, None, None]
    x0n, epsn = np.asarray(x0, np.float64), np.asarray(eps, np.float64)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    scales = (1.0, 0.5, 3.0)

    @jax.jit
    def run(x0, eps, lam):
        out = []
        for b in scales:
            alpha, sigma = noise.alpha_sigma(noise.effective_logsnr(lam, b))
            vp = alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * eps
            out.append(
                (
                    noise.corrupt(x0, eps, lam, scale=b),
                    noise.corrupt(x0, eps, lam, scale=b, normalize=True),
                    vp,
                    noise.input_norm(lam, b),
                )
            )
        return out

    for b, (raw, normed, vp, norm) in zip(scales, run(x0, eps, lam), strict=True):
        chen = np.sqrt(g) * b * x0n + np.sqrt(1 - g) * epsn
        assert raw.dtype == dtype and raw.shape == x0.shape
        np.testing.assert_allclose(raw, chen, **tol)
        np.testing.assert_allclose(normed, chen / np.sqrt((b**2 - 1) * g + 1), **tol)
        # The normalised x_t is the VP x_t of the original x0 at λ_eff = λ + 2·log b.
        np.testing.assert_allclose(normed, vp, **tol)
        np.testing.assert_allclose(norm, np.sqrt((b**2 - 1) * g[:, 0, 0, 0] + 1), **tol)


def test_normalised_corruption_has_unit_variance():
    """For unit-variance data (here ±1 pixels), the normalised x_t has unit variance."""
    k1, k2 = jax.random.split(jax.random.key(1))
    n = 200_000
    x0 = jnp.where(jax.random.bernoulli(k1, 0.5, (n, 1)), 1.0, -1.0)
    eps = jax.random.normal(k2, (n, 1))
    for lam, b in [(-1.0, 0.25), (0.0, 0.5), (2.0, 2.0), (6.0, 4.0)]:
        raw = noise.corrupt(x0, eps, jnp.full((n,), lam), scale=b)
        out = noise.corrupt(x0, eps, jnp.full((n,), lam), scale=b, normalize=True)
        assert float(jnp.var(out)) == pytest.approx(1.0, abs=0.015)
        expected_raw = (b**2 - 1) * _sigmoid(lam) + 1
        assert float(jnp.var(raw)) == pytest.approx(expected_raw, rel=0.02)
        assert abs(expected_raw - 1.0) > 0.1  # the normalisation does something here


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_scale_raises(bad):
    s = noise.get_schedule("cosine")
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        noise.input_scaled(s, bad)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        noise.corrupt(x, x, jnp.zeros(2), scale=bad)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        noise.effective_logsnr(0.0, bad)


def test_traced_scale_raises():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="Python number"):
        jax.jit(lambda b: noise.corrupt(x, x, jnp.zeros(2), scale=b))(2.0)
