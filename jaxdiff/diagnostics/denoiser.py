"""The denoiser every diagnostic evaluates, and the batched per-point loss evaluation.

All diagnostics work in the variance-preserving process of the data x0 at the logSNR λ the
data actually sees: z = α·x0 + σ·ε with α² = sigmoid(λ), σ² = sigmoid(−λ). With Chen's input
scaling by b (`NoiseSpec.input_scale`) that λ is λ_eff = λ_u + 2·log b, where λ_u is the
unscaled schedule's value: the scaled corruption √γ·b·x0 + √(1−γ)·ε (γ = sigmoid(λ_u)) equals
n·z with n = √((b² − 1)·γ + 1), so the network input is z (`normalize_input=True`) or n·z
(`normalize_input=False`), its λ argument is λ_eff, and its prediction is in
`spec.target` space relative to (z, λ_eff, x0) (jaxdiff/noise/scaling.py). A `Denoiser`
hides that: `apply(params, z, lam, y)` takes the VP z and λ = λ_eff.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxdiff import noise
from jaxdiff.diffusion import NoiseSpec, loss_weight
from jaxdiff.training.sharding import batch_sharding, replicated

SPACES = ("eps", "x0", "v")


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """`apply(params, z, lam, y) -> prediction` in `target` space (one of noise.TARGETS).

    z: (B, ...) the VP z = α·x0 + σ·ε at logSNR lam (B,); y: (B,) int labels. Hashable, so
    it is a static argument of the jitted evaluations (one compilation per denoiser).
    """

    apply: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
    target: str


@functools.lru_cache(maxsize=32)
def network_denoiser(apply_fn: Callable, spec: NoiseSpec) -> Denoiser:
    """The trained network `apply_fn(params, x_t, lam_eff, y, key, train)` as a `Denoiser`.

    Feeds x_t = z (normalize_input or b = 1) or z·√((b² − 1)·sigmoid(λ_u) + 1), exactly the
    training input `noise.corrupt(x0, ε, λ_u, scale=b, normalize)`, with λ_u = λ − 2·log b;
    evaluation mode (train=False, a fixed key: no dropout, no RIN self-conditioning).
    """
    b = spec.input_scale
    shift = noise.logsnr_shift(b)
    scale_input = b != 1.0 and not spec.normalize_input

    def apply(params, z, lam, y):
        x_t = z
        if scale_input:
            n = noise.input_norm(lam - shift, b)
            x_t = z * n.reshape(n.shape + (1,) * (z.ndim - 1)).astype(z.dtype)
        return apply_fn(params, x_t, lam, y, jax.random.key(0), False)

    return Denoiser(apply=apply, target=spec.target)


def per_example_losses(
    denoiser: Denoiser,
    spec: NoiseSpec,
    params: Any,
    x0: jax.Array,
    eps: jax.Array,
    lam: jax.Array,
    y: jax.Array,
) -> dict[str, jax.Array]:
    """Per-example losses of one batch at logSNR `lam` (λ_eff), each of shape (B,).

    mse_eps, mse_x0, mse_v: mean over dims of the squared error in that space (the prediction
    converted with `noise.convert`, so each is computed where it is well conditioned);
    mse_target: the same in `spec.target` space; weighted: loss_weight(spec, λ_u, λ) ×
    mse_target, the training objective's per-example value at that λ (no timestep-sampler
    factor); sse_eps: the sum over dims of (ε̂ − ε)² (= e^λ·‖x̂0 − x0‖², the ELBO integrand).
    """
    alpha, sigma = noise.alpha_sigma(lam)
    shape = lam.shape + (1,) * (x0.ndim - 1)
    z = alpha.reshape(shape).astype(x0.dtype) * x0 + sigma.reshape(shape).astype(x0.dtype) * eps
    pred = denoiser.apply(params, z, lam, y).astype(x0.dtype)
    axes = tuple(range(1, x0.ndim))
    out = {}
    for space in dict.fromkeys((*SPACES, spec.target)):
        err = noise.convert(pred, denoiser.target, space, z, lam)
        err = err - noise.make_target(x0, eps, lam, space)
        out[f"mse_{space}"] = jnp.mean(jnp.square(err), axis=axes)
        if space == "eps":
            out["sse_eps"] = jnp.sum(jnp.square(err), axis=axes)
    out["mse_target"] = out[f"mse_{spec.target}"]
    out.pop("mse_flow", None)
    lam_u = lam - noise.logsnr_shift(spec.input_scale)
    out["weighted"] = loss_weight(spec, lam_u, lam).astype(x0.dtype) * out["mse_target"]
    return out


def point_noise(
    entropy: tuple[int, ...], ids: np.ndarray, shape: tuple[int, ...], dtype=np.float32
) -> np.ndarray:
    """ε (P, *shape) ~ N(0, I) on the host, row p from NumPy's generator seeded by
    (*entropy, ids[p]): the same for a point however the points are batched or sharded."""
    rows = [np.random.default_rng([*entropy, int(i)]).standard_normal(shape) for i in ids]
    return np.stack(rows).astype(dtype) if rows else np.zeros((0, *shape), dtype)


@functools.partial(jax.jit, static_argnames=("denoiser", "spec", "out_sharding"))
def _chunk_losses(params, x0, y, lam, eps, *, denoiser, spec, out_sharding):
    return replicate(per_example_losses(denoiser, spec, params, x0, eps, lam, y), out_sharding)


def replicate(tree: Any, sharding: Any) -> Any:
    """`tree` constrained to `sharding` inside jit (None: unchanged), so that every host can
    read the result."""
    if sharding is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, sharding)


def put(x: np.ndarray, mesh: Mesh | None, shard: bool = True) -> jax.Array:
    """A host array as a global array: split over the mesh's batch axes when `shard` and the
    leading size divides the mesh, else replicated; plain device array without a mesh."""
    x = np.asarray(x)
    if mesh is None:
        return jnp.asarray(x)
    sharding = batch_sharding(mesh) if shard and len(x) % mesh.size == 0 else replicated(mesh)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def to_host(tree: Any) -> Any:
    """Fully replicated / addressable outputs as NumPy (works on every host)."""

    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)

    return jax.tree_util.tree_map(get, tree)


def evaluate_points(
    denoiser: Denoiser,
    spec: NoiseSpec,
    params: Any,
    images: np.ndarray,
    labels: np.ndarray,
    index: np.ndarray,
    lam: np.ndarray,
    entropy: tuple[int, ...],
    *,
    batch_size: int,
    mesh: Mesh | None = None,
) -> dict[str, np.ndarray]:
    """`per_example_losses` at P points (example images[index[p]], logSNR lam[p], ε =
    `point_noise(entropy, [p])`), in jitted chunks of `batch_size` rows (one compilation; the
    last chunk is padded). Returns host arrays of shape (P,); they do not depend on batch_size.
    """
    if mesh is not None:
        batch_size = max(mesh.size, batch_size - batch_size % mesh.size)
    num = len(index)
    pad = -num % batch_size
    index = np.concatenate([index, np.zeros(pad, index.dtype)])
    lam = np.concatenate([lam, np.zeros(pad, lam.dtype)])
    chunks = []
    for start in range(0, num + pad, batch_size):
        sl = slice(start, start + batch_size)
        x0, y = images[index[sl]], labels[index[sl]]
        eps = point_noise(entropy, np.arange(start, start + batch_size), x0.shape[1:], x0.dtype)
        out = _chunk_losses(
            params,
            put(x0, mesh),
            put(y, mesh),
            put(lam[sl], mesh),
            put(eps, mesh),
            denoiser=denoiser,
            spec=spec,
            out_sharding=None if mesh is None else replicated(mesh),
        )
        chunks.append(to_host(out))
    return {k: np.concatenate([c[k] for c in chunks])[:num] for k in chunks[0]}
