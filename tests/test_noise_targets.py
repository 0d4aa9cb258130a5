"""Prediction targets and `convert` between eps, x0, v and flow (float32 and float64, jit)."""

import itertools

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


def test_convert_consistent_and_round_trips(dtype):
    x0, eps, lam = _data(dtype)
    x_t = noise.corrupt(x0, eps, lam)
    tol = dict(rtol=2e-3, atol=2e-3) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    junk = np.random.default_rng(1).normal(size=x0.shape).astype(dtype)
    pairs = list(itertools.product(noise.TARGETS, repeat=2))

    @jax.jit
    def run(x0, eps, lam, x_t, junk):
        preds = {t: noise.make_target(x0, eps, lam, t) for t in noise.TARGETS}
        out = {}
        for src, dst in pairs:
            fwd = noise.convert(preds[src], src, dst, x_t, lam)
            junk_fwd = noise.convert(junk, src, dst, x_t, lam)
            out[src, dst] = (
                fwd,
                noise.convert(fwd, dst, src, x_t, lam),
                noise.convert(junk_fwd, dst, src, x_t, lam),
            )
        return preds, out

    preds, out = run(x0, eps, lam, x_t, junk)
    for src, dst in pairs:
        fwd, back, junk_back = out[src, dst]
        np.testing.assert_allclose(fwd, preds[dst], **tol, err_msg=f"{src}->{dst}")
        np.testing.assert_allclose(back, preds[src], **tol, err_msg=f"{src}->{dst}->{src}")
        # Round trip of an arbitrary (not self-consistent) prediction.
        np.testing.assert_allclose(junk_back, junk, **tol, err_msg=f"junk {src}->{dst}->{src}")


def test_bad_target_raises():
    x = np.zeros((1, 2))
    with pytest.raises(ValueError, match=r"target: unknown 'score'; known: \['eps', 'x0'"):
        noise.make_target(x, x, 0.0, "score")
    with pytest.raises(ValueError, match="source: unknown 'score'"):
        noise.convert(x, "score", "eps", x, 0.0)
    with pytest.raises(ValueError, match="target: unknown 'score'"):
        noise.convert(x, "eps", "score", x, 0.0)
