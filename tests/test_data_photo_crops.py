"""photo_crops: offline photos, shapes, ranges, classes, determinism, split, field of view."""

import pickle

import ml_collections
import numpy as np
import pytest
from tiny_config import data_fields

from jaxdiff.data import make_iterator, make_source, photo_crops

FOV = photo_crops.FIELD_OF_VIEW


def _reference_crop(name, top, left, size, channels=3):
    """Independent area downsampling: float64 block means of the photo's crop, to [-1, 1]."""
    photo = photo_crops.load_photo(name, channels).astype(np.float64)
    crop = photo[top : top + FOV, left : left + FOV]
    f = FOV // size
    return crop.reshape(size, f, size, f, channels).mean(axis=(1, 3)) / 127.5 - 1.0


def test_every_photo_loads_offline_and_is_larger_than_the_field_of_view():
    for name in photo_crops.PHOTO_NAMES:
        photo = photo_crops.load_photo(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        assert min(photo.shape[:2]) > FOV, name
        assert photo.std() > 10, name  # not a flat image
    assert len(set(photo_crops.PHOTO_NAMES)) == photo_crops.NUM_CLASSES == 16


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_range_and_balanced_classes(channels):
    for split, per_class in photo_crops.PER_CLASS.items():
        source = photo_crops.PhotoCrops(16, channels, split)
        assert len(source) == per_class * photo_crops.NUM_CLASSES
        images, labels = source.batch(np.arange(0, len(source), 7))
        assert images.shape == (len(labels), 16, 16, channels) and images.dtype == np.float32
        assert labels.dtype == np.int32
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert images.min() < -0.9 and images.max() > 0.9
        np.testing.assert_array_equal(np.bincount(source.labels), [per_class] * 16)
        example = source[5]
        assert example["image"].shape == (16, 16, channels) and example["label"] == 5


def test_grey_photos_are_replicated_to_rgb():
    source = photo_crops.PhotoCrops(16, 3, "test")
    camera = photo_crops.PHOTO_NAMES.index("camera")
    image = source[camera]["image"]
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    coffee = source[photo_crops.PHOTO_NAMES.index("coffee")]["image"]
    assert not np.array_equal(coffee[..., 0], coffee[..., 2])


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_crops_are_block_means_of_the_photo(size, channels):
    source = photo_crops.PhotoCrops(size, channels, "train")
    for i in (0, 3, 9, 8191):
        name = photo_crops.PHOTO_NAMES[source.labels[i]]
        expected = _reference_crop(name, source.tops[i], source.lefts[i], size, channels)
        np.testing.assert_allclose(source[i]["image"], expected, atol=2e-6)


def test_fixed_field_of_view_across_resolutions():
    """A 64-px crop area-downsampled to 32 (or 16) px is the 32-px (16-px) crop."""
    idx = np.arange(0, 8192, 97)
    big = photo_crops.PhotoCrops(64).batch(idx)[0]
    for size in (32, 16):
        f = 64 // size
        pooled = big.reshape(len(idx), size, f, size, f, 3).mean(axis=(2, 4))
        small = photo_crops.PhotoCrops(size).batch(idx)[0]
        np.testing.assert_allclose(pooled, small, atol=1e-6)


def test_deterministic_given_index_and_seed():
    a, b = photo_crops.PhotoCrops(32), photo_crops.PhotoCrops(32)
    for i in (0, 17, 4000):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    other = photo_crops.PhotoCrops(32, seed=1)
    assert not np.array_equal(a.tops, other.tops)
    np.testing.assert_array_equal(a.labels, other.labels)
    assert not np.array_equal(a[0]["image"], a[16]["image"])  # same photo, another crop


def test_pickles_small_and_equal():
    source = photo_crops.PhotoCrops(32, split="test")
    data = pickle.dumps(source)
    assert len(data) < 100_000  # positions only, not the photos
    again = pickle.loads(data)
    np.testing.assert_array_equal(again[11]["image"], source[11]["image"])


def test_train_and_test_crops_are_disjoint():
    train = photo_crops.PhotoCrops(16, split="train")
    test = photo_crops.PhotoCrops(16, split="test")
    assert np.all(train.tops % 2 == 0) and np.all(test.tops % 2 == 1)

    def crops(labels, tops, lefts):
        return set(zip(labels.tolist(), tops.tolist(), lefts.tolist(), strict=True))

    assert not crops(train.labels, train.tops, train.lefts) & crops(
        *photo_crops.crop_positions("test")
    )
    for source in (train, test):  # every crop lies inside its photo
        shapes = np.array([photo_crops.load_photo(n).shape[:2] for n in photo_crops.PHOTO_NAMES])
        assert np.all(source.tops >= 0) and np.all(source.lefts >= 0)
        assert np.all(source.tops + FOV <= shapes[source.labels, 0])
        assert np.all(source.lefts + FOV <= shapes[source.labels, 1])
        assert len(crops(source.labels, source.tops, source.lefts)) > 0.99 * len(source)


def test_bad_arguments():
    with pytest.raises(
        ValueError, match=r"data.image_size.*one of \[1, 2, 4, 8, 16, 32, 64, 128\]"
    ):
        photo_crops.PhotoCrops(24)
    with pytest.raises(ValueError, match="data.channels"):
        photo_crops.PhotoCrops(16, channels=2)
    with pytest.raises(ValueError, match="split"):
        photo_crops.PhotoCrops(16, split="validation")
    with pytest.raises(ValueError, match="photo"):
        photo_crops.load_photo("lena")
    with pytest.raises(IndexError):
        photo_crops.PhotoCrops(16, split="test")[2048]


def test_make_source_and_pipeline():
    cfg = ml_collections.ConfigDict(
        data_fields(name="photo_crops", image_size=16, channels=3, batch_size=8, num_classes=16)
    )
    source = make_source(cfg, "test")
    assert isinstance(source, photo_crops.PhotoCrops) and source.split == "test"
    batch = next(make_iterator(cfg, seed=0))
    assert batch["image"].shape == (8, 16, 16, 3) and batch["label"].shape == (8,)
    assert set(np.asarray(batch["label"]).tolist()) <= set(range(16))
    with pytest.raises(ValueError, match="num_classes"):
        make_source(data_fields(name="photo_crops", image_size=16, channels=3, num_classes=10))
    with pytest.raises(ValueError, match="data.image_size"):
        make_source(data_fields(name="photo_crops", image_size=48, channels=3, num_classes=16))
