"""Improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991).

Each feature set approximates its manifold by the union of balls around its members, the
radius of a member being its distance to its k-th nearest other member (k = 3, as in the
paper and ADM's evaluation suite). Precision is the fraction of generated features that lie
in the real manifold (sample quality); recall the fraction of real features that lie in the
generated manifold (coverage). Features are Inception pool features (2048-d), distances
Euclidean; the comparisons use squared distances (same result). The N×M distance matrix is
never held at once: rows are processed in fixed-size blocks on the device (the last block
padded), so 50K×50K sets fit in memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def pairwise_sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """‖a_i − b_j‖² for a (N, D), b (M, D) -> (N, M), as ‖a‖² + ‖b‖² − 2a·b clipped at 0."""
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    sq = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * (a @ b.T)
    return jnp.maximum(sq, 0.0)


def _blocks(n: int, block: int):
    for start in range(0, n, block):
        yield start, min(start + block, n)


def _padded(x: np.ndarray, start: int, stop: int, block: int) -> np.ndarray:
    rows = x[start:stop]
    if len(rows) < block:
        rows = np.concatenate([rows, np.zeros((block - len(rows), x.shape[1]), x.dtype)])
    return rows


@functools.partial(jax.jit, static_argnames="k")
def _kth_sq_distance(rows: jax.Array, features: jax.Array, k: int) -> jax.Array:
    """Squared distance of each row to its k-th nearest member of ``features`` (itself,
    at distance 0, being the 0-th)."""
    d = pairwise_sq_distances(rows, features)
    return -jax.lax.top_k(-d, k + 1)[0][:, k]


def knn_sq_radii(features: np.ndarray, k: int = 3, block: int = 1024) -> np.ndarray:
    """Squared radius of each member: its squared distance to the k-th nearest other member.

    features (N, D) with N > k; returns float32 (N,). Raises ValueError for k >= N.
    """
    features = np.asarray(features, np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if not 1 <= k < len(features):
        raise ValueError(f"k must be in [1, {len(features) - 1}] for {len(features)} features")
    block = min(block, len(features))
    ref = jnp.asarray(features)
    out = []
    for start, stop in _blocks(len(features), block):
        radii = _kth_sq_distance(jnp.asarray(_padded(features, start, stop, block)), ref, k)
        out.append(np.asarray(radii)[: stop - start])
    return np.concatenate(out)


@jax.jit
def _inside_any_ball(rows: jax.Array, centres: jax.Array, sq_radii: jax.Array) -> jax.Array:
    return jnp.any(pairwise_sq_distances(rows, centres) <= sq_radii[None, :], axis=1)


def manifold_fraction(
    queries: np.ndarray, centres: np.ndarray, sq_radii: np.ndarray, block: int = 1024
) -> float:
    """Fraction of ``queries`` within ``sqrt(sq_radii[i])`` of some ``centres[i]``."""
    queries = np.asarray(queries, np.float32)
    block = min(block, len(queries))
    centres, sq_radii = jnp.asarray(centres, jnp.float32), jnp.asarray(sq_radii, jnp.float32)
    hits = 0
    for start, stop in _blocks(len(queries), block):
        inside = _inside_any_ball(jnp.asarray(_padded(queries, start, stop, block)), centres,
                                  sq_radii)  # fmt: skip
        hits += int(np.asarray(inside)[: stop - start].sum())
    return hits / len(queries)


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, block: int = 1024
) -> tuple[float, float]:
    """(precision, recall) of generated features ``fake`` (M, D) against ``real`` (N, D)."""
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) features, got {real.shape} and {fake.shape}")
    precision = manifold_fraction(fake, real, knn_sq_radii(real, k, block), block)
    recall = manifold_fraction(real, fake, knn_sq_radii(fake, k, block), block)
    return precision, recall
