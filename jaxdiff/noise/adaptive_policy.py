"""The Beta policy π_φ(u | x0) of the adaptive timestep sampler (Kim et al. 2024): pure functions.

Architecture (the official ActorNetwork's, arXiv 2411.09998): three blocks of
conv 3×3 (stride 1, 'SAME') → ReLU → max-pool 2×2 (channels 32, 64, 128), then an MLP
(`hidden_depth` hidden layers of `hidden_width` with ReLU) to two outputs, α = softplus(·) + 1e−5,
β = softplus(·) + 1e−5. The last layer starts at weight 0, bias 0.5, so π starts at
Beta(0.974, 0.974) ≈ U(0, 1) for every x0.

Any input size or channel count works (the official code hard-codes 32×32): max-pooling
rounds up ('SAME', equal to PyTorch's floor mode for even sizes, never shrinking below 1), and
the conv output is average-pooled to a fixed `pool_size` × `pool_size` grid (PyTorch's
AdaptiveAvgPool2d bins; the identity for 32×32 inputs and pool_size 4, which reproduces the
official 128·4·4 = 2048 features). Parameters are a dict of float32 arrays; the initialisation
follows PyTorch's defaults (weights and biases U(−1/√fan_in, 1/√fan_in)).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

ALPHA_BETA_EPS = 1e-5


def _uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def init_policy(
    key: jax.Array,
    in_channels: int,
    channels: tuple[int, ...] = (32, 64, 128),
    hidden_width: int = 256,
    hidden_depth: int = 2,
    pool_size: int = 4,
) -> dict:
    """Policy parameters: {"conv_i": {"w": (3, 3, C_in, C_out), "b"}, "dense_j": {"w", "b"}}.

    dense_0 .. dense_{hidden_depth−1} are the hidden layers; dense_{hidden_depth} is the
    (2-output) head with weight 0 and bias 0.5. Jitted (one compilation per architecture).
    """
    keys = iter(jax.random.split(key, 2 * (len(channels) + hidden_depth)))
    params, c_in = {}, in_channels
    for i, c_out in enumerate(channels):
        fan_in = 9 * c_in
        params[f"conv_{i}"] = {
            "w": _uniform(next(keys), (3, 3, c_in, c_out), fan_in),
            "b": _uniform(next(keys), (c_out,), fan_in),
        }
        c_in = c_out
    width = c_in * pool_size * pool_size
    for j in range(hidden_depth):
        params[f"dense_{j}"] = {
            "w": _uniform(next(keys), (width, hidden_width), width),
            "b": _uniform(next(keys), (hidden_width,), width),
        }
        width = hidden_width
    params[f"dense_{hidden_depth}"] = {
        "w": jnp.zeros((width, 2), jnp.float32),
        "b": jnp.full((2,), 0.5, jnp.float32),
    }
    return params


def _adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix of PyTorch's adaptive pooling bins
    [floor(i·size/out), ceil((i+1)·size/out))."""
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _features(params: dict, x: jax.Array, pool_size: int) -> jax.Array:
    """(B, H, W, C) → (B, C_last·pool_size²): conv blocks, then adaptive average pooling."""
    i = 0
    while f"conv_{i}" in params:
        w, b = params[f"conv_{i}"]["w"], params[f"conv_{i}"]["b"]
        x = jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = jax.nn.relu(x + b)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        i += 1
    ph = _adaptive_pool_matrix(x.shape[1], pool_size)
    pw = _adaptive_pool_matrix(x.shape[2], pool_size)
    x = jnp.einsum("ph,bhwc,qw->bpqc", ph, x, pw)
    return x.reshape(x.shape[0], -1)


def policy_apply(params: dict, x0: jax.Array, pool_size: int = 4) -> tuple[jax.Array, jax.Array]:
    """(α, β), each (B,), of π(u | x0) for x0 of shape (B, H, W, C) (computed in float32)."""
    if x0.ndim != 4:
        raise ValueError(f"adaptive policy: x0 must have shape (B, H, W, C), got {x0.shape}")
    h = _features(params, x0.astype(jnp.float32), pool_size)
    j = 0
    while f"dense_{j + 1}" in params:
        h = jax.nn.relu(h @ params[f"dense_{j}"]["w"] + params[f"dense_{j}"]["b"])
        j += 1
    out = h @ params[f"dense_{j}"]["w"] + params[f"dense_{j}"]["b"]
    return (
        jax.nn.softplus(out[:, 0]) + ALPHA_BETA_EPS,
        jax.nn.softplus(out[:, 1]) + ALPHA_BETA_EPS,
    )


def beta_log_prob(u: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """log Beta(u; a, b) = (a − 1)·log u + (b − 1)·log(1 − u) − log B(a, b), u ∈ (0, 1)."""
    return (a - 1.0) * jnp.log(u) + (b - 1.0) * jnp.log1p(-u) - jax.scipy.special.betaln(a, b)


def beta_entropy(a: jax.Array, b: jax.Array) -> jax.Array:
    """H[Beta(a, b)] = log B(a, b) − (a−1)ψ(a) − (b−1)ψ(b) + (a+b−2)ψ(a+b); ≤ 0, 0 at (1, 1)."""
    psi = jax.scipy.special.digamma
    return (
        jax.scipy.special.betaln(a, b)
        - (a - 1.0) * psi(a)
        - (b - 1.0) * psi(b)
        + (a + b - 2.0) * psi(a + b)
    )


def beta_cdf(u: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """P(U ≤ u) for U ~ Beta(a, b): the regularised incomplete beta function I_u(a, b)."""
    return jax.scipy.special.betainc(a, b, jnp.clip(u, 0.0, 1.0))
