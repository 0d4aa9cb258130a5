"""The train step's values: λ-bin statistics, label dropout, gradient clipping with AdamW,
and unconditional sampling labels."""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxdiff import diffusion
from jaxdiff.training import generate, optim
from jaxdiff.training.experiment import build_experiment
from jaxdiff.training.state import create_train_state
from jaxdiff.training.step import LAM_BIN_EDGES, _bin_stats, bind_train_step

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import digits  # noqa: E402


def test_bin_stats_equal_numpy_histograms():
    rng = np.random.default_rng(0)
    lam = np.concatenate([rng.uniform(-25, 25, 500), np.asarray(LAM_BIN_EDGES)])  # edges too
    values = rng.gamma(2.0, 1.0, lam.shape)
    sums, counts = jax.jit(_bin_stats, static_argnums=2)(values, lam, LAM_BIN_EDGES)
    clipped = np.clip(lam, LAM_BIN_EDGES[0], np.nextafter(LAM_BIN_EDGES[-1], -np.inf))
    want_counts, _ = np.histogram(clipped, bins=LAM_BIN_EDGES)
    want_sums, _ = np.histogram(clipped, bins=LAM_BIN_EDGES, weights=values)
    np.testing.assert_array_equal(np.asarray(counts), want_counts)
    np.testing.assert_allclose(np.asarray(sums), want_sums, rtol=1e-5)
    assert int(counts.sum()) == lam.size  # out-of-range λ go to the end bins


def _spy_step(label_dropout: float, seen: list):
    """A train step whose network records the labels it is given."""
    spec = diffusion.make_noise_spec({})

    def apply_fn(params, x_t, lam, y, key, train):
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), y)
        return params["w"] * x_t

    opt = optax.adamw(1e-3)
    fn = bind_train_step(
        apply_fn=apply_fn, spec=spec, optimizer=opt, lr_schedule=lambda s: 1e-3,
        ema_decays=(0.9,), num_classes=10, label_dropout=label_dropout,
    )  # fmt: skip
    params = {"w": jnp.ones(())}
    state = create_train_state(params, opt, 1, {})
    return jax.jit(fn), state


def test_label_dropout_rate_and_null_label():
    seen = []
    step, state = _spy_step(0.25, seen)
    n = 4096
    labels = np.arange(n) % 10
    batch = {"image": np.zeros((n, 2, 2, 1), np.float32), "label": labels}
    step(state, batch, jax.random.key_data(jax.random.key(0)))
    jax.effects_barrier()
    got = seen[-1]
    dropped = got == 10  # the null class
    np.testing.assert_array_equal(got[~dropped], labels[~dropped])  # others unchanged
    # Binomial(4096, 0.25): mean 1024, sd 27.7; 5 sd bounds.
    assert abs(int(dropped.sum()) - 1024) < 5 * 27.7
    seen.clear()
    step0, state0 = _spy_step(0.0, seen)
    step0(state0, batch, jax.random.key_data(jax.random.key(0)))
    jax.effects_barrier()
    np.testing.assert_array_equal(seen[-1], labels)


def _adamw_reference(grads, clip, lr=0.1, b1=0.9, b2=0.999, eps=1e-8):
    """NumPy AdamW (no weight decay) with optional clipping by global norm."""
    m = v = np.zeros_like(grads[0])
    w, out = np.zeros_like(grads[0]), []
    for t, g in enumerate(grads, start=1):
        norm = np.linalg.norm(g)
        if clip and norm > clip:
            g = g * clip / norm
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(w.copy())
    return out


def test_grad_clip_is_applied_with_adamw():
    """Adam is scale-free per step, so clipping shows only across steps of different norms:
    a large then a small gradient give different weights with and without the clip."""
    grads = [np.array([30.0, -40.0, 0.0]), np.array([0.03, 0.01, -0.02])]
    for clip in (0.0, 1.0):
        c = ml_collections.ConfigDict(
            dict(name="adamw", lr=0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                 warmup_steps=0, decay="constant", grad_clip=clip)
        )  # fmt: skip
        opt = optim.make_optimizer(c, 10)
        w = jnp.zeros(3)
        state = opt.init(w)
        for g, want in zip(grads, _adamw_reference(grads, clip), strict=True):
            updates, state = opt.update(jnp.asarray(g), state, w)
            w = optax.apply_updates(w, updates)
            np.testing.assert_allclose(np.asarray(w), want, rtol=1e-5, atol=1e-7)
    clipped, plain = _adamw_reference(grads, 1.0)[-1], _adamw_reference(grads, 0.0)[-1]
    assert np.abs(clipped - plain).max() > 1e-3  # the test can tell the two apart


def test_unconditional_sampling_uses_the_null_label():
    c = digits.get_config("tiny")
    c.model.class_conditional = False
    c.sampling.steps, c.sampling.batch_size = 2, 8
    exp = build_experiment(c, devices=jax.devices()[:1])
    params = exp.init_state().params
    labels = [y for _, y in generate.iter_samples(exp, params, jax.random.key(0), 10)]
    assert np.all(np.concatenate(labels) == 10) and sum(map(len, labels)) == 10
    c.model.class_conditional = True
    exp = build_experiment(c, devices=jax.devices()[:1])
    labels = np.concatenate(
        [y for _, y in generate.iter_samples(exp, params, jax.random.key(0), 10)]
    )
    np.testing.assert_array_equal(labels, np.arange(10) % 10)
