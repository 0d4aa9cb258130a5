"""The sharded train step gives the same loss and update on every mesh, and compiles once."""

import os
import sys

import jax
import numpy as np
import pytest

from jaxdiff.training import experiment, sharding

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import digits  # noqa: E402


def _config(mesh_shape):
    c = digits.get_config("tiny")
    c.data.batch_size = 16
    c.mesh.shape = mesh_shape
    c.mesh.min_fsdp_size = 1  # shard every divisible parameter when fsdp > 1
    c.optim.grad_accum_steps = 1
    return c


def _batch(seed=0, n=16, size=8):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(-1, 1, (n, size, size, 1)).astype(np.float32),
        "label": rng.integers(0, 10, (n,)).astype(np.int32),
    }


def _two_steps(mesh_shape, devices):
    exp = experiment.build_experiment(_config(mesh_shape), devices=devices)
    state = exp.init_state()
    losses = []
    for i in range(2):
        batch = sharding.global_batch(_batch(i), exp.mesh)
        state, m = exp.train_step(state, batch, exp.root_rng)
        losses.append(float(m["loss"]))
    return exp, state, losses


@pytest.fixture(scope="module")
def reference():
    assert jax.device_count() >= 8, "conftest sets 8 simulated devices"
    _, state, losses = _two_steps((1, 1), jax.devices()[:1])
    return jax.device_get(state.params), losses


@pytest.mark.parametrize("mesh_shape", [(8, 1), (4, 2), (2, 4)])
def test_meshes_match_single_device(reference, mesh_shape):
    ref_params, ref_losses = reference
    exp, state, losses = _two_steps(mesh_shape, jax.devices()[:8])
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, atol=1e-6)
    got = jax.device_get(state.params)
    for a, b in zip(
        jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref_params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert exp.train_step._cache_size() == 1  # traced and compiled once for both steps
    if mesh_shape[1] > 1:  # FSDP actually shards some parameters
        specs = [s.spec for s in jax.tree_util.tree_leaves(exp.state_shardings.params)]
        assert any("fsdp" in tuple(sp) for sp in specs)
        leaf = jax.tree_util.tree_leaves(state.params)[0]
        assert len(leaf.sharding.device_set) == 8


def test_grad_accumulation_equals_mean_of_micro_batch_gradients():
    from jaxdiff.diffusion import diffusion_loss
    from jaxdiff.training import step as step_lib

    exp = experiment.build_experiment(_config((1, 1)), devices=jax.devices()[:1])
    params = exp.init_state().params
    b = _batch()
    key = jax.random.key(3)
    kw = dict(apply_fn=exp.apply_fn, spec=exp.spec, sampler_state=None)
    trainable = (params, None)  # no learned weighting
    (loss, aux), (grads, _) = step_lib._grads(
        trainable, b["image"], b["label"], key, grad_accum=2, **kw
    )

    def micro_loss(p, x0, y, k):
        k_noise, k_model = jax.random.split(k)
        fn = lambda x_t, lam: exp.apply_fn(p, x_t, lam, y, k_model, True)
        return diffusion_loss(fn, x0, k_noise, exp.spec, None)[0]

    keys = jax.random.split(key, 2)
    parts = [
        jax.value_and_grad(micro_loss)(params, b["image"][i::2], b["label"][i::2], keys[i])
        for i in range(2)
    ]
    np.testing.assert_allclose(float(loss), np.mean([float(p[0]) for p in parts]), rtol=1e-5)
    want = jax.tree_util.tree_map(lambda g0, g1: (g0 + g1) / 2, parts[0][1], parts[1][1])
    for a, w in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-6)
    assert aux["lam"].shape == (16,)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    c = _config((8, 1))
    c.data.batch_size = 12
    with pytest.raises(ValueError, match="data.batch_size"):
        experiment.build_experiment(c, devices=jax.devices()[:8])
