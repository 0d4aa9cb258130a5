"""Post-hoc EMA (EDM2): the profile math against independent computation, reconstruction from
snapshots of a synthetic sequence, snapshots across a kill and resume, the CLI."""

import json
import os
import shutil
import types

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import integrate
from tiny_config import tiny

from jaxdiff import diffusion
from jaxdiff import main as main_cli
from jaxdiff.ema import __main__ as ema_cli
from jaxdiff.ema import reconstruct as rec
from jaxdiff.errors import ConfigError
from jaxdiff.training import generate, loop, outputs, posthoc, snapshots
from jaxdiff.training.checkpoint import Checkpointer, load_params
from jaxdiff.training.config import noise_config
from jaxdiff.training.state import create_train_state
from jaxdiff.training.step import bind_train_step
from jaxdiff.training.validate import validate_config

GAMMAS = (0.5, 1.0, 3.0, 6.94, 16.97, 40.0)


def discrete_weights(step: int, gamma: float) -> np.ndarray:
    """w_t(τ), τ = 1..t, by running the recursion ema ← β·ema + (1−β)·θ on unit vectors."""
    w = np.zeros(step)
    for t in range(1, step + 1):
        beta = (1.0 - 1.0 / t) ** (gamma + 1.0)
        w *= beta
        w[t - 1] += 1.0 - beta
    return w


def profile_std(gamma: float) -> float:
    """std/t of p(τ) = (γ+1)τ^γ on [0, 1], by quadrature."""
    p = lambda s: (gamma + 1.0) * s**gamma  # noqa: E731
    mean = integrate.quad(lambda s: s * p(s), 0, 1, epsabs=0, epsrel=1e-13)[0]
    second = integrate.quad(lambda s: s * s * p(s), 0, 1, epsabs=0, epsrel=1e-13)[0]
    return float(np.sqrt(second - mean * mean))


# --- the math -------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", GAMMAS)
def test_std_gamma_relation_matches_quadrature_and_discrete_profile(gamma):
    std = profile_std(gamma)
    np.testing.assert_allclose(posthoc.gamma_to_std(gamma), std, rtol=1e-10)
    np.testing.assert_allclose(posthoc.std_to_gamma(std), gamma, rtol=1e-9)
    # the tracked (discrete) EMA's weights have that relative width up to O(1/t)
    t = 4000
    w = discrete_weights(t, gamma)
    tau = np.arange(1, t + 1) - 0.5  # the centre of each update's unit interval
    mean = w @ tau
    np.testing.assert_allclose(np.sqrt(w @ (tau - mean) ** 2) / t, std, rtol=2e-3)


def test_std_gamma_published_values_and_range():
    # EDM2 (Sec. 3.1): σ_rel 0.05 and 0.10 are tracked as γ = 16.97 and γ = 6.94
    np.testing.assert_allclose(posthoc.std_to_gamma([0.05, 0.10]), [16.97, 6.94], atol=5e-3)
    for bad in (0.0, -0.1, posthoc.MAX_STD, 0.3, float("nan")):
        with pytest.raises(ValueError, match="sigma_rel"):
            posthoc.std_to_gamma(bad)


@pytest.mark.parametrize("t_a,t_b", [(300, 1000), (1000, 300), (700, 700), (50, 2000)])
@pytest.mark.parametrize("g_a,g_b", [(6.94, 16.97), (16.97, 16.97), (0.5, 3.0), (40.0, 1.0)])
def test_profile_inner_matches_quadrature_and_discrete_sums(t_a, t_b, g_a, g_b):
    got = posthoc.profile_inner(t_a, g_a, t_b, g_b)
    p_a = lambda s: (g_a + 1) * s**g_a / t_a ** (g_a + 1)  # noqa: E731
    p_b = lambda s: (g_b + 1) * s**g_b / t_b ** (g_b + 1)  # noqa: E731
    want = integrate.quad(lambda s: p_a(s) * p_b(s), 0, min(t_a, t_b), epsabs=0, epsrel=1e-12)
    np.testing.assert_allclose(got, want[0], rtol=1e-9)
    np.testing.assert_allclose(got, posthoc.profile_inner(t_b, g_b, t_a, g_a), rtol=1e-14)
    # the tracked EMAs' weights: Σ_τ w_a(τ)·w_b(τ) is the inner product up to O(1/min(t))
    n = min(t_a, t_b)
    brute = discrete_weights(t_a, g_a)[:n] @ discrete_weights(t_b, g_b)[:n]
    np.testing.assert_allclose(got, brute, rtol=40.0 / n)


