"""`timesteps="adaptive"` (Kim et al. 2024): F-test selection, bound terms, policy, learning."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.feature_selection import SelectKBest, f_regression
from tiny_config import noise_fields

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


def _cosine_t(lam):
    return 2.0 / np.pi * np.arctan(np.exp(-0.5 * lam))


def _grid(version, k, lam_max):
    """The level grid's t, uniform on [t_top, 1]: K intervals (continuous) or K steps."""
    t_top = 1.0 / k if lam_max is None else (0.0 if lam_max >= 20 else _cosine_t(lam_max))
    n = k if version == "continuous" else k - 1
    return t_top + np.arange(n + 1) * (1.0 - t_top) / n


def _ddpm_posteriors(lam_grid):
    """DDPM's q(x_{s}|x_t, x0) = N(m1·x0 + m2·x_t, var) between consecutive grid points
    s → t (Ho et al. 2020, eq. 7 with ᾱ_{t−1} → ᾱ_s), from ᾱ = sigmoid(λ), float64."""
    abar = 1.0 / (1.0 + np.exp(-lam_grid))
    one_minus = 1.0 / (1.0 + np.exp(lam_grid))  # 1 − ᾱ without cancellation
    a_s, om_s, om_t = abar[:-1], one_minus[:-1], one_minus[1:]
    beta = (om_t - om_s) / a_s  # 1 − ᾱ_t/ᾱ_s
    m1 = np.sqrt(a_s) * beta / om_t
    m2 = np.sqrt(1.0 - beta) * om_s / om_t
    return m1, m2, beta * om_s / om_t


def _reference_levels(version, k, lam_max):
    """(λ_k, bits per unit x0-MSE) of each level from DDPM's posterior formulas; the discrete
    step 0 is the official t = 0 term, KL(N(x0, σ̃²_1) ‖ N(x̂0, σ̃²_1))."""
    lam_grid = _cosine_lam(_grid(version, k, lam_max))
    m1, _, var = _ddpm_posteriors(lam_grid)
    coef = m1**2 / (2.0 * var) / np.log(2.0)
    if version == "continuous":
        return lam_grid[1:], coef
    return lam_grid, np.concatenate([[1.0 / (2.0 * var[0]) / np.log(2.0)], coef])


@pytest.mark.parametrize("lam_max", [None, 13.3, 20.0])
@pytest.mark.parametrize("version", ["continuous", "discrete"])
def test_bound_terms_are_ddpm_kl_coefficients(version, lam_max, dtype):
    """c_k·mse = KL(q(x_s|x_t, x0) ‖ p_θ(x_s|x_t)) per dim in bits (posterior variance) on a
    grid uniform in t from t(lam_max) (default 1/K) to 1; lam_max = 20 is the grid up to the
    clipped end, t_k = k/K (continuous) or k/(T−1) (discrete)."""
    k = 64 if version == "continuous" else 1000
    params = {} if lam_max is None else {"lam_max": lam_max}
    smp = noise.get_timestep_sampler("adaptive", COSINE, version=version, num_levels=k, **params)
    lam, coef = jax.jit(smp.levels)()
    assert lam.dtype == dtype and lam.shape == coef.shape == (k,)
    ref_lam, ref_coef = _reference_levels(version, k, lam_max)
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-5, atol=1e-5)
    # (the reference loses ~1e−8 to 1 − ᾱ_t/ᾱ_s at λ = 20)
    np.testing.assert_allclose(coef, ref_coef, rtol=1e-7 if dtype == np.float64 else 2e-3)
    if lam_max == 20.0:
        old = np.arange(1, k + 1) / k if version == "continuous" else np.arange(k) / (k - 1)
        np.testing.assert_allclose(smp.level_t()[0], old, rtol=1e-12)
    if version == "discrete":
        assert lam[0] == pytest.approx({None: 12.912, 13.3: 13.3, 20.0: 20.0}[lam_max], abs=2e-3)


V_DATA = 0.25  # variance of the Gaussian data


