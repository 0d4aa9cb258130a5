"""Quality metrics built on a small classifier trained once per dataset (digits, photo_crops).

A small CNN is trained deterministically (fixed seed, fixed data order) on a dataset's train
split at the run's resolution and cached as an `.npz`. A set of images is scored by

- "fd": the Fréchet distance ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) between Gaussians fitted to
  the classifier's penultimate features of the images and of the held-out test split (FID's
  recipe, Heusel et al. 2017, arXiv:1706.08500, with this classifier in place of Inception);
- "accuracy": when labels are given (class-conditional samples), the fraction the classifier
  assigns to the intended class;
- and the same keys with the suffix "_real": the real-data floor, i.e. the same metric on
  REAL train-split images at the same sample count n, averaged over `FLOOR_DRAWS` random
  class-balanced subsets (a finite set of real images does not score fd = 0: the estimator's
  bias at n is what a sample set should be compared with; `real_floor` also gives each
  key's standard deviation over the subsets as "<key>_sd"). Floors are cached in memory and
  in the cache directory, so they cost nothing after the first time.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jaxdiff.evaluation import fid

FLOOR_DRAWS = 8
FLOOR_VERSION = 3
_FLOOR_SEED = 0x5EA1
_EVAL_BATCH = 256

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class SmallClassifier(nn.Module):
    """Conv(w₀) → pool → Conv(w₁) → pool → Dense(feature_dim) = features → Dense(classes).

    Inputs NHWC in [-1, 1]. The first convolution has stride max(1, H // 16) (kernel
    stride + 2), so every resolution is reduced to ≤16×16 and training cost stays bounded.
    Returns (features (B, feature_dim) — the penultimate layer before its ReLU, logits).
    """

    num_classes: int
    widths: tuple[int, int] = (16, 32)
    feature_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        stride = max(1, x.shape[1] // 16)
        conv0 = nn.Conv(self.widths[0], (stride + 2,) * 2, strides=stride, name="conv0")
        x = nn.avg_pool(nn.relu(conv0(x)), (2, 2), (2, 2))
        x = nn.relu(nn.Conv(self.widths[1], (3, 3), name="conv1")(x))
        if x.shape[1] >= 8:
            x = nn.avg_pool(x, (2, 2), (2, 2))
        features = nn.Dense(self.feature_dim, name="hidden")(x.reshape(x.shape[0], -1))
        logits = nn.Dense(self.num_classes, name="head")(nn.relu(features))
        return features, logits


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """AdamW (cosine-decayed learning rate) on softmax cross-entropy for `steps` minibatches."""

    steps: int
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-3


def train_classifier(
    model: SmallClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    settings: TrainSettings,
    augment: Augment | None = None,
) -> dict:
    """Params after `settings.steps` steps on `augment(minibatch, rng)` in a seeded order.

    The order is a concatenation of permutations from `np.random.default_rng(seed)`, which
    also drives `augment`; the init key is `jax.random.key(seed)`. Same inputs, same params.
    """
    params = model.init(jax.random.key(seed), jnp.asarray(images[:1]))["params"]
    schedule = optax.cosine_decay_schedule(settings.learning_rate, settings.steps)
    tx = optax.adamw(schedule, weight_decay=settings.weight_decay)
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
    b = settings.batch_size
    epochs = -(-settings.steps * b // len(images))
    order = np.concatenate([rng.permutation(len(images)) for _ in range(epochs)])
    for i in range(settings.steps):
        idx = order[i * b : (i + 1) * b]
        x = images[idx] if augment is None else augment(images[idx], rng)
        params, opt_state = step(params, opt_state, x, labels[idx])
    return jax.device_get(params)


@functools.partial(jax.jit, static_argnums=0)
def _apply_batch(model: SmallClassifier, params: Mapping, images: jax.Array):
    return model.apply({"params": params}, images)


def apply_classifier(
    model: SmallClassifier, params: Mapping, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(features, logits) of all images, in padded batches of 256 (one compiled shape)."""
    features, logits = [], []
    for start in range(0, len(images), _EVAL_BATCH):
        batch = images[start : start + _EVAL_BATCH]
        n = len(batch)
        batch = np.concatenate([batch, np.zeros((_EVAL_BATCH - n, *batch.shape[1:]), batch.dtype)])
        f, lg = _apply_batch(model, params, batch)
        features.append(np.asarray(f)[:n])
        logits.append(np.asarray(lg)[:n])
    return np.concatenate(features), np.concatenate(logits)


