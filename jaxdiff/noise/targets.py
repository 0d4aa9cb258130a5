"""Prediction targets and conversions between them, in VP form x_t = α·x0 + σ·ε.

"eps": ε;  "x0": x0;  "v": α·ε − σ·x0 (Salimans & Ho 2022);  "flow": u = ε − x0, the
rectified-flow velocity of (1 − t)·x0 + t·ε (Lipman 2023; Esser et al. 2024).
With input scaling use λ_eff and the normalised x_t (see `scaling.py`).
"""

from __future__ import annotations

import jax

from jaxdiff.noise.scaling import _bcast, alpha_sigma

TARGETS = ("eps", "x0", "v", "flow")


def check_target(target: str, name: str = "target") -> str:
    """Return `target` if known, else raise ValueError listing TARGETS."""
    if target not in TARGETS:
        raise ValueError(f"{name}: unknown {target!r}; known: {list(TARGETS)}")
    return target


def make_target(x0: jax.Array, eps: jax.Array, lam: jax.typing.ArrayLike, target: str):
    """The regression target for (x0, ε) at logSNR `lam` ((B,) or scalar); shape of x0."""
    check_target(target)
    alpha, sigma = alpha_sigma(lam)
    alpha, sigma = _bcast(alpha, x0), _bcast(sigma, x0)
    return {
        "eps": lambda: eps,
        "x0": lambda: x0,
        "v": lambda: alpha * eps - sigma * x0,
        "flow": lambda: eps - x0,
    }[target]()


def to_x0_eps(pred: jax.Array, source: str, x_t: jax.Array, lam: jax.typing.ArrayLike):
    """(x̂0, ε̂) implied by a prediction in `source` space at (x_t, λ).

    eps: x̂0 = (x_t − σ·ε̂)/α;  x0: ε̂ = (x_t − α·x̂0)/σ;  v: x̂0 = α·x_t − σ·v̂,
    ε̂ = σ·x_t + α·v̂;  flow: x̂0 = (x_t − σ·û)/(α + σ), ε̂ = (x_t + α·û)/(α + σ).
    """
    check_target(source, "source")
    alpha, sigma = alpha_sigma(lam)
    alpha, sigma = _bcast(alpha, x_t), _bcast(sigma, x_t)
    if source == "eps":
        return (x_t - sigma * pred) / alpha, pred
    if source == "x0":
        return pred, (x_t - alpha * pred) / sigma
    if source == "v":
        return alpha * x_t - sigma * pred, sigma * x_t + alpha * pred
    return (x_t - sigma * pred) / (alpha + sigma), (x_t + alpha * pred) / (alpha + sigma)


def convert(
    pred: jax.Array, source: str, target: str, x_t: jax.Array, lam: jax.typing.ArrayLike
) -> jax.Array:
    """Convert a prediction from `source` to `target` space ("eps", "x0", "v", "flow").

    x_t: the VP network input (B, ...); lam: (B,) or scalar logSNR of x_t.
    """
    check_target(target)
    if source == target:
        check_target(source, "source")
        return pred
    x0, eps = to_x0_eps(pred, source, x_t, lam)
    return make_target(x0, eps, lam, target)