def _gaussian_kl_terms(version, k, lam_max, nodes=8):
    """Expected bound term of each level (bits per dim) for x0 ~ N(0, V_DATA) and the exact
    denoiser x̂0 = E[x0 | x_t]: the Gaussian KL formula between the two posteriors, averaged
    over (x0, ε) by Gauss–Hermite quadrature (exact: the KL is quadratic in them), float64."""
    lam_grid = _cosine_lam(_grid(version, k, lam_max))
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    x0, eps = np.sqrt(V_DATA) * x[:, None], x[None, :]
    ww = w[:, None] * w[None, :]

    def denoise(lam, x_t):  # E[x0 | x_t] for Gaussian x0
        a2 = 1.0 / (1.0 + np.exp(-lam))
        return np.sqrt(a2) * V_DATA * x_t / (a2 * V_DATA + 1.0 - a2)

    def x_t(lam):
        return np.sqrt(1.0 / (1.0 + np.exp(-lam))) * x0 + np.sqrt(1.0 / (1.0 + np.exp(lam))) * eps

    def kl(mu_q, var_q, mu_p, var_p):
        return 0.5 * (np.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0)

    m1, m2, var = _ddpm_posteriors(lam_grid)
    terms = []
    for j in range(len(lam_grid) - 1):
        z = x_t(lam_grid[j + 1])
        mu_q, mu_p = m1[j] * x0 + m2[j] * z, m1[j] * denoise(lam_grid[j + 1], z) + m2[j] * z
        terms.append(np.sum(ww * kl(mu_q, var[j], mu_p, var[j])))
    if version == "discrete":  # the t = 0 term: q = N(x0, σ̃²_1), p = N(x̂0(x_{t_0}), σ̃²_1)
        terms.insert(0, np.sum(ww * kl(x0, var[0], denoise(lam_grid[0], x_t(lam_grid[0])), var[0])))
    return np.asarray(terms) / np.log(2.0)


@pytest.mark.parametrize("version", ["continuous", "discrete"])
def test_gaussian_denoiser_bound_is_spread_over_levels(version, dtype):
    """With the default grid (cosine, K = 128 / T = 1000) an exact Gaussian denoiser's bound
    terms c_k·E[mse_k] equal the Gaussian KLs computed independently, and no level holds
    half of their sum; the grid up to the clip (lam_max = 20) puts ≥ 98% on one level."""
    smp = noise.get_timestep_sampler("adaptive", COSINE, version=version)
    k = smp.num_levels
    lam, coef = (np.asarray(a, np.float64) for a in jax.jit(smp.levels)())
    terms = coef * V_DATA / (1.0 + V_DATA * np.exp(lam))  # E[(x̂0 − x0)²] = V/(1 + V·SNR)
    ref = _gaussian_kl_terms(version, k, None)
    np.testing.assert_allclose(terms, ref, rtol=1e-9 if dtype == np.float64 else 2e-3)
    share = ref / ref.sum()
    assert share.max() < 0.5 and (terms / terms.sum()).max() < 0.5
    assert share.max() == pytest.approx({"continuous": 0.294, "discrete": 0.192}[version], abs=1e-3)
    clipped = _gaussian_kl_terms(version, k, 20.0)
    assert (clipped / clipped.sum()).max() > 0.98  # what the test guards against


@pytest.mark.parametrize("version", ["continuous", "discrete"])
def test_update_row_is_the_gaussian_bound(version):
    """Through `update`: with x̂0 the exact Gaussian denoiser before and x0 itself after, the
    queue row Δ_k is level k's bound term of one example (3072 dims: ≈ its expectation, 2.6%
    noise per level) and no level holds half of the row."""
    smp = noise.get_timestep_sampler("adaptive", COSINE, version=version, **TINY)
    k = smp.num_levels
    x0 = np.sqrt(V_DATA) * jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    state = noise.init_sampler_state(smp, jax.random.key(1), x0.shape)

    def err(scale, x, eps, lam, y):
        a2 = jax.nn.sigmoid(lam)[:, None, None, None]
        x_t = jnp.sqrt(a2) * x + jnp.sqrt(1.0 - a2) * eps
        x_hat = jnp.sqrt(a2) * V_DATA * x_t / (a2 * V_DATA + 1.0 - a2)
        return scale * jnp.mean((x_hat - x) ** 2, axis=(1, 2, 3))

    u = jnp.asarray([0.3, 0.7])
    ctx = _ctx(jnp.int32(0), jax.random.key(3), x0, COSINE.logsnr(u), {"u": u}, err, None, 1.0, 0.0)
    new, _ = jax.jit(smp.update)(state, ctx)
    row = np.asarray(new["queue"][0], np.float64)
    expected = _gaussian_kl_terms(version, k, None)
    np.testing.assert_allclose(row[:k], expected, rtol=0.2)
    np.testing.assert_allclose(row[:k].sum(), expected.sum(), rtol=0.02)
    np.testing.assert_allclose(row[k], row[:k].sum(), rtol=1e-5)
    assert (row[:k] / row[k]).max() < 0.5


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
    steps = (np.round(u * 999) + 1) / 1000  # the default grid's steps t = (k + 1)/T
    np.testing.assert_allclose(lam, _cosine_lam(steps), rtol=1e-5, atol=1e-4)
    grid = np.asarray(smp.levels()[0])
    assert np.abs(np.asarray(lam)[:, None] - grid[None, :]).min(1).max() < 1e-4


