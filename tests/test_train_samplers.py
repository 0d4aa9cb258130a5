"""Stateful timestep samplers and the learned weighting inside the real train step: their state
lives in the train state, is updated, sharded like the rest (1 device = 8 devices), works with
gradient accumulation, and a run resumed from a checkpoint equals an uninterrupted one."""

import functools
import json
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.training import experiment, loop, sharding
from jaxdiff.training import step as step_lib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import digits  # noqa: E402

TINY_ADAPTIVE = dict(update_every=2, num_levels=8, num_selected=2, queue_size=3,
                     channels=(4, 8), hidden_width=16, hidden_depth=1, pool_size=2)  # fmt: skip
SETUPS = {
    "adaptive": ("adaptive", TINY_ADAPTIVE, "none"),
    "adaptive_discrete": ("adaptive", dict(TINY_ADAPTIVE, version="discrete"), "none"),
    "adaptive_bins": ("adaptive_bins", dict(num_bins=16), "none"),
    "speed": ("speed", {}, "none"),
    "uncertainty": ("uniform", {}, "uncertainty"),
}


def config(setup: str, **kw):
    timesteps, params, learned = SETUPS[setup]
    c = digits.get_config("tiny")
    c.data.batch_size = 16
    c.sample_every_steps = 0
    c.noise.timesteps = timesteps
    for k, v in params.items():
        c.noise.timesteps_params[k] = v
    c.noise.learned_weighting = learned
    for k, v in kw.items():
        node, *path = k.split(".")
        target = c if not path else c[node]
        target[path[-1] if path else node] = v
    return c


def _batch(i, n=16, size=8):
    rng = np.random.default_rng(i)
    return {
        "image": rng.uniform(-1, 1, (n, size, size, 1)).astype(np.float32),
        "label": rng.integers(0, 10, (n,)).astype(np.int32),
    }


def run_steps(c, devices, steps=4, state=None, start=0):
    exp = experiment.build_experiment(c, devices=devices)
    state = exp.init_state() if state is None else state
    metrics = []
    for i in range(start, start + steps):
        batch = sharding.global_batch(_batch(i), exp.mesh)
        state, m = exp.train_step_at(i)(state, batch, exp.root_rng)  # the loop's step
        metrics.append(jax.device_get(m))
    return exp, jax.device_get(state), metrics


def moved(a, b) -> bool:
    """Whether any leaf of tree ``a`` differs from tree ``b``'s."""
    leaves = jax.tree_util.tree_leaves
    return any(not np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))


def _assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_state_updates_and_8_devices_equal_1(setup):
    c1 = config(setup)
    _, one, m1 = run_steps(c1, jax.devices()[:1])
    c8 = config(setup)
    c8.mesh.shape, c8.mesh.min_fsdp_size = (4, 2), 1
    _, eight, m8 = run_steps(c8, jax.devices()[:8])
    np.testing.assert_allclose([m["loss"] for m in m8], [m["loss"] for m in m1], rtol=1e-4)
    _assert_trees_close(eight.params, one.params, rtol=1e-3, atol=1e-5)
    _assert_trees_close(eight.sampler_state, one.sampler_state, rtol=1e-3, atol=1e-5)
    _assert_trees_close(eight.weighting_state, one.weighting_state, rtol=1e-3, atol=1e-5)
    init = jax.device_get(experiment.build_experiment(c1, jax.devices()[:1]).init_state())
    timesteps, _, learned = SETUPS[setup]
    changed = lambda a, b: any(  # noqa: E731
        not np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )
    if timesteps in ("adaptive", "adaptive_bins"):  # learned state moved
        assert changed(one.sampler_state, init.sampler_state)
        assert any(k.startswith("sampler/") for k in m1[-1])
    if timesteps == "adaptive":
        assert int(one.sampler_state["num_updates"]) == 2  # steps 0 and 2 of 4 (every 2)
    if learned == "uncertainty":
        assert changed(
            one.weighting_state["params"]["head"], init.weighting_state["params"]["head"]
        )
        # the fixed Fourier features never move (no gradient, no weight decay)
        _assert_trees_close(
            one.weighting_state["params"]["fourier"], init.weighting_state["params"]["fourier"],
            rtol=0, atol=0,
        )  # fmt: skip


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_gradient_accumulation_runs_and_updates(setup):
    c = config(setup, **{"optim.grad_accum_steps": 2})
    exp, state, metrics = run_steps(c, jax.devices()[:2], steps=2)
    assert all(bool(m["finite"]) and 0 < float(m["loss"]) < 10 for m in metrics)
    init = jax.device_get(exp.init_state())
    assert moved(state.params, init.params) and moved(state.ema, init.ema)
    timesteps, _, learned = SETUPS[setup]
    if timesteps == "adaptive":
        assert int(state.sampler_state["num_updates"]) == 1
    if timesteps in ("adaptive", "adaptive_bins"):
        assert moved(state.sampler_state, init.sampler_state)
    if learned == "uncertainty":
        assert moved(
            state.weighting_state["params"]["head"], init.weighting_state["params"]["head"]
        )


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_state_round_trip_resumes_bit_exactly(setup):
    """Serialised and restored after 2 steps, the state continues exactly as without."""
    c = config(setup)
    exp, straight, m_straight = run_steps(c, jax.devices()[:1], steps=4)
    _, half, _ = run_steps(c, jax.devices()[:1], steps=2)
    blob = flax.serialization.to_bytes(half)
    restored = flax.serialization.from_bytes(jax.device_get(exp.init_state()), blob)
    _, resumed, m_resumed = run_steps(c, jax.devices()[:1], steps=2, state=restored, start=2)
    assert [float(m["loss"]) for m in m_resumed] == [float(m["loss"]) for m in m_straight[2:]]
    _assert_trees_close(resumed, straight, rtol=0, atol=0)


