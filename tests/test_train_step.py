"""The train step's values: λ-bin statistics, label dropout, gradient clipping with AdamW,
the skip of a non-finite step (the whole state bitwise; the loop's skip:
test_train_reliability_loop.py), and the null label of unconditional training and sampling."""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from tiny_config import noise_fields

from jaxdiff import diffusion, models, noise
from jaxdiff.training import generate, loop, optim
from jaxdiff.training.config import noise_config
from jaxdiff.training.experiment import build_experiment
from jaxdiff.training.state import create_train_state
from jaxdiff.training.step import (
    LAM_BIN_EDGES,
    _bin_stats,
    _grads,
    bind_train_step,
    weighting_optimizer,
)

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
    spec = diffusion.make_noise_spec(noise_fields())

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


def _linear_apply(params, x_t, lam, y, key, train):
    """A two-parameter network, w·x_t + b: cheap, with a gradient that depends on the data."""
    return params["w"] * x_t + params["b"]


def _image_batch(seed: int, scale: float, n: int = 16) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": (scale * rng.uniform(-1, 1, (n, 4, 4, 1))).astype(np.float32),
        "label": rng.integers(0, 10, (n,)).astype(np.int32),
    }


def test_train_step_clips_gradients_with_adamw():
    """Two train steps with ``optim`` = AdamW + ``grad_clip`` c equal optax's AdamW applied to
    the step's own gradients rescaled to norm c, and with ``grad_clip`` = 0 optax's AdamW on
    the raw gradients (Adam is scale-free per step: both steps have norm > c and different
    norms, so the clipped and unclipped runs differ)."""
    clip, lr, wd = 0.05, 0.1, 0.01
    spec = diffusion.make_noise_spec(noise_fields(target="x0"))
    params = {"w": jnp.asarray(0.3), "b": jnp.asarray(-0.2)}

    def make_step(grad_clip):
        c = ml_collections.ConfigDict(
            dict(name="adamw", lr=lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=wd,
                 warmup_steps=0, decay="constant", grad_clip=grad_clip)
        )  # fmt: skip
        opt = optim.make_optimizer(c, 10)
        step = jax.jit(
            bind_train_step(apply_fn=_linear_apply, spec=spec, optimizer=opt,
                            lr_schedule=lambda s: lr, ema_decays=(), num_classes=10)
        )  # fmt: skip
        return step, create_train_state(params, opt, 0, {})

    runs = {True: make_step(clip), False: make_step(0.0)}
    rng = jax.random.key_data(jax.random.key(7))
    grads_fn = jax.jit(lambda p, x, y, k: _grads((p, {}), x, y, k, apply_fn=_linear_apply,
                       spec=spec, sampler_state={}, grad_accum=1)[1][0])  # fmt: skip
    ref = {False: (params, optax.adamw(lr, eps=1e-8, weight_decay=wd).init(params))}
    ref[True] = ref[False]
    norms = []
    for i, scale in enumerate((1.0, 0.02)):
        batch = _image_batch(i, scale)
        # The step's gradient, recomputed at the same key (fold_in(root, step), 2nd split).
        k_loss = jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(rng), i))[1]
        for clipped in (False, True):
            p, s = ref[clipped]
            g = grads_fn(p, batch["image"], batch["label"], k_loss)
            norm = float(optax.tree.norm(g))
            if clipped:
                norms.append(norm)
                g = jax.tree_util.tree_map(lambda x, n=norm: x * (clip / n), g)
            upd, s = optax.adamw(lr, eps=1e-8, weight_decay=wd).update(g, s, p)
            ref[clipped] = (optax.apply_updates(p, upd), s)
            step, state = runs[clipped]
            state, metrics = step(state, batch, rng)
            runs[clipped] = (step, state)
            np.testing.assert_allclose(float(metrics["grad_norm"]), norm, rtol=1e-5)
            for k in params:
                np.testing.assert_allclose(state.params[k], ref[clipped][0][k], rtol=1e-5,
                                           atol=1e-7, err_msg=f"clipped={clipped}")  # fmt: skip
    assert min(norms) > clip and max(norms) > 3 * min(norms), norms  # the clip is active
    gap = max(abs(float(ref[True][0][k] - ref[False][0][k])) for k in params)
    assert gap > 1e-3  # the unclipped AdamW run ends elsewhere: the check can fail


def _blowup_optimizer():
    """AdamW whose second update (count 1) is multiplied by inf: a finite loss and gradient
    with non-finite new weights, optimizer, EMA and learned-weighting state."""
    bad = lambda count: jnp.where(count == 1, jnp.inf, 1.0)
    return optax.chain(optax.adamw(0.05), optax.scale_by_schedule(bad))


