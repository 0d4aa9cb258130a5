"""Diffusion Transformer (Peebles & Xie 2023, arXiv:2212.09748) in Flax linen.

Patch embedding, fixed 2-D sin-cos positions, a noise-level embedder (frequency embedding +
MLP), a label embedder with a null class (label == num_classes), AdaLN-Zero blocks and a
zero-initialised final layer; optional learned-variance channels. Parameter names mirror the
official PyTorch code (x_embedder, t_embedder, y_embedder, blocks_i, final_layer) so that
`jaxdiff.models.convert` maps official checkpoints one to one.

Call: `model.apply(variables, x, cond, y, train=False)`, x (B, H, W, C) float, cond (B,)
noise-level conditioning (see `conditioning.py`), y (B,) int; returns (B, H, W, C or 2C), the
same call and return type as every registered model.
Label dropout for classifier-free guidance is the trainer's job (replace y by num_classes).
The trainer and the samplers call the network only through the model protocol
(`jaxdiff.models.interface`): `train_apply`, `initial_carry`, `sample_apply`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.models import conditioning as cond_lib
from jaxdiff.models.interface import Carry, Variables
from jaxdiff.models.layers import (
    Dense,
    LabelEmbedder,
    Mlp,
    SelfAttention,
    TimestepEmbedder,
    layer_norm,
    modulate,
    patchify,
    resolve_fast_dense,
    sincos_pos_embed_2d,
    unpatchify,
    zeros,
)


def check_positive(name: str, value) -> None:
    """Raise ValueError naming `name` unless value > 0."""
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def check_divides(name: str, divisor: int, other: str, value: int) -> None:
    """Raise ValueError naming both fields unless divisor divides value."""
    if value % divisor:
        raise ValueError(f"{name}={divisor} must divide {other}={value}")


def _adaln_modulation(c: jax.Array, n: int, width: int, fast_grad: bool) -> list[jax.Array]:
    """The n (B, width) chunks of Dense(n·width)(SiLU(c)), zero-initialised, created as the
    calling module's ``adaLN_modulation`` submodule (the official parameter name)."""
    mod = Dense(n * width, kernel_init=zeros, fast_grad=fast_grad, name="adaLN_modulation")
    return jnp.split(mod(nn.silu(c)), n, -1)


class DiTBlock(nn.Module):
    """AdaLN-Zero block: x += gate·Attn(mod(LN x)); x += gate·MLP(mod(LN x)); c: (B, D)."""

    num_heads: int
    mlp_ratio: float = 4.0
    fast_grad: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _adaln_modulation(
            c, 6, x.shape[-1], self.fast_grad
        )
        h = modulate(layer_norm(x), shift_msa, scale_msa)
        x = x + gate_msa[:, None] * SelfAttention(self.num_heads, self.fast_grad, name="attn")(h)
        h = modulate(layer_norm(x), shift_mlp, scale_mlp)
        return x + gate_mlp[:, None] * Mlp(self.mlp_ratio, self.fast_grad, name="mlp")(h)


class FinalLayer(nn.Module):
    """LN -> modulate(shift, scale) -> Linear to p·p·out_channels; all zero-initialised."""

    patch_size: int
    out_channels: int
    fast_grad: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = _adaln_modulation(c, 2, x.shape[-1], self.fast_grad)
        out = self.patch_size**2 * self.out_channels
        x = modulate(layer_norm(x), shift, scale)
        return Dense(out, kernel_init=zeros, fast_grad=self.fast_grad, name="linear")(x)


class DiT(nn.Module):
    """Class-conditional DiT on NHWC inputs. Defaults: DiT-XL/2 on 32×32×4 SD-VAE latents."""

    image_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    learn_sigma: bool = True
    conditioning: str = "logsnr"  # how the caller maps λ to cond: conditioning.get_cond_fn
    fast_dense: bool | None = None  # None: the CPU-fast dense gradient on CPU backends only

    def __post_init__(self):
        for name in ("image_size", "patch_size", "in_channels", "hidden_size", "depth"):
            check_positive(name, getattr(self, name))
        check_positive("num_heads", self.num_heads)
        check_positive("num_classes", self.num_classes)
        check_divides("patch_size", self.patch_size, "image_size", self.image_size)
        check_divides("num_heads", self.num_heads, "hidden_size", self.hidden_size)
        if self.hidden_size % 4:
            raise ValueError(
                f"hidden_size must be divisible by 4 (2-D sin-cos), got {self.hidden_size}"
            )
        cond_lib.get_cond_fn(self.conditioning)  # validates the name
        super().__post_init__()

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @nn.compact
    def __call__(
        self, x: jax.Array, cond: jax.Array, y: jax.Array, train: bool = False
    ) -> jax.Array:
        del train  # DiT has no dropout; label dropout happens in the trainer
        b, h, w, _ = x.shape
        p, fg = self.patch_size, resolve_fast_dense(self.fast_dense)
        grid = self.image_size // p
        if h != self.image_size or w != self.image_size:
            raise ValueError(f"input is {h}x{w}, model image_size is {self.image_size}")
        tokens = Dense(self.hidden_size, fast_grad=fg, name="x_embedder")(patchify(x, p))
        pos = jnp.asarray(sincos_pos_embed_2d(self.hidden_size, grid), tokens.dtype)
        tokens = tokens + pos[None]
        c = TimestepEmbedder(self.hidden_size, fast_grad=fg, name="t_embedder")(cond)
        c = c + LabelEmbedder(self.num_classes, self.hidden_size, name="y_embedder")(y)
        for i in range(self.depth):
            tokens = DiTBlock(self.num_heads, self.mlp_ratio, fg, name=f"blocks_{i}")(tokens, c)
        tokens = FinalLayer(p, self.out_channels, fg, name="final_layer")(tokens, c)
        return unpatchify(tokens, p, h, w)

    # The model protocol (jaxdiff.models.interface): DiT is stateless at sampling.
    def train_apply(
        self,
        variables: Variables,
        x: jax.Array,
        cond: jax.Array,
        y: jax.Array,
        key: jax.Array,
        *,
        train: bool = True,
    ) -> jax.Array:
        """One training-time evaluation; ``key`` feeds dropout (DiT has none)."""
        _, k_drop = jax.random.split(key)
        return self.apply(variables, x, cond, y, train=train, rngs={"dropout": k_drop})

    def initial_carry(self, batch_size: int) -> tuple[()]:
        """No state is carried between sampling steps."""
        del batch_size
        return ()

    def sample_apply(
        self, variables: Variables, x: jax.Array, cond: jax.Array, y: jax.Array, carry: Carry
    ) -> tuple[jax.Array, Carry]:
        """One sampling-step evaluation: ``(out, carry)``."""
        return self.apply(variables, x, cond, y, train=False), carry
