"""SWD on Laplacian-pyramid patches: pyramid vs SciPy, exact W₁ vs SciPy, invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
from sklearn.datasets import load_sample_image

from jaxdiff.evaluation import swd

BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == "float64"):
        yield np.dtype(request.param)


def _tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


def _scipy_blur(x):
    """The separable binomial filter with SciPy's "mirror" borders (d c b | a b c d | c b a)."""
    y = scipy.ndimage.correlate1d(x, BINOMIAL, axis=1, mode="mirror")
    return scipy.ndimage.correlate1d(y, BINOMIAL, axis=2, mode="mirror")


def test_blur_down_up_match_scipy(dtype):
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(dtype)
    blur = jax.jit(swd.binomial_blur)(jnp.asarray(x))
    assert blur.dtype == dtype
    np.testing.assert_allclose(blur, _scipy_blur(x.astype(np.float64)), atol=_tol(dtype))
    down = jax.jit(swd.pyr_down)(jnp.asarray(x))
    np.testing.assert_allclose(
        down, _scipy_blur(x.astype(np.float64))[:, ::2, ::2], atol=_tol(dtype)
    )
    small = x[:, :8, :8].astype(np.float64)
    z = np.zeros((2, 16, 16, 3))
    z[:, ::2, ::2] = small
    up = jax.jit(swd.pyr_up)(jnp.asarray(x[:, :8, :8]))
    np.testing.assert_allclose(up, 4.0 * _scipy_blur(z), atol=_tol(dtype))


@pytest.mark.parametrize("size", [16, 32, 64])
def test_pyramid_reconstructs_the_image(dtype, size):
    x = np.random.default_rng(size).uniform(-1, 1, size=(2, size, size, 3)).astype(dtype)
    pyramid = jax.jit(swd.laplacian_pyramid)(jnp.asarray(x))
    assert [p.shape[1] for p in pyramid] == swd.level_resolutions(size)
    assert all(p.dtype == dtype for p in pyramid)
    np.testing.assert_allclose(jax.jit(swd.reconstruct)(pyramid), x, atol=10 * _tol(dtype))


def test_constant_image_has_no_detail():
    pyramid = swd.laplacian_pyramid(jnp.full((1, 64, 64, 3), 0.3))
    for level in pyramid[:-1]:
        np.testing.assert_allclose(level, 0.0, atol=1e-6)
    np.testing.assert_allclose(pyramid[-1], 0.3, atol=1e-6)


def test_num_levels():
    assert [swd.num_levels(s) for s in (8, 16, 32, 64, 128)] == [1, 1, 2, 3, 4]
    assert swd.level_resolutions(64) == [64, 32, 16]
    with pytest.raises(ValueError, match="min_resolution"):
        swd.num_levels(34)  # 34 → 17: odd and still above 16


def test_patches_are_slices_at_random_corners():
    image = np.arange(2 * 16 * 16 * 2, dtype=np.float32).reshape(2, 16, 16, 2)
    patches = np.asarray(swd.extract_patches(jnp.asarray(image), jax.random.key(0), 50))
    assert patches.shape == (100, 7, 7, 2)
    corners = set()
    for k, patch in enumerate(patches):
        n = k // 50  # image-major order
        y, x = divmod(int(patch[0, 0, 0] - image[n, 0, 0, 0]) // 2, 16)
        np.testing.assert_array_equal(patch, image[n, y : y + 7, x : x + 7])
        corners.add((n, y, x))
    assert len(corners) > 40  # random, not one position


def test_normalized_descriptors_have_unit_channel_statistics():
    patches = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 7, 7, 3))
    d = np.asarray(jax.jit(swd.normalize_descriptors)(jnp.asarray(patches)))
    assert d.shape == (500, 147)
    per_channel = d.reshape(500, 49, 3)
    np.testing.assert_allclose(per_channel.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(axis=(0, 1)), 1.0, atol=1e-5)


def _w1(u, v) -> float:
    """W₁ of two samples through the metric's own kernel (sorted rows)."""
    return float(swd.w1_sorted(np.sort(u), np.sort(v)))


def _sliced(a, b, directions) -> float:
    """The sliced W₁ as the metric computes it: sorted projections, then W₁ per direction."""
    pa, pb = swd.sorted_projections(a, directions), swd.sorted_projections(b, directions)
    return float(np.mean(swd.w1_sorted(pa, pb)))


