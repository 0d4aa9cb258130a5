"""Recurrent Interface Networks (Jabri, Fleet & Chen 2022, arXiv:2212.11972) in Flax linen.

Patch tokens form the "interface" (learned positions); a smaller set of learned latents does
most of the compute. Each block reads (latents cross-attend to the interface), computes
(`block_depth` latent self-attention layers) and writes (the interface cross-attends to the
latents). The noise level and the class label enter as two extra latent tokens. Latent
self-conditioning: the previous pass's latents, through LN∘MLP, are added to the learned
initial latents (zeros when there is no previous pass).

Call: `model.apply(variables, x, cond, y, prev_latents=None, train=False, rngs=...)` returns
(out NHWC, latents (B, num_latents, latent_dim)). Training uses
`rin_self_conditioned_apply`; sampling carries the latents with `rin_sampling_apply`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.models import conditioning as cond_lib
from jaxdiff.models.dit import check_divides, check_positive
from jaxdiff.models.layers import (
    CrossAttention,
    Dense,
    LabelEmbedder,
    Mlp,
    ResidualDrop,
    SelfAttention,
    TimestepEmbedder,
    patchify,
    unpatchify,
    zeros,
)


class RINBlock(nn.Module):
    """read -> compute (depth × self-attention + MLP on latents) -> write."""

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

        def res(x, h, name):
            return x + ResidualDrop(self.dropout, self.drop_path, name=name)(h, det)

        ln = lambda name: nn.LayerNorm(epsilon=1e-6, name=name)
        # read: latents z (B, L, Dl) attend to the interface u (B, N, Du)
        h = CrossAttention(self.rw_heads, fg, name="read_attn")(
            ln("read_ln_z")(z), ln("read_ln_u")(u)
        )
        z = res(z, h, "read_drop_attn")
        h = Mlp(self.latent_mlp_ratio, fg, name="read_mlp")(ln("read_ln_mlp")(z))
        z = res(z, h, "read_drop_mlp")
        for i in range(self.depth):
            h = SelfAttention(self.latent_heads, fg, name=f"compute_attn_{i}")(
                ln(f"compute_ln_attn_{i}")(z)
            )
            z = res(z, h, f"compute_drop_attn_{i}")
            h = Mlp(self.latent_mlp_ratio, fg, name=f"compute_mlp_{i}")(
                ln(f"compute_ln_mlp_{i}")(z)
            )
            z = res(z, h, f"compute_drop_mlp_{i}")
        # write: the interface attends to the latents
        h = CrossAttention(self.rw_heads, fg, name="write_attn")(
            ln("write_ln_u")(u), ln("write_ln_z")(z)
        )
        u = res(u, h, "write_drop_attn")
        h = Mlp(self.interface_mlp_ratio, fg, name="write_mlp")(ln("write_ln_mlp")(u))
        return z, res(u, h, "write_drop_mlp")


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
    class_dropout_prob: float = 0.1
    self_cond_rate: float = 0.9
    conditioning: str = "logsnr"
    fast_dense: bool = True

    def __post_init__(self):
        for name in ("image_size", "in_channels", "patch_size", "num_blocks", "block_depth",
                     "num_latents", "latent_dim", "interface_dim", "latent_heads", "rw_heads",
                     "num_classes"):  # fmt: skip
            check_positive(name, getattr(self, name))
        check_divides("patch_size", self.patch_size, "image_size", self.image_size)
        check_divides("latent_heads", self.latent_heads, "latent_dim", self.latent_dim)
        check_divides("rw_heads", self.rw_heads, "latent_dim", self.latent_dim)
        check_divides("rw_heads", self.rw_heads, "interface_dim", self.interface_dim)
        for name in ("dropout", "drop_path", "class_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.self_cond_rate <= 1.0:
            raise ValueError(f"self_cond_rate must be in [0, 1], got {self.self_cond_rate}")
        cond_lib.get_cond_fn(self.conditioning)
        super().__post_init__()

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def initial_latents(self, batch_size: int) -> jax.Array:
        """The `prev_latents` meaning "no previous pass": zeros (B, num_latents, latent_dim)."""
        return jnp.zeros((batch_size, self.num_latents, self.latent_dim), jnp.float32)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        cond: jax.Array,
        y: jax.Array,
        prev_latents: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        b, h, w, _ = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(f"input is {h}x{w}, model image_size is {self.image_size}")
        p, fg, dl = self.patch_size, self.fast_dense, self.latent_dim
        n_tokens = (h // p) * (w // p)
        init = nn.initializers.normal(0.02)
        u = Dense(self.interface_dim, fast_grad=fg, name="patch_embed")(patchify(x, p))
        u = u + self.param("interface_pos", init, (n_tokens, self.interface_dim))[None]
        u = nn.LayerNorm(epsilon=1e-6, name="interface_ln")(u)

        z = jnp.broadcast_to(
            self.param("latent_init", init, (self.num_latents, dl)), (b, self.num_latents, dl)
        )
        if prev_latents is None:
            prev_latents = self.initial_latents(b)
        prev = Mlp(self.latent_mlp_ratio, fg, name="prev_mlp")(prev_latents)
        z = z + nn.LayerNorm(epsilon=1e-6, name="prev_ln")(prev)

        t_tok = TimestepEmbedder(dl, fast_grad=fg, name="t_embedder")(cond)
        y_tok = LabelEmbedder(self.num_classes, dl, name="y_embedder")(y)
        z = jnp.concatenate([t_tok[:, None], y_tok[:, None], z], axis=1)
        for i in range(self.num_blocks):
            z, u = RINBlock(
                self.block_depth, self.latent_heads, self.rw_heads, self.latent_mlp_ratio,
                self.interface_mlp_ratio, self.dropout, self.drop_path, fg, name=f"blocks_{i}",
            )(z, u, train)  # fmt: skip
        u = nn.LayerNorm(epsilon=1e-6, name="out_ln")(u)
        out = Dense(p * p * self.out_channels, kernel_init=zeros, fast_grad=fg, name="out")(u)
        return unpatchify(out, p, h, w), z[:, 2:]


def rin_self_conditioned_apply(
    model: RIN,
    variables,
    x: jax.Array,
    cond: jax.Array,
    y: jax.Array,
    key: jax.Array,
    rate: float = 0.9,
    train: bool = True,
    rngs: dict[str, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Latent self-conditioning for training (RIN paper §3.3), jit- and grad-safe.

    Pass 1 runs with zero previous latents; its latents go through `stop_gradient`. Each
    example keeps them with probability `rate` (a Bernoulli draw per example from `key`,
    selected by `jnp.where`, no Python branching) and pass 2 runs with them. Returns pass 2's
    (out, latents). `rngs` (e.g. {"dropout": k}) are folded with 1 for pass 1.
    """
    rngs1 = None if rngs is None else {n: jax.random.fold_in(k, 1) for n, k in rngs.items()}
    _, latents = model.apply(variables, x, cond, y, None, train=train, rngs=rngs1)
    latents = jax.lax.stop_gradient(latents)
    use = jax.random.bernoulli(key, rate, (x.shape[0],))
    prev = jnp.where(use[:, None, None], latents, jnp.zeros_like(latents))
    return model.apply(variables, x, cond, y, prev, train=train, rngs=rngs)


def rin_initial_latents(model: RIN, batch_size: int) -> jax.Array:
    """Latents to start sampling from: zeros (B, num_latents, latent_dim)."""
    return model.initial_latents(batch_size)


def rin_sampling_apply(
    model: RIN, variables, x: jax.Array, cond: jax.Array, y: jax.Array, latents: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One sampling-step evaluation: (out, new_latents) = model(x, cond, y, prev=latents).

    Carry new_latents into the next step (start from `rin_initial_latents`); with
    classifier-free guidance keep one latent state per branch (conditional / null label).
    """
    return model.apply(variables, x, cond, y, latents, train=False)
