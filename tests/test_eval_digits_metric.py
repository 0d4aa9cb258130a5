"""The digits quality metric: real digits score near 0, degraded digits far worse."""

import numpy as np
import pytest
import scipy.ndimage

from jaxdiff.data.digits import load_digits
from jaxdiff.evaluation import classifier_metric, digits_metric, fid

SIZE, CHANNELS = 16, 1


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("digits_cache")


@pytest.fixture(scope="module")
def metric(cache_dir):
    return digits_metric.DigitsMetric.create(SIZE, CHANNELS, str(cache_dir))


@pytest.fixture(scope="module")
def real():
    """270 real train digits: real images the reference (test split) statistics never saw."""
    images, labels = load_digits(SIZE, CHANNELS, split="train")
    return images[:270], labels[:270]


def _blur(images, native_pixels=0.8):
    sigma = native_pixels * SIZE / 8
    return scipy.ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0)).astype(np.float32)


def test_classifier_accuracy_on_held_out_digits(metric):
    assert metric.test_accuracy > 0.9
    images, labels = load_digits(SIZE, CHANNELS, split="test")
    result = metric.score(images, labels)
    assert result["accuracy"] == pytest.approx(metric.test_accuracy)
    assert abs(result["fd"]) < 1e-6  # the test split against its own statistics


def test_real_digits_near_zero_degraded_far_worse(metric, real):
    images, labels = real
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
    fd_real = metric.score(images, labels)["fd"]
    blurred = metric.score(_blur(images), labels)
    fd_noise = metric.score(noise)["fd"]
    assert 0 <= fd_real < 0.25 * blurred["fd"]
    assert blurred["fd"] < 0.5 * fd_noise
    assert metric.score(images, labels)["accuracy"] > 0.95
    assert metric.score(noise, labels)["accuracy"] < 0.3


def test_more_blur_scores_worse(metric, real):
    images, _ = real
    fds = [metric.score(_blur(images, s))["fd"] for s in (0.3, 0.8, 1.5)]
    assert fds[0] < fds[1] < fds[2]


def test_cached_classifier_reloads_identically(metric, cache_dir, real, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    images, labels = real
    first = metric.score(images, labels)  # computes (or reads) and caches the real floor
    monkeypatch.setattr(digits_metric, "_train_classifier", no_training)
    monkeypatch.setattr(classifier_metric.ClassifierMetric, "_compute_floor", no_training)
    again = digits_metric.DigitsMetric.create(SIZE, CHANNELS, str(cache_dir))
    assert again.score(images, labels) == first
    assert again.test_accuracy == metric.test_accuracy
    np.testing.assert_array_equal(again.ref_sigma, metric.ref_sigma)


def test_bad_inputs(metric, real):
    images, labels = real
    with pytest.raises(ValueError, match="shape"):
        metric.score(images[:, :8, :8])
    with pytest.raises(ValueError, match="labels"):
        metric.score(images, labels[:5])
    with pytest.raises(ValueError, match="at least 2"):
        metric.score(images[:1])


def test_training_is_deterministic(monkeypatch):
    monkeypatch.setattr(digits_metric, "TRAIN_STEPS", 5)
    images, labels = load_digits(8, 1, split="train")
    first = digits_metric._train_classifier(images, labels, seed=0)
    second = digits_metric._train_classifier(images, labels, seed=0)
    other = digits_metric._train_classifier(images, labels, seed=1)
    for name in ("conv0", "hidden", "head"):
        np.testing.assert_array_equal(first[name]["kernel"], second[name]["kernel"])
        assert not np.array_equal(first[name]["kernel"], other[name]["kernel"])


def test_real_floor_is_the_mean_over_balanced_real_draws(metric, real):
    images, labels = real
    n = len(images)
    result = metric.score(images, labels)
    floor = metric.real_floor(n)
    assert result["fd_real"] == floor["fd"] and result["accuracy_real"] == floor["accuracy"]
    assert set(metric.score(images)) == {"fd", "fd_real"}  # no labels: no accuracy either
    train_x, train_y = load_digits(SIZE, CHANNELS, split="train")
    fds, accuracies = [], []
    for d in range(classifier_metric.FLOOR_DRAWS):
        rng = np.random.default_rng((classifier_metric._FLOOR_SEED, d))
        idx = classifier_metric.balanced_draw(train_y, n, rng)
        np.testing.assert_array_equal(np.sort(train_y[idx]), np.sort(np.arange(n) % 10))
        assert len(set(idx.tolist())) == n
        features, logits = metric.features_and_logits(train_x[idx])
        mu, sigma = fid.compute_statistics(features)
        fds.append(fid.frechet_distance(mu, sigma, metric.ref_mu, metric.ref_sigma))
        accuracies.append(np.mean(np.argmax(logits, axis=1) == train_y[idx]))
    assert floor["fd"] == pytest.approx(np.mean(fds), rel=1e-9)
    assert floor["fd_sd"] == pytest.approx(np.std(fds), rel=1e-6)
    assert floor["accuracy"] == pytest.approx(np.mean(accuracies))
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
    assert 0 < floor["fd"] < 0.1 * metric.score(noise)["fd"]
    assert floor["accuracy"] > 0.95


def test_balanced_draw():
    labels = np.repeat(np.arange(3), [5, 2, 4])
    idx = classifier_metric.balanced_draw(labels, 7, np.random.default_rng(0))
    np.testing.assert_array_equal(labels[idx], np.arange(7) % 3)
    assert len(set(idx.tolist())) == 7
    many = classifier_metric.balanced_draw(labels, 12, np.random.default_rng(0))
    np.testing.assert_array_equal(labels[many], np.arange(12) % 3)  # class 1 with replacement
