"""Optimizer schedules, EMA, bf16 compute, partition rules and init_from."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tiny_config import digits, tiny_run_config

from jaxdiff.training import checkpoint, experiment, loop, optim, sharding
from jaxdiff.training.config import base_config
from jaxdiff.training.state import update_ema


def _optim(**fields):
    """The base config's optim section with ``fields`` changed."""
    c = base_config().optim
    c.update(fields)
    return c


def test_warmup_cosine_schedule_closed_form():
    c = _optim(name="lamb", lr=2e-3, warmup_steps=10, decay="cosine")
    sched = optim.learning_rate_schedule(c, total_steps=110)
    for step in [0, 5, 10, 60, 110]:
        if step < 10:
            want = 2e-3 * step / 10
        else:
            want = 2e-3 * 0.5 * (1 + np.cos(np.pi * (step - 10) / 100))
        np.testing.assert_allclose(float(sched(step)), want, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="optim.decay"):
        optim.learning_rate_schedule(_optim(lr=1.0, decay="exp"), 10)
    with pytest.raises(AttributeError):  # a missing field is an error, not a silent default
        optim.learning_rate_schedule(ml_collections.ConfigDict(dict(lr=1.0)), 10)


def test_lamb_and_clipping_update():
    c = _optim(name="lamb", lr=0.1, grad_clip=1.0, weight_decay=0.0)
    opt = optim.make_optimizer(c, 100)
    params = {"w": jnp.ones((4,))}
    grads = {"w": jnp.full((4,), 10.0)}
    updates, _ = opt.update(grads, opt.init(params), params)
    # LAMB's trust ratio makes the step norm lr·‖w‖ whatever the gradient's scale.
    np.testing.assert_allclose(float(jnp.linalg.norm(updates["w"])), 0.1 * 2.0, rtol=1e-4)


def test_ema_update_formula():
    ema = ({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([0.0, 0.0])})
    new = update_ema(ema, {"a": jnp.array([3.0, 4.0])}, (0.9, 0.5))
    np.testing.assert_allclose(new[0]["a"], [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 4])
    np.testing.assert_allclose(new[1]["a"], [1.5, 2.0])


def test_partition_rules_regex_then_auto():
    mesh = sharding.make_mesh((2, 4), devices=jax.devices()[:8])
    tree = {
        "blocks": {"qkv": jnp.zeros((64, 192)), "bias": jnp.zeros((192,))},
        "pos": jnp.zeros((16, 64)),
    }
    specs = sharding.partition_specs(tree, mesh, rules=[("pos", (None, None))], min_fsdp_size=1)
    assert specs["pos"] == jax.sharding.PartitionSpec(None, None)
    assert specs["blocks"]["qkv"] == jax.sharding.PartitionSpec(None, "fsdp")
    assert specs["blocks"]["bias"] == jax.sharding.PartitionSpec("fsdp")
    big_only = sharding.partition_specs(tree, mesh, min_fsdp_size=10_000)
    assert big_only["blocks"]["qkv"] == jax.sharding.PartitionSpec(None, "fsdp")
    assert big_only["blocks"]["bias"] == jax.sharding.PartitionSpec()


def _batch():
    rng = np.random.default_rng(0)
    return {
        "image": rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32),
        "label": np.arange(16) % 10,
    }


def test_bf16_compute_keeps_float32_params_and_close_loss():
    losses = {}
    for dtype in ("float32", "bfloat16"):
        c = digits.get_config("tiny")
        c.train.compute_dtype = dtype
        exp = experiment.build_experiment(c, devices=jax.devices()[:1])
        state, m = exp.train_step(
            exp.init_state(), sharding.global_batch(_batch(), exp.mesh), exp.root_rng
        )
        assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))
        losses[dtype] = float(m["loss"])
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)


@pytest.mark.slow
def test_init_from_starts_from_another_runs_weights(tiny_run, tmp_path):
    c = tiny_run_config()
    exp = experiment.build_experiment(c, devices=jax.devices()[:1])
    abstract = checkpoint.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    src, _ = checkpoint.Checkpointer(os.path.join(tiny_run, "checkpoints")).restore(4, abstract)
    c2 = tiny_run_config(total_steps=1, seed=7, init_from=tiny_run)
    c2.optim.lr = 1e-12  # one negligible step: the params must still be the shared run's
    loop.train(c2, str(tmp_path / "b"), devices=jax.devices()[:1])
    got, _ = checkpoint.Checkpointer(str(tmp_path / "b" / "checkpoints")).restore(1, abstract)
    assert int(got.step) == 1
    fresh = experiment.build_experiment(c2, devices=jax.devices()[:1]).init_state().params
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(src.params), leaves(got.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # (seed 7's own initialisation is elsewhere: the check can fail)
    assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(leaves(fresh), leaves(got.params), strict=True)) > 1e-3  # fmt: skip


def test_ema_warmup_decay():
    from jaxdiff.training.state import ema_decay

    np.testing.assert_allclose(float(ema_decay(0.999, 0)), 0.1)
    np.testing.assert_allclose(float(ema_decay(0.999, 90)), 91 / 100)
    np.testing.assert_allclose(float(ema_decay(0.999, 10**6)), 0.999)
    new = update_ema(
        ({"a": jnp.zeros(2)},), {"a": jnp.ones(2)}, (0.999,), jnp.int32(0), warmup=True
    )
    np.testing.assert_allclose(new[0]["a"], [0.9, 0.9])


def test_lambda_loss_chart_draws_the_bins():
    from jaxdiff.training.loop import lambda_loss_chart

    summary = {"train_lambda_bins/loss_-0002_+0000": 1.0, "train_lambda_bins/loss_+0000_+0002": 0.5}
    image = lambda_loss_chart(summary)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    # the bars (matplotlib's tab:blue): the bin [-2, 0) left of [0, 2), twice as tall
    blue = np.abs(image.astype(int) - [31, 119, 180]).max(axis=-1) <= 3
    heights = blue.sum(axis=0)
    cols = np.nonzero(heights)[0]
    left, right = heights[cols[: len(cols) // 4]], heights[cols[-len(cols) // 4 :]]
    assert left.min() > 20 and right.min() > 10
    np.testing.assert_allclose(np.median(left) / np.median(right), 2.0, rtol=0.05)