@pytest.mark.slow
def test_loop_records_sampler_density_and_cumulative_wall_clock(tmp_path):
    """The adaptive sampler's density is drawn at log steps (sampler_density.png) and its
    metrics logged; the rows carry cumulative training seconds, which keep increasing across a
    resume."""
    workdir = str(tmp_path / "run")
    c = config("adaptive", total_steps=6, log_every_steps=2, checkpoint_every_steps=2)
    loop.train(c, workdir, stop_at_step=4, devices=jax.devices()[:1])
    png = os.path.join(workdir, "sampler_density.png")
    assert os.path.getsize(png) > 1000
    first = os.path.getmtime(png)
    loop.train(c, workdir, devices=jax.devices()[:1])
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    walls = [r["train/wall_s"] for r in rows if "train/wall_s" in r]
    assert [r["step"] for r in rows if "train/wall_s" in r] == [2, 4, 6]
    assert all(w > 0 for w in walls) and walls == sorted(walls) and walls[0] < walls[-1]
    assert os.path.getmtime(png) >= first
    # H[Beta(a, b)] of the policy on [0, 1]: at most 0 (U(0, 1)), finite
    entropy = [r["sampler/entropy"] for r in rows if "train/wall_s" in r]
    assert len(entropy) == 3 and all(-50 < h <= 1e-6 for h in entropy), entropy


def test_loop_without_stateful_sampler_writes_no_density(tiny_run):
    assert os.path.exists(os.path.join(tiny_run, "metrics.jsonl"))  # (uniform timesteps)
    assert not os.path.exists(os.path.join(tiny_run, "sampler_density.png"))


def test_loop_step_refreshes_apart_like_the_cond_step():
    """`train_step_at` (the loop's: the step compiled without the refresh, then on multiples
    of f_S the refresh as its own jitted call) against `train_step` (the sampler's lax.cond
    inside) over f_S + 1 steps: the model, EMA, optimizer state and metrics bitwise; the
    sampler's state and metrics to float32 rounding (XLA:CPU compiles a conditional's branch
    with other kernels, which moves the policy's last bits)."""
    c = config("adaptive")
    every = c.noise.timesteps_params.update_every
    exp = experiment.build_experiment(c, devices=jax.devices()[:1])
    assert exp.train_step_at(0) is exp.train_step_at(every) is not exp.train_step_at(1)
    cond, apart = exp.init_state(), exp.init_state()
    for i in range(every + 1):
        batch = sharding.global_batch(_batch(i), exp.mesh)
        cond, m_cond = exp.train_step(cond, batch, exp.root_rng)
        apart, m_apart = exp.train_step_at(i)(apart, batch, exp.root_rng)
        assert float(m_apart["sampler/updated"]) == float(i % every == 0)
        assert m_apart.keys() == m_cond.keys()
        for k in m_cond:
            tol = 1e-5 if k.startswith("sampler/") else 0.0
            np.testing.assert_allclose(m_apart[k], m_cond[k], rtol=tol, atol=0, err_msg=k)
    cond, apart = jax.device_get((cond, apart))
    assert int(apart.sampler_state["num_updates"]) == 2
    for name in ("step", "params", "ema", "opt_state", "weighting_state"):
        _assert_trees_close(getattr(apart, name), getattr(cond, name), rtol=0, atol=0)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(apart.sampler_state), leaves(cond.sampler_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(b))))


def test_refresh_apart_after_a_skipped_step_keeps_the_sampler_state():
    exp = experiment.build_experiment(config("adaptive", on_nonfinite="skip"), jax.devices()[:1])
    state, smp = exp.init_state(), exp.spec.timestep_sampler
    batch = _batch(0)
    x0, labels = jnp.asarray(batch["image"]), jnp.asarray(batch["label"])
    lam, _, info = smp.draw(jax.random.key(1), x0.shape[0], state.sampler_state, x0)
    inputs = dict(step=jnp.int32(0), key=jax.random.key(2), labels=labels, lam=lam, info=info)
    refresh = jax.jit(
        functools.partial(
            step_lib.refresh_sampler, apply_fn=exp.apply_fn, spec=exp.spec, skip_nonfinite=True
        )
    )
    for finite in (True, False):
        new, m = refresh(
            state.sampler_state, inputs, x0, state.params, state.params, jnp.bool_(finite)
        )
        assert bool(m["finite"]) is finite
        assert int(new["num_updates"]) == int(finite)


def test_train_step_at_is_the_one_step_without_a_periodic_refresh():
    for setup in ("adaptive_bins", "uncertainty"):
        exp = experiment.build_experiment(config(setup), devices=jax.devices()[:1])
        assert exp.train_step_at(0) is exp.train_step_at(1) is exp.train_step
