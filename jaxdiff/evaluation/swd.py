"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, arXiv:1710.10196).

Progressive GAN's SWD (their section 5 and appendix D) compares the local image statistics
of two image sets at every scale, with no trained weights:

1. Each (N, H, W, C) image set is decomposed into a Laplacian pyramid (Burt & Adelson 1983)
   from H down to `min_resolution` (16): level k = g_k − up(g_{k+1}) with g₀ the image,
   g_{k+1} = down(g_k); the last level is the Gaussian g_K itself. down = 5-tap binomial blur
   [1, 4, 6, 4, 1]/16 (separable, mirror borders) then keep every other pixel; up = insert
   zeros, blur, multiply by 4.
2. From each level, `patches_per_image` random 7 × 7 neighbourhoods per image are the
   descriptors (7·7·C numbers each); each SET of descriptors is normalised per channel by its
   own mean and standard deviation (so the distance ignores a global change of brightness or
   contrast of a whole set and measures the shape of the local statistics).
3. SWD(A, B) = mean over unit directions θ of W₁(⟨A, θ⟩, ⟨B, θ⟩), the 1-D Wasserstein-1
   distance between the projections, computed exactly for sets of any sizes:
   W₁(u, v) = ∫ |F_u(t) − F_v(t)| dt over the merged sorted values.

Defaults: 128 patches per image, 128 directions drawn once from a fixed key (shared by all
calls, so comparisons between runs carry no direction noise; Karras et al. use 4 × 128 fresh
ones), min resolution 16. Per-level values are reported ×10³ as in their tables.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

PATCH_SIZE = 7
PATCHES_PER_IMAGE = 128
NUM_DIRECTIONS = 128
MIN_RESOLUTION = 16
CHUNK = 256  # images per compiled pyramid call
REPORT_SCALE = 1e3
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _blur_axis(x: jax.Array, axis: int) -> jax.Array:
    """[1, 4, 6, 4, 1]/16 along `axis` with mirror borders (x[-1] = x[1], numpy "reflect")."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    xp = jnp.pad(x, pad, mode="reflect")
    taps = [jax.lax.slice_in_dim(xp, k, k + n, axis=axis) for k in range(5)]
    return sum(w / 16.0 * t for w, t in zip(_BINOMIAL, taps, strict=True))


def binomial_blur(x: jax.Array) -> jax.Array:
    """The 5 × 5 binomial filter (outer product of [1, 4, 6, 4, 1]/16) on (N, H, W, C)."""
    return _blur_axis(_blur_axis(x, 1), 2)


def pyr_down(x: jax.Array) -> jax.Array:
    """(N, H, W, C) → (N, H/2, W/2, C): blur, then keep the even rows and columns."""
    return binomial_blur(x)[:, ::2, ::2]


def pyr_up(x: jax.Array) -> jax.Array:
    """(N, H, W, C) → (N, 2H, 2W, C): zeros between the samples, blur, times 4."""
    n, h, w, c = x.shape
    z = jnp.stack([x, jnp.zeros_like(x)], axis=2).reshape(n, 2 * h, w, c)
    z = jnp.stack([z, jnp.zeros_like(z)], axis=3).reshape(n, 2 * h, 2 * w, c)
    return 4.0 * binomial_blur(z)


def num_levels(resolution: int, min_resolution: int = MIN_RESOLUTION) -> int:
    """Levels of the pyramid of a resolution × resolution image: log2(res / min_res) + 1."""
    levels = 1
    while resolution > min_resolution and resolution % 2 == 0:
        resolution //= 2
        levels += 1
    if resolution > min_resolution:
        raise ValueError(
            f"image size must be min_resolution={min_resolution} times a power of two, "
            f"or smaller; got {resolution} after halving"
        )
    return levels


def laplacian_pyramid(images: jax.Array, min_resolution: int = MIN_RESOLUTION) -> list:
    """Levels [L₀ (N, H, W, C), L₁ (N, H/2, …), …, g_K (N, ≤min_resolution, …)], finest first.

    L_k = g_k − pyr_up(g_{k+1}); the last entry is the Gaussian level g_K. `reconstruct`
    inverts it exactly.
    """
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be (N, S, S, C), got {images.shape}")
    levels, g = [], images
    for _ in range(num_levels(images.shape[1], min_resolution) - 1):
        smaller = pyr_down(g)
        levels.append(g - pyr_up(smaller))
        g = smaller
    return [*levels, g]


def reconstruct(pyramid: list) -> jax.Array:
    """The image from its Laplacian pyramid: g_k = L_k + pyr_up(g_{k+1}), from the coarsest."""
    g = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        g = level + pyr_up(g)
    return g


def extract_patches(
    level: jax.Array, key: jax.Array, patches_per_image: int, patch_size: int = PATCH_SIZE
) -> jax.Array:
    """(N·P, patch, patch, C): P neighbourhoods per image at uniform random corners."""
    n, h, w, c = level.shape
    if min(h, w) < patch_size:
        raise ValueError(f"level {h}×{w} is smaller than the {patch_size}×{patch_size} patch")
    ky, kx = jax.random.split(key)
    ys = jax.random.randint(ky, (n, patches_per_image), 0, h - patch_size + 1)
    xs = jax.random.randint(kx, (n, patches_per_image), 0, w - patch_size + 1)

    def one(image, y, x):
        return jax.lax.dynamic_slice(image, (y, x, 0), (patch_size, patch_size, c))

    patches = jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)))(level, ys, xs)
    return patches.reshape(n * patches_per_image, patch_size, patch_size, c)


def normalize_descriptors(patches: jax.Array) -> jax.Array:
    """(M, p, p, C) → (M, p·p·C): minus the set's per-channel mean, over its per-channel std."""
    mean = patches.mean(axis=(0, 1, 2))
    std = jnp.maximum(patches.std(axis=(0, 1, 2)), 1e-8)
    return ((patches - mean) / std).reshape(patches.shape[0], -1)


