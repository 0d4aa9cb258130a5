"""Blocks of the Stable Diffusion autoencoder (`AutoencoderKL`), Flax linen, NHWC.

The layer structure and submodule names follow diffusers' `AutoencoderKL` (the layout of
`stabilityai/sd-vae-ft-mse`), so a diffusers parameter name maps onto our parameter path by
replacing `.<i>` with `_<i>` (`encoder.down_blocks.0.resnets.1.conv1.weight` ->
`encoder/down_blocks_0/resnets_1/conv1/kernel`). Architecture: Rombach et al. 2022,
"High-Resolution Image Synthesis with Latent Diffusion Models", arXiv:2112.10752.

Shapes: images (B, H, W, C); the encoder output has 1/2^(n-1) the resolution for n blocks.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

EPS = 1e-6  # GroupNorm epsilon of every norm in the SD autoencoder


def group_norm(groups: int, dtype: Any, name: str) -> nn.GroupNorm:
    """GroupNorm(groups, eps 1e-6) with the two-pass variance E[(x − μ)²] (as PyTorch)."""
    return nn.GroupNorm(
        num_groups=groups, epsilon=EPS, dtype=dtype, use_fast_variance=False, name=name
    )


def conv(features: int, kernel: int, dtype: Any, name: str, stride: int = 1) -> nn.Conv:
    """k×k convolution with PyTorch's symmetric 'same' padding (k // 2 each side)."""
    p = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        dtype=dtype,
        name=name,
    )


class ResnetBlock(nn.Module):
    """x + conv2(silu(norm2(conv1(silu(norm1(x)))))), 1×1 `conv_shortcut` when C_in ≠ C_out."""

    out_channels: int
    groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.silu(group_norm(self.groups, self.dtype, "norm1")(x))
        h = conv(self.out_channels, 3, self.dtype, "conv1")(h)
        h = nn.silu(group_norm(self.groups, self.dtype, "norm2")(h))
        h = conv(self.out_channels, 3, self.dtype, "conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, self.dtype, "conv_shortcut")(x)
        return x + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the H·W positions, residual: x + out(softmax(qkᵀ/√C)v).

    q, k, v are linear maps of GroupNorm(x) (names `to_q`, `to_k`, `to_v`, `to_out_0`); the
    softmax runs in float32.
    """

    groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        t = group_norm(self.groups, self.dtype, "group_norm")(x).reshape(b, h * w, c)
        dense = lambda name: nn.Dense(c, dtype=self.dtype, name=name)
        q, k, v = dense("to_q")(t), dense("to_k")(t), dense("to_v")(t)
        logits = jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(c)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = dense("to_out_0")(jnp.einsum("bqk,bkc->bqc", weights, v))
        return x + out.reshape(b, h, w, c)


class Downsample(nn.Module):
    """Stride-2 3×3 conv after zero-padding one row at the bottom and one column at the right.

    (The asymmetric padding of the original LDM autoencoder; halves H and W when even.)
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        c = x.shape[-1]
        return nn.Conv(c, (3, 3), (2, 2), padding="VALID", dtype=self.dtype, name="conv")(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 conv (`conv`)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv(x.shape[-1], 3, self.dtype, "conv")(x)


class MidBlock(nn.Module):
    """resnets_0 -> (attentions_0) -> resnets_1, all at constant width."""

    groups: int
    add_attention: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = ResnetBlock(c, self.groups, self.dtype, name="resnets_0")(x)
        if self.add_attention:
            x = SpatialSelfAttention(self.groups, self.dtype, name="attentions_0")(x)
        return ResnetBlock(c, self.groups, self.dtype, name="resnets_1")(x)


class DownBlock(nn.Module):
    """`num_layers` ResnetBlocks to `out_channels` (`resnets_j`), then `downsamplers_0`."""

    out_channels: int
    num_layers: int
    groups: int
    add_downsample: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.num_layers):
            x = ResnetBlock(self.out_channels, self.groups, self.dtype, name=f"resnets_{j}")(x)
        if self.add_downsample:
            x = Downsample(self.dtype, name="downsamplers_0")(x)
        return x


class UpBlock(nn.Module):
    """`num_layers` ResnetBlocks to `out_channels` (`resnets_j`), then `upsamplers_0`."""

    out_channels: int
    num_layers: int
    groups: int
    add_upsample: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.num_layers):
            x = ResnetBlock(self.out_channels, self.groups, self.dtype, name=f"resnets_{j}")(x)
        if self.add_upsample:
            x = Upsample(self.dtype, name="upsamplers_0")(x)
        return x


class Encoder(nn.Module):
    """Image (B, H, W, in) -> 2·latent channels (mean ‖ logvar) at 1/2^(n−1) resolution.

    conv_in; per block i: `layers` ResnetBlocks to block_out_channels[i] and, except in the
    last block, a Downsample; mid block; GroupNorm + SiLU; conv_out.
    """

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    latent_channels: int
    groups: int
    mid_block_add_attention: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        chans, g, dt = self.block_out_channels, self.groups, self.dtype
        x = conv(chans[0], 3, dt, "conv_in")(x)
        for i, c in enumerate(chans):
            last = i == len(chans) - 1
            x = DownBlock(c, self.layers_per_block, g, not last, dt, name=f"down_blocks_{i}")(x)
        x = MidBlock(g, self.mid_block_add_attention, dt, name="mid_block")(x)
        x = nn.silu(group_norm(g, dt, "conv_norm_out")(x))
        return conv(2 * self.latent_channels, 3, dt, "conv_out")(x)


class Decoder(nn.Module):
    """Latent (B, h, w, latent) -> image (B, h·2^(n−1), w·2^(n−1), out_channels).

    conv_in to the widest channels; mid block; per block i (widths reversed):
    layers_per_block + 1 ResnetBlocks and, except in the last block, an Upsample;
    GroupNorm + SiLU; conv_out.
    """

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    out_channels: int
    groups: int
    mid_block_add_attention: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        chans, g, dt = tuple(reversed(self.block_out_channels)), self.groups, self.dtype
        x = conv(chans[0], 3, dt, "conv_in")(z)
        x = MidBlock(g, self.mid_block_add_attention, dt, name="mid_block")(x)
        n = self.layers_per_block + 1
        for i, c in enumerate(chans):
            last = i == len(chans) - 1
            x = UpBlock(c, n, g, not last, dt, name=f"up_blocks_{i}")(x)
        x = nn.silu(group_norm(g, dt, "conv_norm_out")(x))
        return conv(self.out_channels, 3, dt, "conv_out")(x)