def test_decay_to_std_matches_discrete_classic_ema():
    for decay, t in [(0.99, 2000), (0.999, 5000), (0.9999, 3000), (0.999, 800)]:
        w = decay ** (t - np.arange(1, t + 1, dtype=np.float64))  # ∝ β^(t−τ)
        w /= w.sum()
        tau = np.arange(1, t + 1) - 0.5
        mean = w @ tau
        want = np.sqrt(w @ (tau - mean) ** 2) / t
        np.testing.assert_allclose(posthoc.decay_to_std(decay, t), want, rtol=2e-3)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        with jax.enable_x64(True):
            yield np.float64
    else:
        yield np.float32


def _trajectory(num_steps: int, dim: int = 12, seed: int = 0) -> np.ndarray:
    """θ_1..θ_T: a smooth drift plus noise, (T, dim) float64."""
    rng = np.random.default_rng(seed)
    s = np.arange(1, num_steps + 1)[:, None] / num_steps
    c = rng.normal(size=(4, dim))
    return (
        c[0]
        + c[1] * s
        + c[2] * np.sin(4 * s)
        + c[3] * np.exp(-3 * s)
        + 0.1 * rng.normal(size=(num_steps, dim))
    )


def _track(theta: np.ndarray, gammas, dtype, every: int):
    """Runs ``update_profiles`` (jitted) over θ; {step: [profile per γ]} every ``every``."""
    step_fn = jax.jit(lambda prof, p, t: posthoc.update_profiles(prof, p, gammas, t))
    prof = tuple(jnp.zeros(theta.shape[1], dtype) for _ in gammas)
    out = {}
    for t in range(1, len(theta) + 1):
        prof = step_fn(prof, jnp.asarray(theta[t - 1], dtype), jnp.int32(t))
        if t % every == 0:
            out[t] = [np.asarray(p) for p in prof]
    return out


def test_update_profiles_equals_discrete_weights(dtype):
    theta = _trajectory(300)
    gammas = (6.94, 16.97)
    tracked = _track(theta, gammas, dtype, every=100)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for t, profiles in tracked.items():
        for g, got in zip(gammas, profiles, strict=True):
            assert got.dtype == dtype
            want = discrete_weights(t, g) @ theta[:t]
            np.testing.assert_allclose(got, want, atol=tol * np.abs(theta).max())


def _step_and_state(skip: bool):
    """A jitted train step of a two-parameter network w·x_t + b tracking two profiles, with
    an optimizer whose second update is infinite (finite loss, non-finite new weights)."""
    c = tiny()
    spec = diffusion.make_noise_spec(noise_config(c))
    bad = lambda count: jnp.where(count == 1, jnp.inf, 1.0)  # noqa: E731
    opt = optax.chain(optax.adamw(0.05), optax.scale_by_schedule(bad))
    fn = bind_train_step(
        apply_fn=lambda p, x, lam, y, k, train: p["w"] * x + p["b"], spec=spec, optimizer=opt,
        lr_schedule=lambda s: 0.05, ema_decays=(0.9,), num_classes=10, skip_nonfinite=skip,
        posthoc_gammas=(16.97, 6.94),
    )  # fmt: skip
    params = {"w": jnp.asarray(0.3), "b": jnp.asarray(-0.2)}
    return jax.jit(fn), create_train_state(params, opt, 1, {}, num_posthoc=2)


def test_train_step_tracks_profiles_and_skip_keeps_them():
    rng = jax.random.key_data(jax.random.key(0))
    batch = {"image": np.random.default_rng(0).uniform(-1, 1, (16, 4, 4, 1)).astype(np.float32),
             "label": np.arange(16, dtype=np.int32) % 10}  # fmt: skip
    for skip in (True, False):
        step, state = _step_and_state(skip)
        first, m0 = step(state, batch, rng)
        assert bool(m0["finite"])
        for prof in first.posthoc:  # β₁ = 0: after one update each profile is the weights
            jax.tree_util.tree_map(np.testing.assert_array_equal, prof, first.params)
        before = jax.device_get(first.posthoc)
        second, m1 = step(first, batch, rng)
        assert not bool(m1["finite"])
        same = jax.tree_util.tree_map(np.array_equal, before, jax.device_get(second.posthoc))
        assert all(jax.tree_util.tree_leaves(same)) == skip


# --- reconstruction from snapshots ----------------------------------------------------------


def _write_snapshots(workdir, tracked: dict, stds) -> None:
    config = ml_collections.ConfigDict(
        dict(total_steps=max(tracked), ema=dict(posthoc=dict(std=tuple(stds), every=1)))
    )
    writer = snapshots.SnapshotWriter(str(workdir), config)
    for t, profiles in tracked.items():
        state = types.SimpleNamespace(posthoc=tuple({"w": jnp.asarray(p)} for p in profiles))
        assert writer.save(t, state)
    writer.close()


