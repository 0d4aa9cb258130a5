"""Schedules: table-driven properties of every registered schedule (float32 and float64,
under jax.jit), closed forms against independent NumPy formulas, identities, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxdiff import noise

USER_SCHEDULE = "test_user_logit_plus_linear"
if USER_SCHEDULE not in noise.list_schedules():

    @noise.register_schedule(USER_SCHEDULE)
    def _user(t, a=1.0):
        """A user schedule given by one function (no closed-form inverse)."""
        return 2.0 * (jnp.log1p(-t) - jnp.log(t)) + a * (1.0 - 2.0 * t)


CASES = [(name, {}) for name in noise.list_schedules()] + [
    ("cosine_scaled", {"s": 0.5}),
    ("sigmoid", {"start": 0.0, "end": 3.0, "tau": 0.7}),
    ("cosine_power", {"start": 0.2, "end": 1.0, "tau": 1.5}),
    ("cosine_interpolated", {"image_size": 256, "noise_d_low": 32, "noise_d_high": 64}),
    (USER_SCHEDULE, {"a": 3.0}),
]
IDS = [f"{n}-{p}" if p else n for n, p in CASES]


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        with jax.enable_x64(True):
            yield np.float64
    else:
        yield np.float32


def _sinh_grid(dtype, half_width=1e6, n=20_001):
    """A λ grid dense near 0 and reaching ±half_width, with its trapezoid weights."""
    u = np.linspace(-np.arcsinh(half_width), np.arcsinh(half_width), n)
    return np.sinh(u).astype(dtype), np.cosh(u) * (u[1] - u[0])


def _histogram_chi2(lam_u, edges, fine, dens_fine):
    """Binned χ² of λ(U), U ~ U(0, 1), against bin masses integrated from `density`."""
    mass = np.trapezoid(dens_fine.astype(np.float64), fine.astype(np.float64), axis=1)
    observed = np.histogram(lam_u, bins=edges)[0]
    expected = np.append(mass, 1.0 - mass.sum()) * len(lam_u)
    observed = np.append(observed, len(lam_u) - observed.sum())
    return np.sum((observed - expected) ** 2 / expected), len(observed) - 1


# Every registered schedule in float32 and float64; the parameter variants in float32.
PROPERTY_CASES = [(n, p, "float32") for n, p in CASES] + [
    (n, {}, "float64") for n in noise.list_schedules()
]


@pytest.mark.parametrize(
    "name,params,dtype_name", PROPERTY_CASES, ids=[f"{n}-{p}-{d}" for n, p, d in PROPERTY_CASES]
)
def test_schedule_properties(name, params, dtype_name):
    with jax.enable_x64(dtype_name == "float64"):
        _check_schedule_properties(name, params, np.dtype(dtype_name).type)


def _check_schedule_properties(name, params, dtype):
    """λ(0) = hi, λ(1) = lo (`logsnr_range`: ±20 unless the formula stops short, as
    `ddpm_linear` does), strictly decreasing where unclipped, t_from_logsnr inverts it,
    density == |d t_from_logsnr/dλ| (jax.grad), ∫ density dλ = 1, and λ(U) has that density."""
    s = noise.get_schedule(name, **params)
    f32 = dtype == np.float32
    t = np.concatenate([[0.0, 1.0], np.linspace(1e-3, 1 - 1e-3, 999)]).astype(dtype)
    lam_grid, lam_w = _sinh_grid(dtype)
    u = np.random.default_rng(0).uniform(size=20_000).astype(dtype)

    @jax.jit
    def run(t, lam, u):
        lam_t = s.logsnr(t)
        grad_inv = jax.vmap(jax.grad(s.t_from_logsnr))(lam_t)
        edges = s.logsnr(jnp.linspace(0.95, 0.05, 13, dtype=dtype))
        fine = jax.vmap(lambda a, b: jnp.linspace(a, b, 201))(edges[:-1], edges[1:])
        return (
            (lam_t, s.t_from_logsnr(lam_t), s.density(lam_t), grad_inv, s.density(lam)),
            (s.logsnr(u), edges, fine, s.density(fine)),
        )

    outs, hist_inputs = run(t, lam_grid, u)
    lam_t, t_back, dens_t, grad_inv, dens_grid = map(np.asarray, outs)
    assert lam_t.dtype == dtype and t_back.dtype == dtype and dens_grid.dtype == dtype
    lo, hi = s.logsnr_range
    assert lam_t[0] == np.asarray(hi, dtype) and lam_t[1] == np.asarray(lo, dtype)
    assert (lo, hi) == (-20.0, 20.0) or name == "ddpm_linear"
    lam_t, t_back, dens_t, grad_inv, t = (a[2:] for a in (lam_t, t_back, dens_t, grad_inv, t))
    inner = (lam_t > lo + 0.1) & (lam_t < hi - 0.1)
    assert inner.sum() > 500
    assert np.all(np.diff(lam_t) <= 0)
    assert np.all(np.diff(lam_t[inner]) < 0)
    np.testing.assert_allclose(t_back[inner], t[inner], rtol=0, atol=3e-6 if f32 else 1e-12)
    np.testing.assert_allclose(dens_t[inner], np.abs(grad_inv[inner]), rtol=2e-4 if f32 else 1e-9)
    assert np.all(dens_grid >= 0)
    np.testing.assert_allclose(np.sum(dens_grid.astype(np.float64) * lam_w), 1.0, atol=1e-3)
    chi2, df = _histogram_chi2(*map(np.asarray, hist_inputs))
    assert chi2 < stats.chi2.ppf(0.999, df=df), chi2


def _np_cosine(t):
    return 2.0 * np.log(1.0 / np.tan(np.pi * t / 2.0))


def _np_chen_sigmoid(t, start=-3.0, end=3.0, tau=1.0):
    v = lambda x: 1.0 / (1.0 + np.exp(-x / tau))
    gamma = (v(end) - v(t * (end - start) + start)) / (v(end) - v(start))
    return np.log(gamma / (1.0 - gamma))


def _np_chen_cosine(t, start=0.0, end=1.0, tau=1.0):
    v = lambda x: np.cos(x * np.pi / 2.0) ** (2.0 * tau)
    gamma = (v(end) - v(t * (end - start) + start)) / (v(end) - v(start))
    return np.log(gamma / (1.0 - gamma))


# (name, params, λ(t) in NumPy, p(λ) in NumPy or None) straight from DESIGN/REFERENCES.
CLOSED_FORMS = [
    ("cosine", {}, _np_cosine, lambda l: 1.0 / np.cosh(l / 2.0) / (2 * np.pi)),
    ("cosine_shifted", {"mu": 0.7}, lambda t: 0.7 + _np_cosine(t), None),
    (
        "cosine_scaled",
        {"s": 0.5},
        lambda t: 0.5 * _np_cosine(t),
        lambda l: 1.0 / np.cosh(l / 1.0) / (2 * np.pi * 0.5),
    ),
    (
        "laplace",
        {"mu": 0.3, "b": 0.5},
        lambda t: 0.3 - 0.5 * np.sign(0.5 - t) * np.log(1 - 2 * np.abs(t - 0.5)),
        lambda l: np.exp(-np.abs(l - 0.3) / 0.5) / (2 * 0.5),
    ),
    (
        "cauchy",
        {"mu": 0.2, "gamma": 1.5},
        lambda t: 0.2 + 1.5 * np.tan(np.pi / 2 * (1 - 2 * t)),
        lambda l: 1.5 / (np.pi * ((l - 0.2) ** 2 + 1.5**2)),
    ),
    (
        "lognormal",
        {},
        lambda t: -2.0 * (-1.2 + 1.2 * special.ndtri(t)),
        lambda l: stats.norm.pdf(l, loc=2.4, scale=2.4),
    ),
    (
        "logit_normal",
        {"m": 0.5, "s": 1.0},
        lambda t: -2.0 * special.logit(special.expit(0.5 + special.ndtri(t))),
        lambda l: stats.norm.pdf(l, loc=-1.0, scale=2.0),
    ),
    ("flow", {}, lambda t: 2.0 * np.log((1 - t) / t), lambda l: 1.0 / np.cosh(l / 4) ** 2 / 8),
    ("linear", {}, lambda t: np.log((1 - t) / t), lambda l: special.expit(l) * special.expit(-l)),
    ("sigmoid", {}, _np_chen_sigmoid, None),
    (
        "sigmoid",
        {"start": -2.0, "end": 4.0, "tau": 0.9},
        lambda t: _np_chen_sigmoid(t, -2.0, 4.0, 0.9),
        None,
    ),
    ("cosine_power", {}, _np_chen_cosine, None),
    (
        "cosine_power",
        {"start": 0.2, "end": 0.9, "tau": 1.5},
        lambda t: _np_chen_cosine(t, 0.2, 0.9, 1.5),
        None,
    ),
    (
        "cosine_interpolated",
        {"image_size": 128},
        lambda t: _np_cosine(t) + t * 2 * np.log(32 / 128),
        None,
    ),
]


def test_closed_forms_against_numpy(dtype):
    t = np.array([0.013, 0.1, 0.27, 0.5, 0.61, 0.8, 0.97])
    grid = np.linspace(-12.0, 12.0, 25)
    tol = 2e-4 if dtype == np.float32 else 1e-9
    schedules = [noise.get_schedule(name, **params) for name, params, _, _ in CLOSED_FORMS]

    @jax.jit
    def run(t, grid):
        return [(s.logsnr(t), s.density(grid)) for s in schedules]

    for (lam, dens), (name, params, np_logsnr, np_density) in zip(
        run(t.astype(dtype), grid.astype(dtype)), CLOSED_FORMS, strict=True
    ):
        msg = f"{name} {params}"
        assert lam.dtype == dtype
        np.testing.assert_allclose(
            lam, np.clip(np_logsnr(t), -20, 20), rtol=tol, atol=tol, err_msg=msg
        )
        if np_density is not None:
            np.testing.assert_allclose(dens, np_density(grid), rtol=tol, atol=1e-12, err_msg=msg)


def test_identities(dtype):
    t = np.linspace(0.01, 0.99, 99).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    get = noise.get_schedule
    cos = get("cosine")
    pairs = [
        (get("cosine_power"), cos),  # Chen's cosine with defaults is the cosine schedule
        (get("cosine_shifted", mu=0.0), cos),
        (get("cosine_scaled", s=1.0), cos),
        (get("logit_normal", m=0.3, s=0.7), get("lognormal", p_mean=0.3, p_std=0.7)),
        # simple diffusion: equal low/high resolutions give the plain resolution shift.
        (
            get("cosine_interpolated", image_size=256, noise_d_low=64, noise_d_high=64),
            get("cosine_shifted", mu=2 * np.log(64 / 256)),
        ),
    ] + [(noise.input_scaled(cos, b), get("cosine_shifted", mu=2 * np.log(b))) for b in (0.5, 2)]

    @jax.jit
    def run(t):
        evaluate = lambda s: (s.logsnr(t), s.t_from_logsnr(t), s.density(t))
        return [(evaluate(a), evaluate(b)) for a, b in pairs], get("flow").logsnr(t), cos.logsnr(t)

    results, lam_flow, lam_cos = run(t)
    for (a, b), pair in zip(results, pairs, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, **tol, err_msg=str(pair))
    # flow path: λ = 2·log((1−t)/t) is the linear schedule's λ doubled.
    np.testing.assert_allclose(lam_flow, 2 * np.log((1 - t) / t), **tol)
    assert not np.allclose(lam_flow, lam_cos, atol=1e-2)


def test_schedule_objects_are_immutable_and_hashable():
    a = noise.get_schedule("laplace", b=0.5)
    assert a == noise.get_schedule("laplace") and hash(a) == hash(noise.get_schedule("laplace"))
    assert a != noise.get_schedule("laplace", b=0.75)
    assert a.name == "laplace" and dict(a.params) == {"mu": 0.0, "b": 0.5}
    with pytest.raises(AttributeError):
        a.name = "cosine"
    lam = jax.vmap(a.logsnr)(jnp.linspace(0.1, 0.9, 5))
    assert lam.shape == (5,) and lam.dtype == jnp.float32


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: noise.get_schedule("nope"), r"unknown noise schedule 'nope'; known: \[.*laplace"),
        (lambda: noise.get_schedule("laplace", b=0.0), "b must be > 0"),
        (lambda: noise.get_schedule("laplace", b=-1.0), "b must be > 0"),
        (lambda: noise.get_schedule("cauchy", gamma=0.0), "gamma must be > 0"),
        (lambda: noise.get_schedule("cosine_scaled", s=-2.0), "s must be > 0"),
        (lambda: noise.get_schedule("lognormal", p_std=0.0), "p_std must be > 0"),
        (lambda: noise.get_schedule("sigmoid", tau=0.0), "tau must be > 0"),
        (lambda: noise.get_schedule("sigmoid", start=1.0, end=1.0), "end must be > start"),
        (lambda: noise.get_schedule("cosine_power", end=1.5), "0 <= start < end <= 1"),
        (lambda: noise.get_schedule("linear", clip_min=0.0), r"clip_min must be in \(0, 0.5\)"),
        (
            lambda: noise.get_schedule("laplace", sigma=1.0),
            r"unknown parameter.*'sigma'.*\['b', 'mu'\]",
        ),
        (lambda: noise.get_schedule("laplace", b="x"), "'b' must be a number"),
        (
            lambda: noise.get_schedule("cosine_interpolated", noise_d_low=0),
            "noise_d_low must be > 0",
        ),
        (lambda: noise.get_schedule("cosine").logsnr(1.5), r"t must lie in \[0, 1\]"),
        (lambda: noise.get_schedule("cosine").logsnr(np.array([-0.1, 0.5])), r"t must lie in"),
        (lambda: noise.register_schedule("cosine")(lambda t: t), "already registered"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_none_only_where_the_default_is_none():
    assert (
        noise.get_schedule("cosine_interpolated", noise_d_high=None).params["noise_d_high"] is None
    )
    with pytest.raises(ValueError, match="'b' must be a number"):
        noise.get_schedule("laplace", b=None)


def test_plot_writes_png(tmp_path):
    from jaxdiff.noise import plot

    curves = plot.schedule_curves(["laplace", "cosine_scaled"], num=101)
    assert set(curves) == {"laplace", "cosine_scaled (s=0.5)"}
    c = curves["laplace"]
    assert c["logsnr"][0] == 20 and np.all(np.isfinite(c["density"]))
    out = tmp_path / "schedules.png"
    assert plot.cli(["plot", "--out", str(out), "--schedules=cosine,laplace"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