def random_directions(key: jax.Array, dim: int, num: int = NUM_DIRECTIONS) -> jax.Array:
    """(dim, num) unit columns, uniform on the sphere (normalised Gaussian vectors)."""
    v = jax.random.normal(key, (dim, num))
    return v / jnp.linalg.norm(v, axis=0, keepdims=True)


@functools.lru_cache(maxsize=8)
def quantile_plan(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(iu, iv, w) with W₁(u, v) = Σ_k w_k |u[iu_k] − v[iv_k]| for ascending u (n,), v (m,).

    W₁ = ∫₀¹ |F_u⁻¹(q) − F_v⁻¹(q)| dq, and both quantile functions are constant between
    consecutive breakpoints of {i/n} ∪ {j/m}. On the integer grid e = q·n·m the breakpoints
    are the union of {i·m} and {j·n}; on (e_{k−1}, e_k] the quantiles are u[⌈e_k/m⌉ − 1] and
    v[⌈e_k/n⌉ − 1], and w_k = (e_k − e_{k−1}) / (n·m).
    """
    e = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n)
    iu, iv = (e + m - 1) // m - 1, (e + n - 1) // n - 1
    return iu, iv, np.diff(e, prepend=0) / (n * m)


def w1_sorted(u: np.ndarray, v: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Exact W₁ between empirical distributions, row by row: u (..., n), v (..., m) ascending.

    Returns (...,) in float64. Rows are processed `chunk` at a time to bound memory.
    """
    u, v = np.asarray(u), np.asarray(v)
    iu, iv, w = quantile_plan(u.shape[-1], v.shape[-1])
    u2, v2 = u.reshape(-1, u.shape[-1]), v.reshape(-1, v.shape[-1])
    out = np.empty(len(u2))
    for s in range(0, len(u2), chunk):
        out[s : s + chunk] = np.abs(u2[s : s + chunk, iu] - v2[s : s + chunk, iv]) @ w
    return out.reshape(u.shape[:-1])


def sorted_projections(descriptors: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(K, M): the M descriptors (M, D) projected on each direction (D, K), sorted per row."""
    return np.sort((np.asarray(descriptors) @ np.asarray(directions)).T, axis=1)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _pyramid_patches(
    images: jax.Array, key: jax.Array, patches_per_image: int, min_resolution: int
) -> list:
    """Per pyramid level, raw patches (N·P, 7, 7, C) of each image, image-major."""
    pyramid = laplacian_pyramid(images, min_resolution)
    keys = jax.random.split(key, len(pyramid))
    return [
        extract_patches(level, k, patches_per_image) for level, k in zip(pyramid, keys, strict=True)
    ]


def image_chunks(images: np.ndarray, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Consecutive slices of at most `chunk` images."""
    for start in range(0, len(images), chunk):
        yield images[start : start + chunk]


def pyramid_descriptors(
    chunks: np.ndarray | Iterable[np.ndarray],
    key: jax.Array,
    patches_per_image: int = PATCHES_PER_IMAGE,
    min_resolution: int = MIN_RESOLUTION,
) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """(per level, the set's normalised descriptors (N·P, 7·7·C), finest first; image shape).

    `chunks` is an (N, S, S, C) array or an iterable of such arrays of at most CHUNK images,
    so a large set never has to be in memory at once. Chunk k draws its patch corners with
    fold_in(key, k) and is zero-padded to CHUNK images (one compiled shape); the padding's
    patches are dropped before the set is normalised.
    """
    if isinstance(chunks, np.ndarray | jax.Array):
        chunks = image_chunks(np.asarray(chunks))
    per_level, shape = None, None
    for k, images in enumerate(chunks):
        images = np.asarray(images, np.float32)
        if shape is None:
            shape = images.shape[1:]
            per_level = [[] for _ in range(num_levels(shape[0], min_resolution))]
        elif images.shape[1:] != shape:
            raise ValueError(f"image chunks differ in shape: {shape} vs {images.shape[1:]}")
        n = len(images)
        padded = np.concatenate([images, np.zeros((CHUNK - n, *shape), np.float32)])
        patches = _pyramid_patches(
            padded, jax.random.fold_in(key, k), patches_per_image, min_resolution
        )
        for store, level in zip(per_level, patches, strict=True):
            store.append(np.asarray(level[: n * patches_per_image]))
    if shape is None:
        raise ValueError("no images to describe")
    descriptors = [np.asarray(normalize_descriptors(np.concatenate(s))) for s in per_level]
    return descriptors, shape


def level_resolutions(image_size: int, min_resolution: int = MIN_RESOLUTION) -> list[int]:
    """Resolutions of the pyramid levels, finest first (e.g. 64 → [64, 32, 16])."""
    return [image_size >> k for k in range(num_levels(image_size, min_resolution))]


class SWDReference:
    """A reference image set's sorted projections per level, to score other sets against.

    `distance(images) -> {level resolution: SWD × 10³}`. The directions come from
    fold_in(key(seed), 0), the reference's patches from fold_in(…, 1) and a scored set's
    from fold_in(…, 2), so the result is a pure function of the two sets and the settings.
    Memory: levels × num_directions × N_ref·patches_per_image float32. `images` may be an
    iterable of chunks (see `pyramid_descriptors`).
    """

    def __init__(
        self,
        images: np.ndarray | Iterable[np.ndarray],
        *,
        seed: int = 0,
        patches_per_image: int = PATCHES_PER_IMAGE,
        num_directions: int = NUM_DIRECTIONS,
        min_resolution: int = MIN_RESOLUTION,
    ):
        self.min_resolution = min_resolution
        self._key = jax.random.key(seed)
        ref_key = jax.random.fold_in(self._key, 1)
        descriptors, self.image_shape = pyramid_descriptors(
            images, ref_key, patches_per_image, min_resolution
        )
        self.resolutions = level_resolutions(self.image_shape[0], min_resolution)
        dim = descriptors[0].shape[1]
        directions = random_directions(jax.random.fold_in(self._key, 0), dim, num_directions)
        self.directions = np.asarray(directions, np.float32)
        self.projections = [sorted_projections(d, self.directions) for d in descriptors]

    def distance(
        self, images: np.ndarray, patches_per_image: int = PATCHES_PER_IMAGE
    ) -> dict[int, float]:
        """{level resolution: SWD(images, reference) × 10³} for (N, S, S, C) images."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.image_shape):
            want = ", ".join(map(str, self.image_shape))
            raise ValueError(f"images must have shape (N, {want}), got {images.shape}")
        key = jax.random.fold_in(self._key, 2)
        descriptors, _ = pyramid_descriptors(images, key, patches_per_image, self.min_resolution)
        result = {}
        for r, d, ref in zip(self.resolutions, descriptors, self.projections, strict=True):
            mine = sorted_projections(d, self.directions)
            result[r] = float(np.mean(w1_sorted(mine, ref))) * REPORT_SCALE
        return result


def swd(images_a: np.ndarray, images_b: np.ndarray, **settings) -> dict[int, float]:
    """{level resolution: SWD × 10³} between two (N, S, S, C) image sets (any N each).

    `settings`: seed, patches_per_image, num_directions, min_resolution (see SWDReference).
    """
    patches = settings.get("patches_per_image", PATCHES_PER_IMAGE)
    return SWDReference(images_b, **settings).distance(images_a, patches)
