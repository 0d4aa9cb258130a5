"""The photo_crops quality metric: real crops score far better than blurred crops or noise."""

import numpy as np
import pytest
import scipy.ndimage

from jaxdiff.data import photo_crops
from jaxdiff.evaluation import classifier_metric, photo_metric

SIZE = 16  # the smallest study resolution keeps the test to seconds


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("photo_cache")


@pytest.fixture(scope="module")
def metric(cache_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(photo_metric, "TRAIN_STEPS", 120)  # a weaker, faster classifier
        mp.setattr(classifier_metric, "FLOOR_DRAWS", 2)
        yield photo_metric.PhotoMetric.create(SIZE, 3, str(cache_dir))


@pytest.fixture(scope="module")
def real():
    """256 class-balanced train crops: real images the reference (test split) never saw."""
    source = photo_crops.PhotoCrops(SIZE, 3, "train")
    idx = classifier_metric.balanced_draw(source.labels, 256, np.random.default_rng(7))
    return source.batch(idx)


def test_classifier_tells_the_photos_apart(metric):
    assert metric.test_accuracy > 0.8
    assert metric.image_shape == (SIZE, SIZE, 3)


def test_real_crops_beat_blur_and_noise(metric, real):
    images, labels = real
    scores = metric.score(images, labels)
    levels = [f"swd_{r}" for r in (SIZE,)]
    keys = {"fd", "accuracy", "swd", *levels}
    assert set(scores) == keys | {f"{k}_real" for k in keys}
    blurred = scipy.ndimage.gaussian_filter(images, (0, 1, 1, 0)).astype(np.float32)
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
    blur_scores, noise_scores = metric.score(blurred, labels), metric.score(noise, labels)
    for key in ("fd", "swd"):
        assert scores[key] < 0.5 * blur_scores[key] < 0.5 * noise_scores[key], key
    assert scores["accuracy"] > 0.8 and noise_scores["accuracy"] < 0.25
    # The floor is real data at the same count: far from noise, close to the real set.
    assert scores["fd_real"] < 0.2 * noise_scores["fd"]
    assert scores["swd_real"] < 2 * scores["swd"] and scores["accuracy_real"] > 0.8


def test_cached_classifier_and_floor_reload(metric, cache_dir, real, monkeypatch):
    images, labels = real
    first = metric.score(images, labels)

    def fail(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(photo_metric, "_train_classifier", fail)
    monkeypatch.setattr(classifier_metric.ClassifierMetric, "_compute_floor", fail)
    again = photo_metric.PhotoMetric.create(SIZE, 3, str(cache_dir))
    assert again.score(images, labels) == first
    assert again.test_accuracy == metric.test_accuracy


def test_bad_inputs(metric, real):
    images, labels = real
    with pytest.raises(ValueError, match="shape"):
        metric.score(images[:, :8, :8])
    with pytest.raises(ValueError, match="shape"):
        metric.score(images[..., :1])
    with pytest.raises(ValueError, match="labels"):
        metric.score(images, labels[:3])
