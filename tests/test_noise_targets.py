"""Prediction targets and `convert` between eps, x0, v and flow (float32 and float64, jit).

The conversions' round trips over random x0, ε and λ: tests/test_noise_properties.py."""

import jax
import numpy as np
import pytest

from jaxdiff import noise


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param).type


def _data(dtype):
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (5, 3, 3, 2)).astype(dtype)
    eps = rng.normal(size=(5, 3, 3, 2)).astype(dtype)
    lam = np.array([-6.0, -1.5, 0.0, 2.0, 6.0], dtype)
    return x0, eps, lam


def test_make_target_against_numpy(dtype):
    x0, eps, lam = _data(dtype)
    a = np.sqrt(1 / (1 + np.exp(-lam.astype(np.float64))))[:, None, None, None]
    s = np.sqrt(1 / (1 + np.exp(lam.astype(np.float64))))[:, None, None, None]
    expected = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "flow": eps - x0}
    assert noise.TARGETS == ("eps", "x0", "v", "flow")
    for target in noise.TARGETS:
        out = jax.jit(noise.make_target, static_argnums=3)(x0, eps, lam, target)
        assert out.dtype == dtype
        tol = 1e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(out, expected[target], rtol=tol, atol=tol)


def test_bad_target_raises():
    x = np.zeros((1, 2))
    with pytest.raises(ValueError, match=r"target: unknown 'score'; known: \['eps', 'x0'"):
        noise.make_target(x, x, 0.0, "score")
    with pytest.raises(ValueError, match="source: unknown 'score'"):
        noise.convert(x, "score", "eps", x, 0.0)
    with pytest.raises(ValueError, match="target: unknown 'score'"):
        noise.convert(x, "eps", "score", x, 0.0)