@pytest.mark.parametrize(("n", "m"), [(1, 1), (50, 50), (100, 37), (7, 300)])
@pytest.mark.parametrize("np_dtype", [np.float32, np.float64])
def test_w1_matches_scipy(n, m, np_dtype):
    rng = np.random.default_rng(n * 1000 + m)
    u = rng.normal(size=n).astype(np_dtype)
    v = (rng.standard_cauchy(size=m) + 0.5).astype(np_dtype)
    expected = scipy.stats.wasserstein_distance(u.astype(np.float64), v.astype(np.float64))
    rtol = 1e-5 if np_dtype == np.float32 else 1e-12
    assert _w1(u, v) == pytest.approx(expected, rel=rtol, abs=1e-6)
    if n == m:
        assert _w1(u, v) == pytest.approx(np.mean(np.abs(np.sort(u) - np.sort(v))))


def test_w1_closed_forms():
    u = np.arange(10.0)
    assert _w1(u, u + 2.5) == pytest.approx(2.5)  # a shift moves all mass
    assert _w1(u, u[::-1].copy()) == 0.0  # order does not matter
    assert _w1(np.array([0.0]), np.array([0.0, 1.0])) == pytest.approx(0.5)


def test_sliced_wasserstein_against_brute_force():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(80, 5)), rng.normal(size=(120, 5)) * 1.5 + 0.2
    dirs = np.asarray(swd.random_directions(jax.random.key(3), 5, 16), np.float64)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=0), 1.0, atol=1e-6)
    expected = np.mean([scipy.stats.wasserstein_distance(a @ t, b @ t) for t in dirs.T])
    assert _sliced(a, b, dirs) == pytest.approx(expected, rel=1e-10)
    assert _sliced(a, a, dirs) == 0.0
    shift = rng.normal(size=5)  # a common translation leaves every projection's W₁ unchanged
    assert _sliced(a + shift, b + shift, dirs) == pytest.approx(expected, rel=1e-9)
    one_d = _sliced(a[:, :1], b[:, :1], np.array([[-1.0]]))
    assert one_d == pytest.approx(scipy.stats.wasserstein_distance(a[:, 0], b[:, 0]))


def _photos_like(n, size, seed):
    """n random 2·size crops of scikit-learn's china photo, 2 × 2 box-averaged, in [-1, 1]."""
    photo = load_sample_image("china.jpg").astype(np.float32) / 127.5 - 1.0
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, photo.shape[0] - 2 * size, n)
    lefts = rng.integers(0, photo.shape[1] - 2 * size, n)
    crops = np.stack(
        [photo[t : t + 2 * size, x : x + 2 * size] for t, x in zip(tops, lefts, strict=True)]
    )
    return crops.reshape(n, size, 2, size, 2, 3).mean(axis=(2, 4))


def test_swd_ranks_sets_and_ignores_affine_changes():
    real, other = _photos_like(64, 32, 0), _photos_like(64, 32, 1)
    noise = np.random.default_rng(2).uniform(-1, 1, real.shape).astype(np.float32)
    reference = swd.SWDReference(other, patches_per_image=32)
    same = reference.distance(real)
    assert set(same) == {32, 16}
    far = reference.distance(noise)
    blurred = reference.distance(scipy.ndimage.gaussian_filter(real, (0, 1, 1, 0)))
    assert all(far[r] > 5 * same[r] for r in same)
    # Blurring removes detail: the finest level sees it most.
    assert blurred[32] > 1.5 * same[32]
    assert blurred[32] / same[32] > blurred[16] / same[16]
    # Each set is normalised by its own channel statistics (Karras et al.), so a global
    # brightness and contrast change of the whole scored set does not change the distance.
    affine = reference.distance(0.5 * real + 0.2)
    assert affine == pytest.approx(same, rel=1e-3)  # float32 round-off only
    assert swd.swd(real, other, patches_per_image=32) == reference.distance(real, 32)


def test_swd_reference_chunks_and_shapes():
    images = _photos_like(300, 16, 3)  # more than one chunk of 256
    whole = swd.SWDReference(images, patches_per_image=8)
    chunked = swd.SWDReference(swd.image_chunks(images), patches_per_image=8)
    np.testing.assert_array_equal(whole.projections[0], chunked.projections[0])
    assert whole.projections[0].shape == (swd.NUM_DIRECTIONS, 300 * 8)
    with pytest.raises(ValueError, match="shape"):
        whole.distance(images[:, :8, :8])