def _stateful_step(skip: bool):
    """A train step with a stateful timestep sampler (adaptive_bins) and a learned weighting
    (uncertainty), so every part of the state moves on a good step."""
    c = digits.get_config("tiny")
    c.noise.timesteps = "adaptive_bins"
    c.noise.timesteps_params.num_bins = 8
    c.noise.learned_weighting = "uncertainty"
    spec = diffusion.make_noise_spec(noise_config(c))
    opt = _blowup_optimizer()
    fn = bind_train_step(
        apply_fn=_linear_apply, spec=spec, optimizer=opt, lr_schedule=lambda s: 0.05,
        ema_decays=(0.9,), num_classes=10, skip_nonfinite=skip,
    )  # fmt: skip
    k1, k2 = jax.random.split(jax.random.key(3))
    u = spec.learned_weighting.init(k1)
    weighting = {"params": u, "opt": weighting_optimizer(opt, u).init(u)}
    sampler_state = noise.init_sampler_state(spec.timestep_sampler, k2, (16, 4, 4, 1))
    params = {"w": jnp.asarray(0.3), "b": jnp.asarray(-0.2)}
    return jax.jit(fn), create_train_state(params, opt, 1, sampler_state, weighting)


FIELDS = ("params", "ema", "opt_state", "sampler_state", "weighting_state")


def _leaves(state, field):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(getattr(state, field))]


def test_skip_nonfinite_keeps_the_whole_state_bitwise():
    """A step whose update overflows (finite loss) leaves params, EMA, optimizer, sampler and
    learned-weighting state bitwise as they were, and only the step counter advances; without
    skip the same step changes all of them (so the check can fail)."""
    rng = jax.random.key_data(jax.random.key(0))
    after = {}
    for skip in (True, False):
        step, state = _stateful_step(skip)
        first, m0 = step(state, _image_batch(0, 1.0), rng)
        assert bool(m0["finite"])
        for field in FIELDS:  # a good step moves every part of the state
            assert any(
                not np.array_equal(a, b)
                for a, b in zip(_leaves(state, field), _leaves(first, field), strict=True)
            ), field
        before = jax.device_get(first)
        second, m1 = step(first, _image_batch(1, 1.0), rng)
        assert not bool(m1["finite"]) and np.isfinite(float(m1["loss"]))
        assert int(second.step) == 2
        after[skip] = (before, jax.device_get(second))
    before, kept = after[True]
    for field in FIELDS:
        for a, b in zip(_leaves(before, field), _leaves(kept, field), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), field
    before, moved = after[False]
    for field in FIELDS:
        assert any(
            not np.array_equal(a, b)
            for a, b in zip(_leaves(before, field), _leaves(moved, field), strict=True)
        ), field


@pytest.mark.slow
def test_unconditional_training_and_sampling_feed_the_null_label(tmp_path, monkeypatch):
    """With ``model.class_conditional=False`` the network sees only the null label
    (num_classes), in the training loop's steps and in its sample grid (digits labels are
    0..9, so a label passed through would show), and ``iter_samples`` returns it; a
    conditional model is given the balanced labels ``i % 10``."""
    seen = {"train": [], "sample": []}
    real_apply, real_sample = models.make_apply_fn, generate.make_sample_fn

    def spy_apply(model, **kw):
        apply = real_apply(model, **kw)

        def wrapped(params, x_t, lam, y, key, train):
            jax.debug.callback(lambda v: seen["train"].append(np.asarray(v)), y)
            return apply(params, x_t, lam, y, key, train)

        return wrapped

    def spy_sample(model, params, **kw):
        model_fn = real_sample(model, params, **kw)

        def wrapped(x, lam, y, carry):
            jax.debug.callback(lambda v: seen["sample"].append(np.asarray(v)), y)
            return model_fn(x, lam, y, carry)

        return wrapped

    monkeypatch.setattr(models, "make_apply_fn", spy_apply)
    monkeypatch.setattr(generate, "make_sample_fn", spy_sample)
    c = digits.get_config("tiny")
    c.model.class_conditional = False
    c.total_steps = c.sample_every_steps = c.checkpoint_every_steps = 2
    c.sampling.steps, c.sampling.num_grid, c.sampling.batch_size = 2, 8, 8
    c.sampling.guidance_scale = 2.0  # both CFG rows: the conditional one is null too
    out = loop.train(c, str(tmp_path / "run"), devices=jax.devices()[:1])
    assert out["step"] == 2 and np.isfinite(out["metrics"]["train/loss"])
    jax.effects_barrier()
    train, sample = np.concatenate(seen["train"]), np.concatenate(seen["sample"])
    assert train.size >= 2 * c.data.batch_size and sample.size >= 2 * 8
    np.testing.assert_array_equal(train, 10)
    np.testing.assert_array_equal(sample, 10)
    # the labels iter_samples returns (the grids', the evaluations')
    for conditional, want in ((False, np.full(10, 10)), (True, np.arange(10) % 10)):
        c.model.class_conditional, c.sampling.guidance_scale = conditional, 1.0
        exp = build_experiment(c, devices=jax.devices()[:1])
        params = exp.init_state().params
        got = [y for _, y in generate.iter_samples(exp, params, jax.random.key(0), 10)]
        np.testing.assert_array_equal(np.concatenate(got), want)
