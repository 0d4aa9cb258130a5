"""Recurrent Interface Networks (Jabri, Fleet & Chen 2022, arXiv:2212.11972) in Flax linen.

Patch tokens form the "interface" (learned positions); a smaller set of learned latents does
most of the compute. Each block reads (latents cross-attend to the interface), computes
(`block_depth` latent self-attention layers) and writes (the interface cross-attends to the
latents). The noise level and the class label are two of the `num_latents` latent tokens.
Latent self-conditioning: the previous pass's latents h go through h + MLP(LN h) and a
LayerNorm whose scale starts at zero, and are added to all latents (zeros when there is no
previous pass). The layer structure, widths and initialisations follow the official pix2seq
implementation (`architectures/tape.py`); the noise level is embedded like DiT's timestep
(of the λ-map `conditioning`) and the class by a table with a null row (for guidance).

Call: `model.apply(variables, x, cond, y, train=False, rngs=...)` returns the prediction
(B, H, W, C or 2C) of one pass without self-conditioning, as every registered model does. The
latents are reached only through the model protocol (`jaxdiff.models.interface`): training
self-conditions (`train_apply`, two passes, previous latents kept with probability
`self_cond_rate`, a field: the paper's 0.9) and sampling carries the latents from step to
step (`initial_carry`, `sample_apply`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.models import conditioning as cond_lib
from jaxdiff.models.dit import check_divides, check_positive
from jaxdiff.models.interface import Variables
from jaxdiff.models.layers import (
    CrossAttention,
    Dense,
    LabelEmbedder,
    Mlp,
    ResidualDrop,
    SelfAttention,
    TimestepEmbedder,
    patchify,
    resolve_fast_dense,
    unpatchify,
    zeros,
)


class RINBlock(nn.Module):
    """read -> compute (depth × self-attention + MLP on latents) -> write (pix2seq's TAPE).

    Read: latents (LN) cross-attend to the interface (no LN on the interface), then an MLP;
    write: the interface (LN) cross-attends to the latents (no LN on them), then an MLP.
    Both attentions are ``min(interface_dim, latent_dim)`` wide. Dropout (on the MLP hidden
    units) and drop-path act in the compute layers only, as in the official code.
    """

    depth: int
    latent_heads: int
    rw_heads: int
    latent_mlp_ratio: float
    interface_mlp_ratio: float
    dropout: float = 0.0
    drop_path: float = 0.0
    fast_grad: bool = True

    @nn.compact
    def __call__(self, z: jax.Array, u: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        det, fg = not train, self.fast_grad
        rw_dim = min(z.shape[-1], u.shape[-1])
        ln = lambda name: nn.LayerNorm(epsilon=1e-6, name=name)  # noqa: E731

        def mlp(ratio, name, dropout=0.0):
            return Mlp(ratio, fg, dropout=dropout, exact_gelu=True, name=name)

        # read: latents z (B, L, Dl) attend to the interface u (B, N, Du)
        z = z + CrossAttention(self.rw_heads, fg, rw_dim, name="read_attn")(ln("read_ln_z")(z), u)
        z = z + mlp(self.latent_mlp_ratio, "read_mlp")(ln("read_ln_mlp")(z))
        for i in range(self.depth):
            drop = ResidualDrop(0.0, self.drop_path, name=f"compute_drop_attn_{i}")
            h = SelfAttention(self.latent_heads, fg, name=f"compute_attn_{i}")(
                ln(f"compute_ln_attn_{i}")(z)
            )
            z = z + drop(h, det)
            drop = ResidualDrop(0.0, self.drop_path, name=f"compute_drop_mlp_{i}")
            h = mlp(self.latent_mlp_ratio, f"compute_mlp_{i}", self.dropout)(
                ln(f"compute_ln_mlp_{i}")(z), deterministic=det
            )
            z = z + drop(h, det)
        # write: the interface attends to the latents
        u = u + CrossAttention(self.rw_heads, fg, rw_dim, name="write_attn")(ln("write_ln_u")(u), z)
        u = u + mlp(self.interface_mlp_ratio, "write_mlp")(ln("write_ln_mlp")(u))
        return z, u


class RIN(nn.Module):
    """RIN on NHWC pixels. Defaults: the RIN paper's CIFAR-10 configuration."""

    image_size: int = 32
    in_channels: int = 3
    patch_size: int = 2
    num_blocks: int = 3
    block_depth: int = 2
    num_latents: int = 128
    latent_dim: int = 512
    interface_dim: int = 256
    latent_heads: int = 16
    rw_heads: int = 8
    latent_mlp_ratio: float = 4.0
    interface_mlp_ratio: float = 2.0
    dropout: float = 0.0
    drop_path: float = 0.0
    num_classes: int = 10
    learn_sigma: bool = False
    conditioning: str = "logsnr"
    fast_dense: bool | None = None  # None: the CPU-fast dense gradient on CPU backends only
    # Training: the probability that an example's second pass is fed the first pass's
    # latents (RIN paper §3.3); a training setting, not part of the parameters.
    self_cond_rate: float = 0.9

    def __post_init__(self):
        for name in ("image_size", "in_channels", "patch_size", "num_blocks", "block_depth",
                     "num_latents", "latent_dim", "interface_dim", "latent_heads", "rw_heads",
                     "num_classes"):  # fmt: skip
            check_positive(name, getattr(self, name))
        check_divides("patch_size", self.patch_size, "image_size", self.image_size)
        check_divides("latent_heads", self.latent_heads, "latent_dim", self.latent_dim)
        check_divides("rw_heads", self.rw_heads, "latent_dim", self.latent_dim)
        check_divides("rw_heads", self.rw_heads, "interface_dim", self.interface_dim)
        if self.num_latents < 3:
            raise ValueError(
                f"num_latents must be >= 3 (it counts the noise-level and class tokens), "
                f"got {self.num_latents}"
            )
        for name in ("dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.self_cond_rate <= 1.0:
            raise ValueError(f"self_cond_rate must be in [0, 1], got {self.self_cond_rate}")
        cond_lib.get_cond_fn(self.conditioning)
        super().__post_init__()

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def __call__(
        self, x: jax.Array, cond: jax.Array, y: jax.Array, train: bool = False
    ) -> jax.Array:
        """One pass with no previous latents: the prediction (B, H, W, C or 2C)."""
        out, _ = self._forward(x, cond, y, None, train)
        return out

    @nn.compact
    def _forward(
        self,
        x: jax.Array,
        cond: jax.Array,
        y: jax.Array,
        prev_latents: jax.Array | None,
        train: bool,
    ) -> tuple[jax.Array, jax.Array]:
        """One pass fed ``prev_latents`` (None: zeros): ``(prediction, latents)``. Every
        parameter is created here (Flax names them as if this were ``__call__``)."""
        b, h, w, _ = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(f"input is {h}x{w}, model image_size is {self.image_size}")
        p, fg, dl = self.patch_size, resolve_fast_dense(self.fast_dense), self.latent_dim
        n_tokens = (h // p) * (w // p)
        init = nn.initializers.truncated_normal(0.02)
        u = Dense(self.interface_dim, fast_grad=fg, name="patch_embed")(patchify(x, p))
        u = nn.LayerNorm(epsilon=1e-6, name="interface_ln")(u)
        u = u + self.param("interface_pos", init, (n_tokens, self.interface_dim))[None]

        learned = self.num_latents - 2  # plus the noise-level and class tokens
        z = jnp.broadcast_to(self.param("latent_init", init, (learned, dl)), (b, learned, dl))
        # pix2seq embeds the noise level with latent_dim/4 frequencies
        t_tok = TimestepEmbedder(dl, dl // 4, fast_grad=fg, name="t_embedder")(cond)
        y_tok = LabelEmbedder(self.num_classes, dl, name="y_embedder")(y)
        z = jnp.concatenate([z, t_tok[:, None], y_tok[:, None]], axis=1)
        # Latent self-conditioning: prev + MLP(LN(prev)), then a LayerNorm whose scale starts
        # at zero, added to every latent (the conditioning tokens included).
        if prev_latents is None:
            prev_latents = self.initial_carry(b)
        prev = prev_latents + Mlp(self.latent_mlp_ratio, fg, exact_gelu=True, name="prev_mlp")(
            nn.LayerNorm(epsilon=1e-6, name="prev_ln_in")(prev_latents)
        )
        z = z + nn.LayerNorm(epsilon=1e-6, scale_init=zeros, name="prev_ln")(prev)
        for i in range(self.num_blocks):
            z, u = RINBlock(
                self.block_depth, self.latent_heads, self.rw_heads, self.latent_mlp_ratio,
                self.interface_mlp_ratio, self.dropout, self.drop_path, fg, name=f"blocks_{i}",
            )(z, u, train)  # fmt: skip
        u = nn.LayerNorm(epsilon=1e-6, name="out_ln")(u)
        out = Dense(p * p * self.out_channels, fast_grad=fg, name="out")(u)  # Glorot, as official
        return unpatchify(out, p, h, w), z

    # The model protocol (jaxdiff.models.interface).
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
        """Latent self-conditioning for training (RIN paper §3.3), jit- and grad-safe.

        Pass 1 runs with zero previous latents; its latents go through `stop_gradient`. Each
        example keeps them with probability `self_cond_rate` (0 when not training; a
        Bernoulli draw per example, selected by `jnp.where`, no Python branching) and pass 2
        runs with them. Returns pass 2's output. ``key`` is split into the self-conditioning
        draw and the dropout key (folded with 1 for pass 1).
        """
        k_sc, k_drop = jax.random.split(key)
        rate = self.self_cond_rate if train else 0.0
        forward = lambda prev, rngs: self.apply(  # noqa: E731
            variables, x, cond, y, prev, train, rngs=rngs, method=self._forward
        )
        _, latents = forward(None, {"dropout": jax.random.fold_in(k_drop, 1)})
        latents = jax.lax.stop_gradient(latents)
        use = jax.random.bernoulli(k_sc, rate, (x.shape[0],))
        prev = jnp.where(use[:, None, None], latents, jnp.zeros_like(latents))
        out, _ = forward(prev, {"dropout": k_drop})
        return out

    def initial_carry(self, batch_size: int) -> jax.Array:
        """Sampling starts with no previous latents: zeros (B, num_latents, latent_dim)."""
        return jnp.zeros((batch_size, self.num_latents, self.latent_dim), jnp.float32)

    def sample_apply(
        self, variables: Variables, x: jax.Array, cond: jax.Array, y: jax.Array, carry: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """One sampling-step evaluation fed the previous step's latents: ``(out, latents)``.

        Carry the returned latents into the next step; with classifier-free guidance the
        conditional and null rows each keep their own (the carry has the doubled batch).
        """
        return self.apply(variables, x, cond, y, carry, False, method=self._forward)
