"""Loss weightings: Min-SNR paper formulas per target, the target factors, bad input.

Positive and finite weights over λ ∈ [−40, 40] and random parameters:
tests/test_noise_properties.py."""

import jax
import numpy as np
import pytest

from jaxdiff import noise


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param).type


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# w_x0(SNR, λ) straight from the papers (Hang et al. 2023; HDiT; EDM; Kingma & Gao 2023).
X0_WEIGHTS = {
    ("snr", ()): lambda snr, lam: snr,
    ("min_snr", ()): lambda snr, lam: np.minimum(snr, 5.0),
    ("min_snr", (("gamma", 2.0),)): lambda snr, lam: np.minimum(snr, 2.0),
    ("max_snr", ()): lambda snr, lam: np.maximum(snr, 1.0),
    ("soft_min_snr", ()): lambda snr, lam: snr * 5.0 / (snr + 5.0),
    ("x0", ()): lambda snr, lam: np.ones_like(snr),
    ("v", ()): lambda snr, lam: snr + 1.0,
    ("flow", ()): lambda snr, lam: (1.0 + np.exp(lam / 2)) ** 2,
    ("edm", ()): lambda snr, lam: (np.exp(-lam) + 0.25) / (np.exp(-lam) * 0.25),
    ("edm", (("sigma_data", 1.0),)): lambda snr, lam: snr + 1.0,
    ("sigmoid", ()): lambda snr, lam: snr * _sig(2.0 - lam),
    ("sigmoid", (("bias", -1.0),)): lambda snr, lam: snr * _sig(-1.0 - lam),
}
# MSE in target space = factor × MSE in x0 space (Min-SNR paper's division).
FACTORS = {
    "eps": lambda snr, lam: snr,
    "x0": lambda snr, lam: np.ones_like(snr),
    "v": lambda snr, lam: snr + 1.0,
    "flow": lambda snr, lam: (1.0 + np.exp(lam / 2)) ** 2,
}


def test_every_registered_weighting_is_checked():
    assert set(noise.list_weightings()) == {n for n, _ in X0_WEIGHTS}


def test_weightings_match_papers(dtype):
    lam = np.linspace(-12.0, 12.0, 49)
    snr = np.exp(lam)
    weightings = {key: noise.get_weighting(key[0], **dict(key[1])) for key in X0_WEIGHTS}

    @jax.jit
    def run(lam):
        return {(k, t): w(lam, t) for k, w in weightings.items() for t in noise.TARGETS}

    out = run(lam.astype(dtype))
    tol = 1e-5 if dtype == np.float32 else 1e-11
    for (key, target), got in out.items():
        assert got.dtype == dtype
        want = X0_WEIGHTS[key](snr, lam) / FACTORS[target](snr, lam)
        np.testing.assert_allclose(got, want, rtol=tol, err_msg=f"{key} {target}")
    # Named special cases from the Min-SNR paper.
    np.testing.assert_allclose(out[("min_snr", ()), "eps"], np.minimum(snr, 5) / snr, rtol=tol)
    np.testing.assert_allclose(out[("min_snr", ()), "v"], np.minimum(snr, 5) / (snr + 1), rtol=tol)
    np.testing.assert_allclose(out[("snr", ()), "eps"], 1.0, rtol=tol)
    np.testing.assert_allclose(out[("v", ()), "v"], 1.0, rtol=tol)
    np.testing.assert_allclose(out[("flow", ()), "flow"], 1.0, rtol=tol)


def test_target_factors_match_squared_errors():
    """‖err‖² in each target space = factor(λ)·‖x0 error‖² (the basis of the division)."""
    rng = np.random.default_rng(0)
    x0, eps = rng.uniform(-1, 1, (7, 8)), rng.normal(size=(7, 8))
    lam = np.linspace(-5, 5, 7)
    x_t = noise.corrupt(x0, eps, lam)
    x0_hat = x0 + rng.normal(size=x0.shape) * 0.1
    err_x0 = np.sum((x0_hat - x0) ** 2, axis=1)
    for target in noise.TARGETS:
        pred = noise.convert(x0_hat, "x0", target, x_t, lam)
        err = np.sum((np.asarray(pred) - noise.make_target(x0, eps, lam, target)) ** 2, axis=1)
        factor = np.exp(noise.log_target_factor(lam, target))
        np.testing.assert_allclose(err, factor * err_x0, rtol=1e-3, err_msg=target)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: noise.get_weighting("lsnr"), r"unknown weighting 'lsnr'; known: \[.*min_snr"),
        (lambda: noise.get_weighting("min_snr", gamma=0.0), "gamma must be a finite number > 0"),
        (lambda: noise.get_weighting("max_snr", gamma=-1), "gamma must be a finite number > 0"),
        (
            lambda: noise.get_weighting("edm", sigma_data=0),
            "sigma_data must be a finite number > 0",
        ),
        (lambda: noise.get_weighting("min_snr", k=1.0), r"unknown parameter.*'k'.*\['gamma'\]"),
        (lambda: noise.get_weighting("sigmoid", bias="x"), "bias must be a number"),
        (lambda: noise.get_weighting("snr")(0.0, "score"), "unknown 'score'"),
        (lambda: noise.register_weighting("snr")(lambda lam: lam), "already registered"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_weighting_objects_are_hashable():
    a = noise.get_weighting("min_snr")
    assert a == noise.get_weighting("min_snr", gamma=5.0)
    assert hash(a) == hash(noise.get_weighting("min_snr", gamma=5))
    assert a != noise.get_weighting("min_snr", gamma=4.0)
