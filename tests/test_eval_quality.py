"""The quality-metric registry: every dataset's metric scores real data far above noise."""

import ml_collections
import numpy as np
import pytest
from tiny_config import data_fields

from jaxdiff.data import make_source
from jaxdiff.evaluation import (
    classifier_metric,
    digits_metric,
    photo_metric,
    quality,
)

CASES = {
    "digits": (dict(image_size=8, channels=1, num_classes=10), digits_metric.DigitsMetric),
    "photo_crops": (dict(image_size=16, channels=3, num_classes=16), photo_metric.PhotoMetric),
}


@pytest.fixture(autouse=True)
def fast_metrics(monkeypatch):
    monkeypatch.setattr(digits_metric, "TRAIN_STEPS", 60)
    monkeypatch.setattr(photo_metric, "TRAIN_STEPS", 60)
    monkeypatch.setattr(classifier_metric, "FLOOR_DRAWS", 1)
    quality._cached.cache_clear()
    yield
    quality._cached.cache_clear()


def test_every_dataset_with_a_metric_is_covered():
    assert set(CASES) == set(quality.QUALITY_METRICS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_metric_per_dataset(name, tmp_path):
    fields, cls = CASES[name]
    cfg = ml_collections.ConfigDict(data_fields(name=name, batch_size=8, **fields))
    metric = quality.get_quality_metric(cfg, str(tmp_path))
    assert isinstance(metric, cls)
    assert quality.get_quality_metric(cfg, str(tmp_path)) is metric  # built once
    source = make_source(cfg, "train")
    examples = [source[i] for i in range(0, 1000, 5)]
    images = np.stack([e["image"] for e in examples])
    labels = np.array([e["label"] for e in examples])
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
    real_scores, noise_scores = metric.score(images, labels), metric.score(noise, labels)
    assert {"fd", "accuracy", "fd_real", "accuracy_real"} <= set(real_scores)
    assert all(isinstance(v, float) for v in real_scores.values())
    assert real_scores["fd"] < 0.2 * noise_scores["fd"]
    assert real_scores["fd_real"] < 0.2 * noise_scores["fd"]
    assert real_scores["accuracy"] > noise_scores["accuracy"] + 0.3


def test_no_metric_and_bad_fields():
    assert (
        quality.get_quality_metric(data_fields(name="cifar10", image_size=32, channels=3)) is None
    )
    with pytest.raises(ValueError, match="data.image_size"):
        quality.get_quality_metric(data_fields(name="digits", image_size=0, channels=1))
    with pytest.raises(ValueError, match="data.channels"):
        quality.get_quality_metric(data_fields(name="photo_crops", image_size=16, channels=4))
