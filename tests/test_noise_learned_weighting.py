"""EDM2's learned uncertainty weighting: u(λ) converges to log of the weighted MSE."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdiff import noise

lw = noise.learned_weighting


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param).type


def _log_a(lam, xp=np):
    """log of a weighted MSE that varies over λ by a factor ≈ e³."""
    return 0.8 * xp.sin(lam / 3.0) - 1.0 + 0.1 * lam


def test_u_converges_to_log_weighted_mse():
    weighting = lw.get_learned_weighting("uncertainty")
    params = weighting.init(jax.random.key(0))
    opt = optax.adam(optax.cosine_decay_schedule(1e-2, 400))  # decay averages out the noise

    def step(carry, key):
        params, state = carry
        k_lam, k_noise = jax.random.split(key)
        lam = jax.random.uniform(k_lam, (256,), minval=-10.0, maxval=10.0)
        # A noisy per-example weighted MSE whose mean at λ is a(λ) (Gamma(10)/10 noise).
        mse = jnp.exp(_log_a(lam, jnp)) * jax.random.gamma(k_noise, 10.0, (256,)) / 10.0
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(lw.uncertainty_loss(p, lam, mse)))(
            params
        )
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    keys = jax.random.split(jax.random.key(1), 400)
    (params, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), keys))(params)
    grid = np.linspace(-8.0, 8.0, 33)
    u = np.asarray(lw.logvar(params, jnp.asarray(grid, jnp.float32)))
    np.testing.assert_allclose(u, _log_a(grid), atol=0.05)  # over a range of e^3.2
    assert losses[-50:].mean() < losses[:50].mean()


def test_formula_and_gradients(dtype):
    weighting = lw.get_learned_weighting("uncertainty", channels=16, hidden_depth=1, hidden_width=8)
    params = weighting.init(jax.random.key(0))
    lam = jnp.linspace(-15.0, 15.0, 7, dtype=dtype)
    np.testing.assert_array_equal(lw.logvar(params, lam), 0.0)  # zero head: u ≡ 0 at init
    params["head"] = {"w": jnp.linspace(-1, 1, 8, dtype=jnp.float32), "b": jnp.float32(0.3)}
    u = jax.jit(lw.logvar)(params, lam)
    # Independent recomputation of u from the documented formula.
    f = params["fourier"]
    h = np.sqrt(2.0) * np.cos(np.outer(-np.asarray(lam) / 8.0, f["freqs"]) + f["phases"])
    h = h @ params["hidden_0"]["w"] + params["hidden_0"]["b"]
    h = h / (1.0 + np.exp(-h))
    np.testing.assert_allclose(u, h @ params["head"]["w"] + 0.3, rtol=1e-5, atol=1e-6)
    mse = jnp.linspace(0.1, 2.0, 7, dtype=dtype)
    loss = jax.jit(lw.uncertainty_loss)(params, lam, mse)
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss, np.asarray(mse) * np.exp(-np.asarray(u)) + u, rtol=1e-5)
    grads = jax.grad(lambda p: jnp.sum(lw.uncertainty_loss(p, lam, mse)))(params)
    np.testing.assert_array_equal(grads["fourier"]["freqs"], 0.0)  # fixed features
    assert np.any(grads["head"]["w"] != 0)
    mask = lw.trainable_mask(params)
    assert mask["fourier"] == {"freqs": False, "phases": False}
    assert mask["head"] == {"w": True, "b": True} and mask["hidden_0"]["w"]
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize(
    "name, params, field",
    [
        ("edm2", {}, "learned_weighting"),
        ("none", {"channels": 4}, "learned_weighting_params"),
        ("uncertainty", {"width": 4}, "width"),
        ("uncertainty", {"channels": 0}, "channels"),
        ("uncertainty", {"hidden_depth": -1}, "hidden_depth"),
        ("uncertainty", {"bandwidth": -1.0}, "bandwidth"),
    ],
)
def test_bad_config_names_the_field(name, params, field):
    with pytest.raises(ValueError, match=field):
        lw.get_learned_weighting(name, **params)


def test_registry():
    assert lw.LEARNED_WEIGHTINGS == ("none", "uncertainty")
    assert lw.get_learned_weighting("none") is None
    w = lw.get_learned_weighting("uncertainty")
    assert (w.channels, w.hidden_depth) == (128, 0) and hash(w) == hash(lw.UncertaintyWeighting())