def test_reconstruction_from_synthetic_snapshots(tmp_path):
    num_steps, every, stds = 1000, 50, (0.05, 0.10)
    theta = _trajectory(num_steps)
    gammas = tuple(float(g) for g in posthoc.std_to_gamma(stds))
    tracked = _track(theta, gammas, np.float32, every)
    _write_snapshots(tmp_path, tracked, stds)
    # a tracked profile is reproduced exactly
    for i, std in enumerate(stds):
        params, info = rec.reconstruct(str(tmp_path), std)
        assert info["step"] == num_steps and info["fit_error"] < 1e-6
        np.testing.assert_allclose(params["w"], tracked[num_steps][i], atol=1e-5)
        params, _ = rec.reconstruct(str(tmp_path), std, step=500)
        np.testing.assert_allclose(params["w"], tracked[500][i], atol=1e-5)
    # intermediate and wider profiles against the brute-force discrete EMA: the error is
    # under 2% of the distance between the target and the nearest tracked EMA
    near = discrete_weights(num_steps, gammas[0]) @ theta
    for std in (0.06, 0.07, 0.085):
        params, info = rec.reconstruct(str(tmp_path), std)
        want = discrete_weights(num_steps, float(posthoc.std_to_gamma(std))) @ theta
        err = np.abs(params["w"] - want).max()
        assert err < 2e-4 and err < 0.02 * np.abs(want - near).max(), (std, err)
        assert 0 < info["fit_error"] < 0.05
    # a classic decay: the σ_rel of that EMA at the step, reconstructed
    _, info = rec.reconstruct(str(tmp_path), decay=0.99)
    np.testing.assert_allclose(info["std"], posthoc.decay_to_std(0.99, num_steps))


def test_posthoc_config_validation():
    c = tiny(**{"ema.posthoc.std": (0.05, 0.1), "ema.posthoc.every": 2})
    validate_config(c, num_devices=1)
    for field, value in [("std", (0.5,)), ("std", (0.05, 0.05)), ("std", (0.0,)), ("every", 0)]:
        bad = tiny(**{"ema.posthoc.std": (0.05,), f"ema.posthoc.{field}": value})
        with pytest.raises(ConfigError, match=f"ema.posthoc.{field}"):
            validate_config(bad, num_devices=1)


# --- training: snapshots, kill and resume, keep_checkpoints, the CLI -------------------------


