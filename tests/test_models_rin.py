"""RIN: shapes, latent self-conditioning (train and sampling, its rate a field set from
``train.self_cond_rate``), dropout RNG, single compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_config import RIN_TINY, perturbed

from configs import digits
from jaxdiff.errors import ConfigError
from jaxdiff.models import get_model
from jaxdiff.sampling import sample
from jaxdiff.training import generate
from jaxdiff.training.config import build_model
from jaxdiff.training.experiment import build_experiment

TINY = dict(RIN_TINY, image_size=8, patch_size=2, num_classes=3)


@pytest.fixture(scope="module")
def rin():
    model = get_model("RIN-cifar10-tiny", **TINY)
    b = 8
    x = jax.random.normal(jax.random.key(0), (b, 8, 8, 3))
    cond = jnp.linspace(0.0, 1000.0, b)
    y = jnp.arange(b, dtype=jnp.int32) % 4  # includes the null class 3
    variables = jax.jit(model.init)(jax.random.key(1), x, cond, y)
    out = jax.jit(model.apply)(variables, x, cond, y)  # the prediction only, as every model
    sample_apply = jax.jit(model.sample_apply)
    out_zero, latents = sample_apply(variables, x, cond, y, model.initial_carry(b))
    assert out.shape == (8, 8, 8, 3) and latents.shape == (8, 4, 16)
    np.testing.assert_array_equal(out_zero, out)  # __call__: no previous latents
    # At initialisation self-conditioning is a no-op (its LayerNorm scale starts at zero).
    out_sc, _ = sample_apply(variables, x, cond, y, latents + 3.0)
    np.testing.assert_array_equal(out_sc, out)
    assert float(jnp.abs(out).max()) > 0  # Glorot-initialised output layer, as official
    return model, perturbed(variables, 0.1), (x, cond, y)  # (0.1: the self-cond LayerNorm)


def test_fixture_shapes_and_initial_self_conditioning(rin):
    model, variables, (x, cond, y) = rin  # the checks run in the fixture
    assert model.num_latents == 4 and model.latent_dim == 16


@pytest.mark.parametrize(
    "name,size,official",
    [
        ("RIN-cifar10", 32, 30_951_180),
        ("RIN-imagenet64", 64, 157_780_160),
        ("RIN-imagenet128", 128, 395_780_656),
        ("RIN-imagenet256", 256, 395_928_256),
    ],
)
def test_parameter_count_equals_the_official_implementation(name, size, official):
    """Counts of google-research/pix2seq's ImageTapeDenoiser (eabd4e9), built in Keras with
    the same settings (the official CIFAR-10 / ImageNet-64 configs; 128 / 256 px are our
    settings, for which no official config exists)."""
    model = get_model(name)
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)), jnp.zeros((1,)),
        jnp.zeros((1,), jnp.int32),
    )  # fmt: skip
    assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes)) == official


def test_previous_latents_change_the_prediction(rin):
    model, variables, (x, cond, y) = rin
    sample_apply = jax.jit(model.sample_apply)
    out0 = jax.jit(model.apply)(variables, x, cond, y)
    out_zero, lat0 = sample_apply(variables, x, cond, y, model.initial_carry(x.shape[0]))
    np.testing.assert_array_equal(out0, out_zero)  # __call__ means zero latents
    out1, _ = sample_apply(variables, x, cond, y, lat0)
    assert float(jnp.abs(out1 - out0).max()) > 1e-4


def test_self_conditioning_rate_endpoints_and_mixture(rin):
    model, variables, (x, cond, y) = rin
    assert get_model("RIN-cifar10").self_cond_rate == 0.9  # the RIN paper's
    assert model.self_cond_rate == 0.9

    def sc(rate, train=True):
        train_apply = model.clone(self_cond_rate=rate).train_apply
        return jax.jit(train_apply, static_argnames="train")(
            variables, x, cond, y, key, train=train
        )

    key = jax.random.key(5)
    sample_apply = jax.jit(model.sample_apply)
    plain, lat0 = sample_apply(variables, x, cond, y, model.initial_carry(x.shape[0]))
    full, _ = sample_apply(variables, x, cond, y, lat0)
    np.testing.assert_allclose(sc(0.0), plain, atol=1e-6)
    np.testing.assert_allclose(sc(1.0), full, atol=1e-6)
    # not training: no self-conditioning, whatever the rate
    np.testing.assert_allclose(sc(1.0, train=False), plain, atol=1e-6)
    # rate 0.5: every example is one of the two, both kinds occur (fixed key)
    out_half = sc(0.5)
    err_plain = jnp.abs(out_half - plain).max(axis=(1, 2, 3))
    err_full = jnp.abs(out_half - full).max(axis=(1, 2, 3))
    assert bool(jnp.all(jnp.minimum(err_plain, err_full) < 1e-6))
    assert bool(jnp.any(err_plain < 1e-6)) and bool(jnp.any(err_full < 1e-6))


def test_self_conditioning_gradient_stops_at_first_pass(rin):
    model, variables, (x, cond, y) = rin
    key = jax.random.key(0)
    _, lat0 = jax.jit(model.sample_apply)(variables, x, cond, y, model.initial_carry(8))
    always = model.clone(self_cond_rate=1.0)

    def loss_sc(v):
        out = always.train_apply(v, x, cond, y, key, train=True)
        return jnp.mean(out**2)

    def loss_fixed(v):  # the first pass's latents as a constant
        return jnp.mean(model.sample_apply(v, x, cond, y, lat0)[0] ** 2)

    g_sc = jax.jit(jax.grad(loss_sc))(variables)
    g_fixed = jax.jit(jax.grad(loss_fixed))(variables)
    for a, b in zip(jax.tree.leaves(g_sc), jax.tree.leaves(g_fixed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_train_step_with_dropout_is_deterministic_and_compiles_once(rin):
    model, variables, (x, cond, y) = rin
    model = model.clone(dropout=0.2, drop_path=0.2)  # same parameters, now with dropout
    traces = []

    @jax.jit
    def step(v, x, key):
        traces.append(1)

        def loss(v):
            out = model.train_apply(v, x, cond, y, key, train=True)  # self_cond_rate 0.9
            return jnp.mean((out - x) ** 2)

        return jax.value_and_grad(loss)(v)

    l1, g1 = step(variables, x, jax.random.key(0))
    l2, g2 = step(variables, x, jax.random.key(0))
    l3, _ = step(variables, x * 0.5, jax.random.key(1))
    assert len(traces) == 1
    assert float(l1) == float(l2)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(l1) != float(l3)
    # dropout is active in training and off in evaluation
    ev = jax.jit(lambda v, k: model.apply(v, x, cond, y, train=False, rngs={"dropout": k}))
    np.testing.assert_array_equal(
        ev(variables, jax.random.key(0)), ev(variables, jax.random.key(1))
    )
    tr = jax.jit(lambda v, k: model.apply(v, x, cond, y, train=True, rngs={"dropout": k}))
    assert (
        float(jnp.abs(tr(variables, jax.random.key(0)) - tr(variables, jax.random.key(1))).max())
        > 0
    )


def test_sampling_carries_latents(tmp_path):
    """The trainer's real sampling path feeds each step's latents into the next evaluation:
    it equals a hand-written denoiser that carries them, and differs from one that drops
    them (so the test fails if the latents were not fed back)."""
    c = digits.get_config("tiny")
    c.model.name, c.model.overrides = "RIN-cifar10-tiny", dict(TINY, num_classes=10)
    c.data.image_size = 8
    c.sampling.method, c.sampling.steps = "ddpm", 5
    exp = build_experiment(c, devices=jax.devices()[:1])
    params = exp.init_state().params
    params = jax.tree.map(lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params)
    labels = jnp.arange(4) % 10
    key = jax.random.key(3)
    got = generate.sample_images(exp, params, key, labels)
    model = exp.model
    cond_fn = lambda lam: 25.0 * (20.0 - jnp.clip(lam, -20.0, 20.0))  # the λ -> cond map

    def carried(x, lam, latents):
        out, latents = model.sample_apply({"params": params}, x, cond_fn(lam), labels, latents)
        return out, latents

    def dropped(x, lam, latents):
        out = model.apply({"params": params}, x, cond_fn(lam), labels)  # zero latents
        return out, latents

    kw = generate.sampling_grid(c, 5) | generate._sampling_kwargs(c)
    shape = (4, 8, 8, 1)
    init = model.initial_carry(4)
    want = sample(key, carried, shape, steps=5, carry=init, **kw)
    without = sample(key, dropped, shape, steps=5, carry=init, **kw)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(jnp.abs(want - without).max()) > 1e-3


def test_self_cond_rate_comes_from_the_train_config():
    """``train.self_cond_rate`` sets RIN's field (a DiT has none); a model override of it is a
    ConfigError (one place sets it); the field is checked at construction."""
    c = digits.get_config("tiny")
    c.model.name, c.model.overrides = "RIN-cifar10-tiny", dict(TINY, num_classes=10)
    c.data.image_size = 8
    assert build_model(c).self_cond_rate == 0.9
    c.train.self_cond_rate = 0.25
    assert build_model(c).self_cond_rate == 0.25
    c.model.overrides.self_cond_rate = 0.5
    with pytest.raises(ConfigError, match="train.self_cond_rate"):
        build_model(c)
    assert not hasattr(build_model(digits.get_config("tiny")), "self_cond_rate")
    with pytest.raises(ValueError, match="self_cond_rate"):
        get_model("RIN-cifar10-tiny", self_cond_rate=1.5)
