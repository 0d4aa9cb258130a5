"""The embedded default dataset: scikit-learn's bundled 8×8 handwritten digits.

1797 greyscale images of the digits 0–9 (UCI "Optical Recognition of Handwritten Digits",
16 grey levels), shipped inside scikit-learn, so nothing is downloaded. They are split once
into train/test by a fixed-seed permutation (85/15) and resized with bilinear interpolation
to any resolution, so resolution sweeps run on a CPU.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

SPLITS = ("train", "test", "all")
NUM_CLASSES = 10
NUM_EXAMPLES = 1797
TEST_FRACTION = 0.15
_SPLIT_SEED = 0  # the permutation seed; changing it changes every published digits number


def split_indices(split: str) -> np.ndarray:
    """Indices into scikit-learn's digits array for `split` ("train", "test" or "all").

    A permutation of the 1797 examples with a fixed seed; its first round(0.15·1797) = 270
    entries are the test split and the remaining 1527 the train split (sorted within a split,
    so the split is a set, not an order).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}; allowed: {list(SPLITS)}")
    if split == "all":
        return np.arange(NUM_EXAMPLES)
    perm = np.random.default_rng(_SPLIT_SEED).permutation(NUM_EXAMPLES)
    num_test = int(round(TEST_FRACTION * NUM_EXAMPLES))
    chosen = perm[:num_test] if split == "test" else perm[num_test:]
    return np.sort(chosen)


def resize_bilinear(images: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinear resize of float32 images (N, h, w) to (N, image_size, image_size).

    PIL's bilinear filter with half-pixel centres; when shrinking, its support widens with the
    scale factor (antialiased). Outputs are convex combinations of inputs, so the value range
    is preserved. The identity when the size is unchanged.
    """
    if images.shape[1:] == (image_size, image_size):
        return images.astype(np.float32)
    out = [
        np.asarray(
            Image.fromarray(im.astype(np.float32), mode="F").resize(
                (image_size, image_size), Image.Resampling.BILINEAR
            )
        )
        for im in images
    ]
    return np.stack(out).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _load_cached(image_size: int, channels: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    idx = split_indices(split)
    raw = bunch.images[idx].astype(np.float32)  # (N, 8, 8) in [0, 16]
    images = resize_bilinear(raw / 8.0 - 1.0, image_size)  # [0, 16] -> [-1, 1]
    images = np.clip(images, -1.0, 1.0)[..., None]
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    labels = bunch.target[idx].astype(np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits(
    image_size: int = 32, channels: int = 1, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Loads the digits as (images, labels).

    Args:
      image_size: output side length (8 is the native size; 16/32/64 are the usual choices).
      channels: 1 (grey) or 3 (grey replicated to RGB).
      split: "train" (1527 examples), "test" (270) or "all" (1797).

    Returns:
      images: float32 (N, image_size, image_size, channels), values in [-1, 1]
        (ink is +1, background −1), NHWC.
      labels: int32 (N,), the digit 0..9.

    Deterministic: the same arguments always give the same arrays (fresh copies).
    """
    if not isinstance(image_size, int | np.integer) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    images, labels = _load_cached(int(image_size), int(channels), split)
    return images.copy(), labels.copy()
