"""`timesteps="adaptive"` (Kim et al. 2024): F-test selection, bound terms, policy, learning."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.feature_selection import SelectKBest, f_regression

from jaxdiff import diffusion, noise
from jaxdiff.noise import adaptive_policy as policy


@pytest.fixture
def torch():
    """PyTorch, from the torch extra: a test that asks for it is skipped without it."""
    return pytest.importorskip("torch")


COSINE = noise.get_schedule("cosine")
TINY = {"channels": [4], "hidden_width": 16, "hidden_depth": 1}


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param).type


# --- F-test selection ---------------------------------------------------------------------


def _queue(rng, rows, cols, fill):
    x = rng.normal(size=(rows, cols)) * rng.uniform(0.1, 3.0, size=cols)
    y = x[:, :5] @ rng.normal(size=5) + 0.5 * rng.normal(size=rows)
    x[:, 7] = 0.0  # a level that never changes (e.g. the discrete grid's first term)
    x[:, 11] = 0.5  # a constant non-zero column
    x[:, 13] = x[:, 2]  # an exact tie with column 2
    x[fill:] = 0.0  # unfilled rows of the ring buffer
    y[fill:] = 0.0
    return x, y


@pytest.mark.parametrize("fill", [2, 3, 7, 20])
def test_f_test_equals_sklearn(fill):
    with jax.enable_x64(True):
        for seed in range(4):
            x, y = _queue(np.random.default_rng(seed), 20, 40, fill)
            mask = np.arange(20) < fill
            scores = jax.jit(noise.f_regression_scores)(x, y, mask)
            ref, _ = f_regression(x[:fill], y[:fill])
            np.testing.assert_allclose(scores, ref, rtol=1e-9, atol=1e-12)
            if fill < 3:
                continue
            for k in (1, 3, 6):
                want = SelectKBest(f_regression, k=k).fit(x[:fill], y[:fill])
                got = jax.jit(noise.select_k_best, static_argnums=1)(scores, k)
                np.testing.assert_array_equal(got, want.get_support(indices=True))


def test_f_test_float32_selects_like_sklearn():
    for seed in range(5):
        x, y = _queue(np.random.default_rng(10 + seed), 20, 64, 20)
        scores = jax.jit(noise.f_regression_scores)(x.astype(np.float32), y.astype(np.float32))
        assert scores.dtype == np.float32
        want = SelectKBest(f_regression, k=3).fit(x, y).get_support(indices=True)
        np.testing.assert_array_equal(noise.select_k_best(scores, 3), want)


def test_select_ties_prefer_larger_index_like_sklearn():
    scores = np.array([0.0, 2.0, 2.0, 1.0, 2.0, 0.0])
    for k in (1, 2, 4, 6):
        x = np.zeros((1, 6))
        sel = SelectKBest(lambda X, y, s=scores: (s, s), k=k).fit(x, np.zeros(1))
        np.testing.assert_array_equal(
            noise.select_k_best(jnp.asarray(scores), k), sel.get_support(indices=True)
        )


# --- bound terms --------------------------------------------------------------------------


def _cosine_lam(t):
    with np.errstate(divide="ignore"):
        lam = 2.0 * np.log(1.0 / np.tan(0.5 * np.pi * t))
    return np.clip(lam, -20.0, 20.0)


def test_discrete_terms_are_ddpm_kl_coefficients(dtype):
    """c_t·e = KL(q(x_{t−1}|x_t, x0) ‖ p_θ(x_{t−1}|x_t)) per dim (posterior variance), bits."""
    smp = noise.get_timestep_sampler("adaptive", COSINE, version="discrete")
    lam, coef = jax.jit(smp.levels)()
    assert lam.dtype == dtype and lam.shape == (1000,)
    ref_lam = _cosine_lam(np.arange(1000) / 999)
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-5, atol=1e-5)
    abar = 1.0 / (1.0 + np.exp(-ref_lam))
    beta = 1.0 - abar[1:] / abar[:-1]
    mean_coef = np.sqrt(abar[:-1]) * beta / (1.0 - abar[1:])  # of x0 in the posterior mean
    post_var = (1.0 - abar[:-1]) * beta / (1.0 - abar[1:])
    ref = mean_coef**2 / (2.0 * post_var) / np.log(2.0)
    # (the reference loses ~1e−8 to the cancellation in 1 − ᾱ at λ = 20)
    rtol = 1e-7 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(coef[1:], ref, rtol=rtol)
    assert coef[0] == 0.0  # DDPM's decoder term is left out


def test_continuous_terms_are_vdm_discrete_loss(dtype):
    smp = noise.get_timestep_sampler("adaptive", COSINE, num_levels=64)
    lam, coef = jax.jit(smp.levels)()
    t = np.arange(1, 65) / 64
    ref_lam = _cosine_lam(t)
    prev = _cosine_lam(np.concatenate([[0.0], t[:-1]]))
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-5, atol=1e-5)
    ref = 0.5 * (np.exp(prev) - np.exp(ref_lam)) / np.log(2.0)
    np.testing.assert_allclose(coef, ref, rtol=1e-9 if dtype == np.float64 else 2e-3)


def _ctx(step, key, x0, lam, info, err, labels=None, before=0.0, after=1.0):
    return noise.SamplerContext(
        step=step, key=key, x0=x0, labels=labels, lam=lam, info=info,
        params_before=before, params_after=after, x0_error=err,
    )  # fmt: skip


def test_refresh_pushes_the_bound_differences():
    """One update: queue row = c_k·(e_before(λ_k) − e_after(λ_k)) and its sum; labels reach
    x0_error row by row; the structure and dtypes of the state are unchanged."""
    smp = noise.get_timestep_sampler("adaptive", COSINE, num_levels=16, **TINY)
    x0 = jax.random.normal(jax.random.key(0), (6, 5, 5, 2))
    labels = jnp.arange(6) * 10
    state = noise.init_sampler_state(smp, jax.random.key(1), x0.shape)

    def err(gain, x, eps, lam, y):
        assert x.shape == (16 + 6 * 3, 5, 5, 2) and eps.shape == x.shape and y.shape == lam.shape
        return 1.0 - gain * (jax.nn.sigmoid(lam) + 0.01 * y)  # y = 10·(example index)

    u = jax.random.uniform(jax.random.key(2), (6,), minval=0.01, maxval=0.99)
    lam, info = COSINE.logsnr(u), {"u": u}
    ctx = _ctx(jnp.int32(0), jax.random.key(3), x0, lam, info, err, labels, 0.0, 0.5)
    new, metrics = jax.jit(smp.update)(state, ctx)
    grid, coef = smp.levels()
    row = np.asarray(new["queue"][0])
    # The one example's label: its Δ is shifted by coef·0.5·0.01·y.
    y_one = (row[:16] / np.asarray(coef) / 0.5 - np.asarray(jax.nn.sigmoid(grid))) / 0.01
    assert np.allclose(y_one, y_one[0], atol=1e-2) and round(y_one[0]) in range(0, 60, 10)
    np.testing.assert_allclose(row[16], row[:16].sum(), rtol=1e-6)
    assert int(new["queue_fill"]) == 1 and int(new["queue_pos"]) == 1
    assert int(new["num_updates"]) == 1 and float(metrics["updated"]) == 1.0
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(state), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert not np.allclose(new["policy"]["dense_1"]["b"], state["policy"]["dense_1"]["b"])
    # Not a multiple of update_every: nothing changes.
    same, metrics = jax.jit(smp.update)(
        state, _ctx(jnp.int32(7), jax.random.key(3), x0, lam, info, err, labels, 0.0, 0.5)
    )
    jax.tree_util.tree_map(np.testing.assert_array_equal, same, state)
    assert float(metrics["updated"]) == 0.0
    assert metrics["selected_lam"].shape == (3,)


# --- policy -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (2, 1, 1, 2)])
def test_policy_any_input_size_starts_near_uniform(shape):
    params = policy.init_policy(jax.random.key(0), shape[-1], (4, 8, 8), 16, 2)
    x0 = jax.random.normal(jax.random.key(1), shape)
    apply = jax.jit(policy.policy_apply)
    a, b = apply(params, x0)
    want = np.log1p(np.exp(0.5)) + 1e-5
    np.testing.assert_allclose(a, want, rtol=1e-6)
    np.testing.assert_allclose(b, want, rtol=1e-6)
    head = params["dense_2"]
    params["dense_2"] = {"w": jax.random.normal(jax.random.key(2), head["w"].shape), "b": head["b"]}
    a, b = apply(params, x0)
    assert a.shape == b.shape == (shape[0],) and np.all(np.isfinite(a)) and np.all(a > 0)
    if shape[0] > 1:
        assert not np.allclose(a[0], a[1])  # the features depend on x0


def test_policy_equals_official_architecture_at_32px(torch):
    """Same numbers as the official ActorNetwork (conv/ReLU/maxpool ×3, flatten 128·4·4, MLP)
    in PyTorch with our weights, for a non-zero head."""
    params = policy.init_policy(jax.random.key(0), 3)
    assert params["dense_0"]["w"].shape == (2048, 256)
    params["dense_2"]["w"] = 0.05 * jax.random.normal(jax.random.key(1), (256, 2))
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    a, b = jax.jit(policy.policy_apply)(params, jnp.asarray(x))
    p = jax.tree_util.tree_map(lambda v: torch.tensor(np.asarray(v), dtype=torch.float64), params)
    h = torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2)
    for i in range(3):
        w = p[f"conv_{i}"]["w"].permute(3, 2, 0, 1)
        h = torch.nn.functional.conv2d(h, w, p[f"conv_{i}"]["b"], padding=1)
        h = torch.nn.functional.max_pool2d(torch.relu(h), 2, 2)
    h = h.reshape(4, -1)  # (C, H, W) order
    w0 = p["dense_0"]["w"].reshape(4, 4, 128, 256).permute(2, 0, 1, 3).reshape(2048, 256)
    h = torch.relu(h @ w0 + p["dense_0"]["b"])
    h = torch.relu(h @ p["dense_1"]["w"] + p["dense_1"]["b"])
    out = torch.nn.functional.softplus(h @ p["dense_2"]["w"] + p["dense_2"]["b"]) + 1e-5
    np.testing.assert_allclose(a, out[:, 0].numpy(), rtol=2e-4)
    np.testing.assert_allclose(b, out[:, 1].numpy(), rtol=2e-4)


@pytest.mark.parametrize("size", [1, 3, 5, 7, 9])
def test_adaptive_pool_matches_torch(size, torch):
    x = np.random.default_rng(size).normal(size=(1, 2, size, size + 1))
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), 4).numpy()
    mh, mw = policy._adaptive_pool_matrix(size, 4), policy._adaptive_pool_matrix(size + 1, 4)
    np.testing.assert_allclose(np.einsum("ph,nchw,qw->ncpq", mh, x, mw), ref, rtol=1e-6)


def test_beta_helpers_match_scipy(dtype):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.3, 5.0, 50), rng.uniform(0.3, 5.0, 50)
    u = rng.uniform(0.01, 0.99, 50)
    args = [jnp.asarray(v, dtype) for v in (u, a, b)]
    rtol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(
        jax.jit(policy.beta_log_prob)(*args), stats.beta.logpdf(u, a, b), rtol=rtol, atol=rtol
    )
    np.testing.assert_allclose(
        jax.jit(policy.beta_entropy)(*args[1:]), stats.beta.entropy(a, b), rtol=rtol, atol=rtol
    )
    np.testing.assert_allclose(
        jax.jit(policy.beta_cdf)(*args), stats.beta.cdf(u, a, b), rtol=rtol, atol=rtol
    )


def test_discrete_u_rounds_to_the_step_grid():
    smp = noise.get_timestep_sampler("adaptive", COSINE, version="discrete", **TINY)
    u = np.random.default_rng(0).uniform(1e-6, 1 - 1e-6, 256)
    lam = jax.jit(smp.lam_of_u)(jnp.asarray(u, jnp.float32))
    np.testing.assert_allclose(lam, _cosine_lam(np.round(u * 999) / 999), rtol=1e-5, atol=1e-4)
    grid = np.asarray(smp.levels()[0])
    assert np.abs(np.asarray(lam)[:, None] - grid[None, :]).min(1).max() < 1e-4


# --- learning on a synthetic problem ------------------------------------------------------

B, N_STEPS, EVERY = 32, 120, 2  # 60 sampler updates
TARGET = (0.6, 0.8)  # the band of t where the synthetic model can improve


def _synthetic_err(params, x, eps, lam, y):
    """x̂0 error of a frozen model that improves only for t near 0.7, and only near the t
    each example was trained at (params["t"][y]) — as a real update would."""
    t = COSINE.t_from_logsnr(lam)
    improvable = jnp.exp(-0.5 * ((t - 0.7) / 0.05) ** 2)
    near = jnp.exp(-0.5 * ((t - params["t"][y]) / 0.1) ** 2)
    return 1.0 - params["gain"] * improvable * near


@pytest.fixture(scope="module")
def synthetic():
    smp = noise.get_timestep_sampler("adaptive", COSINE, num_levels=32, update_every=EVERY, **TINY)
    x0 = jax.random.normal(jax.random.key(0), (B, 8, 8, 1))
    labels = jnp.arange(B)

    def step(carry, i):
        state, signal = carry
        k_draw, k_upd, k_gain = jax.random.split(jax.random.fold_in(jax.random.key(1), i), 3)
        lam, _, info = smp.draw(k_draw, B, state, x0)
        gain = signal * jax.random.uniform(k_gain, (), minval=0.5, maxval=1.5)
        ctx = _ctx(
            i,
            k_upd,
            x0,
            lam,
            info,
            _synthetic_err,
            labels,
            {"t": info["u"], "gain": 0.0 * gain},
            {"t": info["u"], "gain": gain},
        )
        state, metrics = smp.update(state, ctx)
        return (state, signal), (lam, info, metrics)

    @jax.jit
    def run(state, start, signal):
        (state, _), out = jax.lax.scan(step, (state, signal), start + jnp.arange(N_STEPS))
        return state, out

    state0 = noise.init_sampler_state(smp, jax.random.key(2), x0.shape)
    runs = {signal: run(state0, 0, signal) for signal in (0.0, 1.0)}
    return smp, run, state0, runs


def test_draw_returns_the_policy_draws(synthetic):
    _, _, _, runs = synthetic
    _, (lam, info, _) = runs[1.0]
    assert set(info) == {"u", "alpha", "beta"}
    assert all(v.shape == (N_STEPS, B) for v in (lam, *info.values()))
    np.testing.assert_allclose(lam, COSINE.logsnr(info["u"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(info["alpha"][0], np.log1p(np.exp(0.5)) + 1e-5, rtol=1e-6)
    assert np.all((info["u"] > 0) & (info["u"] < 1))


def test_density_moves_to_the_improvable_levels(synthetic):
    smp, _, _, runs = synthetic
    state, (_, info, metrics) = runs[1.0]
    u = np.asarray(info["u"])
    in_band = (u > TARGET[0]) & (u < TARGET[1])
    assert 0.1 < in_band[:10].mean() < 0.3  # ≈ 0.2 at the start (uniform)
    assert in_band[-20:].mean() > 0.8  # within 60 updates
    assert int(state["num_updates"]) == N_STEPS // EVERY
    np.testing.assert_array_equal(metrics["updated"], np.arange(N_STEPS) % EVERY == 0)
    t_sel = np.asarray(COSINE.t_from_logsnr(metrics["selected_lam"][-1]))
    assert np.all((t_sel > 0.55) & (t_sel < 0.85)), t_sel
    assert metrics["entropy"][-1] < -0.5  # concentrated


def test_no_signal_stays_uniform(synthetic):
    _, _, _, runs = synthetic
    _, (_, info, metrics) = runs[0.0]
    u = np.asarray(info["u"]).ravel()
    ks = stats.kstest(u, "uniform")
    assert ks.statistic < 0.04, ks  # n = 3840 draws; 1.95/√n ≈ 0.031 at p = 0.001
    assert np.all(np.abs(metrics["entropy"]) < 0.01)


def test_update_is_deterministic_and_resumes_bit_exactly(synthetic):
    _, run, state0, runs = synthetic
    mid, _ = runs[1.0]
    ref, ref_out = run(mid, N_STEPS, 1.0)
    restored = flax.serialization.from_bytes(state0, flax.serialization.to_bytes(mid))
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(mid)
    again, again_out = run(jax.tree_util.tree_map(jnp.asarray, restored), N_STEPS, 1.0)
    jax.tree_util.tree_map(np.testing.assert_array_equal, (again, again_out), (ref, ref_out))


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, field",
    [
        ({"update_every": 0}, "update_every"),
        ({"num_selected": 129}, "num_selected"),
        ({"num_selected": 4, "num_levels": 3}, "num_selected"),
        ({"policy_lr": -1e-2}, "policy_lr"),
        ({"entropy_coef": -0.1}, "entropy_coef"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"version": "ddpm"}, "version"),
        ({"queue_size": 2}, "queue_size"),
        ({"num_levels": 1}, "num_levels"),
        ({"channels": []}, "channels"),
        ({"policy_learning_rate": 1.0}, "policy_learning_rate"),
    ],
)
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        noise.get_timestep_sampler("adaptive", COSINE, **params)
    with pytest.raises(ValueError, match=f"noise.timesteps_params.*{field}"):
        diffusion.make_noise_spec({"timesteps": "adaptive", "timesteps_params": params})


def test_defaults_and_misuse():
    smp = noise.get_timestep_sampler("adaptive", COSINE)
    assert (smp.version, smp.update_every, smp.num_selected, smp.queue_size) == (
        "continuous", 40, 3, 20
    )  # fmt: skip
    assert (smp.policy_lr, smp.entropy_coef, smp.grad_clip, smp.num_levels) == (
        1e-2, 1e-2, 1.0, 128
    )  # fmt: skip
    assert noise.get_timestep_sampler("adaptive", COSINE, version="discrete").num_levels == 1000
    assert smp.stateful and hash(smp) == hash(noise.get_timestep_sampler("adaptive", COSINE))
    with pytest.raises(ValueError, match="x0_shape"):
        noise.init_sampler_state(smp, jax.random.key(0))
    state = noise.init_sampler_state(smp, jax.random.key(0), (2, 8, 8, 3))
    with pytest.raises(ValueError, match="x0"):
        smp.draw(jax.random.key(0), 2, state)
    with pytest.raises(ValueError, match="draw"):
        smp.sample(jax.random.key(0), 2, state)