def _run_config(**kw):
    return tiny(**{"ema.posthoc.std": (0.05, 0.1), "ema.posthoc.every": 2, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run of 6 steps, snapshots every 2, keeping a single checkpoint."""
    wd = str(tmp_path_factory.mktemp("posthoc") / "run")
    loop.train(_run_config(keep_checkpoints=1), wd)
    return wd


def _snapshot_arrays(wd):
    ckpt = snapshots.open_snapshots(wd)
    try:
        return {s: snapshots.read_profiles(ckpt, s) for s in ckpt.all_steps()}
    finally:
        ckpt.close()


@pytest.mark.slow
def test_snapshots_kept_and_survive_kill_and_resume(trained, tmp_path):
    # keep_checkpoints=1 left one checkpoint; every snapshot is there and verifies
    assert sorted(os.listdir(os.path.join(trained, "checkpoints"))) == ["6"]
    want = _snapshot_arrays(trained)
    assert sorted(want) == [2, 4, 6] and all(len(p) == 2 for p in want.values())
    # killed after writing snapshot 4 but before checkpoint 4: resumes from checkpoint 3
    wd = str(tmp_path / "killed")
    loop.train(_run_config(), wd, stop_at_step=4)
    shutil.rmtree(os.path.join(wd, "checkpoints", "4"))
    assert snapshots.snapshot_steps(wd) == [2, 4]
    summary = loop.train(_run_config(), wd)
    assert summary["step"] == 6
    got = _snapshot_arrays(wd)
    assert sorted(got) == [2, 4, 6]
    for step in want:
        for a, b in zip(want[step], got[step], strict=True):
            jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    # the profiles differ from each other and from the classic EMA
    a, b = (jax.tree_util.tree_leaves(p)[0] for p in want[6])
    assert np.abs(a - b).max() > 0


@pytest.mark.slow
def test_cli_writes_weights_that_init_from_loads(trained, tmp_path, capsys):
    assert ema_cli.cli(["ema", "posthoc", f"--workdir={trained}", "--std=0.07"]) == 0
    out = rec.default_out(trained, 0.07)
    assert out.endswith(os.path.join("posthoc", "std_0.070"))
    info = json.load(open(os.path.join(out, "posthoc.json")))
    assert info["step"] == 6 and info["snapshots"] == [2, 4, 6]
    params, _ = rec.reconstruct(trained, 0.07)
    # the inference path of --mode=sample|evaluate: an empty work dir with init_from
    c = tiny()
    c.init_from = out
    _, state, step = outputs.restore_for_inference(c, str(tmp_path / "eval"))
    assert step == 0 and state.ema == ()
    used = generate.sampling_params(state)
    jax.tree_util.tree_map(np.testing.assert_array_equal, used, params)
    np.testing.assert_array_equal(
        jax.tree_util.tree_leaves(load_params(out)["params"])[0],
        jax.tree_util.tree_leaves(params)[0],
    )
    argv = ["main", "--config=configs/digits.py:tiny", f"--workdir={tmp_path / 'sample'}",
            "--mode=sample", "--num_samples=4", f"--config.init_from={out}"]  # fmt: skip
    assert main_cli.cli(argv) == 0
    assert any(n.endswith(".npz") for n in os.listdir(tmp_path / "sample" / "samples"))


@pytest.mark.slow
def test_cli_bad_input_one_line_exit_2(trained, tmp_path, capsys):
    cases = [
        (["posthoc", f"--workdir={trained}", "--std=0.5"], "--std"),
        (["posthoc", f"--workdir={trained}", "--std=abc"], "--std"),
        (["posthoc", f"--workdir={trained}", "--std=0.07", "--step=5"], "--step"),
        (["posthoc", f"--workdir={tmp_path}", "--std=0.07"], "no EMA snapshots"),
        (["sweep", f"--workdir={tmp_path}", "--std=0.05,0.1"], "no EMA snapshots"),
        (["average", f"--workdir={trained}", "--std=0.07"], "unknown"),
    ]
    for args, words in cases:
        assert ema_cli.cli(["ema", *args]) == 2, args
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("error: ") and words in err[0], (args, err)
        assert "Traceback" not in "\n".join(err)


def test_power_beta_float32_keeps_long_runs_accurate():
    steps = np.array([1, 2, 10, 1000, 10**6, 10**7])
    for gamma in (6.94, 16.97):
        b, one_minus_b = jax.jit(lambda t, g=gamma: posthoc.power_beta(t, g))(steps)
        exact = 1.0 - (1.0 - 1.0 / steps.astype(np.float64)) ** (gamma + 1.0)
        np.testing.assert_allclose(np.asarray(one_minus_b), exact, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(b), 1.0 - exact, rtol=1e-6, atol=1e-7)


def test_checkpoints_without_profiles_keep_their_layout(tmp_path):
    """Off, the checkpoint holds exactly the arrays it held before post-hoc EMA existed (so
    those checkpoints restore); on, the profiles are part of it and restore."""
    params = {"w": jnp.arange(3.0)}
    off = create_train_state(params, optax.sgd(0.1), 1, {})
    on = create_train_state(params, optax.sgd(0.1), 1, {}, num_posthoc=2)
    assert "posthoc" not in flax.serialization.to_state_dict(off)
    assert sorted(flax.serialization.to_state_dict(on)["posthoc"]) == ["0", "1"]
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    before = {k: v for k, v in flax.serialization.to_state_dict(off).items()}
    ckpt.save(1, before)  # a state dict as an older version wrote it
    ckpt.save(2, on.replace(posthoc=(params, {"w": jnp.ones(3)})))
    ckpt.wait()
    restored, _ = ckpt.restore(1, off)
    assert restored.posthoc == () and np.array_equal(restored.params["w"], params["w"])
    restored, _ = ckpt.restore(2, on)
    np.testing.assert_array_equal(restored.posthoc[1]["w"], np.ones(3))
    ckpt.close()


@pytest.mark.slow
def test_sweep_evaluates_each_reconstruction_and_writes_table(trained, monkeypatch):
    """The sweep hands each σ_rel's reconstructed weights to the run's evaluation (here a
    stand-in scoring the weights, so the test needs no classifier) and tabulates the scores."""
    from jaxdiff.ema import sweep as sweep_lib

    def fake_quality(exp, state, workdir, num=None, progress=None):
        assert state.ema == () and num == 8
        leaves = jax.tree_util.tree_leaves(state.params)
        return {"eval/digits_fd": float(sum(np.abs(np.asarray(x)).sum() for x in leaves))}

    monkeypatch.setattr(sweep_lib.outputs, "evaluate_quality", fake_quality)
    rows, paths = sweep_lib.sweep(trained, [0.05, 0.07, 0.1], num_samples=8)
    for row in rows:
        params, _ = rec.reconstruct(trained, row["std"])
        want = sum(np.abs(x.astype(np.float64)).sum() for x in jax.tree_util.tree_leaves(params))
        np.testing.assert_allclose(row["eval/digits_fd"], want, rtol=1e-5)
        assert row["step"] == 6 and os.path.isdir(rec.default_out(trained, row["std"]))
    assert len({r["eval/digits_fd"] for r in rows}) == 3  # three different weights
    assert json.load(open(paths["json"])) == rows
    assert open(paths["csv"]).readline().strip() == "std,step,fit_error,eval/digits_fd"
    assert os.path.getsize(paths["png"]) > 1000
