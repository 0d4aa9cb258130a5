"""A quality metric for the embedded digits data that runs in seconds on a CPU.

A small CNN classifier is trained deterministically (fixed seed, fixed data order) on the
digits train split at the run's resolution and cached as an `.npz`. A set of images is
scored by (a) the Fréchet distance between Gaussians fitted to the classifier's penultimate
features of the images and of the held-out test split (FID's recipe, Heusel et al. 2017,
with this classifier in place of Inception), and (b) when labels are given (class-conditional
samples), the classifier's accuracy at recognising the intended digit.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jaxdiff.data.digits import NUM_CLASSES, load_digits
from jaxdiff.evaluation import fid

CACHE_VERSION = 1
FEATURE_DIM = 64
TRAIN_STEPS = 300
BATCH_SIZE = 128
LEARNING_RATE = 2e-3
_EVAL_BATCH = 256


class DigitsClassifier(nn.Module):
    """Conv(16) → pool → Conv(32) → pool → Dense(64) = features → Dense(10).

    Inputs NHWC in [-1, 1]. The first convolution has stride max(1, H // 16) (kernel
    stride + 2), so every resolution is reduced to ≤16×16 and training cost stays bounded.
    Returns (features (B, 64) — the penultimate layer before its ReLU, logits (B, 10)).
    """

    feature_dim: int = FEATURE_DIM

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        stride = max(1, x.shape[1] // 16)
        x = nn.relu(nn.Conv(16, (stride + 2,) * 2, strides=stride, name="conv0")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(32, (3, 3), name="conv1")(x))
        if x.shape[1] >= 8:
            x = nn.avg_pool(x, (2, 2), (2, 2))
        features = nn.Dense(self.feature_dim, name="hidden")(x.reshape(x.shape[0], -1))
        logits = nn.Dense(NUM_CLASSES, name="head")(nn.relu(features))
        return features, logits


def _shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Augmentation: translate each image by up to 1/8 of its side (one native digit pixel).

    Pads with the background value −1 and crops at a random offset.
    """
    n, size = images.shape[0], images.shape[1]
    m = max(1, size // 8)
    padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)), constant_values=-1.0)
    dy, dx = rng.integers(0, 2 * m + 1, size=(2, n))
    return np.stack([padded[i, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(n)])


def _train_classifier(images: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """AdamW on softmax cross-entropy, `TRAIN_STEPS` shifted minibatches in a seeded order."""
    model = DigitsClassifier()
    params = model.init(jax.random.key(seed), jnp.asarray(images[:1]))["params"]
    tx = optax.adamw(optax.cosine_decay_schedule(LEARNING_RATE, TRAIN_STEPS), weight_decay=1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            _, logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(images)) for _ in range(_epochs(len(images)))])
    for i in range(TRAIN_STEPS):
        idx = order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
        params, opt_state = step(params, opt_state, _shift(images[idx], rng), labels[idx])
    return jax.device_get(params)


def _epochs(num_examples: int) -> int:
    """Passes over the data needed to draw TRAIN_STEPS full minibatches."""
    return -(-TRAIN_STEPS * BATCH_SIZE // num_examples)


def _cache_path(cache_dir: str, image_size: int, channels: int, seed: int) -> str:
    name = f"digits_classifier_v{CACHE_VERSION}_{image_size}px_{channels}ch_seed{seed}.npz"
    return os.path.join(cache_dir, name)


@dataclasses.dataclass(frozen=True)
class DigitsMetric:
    """Fréchet distance and conditional accuracy of images under a digits classifier.

    Build with `DigitsMetric.create(image_size, channels, cache_dir)`; then
    `score(images, labels=None) -> {"fd": float, "accuracy": float (if labels)}`.
    `test_accuracy` is the classifier's accuracy on the real held-out test split.
    """

    image_size: int
    channels: int
    params: Mapping
    ref_mu: np.ndarray
    ref_sigma: np.ndarray
    test_accuracy: float

    @classmethod
    def create(
        cls, image_size: int = 32, channels: int = 1, cache_dir: str | None = None, seed: int = 0
    ) -> DigitsMetric:
        """Load the classifier from `cache_dir` if cached there, else train (and cache) it."""
        path = None if cache_dir is None else _cache_path(cache_dir, image_size, channels, seed)
        if path is not None and os.path.exists(path):
            with np.load(path, allow_pickle=False) as f:
                params = traverse_util.unflatten_dict({k: f[k] for k in f.files}, sep="/")
        else:
            images, labels = load_digits(image_size, channels, split="train")
            params = _train_classifier(images, labels, seed)
            if path is not None:
                _save_params(path, params)
        test_images, test_labels = load_digits(image_size, channels, split="test")
        features, logits = _apply(params, test_images)
        mu, sigma = fid.compute_statistics(features)
        accuracy = float(np.mean(np.argmax(logits, axis=1) == test_labels))
        return cls(image_size, channels, params, mu, sigma, accuracy)

    def features_and_logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (N, 64) and logits (N, 10) of NHWC images in [-1, 1]."""
        images = np.asarray(images, np.float32)
        want = (self.image_size, self.image_size, self.channels)
        if images.ndim != 4 or images.shape[1:] != want:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, want))}), got {images.shape}"
            )
        return _apply(self.params, images)

    def score(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        """{"fd": Fréchet distance to the test split's features, "accuracy": if `labels`}."""
        features, logits = self.features_and_logits(images)
        if len(features) < 2:
            raise ValueError(f"need at least 2 images to score, got {len(features)}")
        mu, sigma = fid.compute_statistics(features)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few samples → singular Σ, handled by eps
            result = {"fd": fid.frechet_distance(mu, sigma, self.ref_mu, self.ref_sigma)}
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(images),):
                raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
            result["accuracy"] = float(np.mean(np.argmax(logits, axis=1) == labels))
        return result


@jax.jit
def _apply_batch(params: Mapping, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    return DigitsClassifier().apply({"params": params}, images)


def _apply(params: Mapping, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classifier on all images, in padded batches of 256 (one compiled shape)."""
    features, logits = [], []
    for start in range(0, len(images), _EVAL_BATCH):
        batch = images[start : start + _EVAL_BATCH]
        n = len(batch)
        batch = np.concatenate([batch, np.zeros((_EVAL_BATCH - n, *batch.shape[1:]), batch.dtype)])
        f, lg = _apply_batch(params, batch)
        features.append(np.asarray(f)[:n])
        logits.append(np.asarray(lg)[:n])
    return np.concatenate(features), np.concatenate(logits)


def _save_params(path: str, params: Mapping) -> None:
    """Write params as a flat `.npz` atomically (temp file, then rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in flat.items()})
    os.replace(tmp, path)
