"""A quality metric for the embedded digits data that runs in seconds on a CPU.

A small CNN classifier (`classifier_metric.SmallClassifier`, widths 16/32, 64 features) is
trained deterministically on the digits train split at the run's resolution (300 AdamW steps
of 128 shifted digits) and cached as an `.npz`. A set of images is scored by (a) the Fréchet
distance between Gaussians fitted to the classifier's penultimate features of the images and
of the held-out test split, (b) when labels are given (class-conditional samples), the
classifier's accuracy at recognising the intended digit, and (c) "fd_real"/"accuracy_real":
the same on real train digits at the same sample count (`ClassifierMetric.real_floor`).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from jaxdiff.data.digits import NUM_CLASSES, load_digits
from jaxdiff.evaluation.classifier_metric import (
    ClassifierMetric,
    SmallClassifier,
    TrainSettings,
    load_or_train,
    train_classifier,
)

CACHE_VERSION = 1
FEATURE_DIM = 64
TRAIN_STEPS = 300
BATCH_SIZE = 128
LEARNING_RATE = 2e-3


def digits_classifier() -> SmallClassifier:
    """Conv(16) → pool → Conv(32) → pool → Dense(64) = features → Dense(10)."""
    return SmallClassifier(NUM_CLASSES, widths=(16, 32), feature_dim=FEATURE_DIM)


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
    settings = TrainSettings(TRAIN_STEPS, BATCH_SIZE, LEARNING_RATE)
    return train_classifier(digits_classifier(), images, labels, seed, settings, _shift)


def _cache_path(cache_dir: str, image_size: int, channels: int, seed: int) -> str:
    name = f"digits_classifier_v{CACHE_VERSION}_{image_size}px_{channels}ch_seed{seed}.npz"
    return os.path.join(cache_dir, name)


@dataclasses.dataclass(frozen=True)
class DigitsMetric(ClassifierMetric):
    """Fréchet distance and conditional accuracy of images under a digits classifier.

    Build with `DigitsMetric.create(image_size, channels, cache_dir)`; then
    `score(images, labels=None) -> {"fd", "fd_real", and with labels "accuracy",
    "accuracy_real"}` (floats). `test_accuracy` is the classifier's accuracy on the real
    held-out test split.
    """

    @classmethod
    def create(
        cls, image_size: int = 32, channels: int = 1, cache_dir: str | None = None, seed: int = 0
    ) -> DigitsMetric:
        """Load the classifier from `cache_dir` if cached there, else train (and cache) it."""
        path = None if cache_dir is None else _cache_path(cache_dir, image_size, channels, seed)
        train = functools.partial(_train_then, image_size, channels, seed)
        params = load_or_train(path, train)
        model = digits_classifier()
        test_images, test_labels = load_digits(image_size, channels, split="test")
        mu, sigma, accuracy = cls.reference(model, params, test_images, test_labels)
        shape = (image_size, image_size, channels)
        prefix = None if path is None else path[: -len(".npz")]
        return cls(model, params, shape, mu, sigma, accuracy, prefix)

    @property
    def real_labels(self) -> np.ndarray:
        return _train_split(self.image_size, self.channels)[1]

    def real_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, labels = _train_split(self.image_size, self.channels)
        return images[indices], labels[indices]


def _train_then(image_size: int, channels: int, seed: int) -> dict:
    images, labels = load_digits(image_size, channels, split="train")
    return _train_classifier(images, labels, seed)


@functools.lru_cache(maxsize=4)
def _train_split(image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    return load_digits(image_size, channels, split="train")
