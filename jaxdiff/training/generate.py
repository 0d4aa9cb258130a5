"""Sampling images from a trained experiment, and writing PNG grids / ``.npz`` files."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from jaxdiff import noise
from jaxdiff.models import make_sample_fn, vae
from jaxdiff.sampling import cfg_denoise_fn, sample
from jaxdiff.sampling.respace import DDPM_LINEAR_GRID, respaced_logsnr
from jaxdiff.training.sharding import batch_sharding


def _sampling_kwargs(config) -> dict:
    s, n = config.sampling, config.noise
    scale = float(n.input_scale)
    return dict(
        method=s.method,
        target=n.target,
        eta=float(s.eta),
        churn=float(s.churn),
        s_tmin=float(s.s_tmin),
        s_tmax=float(s.s_tmax),
        s_noise=float(s.s_noise),
        variance=s.variance,
        clip_x0=(scale if s.clip_x0 else None),
        input_scale=scale,
        normalize_input=bool(n.normalize_input),
    )


def _guidance_interval(config):
    lo, hi = config.sampling.guidance_lam_min, config.sampling.guidance_lam_max
    if lo is None and hi is None:
        return None
    return (-jnp.inf if lo is None else lo, jnp.inf if hi is None else hi)


def sampling_grid(config, steps: int) -> dict:
    """``schedule`` or explicit ``lams`` for ``sample``: ``sampling.schedule`` names an
    inference schedule, or "ddpm_linear", the official DiT grid (the 1000-step linear-β DDPM
    respaced to ``steps`` steps, ``respace.respaced_logsnr(str(steps))``)."""
    name = config.sampling.schedule
    if name == DDPM_LINEAR_GRID:
        return dict(schedule=None, lams=respaced_logsnr(str(steps)))
    return dict(schedule=noise.get_schedule(name), lams=None)


def guidance_channels(config, model) -> int | None:
    """Channels guided by CFG: ``sampling.guidance_channels`` if set, else all the mean
    channels (a learned-σ network's variance output follows the conditional row)."""
    k = config.sampling.get("guidance_channels")
    if k is not None:
        return int(k)
    return int(config.data.channels) if getattr(model, "learn_sigma", False) else None


def compiled_sampler(exp, batch: int, steps: int):
    """The jitted ``run(params, key, labels) -> samples`` for ``batch`` samples in ``steps``
    steps (kept in ``exp.cache``). One path for every model: the model protocol's
    ``sample_apply`` with its carry (RIN's latents), guided by ``cfg_denoise_fn``."""
    cache_key = ("sampler", batch, steps)
    if cache_key not in exp.cache:
        exp.cache[cache_key] = _build_sampler(exp, batch, steps)
    return exp.cache[cache_key]


def _build_sampler(exp, batch: int, steps: int):
    c = exp.config
    shape = (batch, c.data.image_size, c.data.image_size, c.data.channels)
    grid = sampling_grid(c, steps)
    kwargs = _sampling_kwargs(c)
    scale = float(c.sampling.guidance_scale)
    shard = batch_sharding(exp.mesh) if batch % exp.mesh.size == 0 else None
    keep_variance = c.sampling.variance == "learned"
    guided = scale != 1.0

    def run(params, key, labels):
        model_fn = make_sample_fn(exp.model, params, keep_variance=keep_variance)
        if guided:
            denoise = cfg_denoise_fn(
                model_fn,
                labels,
                exp.num_classes,
                scale,
                _guidance_interval(c),
                channels=guidance_channels(c, exp.model),
                with_carry=True,
            )
        else:
            denoise = lambda x, lam, carry: model_fn(x, lam, labels, carry)
        carry = exp.model.initial_carry(2 * batch if guided else batch)
        return sample(key, denoise, shape, steps=steps, sharding=shard, carry=carry,
                      **grid, **kwargs)  # fmt: skip

    return jax.jit(run)


def _decoder(exp):
    """A jitted ``z -> image`` of the autoencoder ``data.vae`` (kept in ``exp.cache``)."""
    d = exp.config.data
    cache_key = ("decoder", d.vae, float(d.latent_scale))
    if cache_key not in exp.cache:
        ae, variables = vae.load_vae(d.vae)
        scale = float(d.latent_scale)
        exp.cache[cache_key] = jax.jit(lambda z: ae.apply(variables, z / scale, method="decode"))
    return exp.cache[cache_key]


def decode_latents(exp, z: jax.Array) -> jax.Array:
    """Images in [-1, 1] from sampled latents (``data.kind == "latent"``).

    With ``data.vae`` (a diffusers-layout or converted VAE dir) the latents are decoded
    (z / data.latent_scale, then the decoder). Without it, a preview: the first three latent
    channels squashed into [-1, 1] (tanh), so training grids still show something.
    """
    if exp.config.data.get("vae"):
        return jnp.clip(_decoder(exp)(z), -1.0, 1.0)
    return jnp.tanh(z[..., :3])


def sample_images(exp, params, key, labels, steps: int | None = None) -> np.ndarray:
    """Samples images for ``labels`` (N,) as floats in [-1, 1] (latents decoded), gathered
    on every host."""
    steps = int(steps or exp.config.sampling.steps)
    labels = jnp.asarray(labels, jnp.int32)
    fn = compiled_sampler(exp, int(labels.shape[0]), steps)
    out = fn(params, key, labels)
    if exp.config.data.get("kind", "image") == "latent":
        out = decode_latents(exp, out)
    if jax.process_count() > 1:
        out = multihost_utils.process_allgather(out, tiled=True)
    return np.asarray(out)


def iter_samples(exp, params, key, num: int, batch_size: int | None = None):
    """Yields ``(images, labels)`` batches (float images in the data range, latents decoded;
    balanced class labels ``i % num_classes``) until ``num`` samples, the last one trimmed.

    Batch i uses ``fold_in(key, i)``: the samples do not depend on how they are consumed.
    """
    c = exp.config
    batch_size = int(batch_size or c.sampling.batch_size)
    batch_size = max(exp.mesh.size, batch_size - batch_size % exp.mesh.size)
    nc = exp.num_classes if c.model.class_conditional else 0
    for i in range(math.ceil(num / batch_size)):
        y = (np.arange(i * batch_size, (i + 1) * batch_size) % max(nc, 1)).astype(np.int32)
        if nc == 0:
            y[:] = exp.num_classes
        keep = min(batch_size, num - i * batch_size)
        images = sample_images(exp, params, jax.random.fold_in(key, i), y)
        yield images[:keep], y[:keep]


def sample_many(
    exp, params, key, num: int, batch_size: int | None = None, progress=None, uint8=False
):
    """``num`` samples with balanced class labels, in batches: floats in the data range, or
    uint8 (converted batch by batch, a quarter of the memory) with ``uint8=True``."""
    images, labels = [], []
    for x, y in iter_samples(exp, params, key, num, batch_size):
        images.append(to_uint8(x) if uint8 else x)
        labels.append(y)
        if progress is not None:
            progress.update(len(y))
    return np.concatenate(images), np.concatenate(labels)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 [0, 255]; 1 channel is kept, RGB stays RGB."""
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_grid(images: np.ndarray, path: str, ncols: int | None = None, pad: int = 1) -> str:
    """Writes a PNG grid of images (N, H, W, C), C in {1, 3}: floats in [-1, 1] or uint8."""
    imgs = images if images.dtype == np.uint8 else to_uint8(images)
    n, h, w, ch = imgs.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, ch), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + col * (w + pad) : pad + col * (w + pad) + w,
        ] = imgs[i]
    scale = max(1, 512 // max(grid.shape[:2]))
    img = Image.fromarray(grid[..., 0] if ch == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
    return path


def sampling_params(state):
    """The params to sample with: the first EMA copy (params if no EMA)."""
    return state.ema[0] if len(state.ema) else state.params