def save_params(path: str, params: Mapping) -> None:
    """Write params as a flat `.npz` atomically (temp file, then rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in flat.items()})
    os.replace(tmp, path)


def load_or_train(path: str | None, train: Callable[[], Mapping]) -> Mapping:
    """Params from the `.npz` at `path` if it exists, else `train()` (saved to `path`)."""
    if path is not None and os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            return traverse_util.unflatten_dict({k: f[k] for k in f.files}, sep="/")
    params = train()
    if path is not None:
        save_params(path, params)
    return params


def reference_statistics(
    features: np.ndarray, logits: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """(μ (D,), Σ (D, D)) of `features` and the accuracy of argmax `logits` on `labels`."""
    mu, sigma = fid.compute_statistics(features)
    return mu, sigma, float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def balanced_draw(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of n examples whose labels are those of i mod C for i < n (C = max label + 1).

    Within a class the examples are drawn without replacement (with replacement only if the
    class has fewer examples than asked for), in the order of i.
    """
    labels = np.asarray(labels)
    wanted = np.arange(n) % (int(labels.max()) + 1)
    indices = np.empty(n, np.int64)
    for c in np.unique(wanted):
        pool = np.flatnonzero(labels == c)
        slots = np.flatnonzero(wanted == c)
        if len(pool) == 0:
            raise ValueError(f"no real example of class {c} to draw")
        indices[slots] = rng.choice(pool, size=len(slots), replace=len(slots) > len(pool))
    return indices


def _write_json(path: str, value: Mapping) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(dict(value), f, indent=1, sort_keys=True)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class ClassifierMetric(abc.ABC):
    """FD and conditional accuracy under a trained `SmallClassifier`, with real-data floors.

    Subclasses give the real train split through `real_labels` and `real_batch(indices)`, and
    may add metrics by overriding `sample_score` (keys without the "_real" suffix).
    `test_accuracy` is the classifier's accuracy on the held-out test split.
    """

    model: SmallClassifier
    params: Mapping
    image_shape: tuple[int, int, int]
    ref_mu: np.ndarray
    ref_sigma: np.ndarray
    test_accuracy: float
    cache_prefix: str | None
    _floors: dict = dataclasses.field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def image_size(self) -> int:
        return self.image_shape[0]

    @property
    def channels(self) -> int:
        return self.image_shape[2]

    @staticmethod
    def reference(
        model: SmallClassifier, params: Mapping, images: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """(μ, Σ) of the classifier features of `images` and the accuracy on `labels`."""
        return reference_statistics(*apply_classifier(model, params, images), labels)

    @property
    @abc.abstractmethod
    def real_labels(self) -> np.ndarray:
        """(M,) labels of the real train-split examples the floor draws from."""

    @abc.abstractmethod
    def real_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of the real train-split examples at `indices`."""

    def features_and_logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (N, D) and logits (N, classes) of NHWC images in [-1, 1]."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != tuple(self.image_shape):
            want = ", ".join(map(str, self.image_shape))
            raise ValueError(f"images must have shape (N, {want}), got {images.shape}")
        return apply_classifier(self.model, self.params, images)

    def sample_score(self, images: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
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

    def score(self, images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        """`sample_score(images, labels)` plus each key's real-data floor `<key>_real`."""
        result = self.sample_score(images, labels)
        floor = self.real_floor(len(images))
        result.update({f"{k}_real": floor[k] for k in list(result)})
        return result

    def real_floor(self, n: int) -> dict[str, float]:
        """Mean of `sample_score` over FLOOR_DRAWS random sets of min(n, M) real images.

        Keys: those of `sample_score` (means) and "<key>_sd" (standard deviations). Each
        set has the class make-up of the samples the trainer scores (labels i mod classes,
        i < n; `balanced_draw`), so the floor is the score of a perfect sampler. Cached in
        memory and as JSON next to the classifier (keyed by n and a digest of the reference
        statistics, so a retrained classifier never reads a stale floor).
        """
        n = min(int(n), len(self.real_labels))
        if n in self._floors:
            return self._floors[n]
        path = None
        if self.cache_prefix is not None:
            digest = hashlib.sha1(np.asarray(self.ref_mu, np.float64).tobytes()).hexdigest()[:10]
            path = f"{self.cache_prefix}_floor_v{FLOOR_VERSION}_{digest}_n{n}.json"
        if path is not None and os.path.exists(path):
            with open(path) as f:
                floor = {k: float(v) for k, v in json.load(f).items()}
        else:
            floor = self._compute_floor(n)
            if path is not None:
                _write_json(path, floor)
        self._floors[n] = floor
        return floor

    def _compute_floor(self, n: int) -> dict[str, float]:
        draws = []
        for d in range(FLOOR_DRAWS):
            rng = np.random.default_rng((_FLOOR_SEED, d))
            images, labels = self.real_batch(balanced_draw(self.real_labels, n, rng))
            draws.append(self.sample_score(images, labels))
        floor = {k: float(np.mean([s[k] for s in draws])) for k in draws[0]}
        floor.update({f"{k}_sd": float(np.std([s[k] for s in draws])) for k in draws[0]})
        return floor
