"""Flax linen port of the FID Inception-v3 network (the variant pytorch-fid uses).

The network is TensorFlow's `inception-2015-12-05` graph as ported by pytorch-fid
(`pt_inception-2015-12-05-*.pth`): torchvision's Inception-v3 layout with four patched
blocks (Heusel et al. 2017, arXiv:1706.08500; Szegedy et al. 2016, arXiv:1512.00567):

- `Mixed_5b/5c/5d` (A) and `Mixed_6b..6e` (C) and `Mixed_7b` (E_1): the 3×3 average pool of
  the pool branch ignores the zero padding (TensorFlow's `count_include_pad=False`);
- `Mixed_7c` (E_2): the pool branch uses a 3×3 *max* pool instead of an average pool.

Every `conv + BatchNorm(eps=1e-3) + ReLU` unit is stored with the BatchNorm folded into the
convolution (see `inception_convert`), so a unit is `relu(conv(x, W') + b')`.

Inputs are NHWC images in [0, 1]; they are resized to 299×299 with bilinear interpolation
using PyTorch's `F.interpolate(..., align_corners=False)` convention (half-pixel centres, no
antialiasing), scaled to [-1, 1], and mapped to the 2048-d final average-pool features and
the 1008 logits of the classifier head.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008
BN_EPS = 1e-3

PrecisionLike = str | jax.lax.Precision | None


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Interpolation matrix M (out_size, in_size) of 1-D bilinear resizing, `y = M @ x`.

    PyTorch's `align_corners=False` convention: the source coordinate of output index o is
    `s = max((o + ½)·in/out − ½, 0)`, and y[o] = (1−f)·x[⌊s⌋] + f·x[min(⌊s⌋+1, in−1)] with
    f = s − ⌊s⌋. No antialiasing when downsampling (as `F.interpolate(mode="bilinear")`).
    """
    out_idx = np.arange(out_size, dtype=np.float64)
    src = np.maximum((out_idx + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(matrix, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), hi), frac)
    return matrix


def resize_bilinear(
    images: jax.Array, size: tuple[int, int], precision: PrecisionLike = "highest"
) -> jax.Array:
    """Resize NHWC `images` (B, H, W, C) to (B, size[0], size[1], C), PyTorch's bilinear.

    Separable: rows then columns with `bilinear_matrix`; an identity when the size is equal.
    """
    _, height, width, _ = images.shape
    if (height, width) == tuple(size):
        return images
    rows = jnp.asarray(bilinear_matrix(height, size[0]), images.dtype)
    cols = jnp.asarray(bilinear_matrix(width, size[1]), images.dtype)
    out = jnp.einsum("oh,bhwc->bowc", rows, images, precision=precision)
    return jnp.einsum("pw,bowc->bopc", cols, out, precision=precision)


def _pool_pad(x: jax.Array, kind: str) -> jax.Array:
    """3×3 stride-1 pool with 1 pixel of padding: 'avg' ignores the padding, 'max' pads −∞."""
    pad = ((1, 1), (1, 1))
    if kind == "avg":
        return nn.avg_pool(x, (3, 3), (1, 1), padding=pad, count_include_pad=False)
    if kind == "max":
        return nn.max_pool(x, (3, 3), (1, 1), padding=pad)
    raise ValueError(f"pool must be 'avg' or 'max', got {kind!r}")


def _max_pool_s2(x: jax.Array) -> jax.Array:
    """3×3 max pool with stride 2 and no padding (torch `max_pool2d(x, 3, stride=2)`)."""
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class BasicConv(nn.Module):
    """Convolution with folded BatchNorm and ReLU: `relu(conv(x, W') + b')`.

    `padding` is symmetric (pad_h, pad_w) like torch's `Conv2d(padding=...)`.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        conv = nn.Conv(
            self.features,
            self.kernel_size,
            self.strides,
            padding=((ph, ph), (pw, pw)),
            use_bias=True,
            precision=self.precision,
            name="conv",
        )
        return nn.relu(conv(x))


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d (FIDInceptionA): 1×1, 5×5, double 3×3 and avg-pool branches."""

    pool_features: int
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_pool_pad(x, "avg"))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35→17 with stride-2 3×3 convs and a max pool."""

    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (FIDInceptionC): factorised 7×7 branches and an avg-pool branch."""

    channels_7x7: int
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        c7 = self.channels_7x7
        row, col = (
            dict(kernel_size=(1, 7), padding=(0, 3)),
            dict(kernel_size=(7, 1), padding=(3, 0)),
        )
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, **row, name="branch7x7_2")(b7)
        b7 = conv(192, **col, name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, **col, name="branch7x7dbl_2")(bd)
        bd = conv(c7, **row, name="branch7x7dbl_3")(bd)
        bd = conv(c7, **col, name="branch7x7dbl_4")(bd)
        bd = conv(192, **row, name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_pool_pad(x, "avg"))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17→8."""

    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (FIDInceptionE_1, pool='avg') and Mixed_7c (FIDInceptionE_2, pool='max')."""

    pool: str = "avg"
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        row, col = (
            dict(kernel_size=(1, 3), padding=(0, 1)),
            dict(kernel_size=(3, 1), padding=(1, 0)),
        )
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = [conv(384, **row, name="branch3x3_2a")(b3), conv(384, **col, name="branch3x3_2b")(b3)]
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = [
            conv(384, **row, name="branch3x3dbl_3a")(bd),
            conv(384, **col, name="branch3x3dbl_3b")(bd),
        ]
        bp = conv(192, (1, 1), name="branch_pool")(_pool_pad(x, self.pool))
        return jnp.concatenate([b1, *b3, *bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """FID Inception-v3: NHWC images in [0, 1] → (pool features (B, 2048), logits (B, 1008)).

    `resize_input` resizes to 299×299 (PyTorch bilinear, see `resize_bilinear`); the input is
    then scaled by `2x − 1`. `precision` applies to every convolution and matmul ("highest"
    keeps float32 accuracy on GPUs/TPUs, where the default uses TF32/bfloat16 passes).
    """

    resize_input: bool = True
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = images.astype(jnp.float32)
        if self.resize_input:
            x = resize_bilinear(x, (INCEPTION_SIZE, INCEPTION_SIZE), self.precision)
        x = 2.0 * x - 1.0
        conv = functools.partial(BasicConv, precision=self.precision)
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_s2(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_s2(x)
        x = self._mixed_blocks(x)
        pool = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_LOGITS, precision=self.precision, name="fc")(pool)
        return pool, logits

    def _mixed_blocks(self, x: jax.Array) -> jax.Array:
        """Mixed_5b … Mixed_7c (35×35×192 → 8×8×2048 at 299 input)."""
        p = self.precision
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, precision=p, name=name)(x)
        x = InceptionB(precision=p, name="Mixed_6a")(x)
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = InceptionC(c7, precision=p, name=name)(x)
        x = InceptionD(precision=p, name="Mixed_7a")(x)
        x = InceptionE("avg", precision=p, name="Mixed_7b")(x)
        return InceptionE("max", precision=p, name="Mixed_7c")(x)


def param_shapes(model: FIDInceptionV3 | None = None) -> dict:
    """The port's parameter tree as `jax.ShapeDtypeStruct`s (no computation, no memory)."""
    model = FIDInceptionV3() if model is None else model
    dummy = jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), dummy)["params"]
