"""The embedded digits: shapes, value range, determinism, split, resize against NumPy."""

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from jaxdiff.data import digits


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) half-pixel bilinear interpolation with clamped edges (upsampling)."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    x = np.clip(x, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = x - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    return m


@pytest.mark.parametrize("image_size", [16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_dtypes_range(image_size, channels):
    for split, n in [("train", 1527), ("test", 270)]:
        images, labels = digits.load_digits(image_size, channels, split)
        assert images.shape == (n, image_size, image_size, channels)
        assert images.dtype == np.float32 and labels.dtype == np.int32
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert images.min() == -1.0 and images.max() > 0.9  # background and full ink
        assert set(np.unique(labels)) == set(range(10))
    if channels == 3:
        np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_native_size_matches_sklearn():
    bunch = sk_datasets.load_digits()
    for split in ("train", "test"):
        images, labels = digits.load_digits(8, 1, split)
        idx = digits.split_indices(split)
        np.testing.assert_allclose(images[..., 0], bunch.images[idx] / 8.0 - 1.0, atol=1e-6)
        np.testing.assert_array_equal(labels, bunch.target[idx])


@pytest.mark.parametrize("image_size", [16, 32])
def test_upsampling_is_bilinear(image_size):
    small, _ = digits.load_digits(8, 1, "test")
    big, _ = digits.load_digits(image_size, 1, "test")
    m = _bilinear_matrix(8, image_size)
    expected = np.einsum("ij,njk,lk->nil", m, small[..., 0], m)
    np.testing.assert_allclose(big[..., 0], expected, atol=1e-5)


def test_deterministic_and_copies():
    a, la = digits.load_digits(16, 1, "train")
    a[:] = 0.0  # mutating a result must not change later calls
    b, lb = digits.load_digits(16, 1, "train")
    c, lc = digits.load_digits(16, 1, "train")
    np.testing.assert_array_equal(b, c)
    np.testing.assert_array_equal(la, lb)
    assert np.abs(b).sum() > 0


def test_split_disjoint_complete_and_stratified_enough():
    train, test = digits.split_indices("train"), digits.split_indices("test")
    assert len(train) + len(test) == digits.NUM_EXAMPLES
    assert not set(train) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    # A random 15% split keeps every class present in reasonable numbers.
    _, labels = digits.load_digits(8, 1, "test")
    assert np.bincount(labels, minlength=10).min() >= 10
    # Train and test images differ as sets (no duplicated rows across the split).
    tr, _ = digits.load_digits(8, 1, "train")
    te, _ = digits.load_digits(8, 1, "test")
    tr_rows = {r.tobytes() for r in tr}
    assert sum(r.tobytes() in tr_rows for r in te) < 5


def test_invalid_arguments():
    with pytest.raises(ValueError, match="split"):
        digits.load_digits(16, 1, "validation")
    with pytest.raises(ValueError, match="channels"):
        digits.load_digits(16, 2)
    with pytest.raises(ValueError, match="image_size"):
        digits.load_digits(0)