@pytest.mark.parametrize("version", ["continuous", "discrete"])
def test_density_and_cdf_are_those_of_the_draws(version):
    """density(λ) integrates to 1 (continuous: less the clip atoms); the discrete version's
    is the unrounded step's (0 above the grid's top λ_0); cdf is 0 at the top, 1 at t = 1."""
    with jax.enable_x64(True):
        smp = noise.get_timestep_sampler("adaptive", COSINE, version=version, **TINY)
        x0 = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
        state = noise.init_sampler_state(smp, jax.random.key(1), x0.shape)
        state["policy"]["dense_1"]["b"] = jnp.asarray([0.9, -0.4])  # Beta(α ≠ β)
        lam = np.linspace(-19.999, 19.999, 400_001)
        p = np.asarray(jax.jit(smp.density)(state, jnp.asarray(lam), x0))
        mass = np.sum(0.5 * (p[1:] + p[:-1]) * np.diff(lam))
        a, b = policy.policy_apply(state["policy"], x0, smp.pool_size)
        t_top = smp.t_top()
        if version == "discrete":
            u_atom = (_cosine_t(-20.0) - t_top) / (1 - t_top)  # λ = −20 (clip) above it
            assert mass == pytest.approx(1.0 - np.mean(stats.beta.sf(u_atom, a, b)), abs=2e-4)
            lam0 = float(smp.levels()[0][0])
            assert np.all(p[lam > lam0 + 1e-3] == 0.0) and np.all(p[lam < lam0 - 1e-3] > 0)
            t = np.asarray([0.3, 0.7])
            want = np.mean(
                stats.beta.cdf((t[None] - t_top) / (1 - t_top), a[:, None], b[:, None]), 0
            )
        else:
            u_atoms = np.mean(
                stats.beta.cdf(_cosine_t(20.0), a, b) + stats.beta.sf(_cosine_t(-20.0), a, b)
            )
            assert mass == pytest.approx(1.0 - u_atoms, abs=2e-4)
            t = np.asarray([0.3, 0.7])
            want = np.mean(stats.beta.cdf(t[None], a[:, None], b[:, None]), 0)
        np.testing.assert_allclose(smp.cdf(state, jnp.asarray(t), x0), want, rtol=1e-7)
        ends = np.asarray(
            smp.cdf(state, jnp.asarray([t_top if version == "discrete" else 0.0, 1.0]), x0)
        )
        np.testing.assert_allclose(ends, [0.0, 1.0], atol=1e-12)


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
        ({"lam_max": -20.0}, "lam_max"),
        ({"lam_max": float("inf")}, "lam_max"),
        ({"lam_max": "vdm"}, "lam_max"),
    ],
)
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        noise.get_timestep_sampler("adaptive", COSINE, **params)
    with pytest.raises(ValueError, match=f"noise.timesteps_params.*{field}"):
        diffusion.make_noise_spec(noise_fields(timesteps="adaptive", timesteps_params=params))


def test_defaults_and_misuse():
    smp = noise.get_timestep_sampler("adaptive", COSINE)
    assert (smp.version, smp.update_every, smp.num_selected, smp.queue_size) == (
        "continuous", 40, 3, 20
    )  # fmt: skip
    assert (smp.policy_lr, smp.entropy_coef, smp.grad_clip, smp.num_levels) == (
        1e-2, 1e-2, 1.0, 128
    )  # fmt: skip
    assert noise.get_timestep_sampler("adaptive", COSINE, version="discrete").num_levels == 1000
    assert smp.lam_max is None and smp.t_top() == 1.0 / 128
    assert smp.stateful and hash(smp) == hash(noise.get_timestep_sampler("adaptive", COSINE))
    with pytest.raises(ValueError, match="x0_shape"):
        noise.init_sampler_state(smp, jax.random.key(0))
    state = noise.init_sampler_state(smp, jax.random.key(0), (2, 8, 8, 3))
    with pytest.raises(ValueError, match="x0"):
        smp.draw(jax.random.key(0), 2, state)
    with pytest.raises(ValueError, match="draw"):
        smp.sample(jax.random.key(0), 2, state)
