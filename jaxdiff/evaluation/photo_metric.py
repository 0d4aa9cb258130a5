"""Quality metric for the embedded photo_crops data: classifier FD, accuracy, and SWD.

A small CNN (`classifier_metric.SmallClassifier`, widths 32/64, 64 features) is trained
deterministically to tell the 16 photos apart on the train split's crops at the run's
resolution and cached as an `.npz`. A set of images is scored by

- "fd": the Fréchet distance of its classifier features to those of the 2048 test crops;
- "accuracy": with labels, the classifier's accuracy at recognising the intended photo;
- "swd" (mean over levels) and "swd_<res>" per Laplacian-pyramid level: the sliced
  Wasserstein distance ×10³ of Karras et al. 2018 (`jaxdiff.evaluation.swd`) to the test
  crops (reference: 16 patches per test crop; scored set: 128 per image), which needs no
  trained weights;
- every key again with "_real": the same metric on real train crops at the same sample count
  (`ClassifierMetric.real_floor`).

Sample-size noise, measured on real train crops (8 class-balanced draws, mean ± sd). The
classifier's feature covariance is dominated by one direction, so the ‖Δμ‖² part of fd is
nearly a one-degree-of-freedom χ² of mean ≈ Tr Σ / n: at n = 500, fd 18.6 ± 8.6 (16 px),
26 ± 11 (32 px), 33 ± 15 (64 px); at n = 2000, 3.5 ± 2.2, 5.2 ± 3.0, 6.1 ± 3.3. SWD is
steadier: 20.8 ± 3.3, 16.8 ± 2.0, 15.2 ± 1.5 at n = 500 and 13.2 ± 1.8, 11.2 ± 1.1,
10.8 ± 0.7 at n = 2000 (its finest levels vary least). Compare runs by fd with ≥ 2000
samples, or by swd.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from jaxdiff.data import photo_crops
from jaxdiff.evaluation import swd as swd_lib
from jaxdiff.evaluation.classifier_metric import (
    ClassifierMetric,
    SmallClassifier,
    TrainSettings,
    apply_classifier,
    load_or_train,
    reference_statistics,
    train_classifier,
)

CACHE_VERSION = 1
WIDTHS = (32, 64)
FEATURE_DIM = 64
TRAIN_STEPS = 400
BATCH_SIZE = 128
LEARNING_RATE = 2e-3
SWD_REFERENCE_PATCHES = 16
_CHUNK = swd_lib.CHUNK


def photo_classifier() -> SmallClassifier:
    """Conv(32) → pool → Conv(64) → pool → Dense(64) = features → Dense(16)."""
    return SmallClassifier(photo_crops.NUM_CLASSES, widths=WIDTHS, feature_dim=FEATURE_DIM)


class _LazyImages:
    """`images[idx]` of a PhotoCrops source, rendered on demand (never all in memory)."""

    def __init__(self, source: photo_crops.PhotoCrops):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key) -> np.ndarray:
        return self.source.batch(np.arange(len(self.source))[key])[0]


def _train_classifier(source: photo_crops.PhotoCrops, seed: int) -> dict:
    """AdamW on softmax cross-entropy, `TRAIN_STEPS` minibatches of train crops."""
    settings = TrainSettings(TRAIN_STEPS, BATCH_SIZE, LEARNING_RATE)
    images = _LazyImages(source)
    return train_classifier(photo_classifier(), images, source.labels, seed, settings)


def _cache_path(cache_dir: str, image_size: int, channels: int, fov: int, seed: int) -> str:
    name = f"photo_classifier_v{CACHE_VERSION}_{image_size}px_{channels}ch_fov{fov}_seed{seed}"
    return os.path.join(cache_dir, f"{name}.npz")


def _chunks(source: photo_crops.PhotoCrops):
    for start in range(0, len(source), _CHUNK):
        yield source.batch(np.arange(start, min(start + _CHUNK, len(source))))[0]


@dataclasses.dataclass(frozen=True)
class PhotoMetric(ClassifierMetric):
    """FD, conditional accuracy and SWD of images against the photo_crops test split.

    Build with `PhotoMetric.create(image_size, channels, cache_dir)`; then
    `score(images, labels=None) -> dict` of floats (see the module doc).
    """

    field_of_view: int = photo_crops.FIELD_OF_VIEW
    swd_reference: swd_lib.SWDReference | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def create(
        cls,
        image_size: int = 32,
        channels: int = 3,
        cache_dir: str | None = None,
        seed: int = 0,
        field_of_view: int = photo_crops.FIELD_OF_VIEW,
    ) -> PhotoMetric:
        """Load the classifier from `cache_dir` if cached there, else train (and cache) it."""
        train = photo_crops.PhotoCrops(image_size, channels, "train", 0, field_of_view)
        test = photo_crops.PhotoCrops(image_size, channels, "test", 0, field_of_view)
        path = None
        if cache_dir is not None:
            path = _cache_path(cache_dir, image_size, channels, field_of_view, seed)
        params = load_or_train(path, functools.partial(_train_classifier, train, seed))
        model = photo_classifier()
        outputs = [apply_classifier(model, params, chunk) for chunk in _chunks(test)]
        features, logits = (np.concatenate(parts) for parts in zip(*outputs, strict=True))
        mu, sigma, accuracy = reference_statistics(features, logits, test.labels)
        reference = swd_lib.SWDReference(_chunks(test), patches_per_image=SWD_REFERENCE_PATCHES)
        shape = (image_size, image_size, channels)
        swd_tag = f"swd{SWD_REFERENCE_PATCHES}-{swd_lib.PATCHES_PER_IMAGE}-{swd_lib.NUM_DIRECTIONS}"
        prefix = None if path is None else f"{path[: -len('.npz')]}_{swd_tag}"
        return cls(model, params, shape, mu, sigma, accuracy, prefix, field_of_view, reference)

    @functools.cached_property
    def _train_source(self) -> photo_crops.PhotoCrops:
        size, _, channels = self.image_shape
        return photo_crops.PhotoCrops(size, channels, "train", 0, self.field_of_view)

    @property
    def real_labels(self) -> np.ndarray:
        return self._train_source.labels

    def real_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._train_source.batch(indices)

    def sample_score(self, images: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
        """Classifier "fd" (and "accuracy" with labels), "swd" and "swd_<res>"."""
        result = super().sample_score(images, labels)
        if self.swd_reference is not None:
            levels = self.swd_reference.distance(np.asarray(images, np.float32))
            result["swd"] = float(np.mean(list(levels.values())))
            result.update({f"swd_{r}": v for r, v in levels.items()})
        return result
