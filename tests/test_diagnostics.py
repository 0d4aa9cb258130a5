"""jaxdiff.diagnostics against closed forms: Gaussian data with its exact denoiser, uniform
8-bit data, VDM's decoder and prior terms, brute-force gradient variance."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_config import noise_fields

from jaxdiff import diagnostics as dg
from jaxdiff import noise
from jaxdiff.diffusion import loss_weight, make_noise_spec
from jaxdiff.training import generate

LAM_MIN, LAM_MAX = -5.0, 13.3
SHAPE = (4, 4, 1)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param)


def _bcast(a, x):
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)).astype(x.dtype)


def gaussian_x0(params, z, lam):
    """Posterior mean E[x | z] for x ~ N(m, s2) per dim, z = αx + σε."""
    alpha, sigma = (_bcast(a, z) for a in noise.alpha_sigma(lam))
    m, s2 = params["m"].astype(z.dtype), params["s2"].astype(z.dtype)
    return m + alpha * s2 / (alpha**2 * s2 + sigma**2) * (z - alpha * m)


EXACT = dg.Denoiser(lambda p, z, lam, y: gaussian_x0(p, z, lam), "x0")


def gaussian_problem(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.uniform(-0.5, 0.5, SHAPE)
    s2 = rng.uniform(0.05, 0.4, SHAPE)
    x = (m + np.sqrt(s2) * rng.standard_normal((n, *SHAPE))).astype(dtype)
    params = {"m": jnp.asarray(m, dtype), "s2": jnp.asarray(s2, dtype)}
    return x, np.zeros(n, np.int32), params, m, s2


def gaussian_elbo_reference(m, s2, lam_min=LAM_MIN, lam_max=LAM_MAX):
    """E_x of the ELBO (nats/dim) for N(m, s2) data and its exact denoiser, float64, two ways.

    Direct: ½·log((1 + e^λmax s2)/(1 + e^λmin s2)) + E KL(q(z_min|x) ‖ N(0,1)) + E −log
    N(x; z/α, e^−λmax). Decomposed: the NLL ½·log(2πe·s2) plus the end-point terms
    KL(q(z_min) ‖ N(0,1)) (marginal) and E_z KL(q(x|z_max) ‖ p(x|z_max)) = ½·log(1 + e^−λmax/s2).
    """
    a2 = 1.0 / (1.0 + math.exp(-lam_min))
    diffusion = 0.5 * (np.log1p(math.exp(lam_max) * s2) - np.log1p(math.exp(lam_min) * s2))
    prior = 0.5 * (a2 * (m**2 + s2) + (1 - a2) - math.log(1 - a2) - 1)
    recon = 0.5 * (math.log(2 * math.pi) - lam_max + 1)
    direct = float(np.mean(diffusion + prior + recon))
    nll = 0.5 * np.log(2 * math.pi * math.e * s2)
    var = a2 * s2 + (1 - a2)
    kl_marginal = 0.5 * (var + a2 * m**2 - 1 - np.log(var))
    decoder_gap = 0.5 * np.log1p(math.exp(-lam_max) / s2)
    return direct, float(np.mean(nll + kl_marginal + decoder_gap))


def test_gaussian_elbo_equals_closed_form(dtype):
    x, y, params, m, s2 = gaussian_problem(512, dtype)
    direct, decomposed = gaussian_elbo_reference(m, s2)
    np.testing.assert_allclose(direct, decomposed, rtol=1e-12)
    spec = make_noise_spec(noise_fields())
    out = dg.estimate_elbo(
        EXACT, spec, params, x, y, entropy=(1,), lam_min=LAM_MIN, lam_max=LAM_MAX,
        samples=8, decoder="gaussian",
    )  # fmt: skip
    se = out["elbo_terms"]["total_se"]
    assert 0 < se < 0.1
    assert abs(out["elbo_nats_per_dim"] - direct) < 4 * se
    assert out["elbo_bpd"] == pytest.approx(out["elbo_nats_per_dim"] / math.log(2))
    terms = out["elbo_terms"]
    total = terms["prior"] + terms["reconstruction"] + terms["diffusion"]
    assert total == pytest.approx(out["elbo_nats_per_dim"], rel=1e-6)
    # A wrong denoiser (mean off by 0.3, variance doubled) is a worse model: larger ELBO.
    wrong = {"m": params["m"] + 0.3, "s2": params["s2"] * 2}
    bad = dg.estimate_elbo(
        EXACT, spec, wrong, x, y, entropy=(1,), lam_min=LAM_MIN, lam_max=LAM_MAX,
        samples=8, decoder="gaussian",
    )  # fmt: skip
    assert bad["elbo_nats_per_dim"] > out["elbo_nats_per_dim"] + 4 * bad["elbo_terms"]["total_se"]


def _scaled_network(spec, params):
    """A 'perfectly trained network' under `spec`: reads the training input x_t (input scaling
    and normalisation as in noise.corrupt) at λ_eff, answers in spec.target space."""
    b, shift = spec.input_scale, noise.logsnr_shift(spec.input_scale)

    def apply_fn(p, x_t, lam, y, key, train):
        z = x_t
        if b != 1.0 and not spec.normalize_input:
            z = x_t / _bcast(noise.input_norm(lam - shift, b), x_t)
        x0 = gaussian_x0(params, z, lam)
        alpha, sigma = (_bcast(a, z) for a in noise.alpha_sigma(lam))
        return noise.make_target(x0, (z - alpha * x0) / sigma, lam, spec.target)

    return apply_fn


SPECS = [
    {},
    {"schedule": "laplace", "target": "v", "weighting": "v"},
    {"schedule": "linear", "target": "x0", "weighting": "min_snr", "input_scale": 0.5},
    {"schedule": "cosine", "target": "flow", "input_scale": 0.3, "normalize_input": True},
    {"schedule": "cauchy", "weight_mode": "density", "input_scale": 2.0},
]


def test_elbo_does_not_depend_on_the_training_schedule():
    x, y, params, m, s2 = gaussian_problem(128, np.float32)
    values = []
    for cfg in SPECS:
        spec = make_noise_spec(noise_fields(**cfg))
        den = dg.network_denoiser(_scaled_network(spec, params), spec)
        out = dg.estimate_elbo(
            den, spec, params, x, y, entropy=(3,), lam_min=LAM_MIN, lam_max=LAM_MAX,
            samples=4, decoder="gaussian",
        )  # fmt: skip
        values.append((out["elbo_nats_per_dim"], out["elbo_terms"]["total_se"]))
    ref, se = values[0]
    for value, _ in values[1:]:
        assert abs(value - ref) < 0.01 * se  # identical draws: equal up to float rounding
    assert abs(ref - gaussian_elbo_reference(m, s2)[0]) < 4 * se


def _recording_network(seen):
    def apply_fn(p, x_t, lam, y, key, train):
        seen.update(x_t=x_t, lam=lam, train=train)
        return x_t

    return apply_fn


def test_network_denoiser_feeds_the_training_input():
    for cfg in SPECS:
        spec = make_noise_spec(noise_fields(**cfg))
        seen = {}
        apply_fn = _recording_network(seen)

        x0 = jax.random.normal(jax.random.key(0), (3, *SHAPE))
        eps = jax.random.normal(jax.random.key(1), (3, *SHAPE))
        lam_u = jnp.array([-4.0, 0.5, 7.0])
        lam_eff = noise.effective_logsnr(lam_u, spec.input_scale)
        alpha, sigma = (_bcast(a, x0) for a in noise.alpha_sigma(lam_eff))
        dg.network_denoiser(apply_fn, spec).apply(None, alpha * x0 + sigma * eps, lam_eff, None)
        want = noise.corrupt(x0, eps, lam_u, scale=spec.input_scale, normalize=spec.normalize_input)
        np.testing.assert_allclose(seen["x_t"], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(seen["lam"], lam_eff, rtol=1e-6)
        assert seen["train"] is False


@pytest.mark.parametrize(
    "cfg,dtype_name",
    [(SPECS[0], "float64"), (SPECS[1], "float32"), (SPECS[2], "float32"), (SPECS[4], "float32")],
)
def test_loss_per_lambda_of_exact_denoiser_is_the_mmse(cfg, dtype_name):
    with jax.enable_x64(dtype_name == "float64"):
        _check_mmse(make_noise_spec(noise_fields(**cfg)), np.dtype(dtype_name))


def _check_mmse(spec, dtype):
    x, y, params, m, s2 = gaussian_problem(1024, dtype, seed=1)
    edges = dg.lambda_bin_edges(spec, 32)
    rows = dg.loss_per_lambda(EXACT, spec, params, x, y, edges, entropy=(2,))
    assert len(rows) == 32 and [r["lam_lo"] for r in rows] == pytest.approx(list(edges[:-1]))
    lam = (edges[:-1] + edges[1:]) / 2
    mmse = np.mean(s2[None] / (1 + np.exp(lam)[:, None, None, None] * s2[None]), axis=(1, 2, 3))
    got = {k: np.array([r[k] for r in rows]) for k in ("mse_x0", "mse_eps", "mse_v", "weighted")}
    # 1024 examples × 16 dims: the sample mean is within ~2% of the expectation.
    np.testing.assert_allclose(got["mse_x0"], mmse, rtol=0.03)
    np.testing.assert_allclose(got["mse_eps"], np.exp(lam) * mmse, rtol=0.03)
    np.testing.assert_allclose(got["mse_v"], (1 + np.exp(lam)) * mmse, rtol=0.03)
    lam_u = lam - noise.logsnr_shift(spec.input_scale)
    w = np.asarray(loss_weight(spec, lam_u, lam), np.float64)
    factor = np.exp(np.asarray(noise.log_target_factor(lam, spec.target), np.float64))
    np.testing.assert_allclose(got["weighted"], w * factor * mmse, rtol=0.03)


def test_bin_range_rule():
    spec = make_noise_spec(noise_fields(schedule="cosine", input_scale=0.5))
    edges = dg.lambda_bin_edges(spec, 40, tail_mass=1e-3)
    # cosine: λ(t) = −2·log tan(πt/2); input scaling shifts by 2·log b.
    hi = -2 * math.log(math.tan(math.pi * 1e-3 / 2)) + 2 * math.log(0.5)
    assert len(edges) == 41
    np.testing.assert_allclose([edges[0], edges[-1]], [-hi + 4 * math.log(0.5), hi], rtol=1e-4)
    np.testing.assert_allclose(
        dg.lambda_bin_edges(spec, 4, lam_min=-3, lam_max=5), [-3, -1, 1, 3, 5]
    )
    with pytest.raises(ValueError, match="lam_min < lam_max"):
        dg.lambda_bin_edges(spec, 4, lam_min=5, lam_max=-3)


def test_evaluation_does_not_depend_on_batch_size():
    x, y, params, _, _ = gaussian_problem(24, np.float32)
    spec = make_noise_spec(noise_fields(target="v"))
    edges = dg.lambda_bin_edges(spec, 3)
    a = dg.loss_per_lambda(EXACT, spec, params, x, y, edges, entropy=(0,), batch_size=7)
    b = dg.loss_per_lambda(EXACT, spec, params, x, y, edges, entropy=(0,), batch_size=64)
    for ra, rb in zip(a, b, strict=True):
        assert ra == pytest.approx(rb, rel=1e-6)


def test_uniform_8bit_data_costs_8_bits_per_dim():
    """x uniform on the 256 levels: H = 8 bits/dim. With the exact denoiser and VDM's decoder
    (then the exact posterior) the ELBO is 8 bits plus KL(q(z_min) ‖ N(0, 1))."""
    grid = np.arange(256) / 127.5 - 1.0

    def posterior_mean(p, z, lam, y):
        alpha, sigma = (_bcast(a, z)[..., None] for a in noise.alpha_sigma(lam))
        logits = -0.5 * jnp.square(z[..., None] - alpha * grid) / sigma**2
        return jnp.sum(jax.nn.softmax(logits, axis=-1) * grid, axis=-1).astype(z.dtype)

    n, shape = 256, (8, 8, 1)
    k = np.random.default_rng(0).integers(0, 256, (n, *shape))
    x = (k / 127.5 - 1.0).astype(np.float32)
    out = dg.estimate_elbo(
        dg.Denoiser(posterior_mean, "x0"), make_noise_spec(noise_fields()), None, x,
        np.zeros(n, np.int32),
        entropy=(0,), lam_min=LAM_MIN, lam_max=LAM_MAX, samples=8, decoder="discrete",
    )  # fmt: skip
    a2 = 1 / (1 + math.exp(-LAM_MIN))
    z = np.linspace(-9, 9, 40001)
    comps = np.exp(-0.5 * (z[:, None] - math.sqrt(a2) * grid) ** 2 / (1 - a2))
    q = comps.mean(1) / math.sqrt(2 * math.pi * (1 - a2))
    log_n = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    kl_bits = np.trapezoid(q * (np.log(q) - log_n), z) / math.log(2)
    se_bits = out["elbo_terms"]["total_se"] / math.log(2)
    assert se_bits < 0.06
    assert abs(out["elbo_bpd"] - (8.0 + kl_bits)) < 4 * se_bits


def test_discrete_decoder_against_numpy():
    rng = np.random.default_rng(0)
    k = rng.integers(0, 256, (3, 2, 2, 3))
    x = k / 127.5 - 1.0
    eps = rng.standard_normal(x.shape)
    grid = np.arange(256) / 127.5 - 1.0
    for lam_max in (4.0, 9.0, 13.3):
        zs = x + math.exp(-lam_max / 2) * eps
        logits = -0.5 * math.exp(lam_max) * (zs[..., None] - grid) ** 2
        logp = (
            logits
            - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1))[..., None]
            - logits.max(-1, keepdims=True)
        )
        want = -np.take_along_axis(logp, k[..., None], -1).sum(axis=(1, 2, 3, 4))
        for dt, tol in ((np.float32, 2e-3), (np.float64, 1e-9)):
            with jax.enable_x64(dt == np.float64):
                got = dg.discrete_decoder_nll(x.astype(dt), eps.astype(dt), lam_max)
                np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_prior_kl_and_quantisation():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (5, 2, 2, 1))
    for lam in (-8.0, -5.0, 0.0):
        a2 = 1 / (1 + math.exp(-lam))
        kl = 0.5 * ((1 - a2) + a2 * x**2 - 1 - math.log(1 - a2))
        np.testing.assert_allclose(dg.prior_kl(jnp.asarray(x, jnp.float32), lam),
                                   kl.sum(axis=(1, 2, 3)), rtol=1e-4)  # fmt: skip
    q = np.asarray(dg.quantize_8bit(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(q, generate.to_uint8(x) / 127.5 - 1.0, atol=1e-6)


def _linear_denoiser():
    def apply(p, z, lam, y):
        flat = z.reshape(z.shape[0], -1)
        out = jnp.tanh(flat @ p["w"]) + lam[:, None] * p["c"]
        return out.reshape(z.shape)

    return dg.Denoiser(apply, "eps")


def test_grad_variance_against_brute_force(dtype):
    spec = make_noise_spec(noise_fields(target="eps", weighting="min_snr"))
    den = _linear_denoiser()
    rng = np.random.default_rng(0)
    d = math.prod(SHAPE)
    params = {"w": jnp.asarray(rng.normal(0, 0.3, (d, d)), dtype), "c": jnp.zeros((d,), dtype)}
    n = 6
    x = rng.uniform(-1, 1, (n, *SHAPE)).astype(dtype)
    y = np.zeros(n, np.int32)
    edges = np.array([-4.0, 0.0, 4.0])
    rows = dg.grad_var_per_lambda(den, spec, params, x, y, edges, entropy=(5,))
    assert [(r["lam_lo"], r["lam_hi"]) for r in rows] == [(-4.0, 0.0), (0.0, 4.0)]

    @jax.jit
    @jax.grad
    def grad_one(p, x_i, eps_i, lam):  # one example, straight from the definitions
        alpha, sigma = noise.alpha_sigma(lam)
        pred = den.apply(p, (alpha * x_i + sigma * eps_i)[None], jnp.full((1,), lam), None)
        return spec.weighting(lam, "eps") * jnp.mean(jnp.square(pred[0] - eps_i))

    for j, lam in enumerate((-2.0, 2.0)):
        rngs = [np.random.default_rng([5, j * n + i]) for i in range(n)]
        eps = np.stack([r.standard_normal(SHAPE) for r in rngs]).astype(dtype)
        grads = []
        for i in range(n):
            g = grad_one(params, x[i], eps[i], jnp.asarray(lam, dtype))
            grads.append(np.concatenate([np.ravel(g["c"]), np.ravel(g["w"])]).astype(np.float64))
        grads = np.stack(grads)
        want = np.sum(np.var(grads, axis=0, ddof=1))
        rtol = 1e-3 if dtype == np.float32 else 1e-9
        np.testing.assert_allclose(rows[j]["grad_var"], want, rtol=rtol)


def test_settings_defaults_and_errors():
    s = dg.resolve_settings(None)
    assert s == dg.default_settings().to_dict()
    assert s["num_bins"] >= 32
    assert dg.resolve_settings({"num_bins": 40})["num_bins"] == 40
    for bad, match in [
        ({"nope": 1}, "unknown field"),
        ({"decoder": "x"}, "diagnostics.decoder"),
        ({"grad_var_examples": 1}, "diagnostics.grad_var_examples"),
        ({"num_examples": 1}, "diagnostics.num_examples"),
        ({"elbo_lam_min": 20.0}, "diagnostics.elbo_lam_min"),
        ({"bin_tail_mass": 0.7}, "diagnostics.bin_tail_mass"),
    ]:
        with pytest.raises(ValueError, match=match):
            dg.resolve_settings(bad)
