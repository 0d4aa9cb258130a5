"""Fréchet distance, activation statistics, stats files and Inception Score against closed forms."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from jaxdiff.evaluation import fid

METHODS = fid.FD_METHODS


@pytest.fixture
def fid_score():
    """pytorch-fid's fid_score, from the torch extra: a test that asks for it is skipped
    without it."""
    return pytest.importorskip("pytorch_fid.fid_score")


def _closed_form_commuting(mu1, a, mu2, b):
    """FID of N(μ₁, Q diag(a) Qᵀ) and N(μ₂, Q diag(b) Qᵀ): ‖Δμ‖² + Σ(√a − √b)²."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


@pytest.mark.parametrize("method", METHODS)
def test_diagonal_gaussians(method):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    got = fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    want = float(np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b)))
    assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_commuting_full_covariances(method):
    rng = np.random.default_rng(1)
    q = ortho_group.rvs(12, random_state=1)
    a, b = rng.uniform(0.05, 4, 12), rng.uniform(0.05, 4, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    got = fid.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T, method=method)
    assert got == pytest.approx(_closed_form_commuting(mu1, a, mu2, b), rel=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_non_commuting_2x2(method):
    """For 2×2 M = Σ₁Σ₂ with eigenvalues λ ≥ 0: Tr √M = √(Tr M + 2√det M)."""
    rng = np.random.default_rng(2)
    for _ in range(5):
        x, y = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
        s1, s2 = x @ x.T + 0.1 * np.eye(2), y @ y.T + 0.1 * np.eye(2)
        m = s1 @ s2
        tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
        want = np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
        got = fid.frechet_distance(np.zeros(2), s1, np.zeros(2), s2, method=method)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")
def test_methods_agree_and_match_pytorch_fid(fid_score):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 20)), rng.normal(size=(150, 20)) @ rng.normal(size=(20, 20))
    stats_x = (x.mean(0), np.cov(x, rowvar=False))
    stats_y = (y.mean(0) + 0.5, np.cov(y, rowvar=False))
    want = fid_score.calculate_frechet_distance(*stats_x, *stats_y)
    for method in METHODS:
        got = fid.frechet_distance(*stats_x, *stats_y, method=method)
        assert got == pytest.approx(want, rel=1e-9)
    assert fid.frechet_distance(*stats_x, *stats_x) == pytest.approx(0.0, abs=1e-9)


def test_singular_product_falls_back_to_eps(monkeypatch):
    """A non-finite first root triggers the eps·I retry (pytorch-fid/ADM behaviour)."""
    calls = []
    real_sqrtm = fid._sqrtm

    def flaky_sqrtm(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(fid, "_sqrtm", flaky_sqrtm)
    a, b = np.array([1.0, 0.0, 2.0]), np.array([0.0, 3.0, 2.0])
    eps = 1e-2
    with pytest.warns(UserWarning, match="singular"):
        got = fid.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b), eps=eps)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], np.diag((a + eps) * (b + eps)))
    want = np.sum(a + b) - 2 * np.sum(np.sqrt((a + eps) * (b + eps)))
    assert got == pytest.approx(want, rel=1e-12)


def test_imaginary_component(monkeypatch):
    """A tiny imaginary part is dropped; a large one on the diagonal raises."""
    s1, s2 = np.eye(3), 4 * np.eye(3)  # sqrtm(Σ₁Σ₂) = 2·I, FID = 3 + 12 − 2·6 = 3
    monkeypatch.setattr(fid, "_sqrtm", lambda m: np.sqrt(m) + 1e-6j)
    assert fid.frechet_distance(np.zeros(3), s1, np.zeros(3), s2) == pytest.approx(3.0)
    monkeypatch.setattr(fid, "_sqrtm", lambda m: np.sqrt(m) + 0.1j)
    with pytest.raises(ValueError, match="imaginary"):
        fid.frechet_distance(np.zeros(3), s1, np.zeros(3), s2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")
    with pytest.raises(ValueError, match="shape"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="weights_path"):
        fid.InceptionFeatures()


def test_batched_float64_statistics_equal_one_shot():
    """Chan merging of float32 batches with a large offset equals float64 np.cov at once."""
    rng = np.random.default_rng(4)
    feats = (1e3 + rng.normal(size=(100, 6)) * rng.uniform(0.01, 5, 6)).astype(np.float32)
    sizes = [1, 7, 50, 13, 29]
    batches = np.split(feats, np.cumsum(sizes)[:-1])
    mu, sigma = fid.compute_statistics(iter(batches))
    x = feats.astype(np.float64)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    mu1, sigma1 = fid.compute_statistics(feats)
    np.testing.assert_allclose(sigma1, sigma, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        fid.compute_statistics(feats[:1])


def test_stats_round_trip_readable_by_pytorch_fid(tmp_path, fid_score):
    rng = np.random.default_rng(5)
    mu, sigma = rng.normal(size=8), np.cov(rng.normal(size=(30, 8)), rowvar=False)
    path = tmp_path / "stats.npz"
    fid.save_stats(path, mu, sigma)
    got_mu, got_sigma = fid.load_stats(path)
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    pt_mu, pt_sigma = fid_score.compute_statistics_of_path(str(path), None, 1, 8, "cpu")
    np.testing.assert_array_equal(pt_mu, mu)
    np.testing.assert_array_equal(pt_sigma, sigma)


def test_load_adm_reference_batch(tmp_path):
    """ADM's reference batches: arr_0 (uint8 images), mu, sigma, mu_s, sigma_s."""
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    mu, sigma = rng.normal(size=4), np.eye(4) * 2
    path = tmp_path / "VIRTUAL_ref.npz"
    np.savez(path, arr_0=images, mu=mu, sigma=sigma, mu_s=mu[:2], sigma_s=np.eye(2))
    got_mu, got_sigma = fid.load_stats(path)
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    np.testing.assert_array_equal(fid.load_images(path), images)
    np.savez(tmp_path / "bad.npz", arr_0=images)
    with pytest.raises(ValueError, match="mu"):
        fid.load_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad_images.npz", images=images[..., :2])
    with pytest.raises(ValueError, match="N×H×W×3"):
        fid.load_images(tmp_path / "bad_images.npz")


def test_distance_cli_prints_fid_last(tmp_path, capsys):
    rng = np.random.default_rng(7)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    fid.save_stats(tmp_path / "a.npz", mu1, np.diag(a))
    fid.save_stats(tmp_path / "b.npz", mu2, np.diag(b))
    assert fid.cli(["fid", "distance", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(last) == pytest.approx(_closed_form_commuting(mu1, a, mu2, b), abs=1e-6)


def _reference_is(logits, splits):
    """Inception Score written out directly from its definition."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
    return np.mean(scores), np.std(scores)


def test_inception_score():
    uniform = np.zeros((20, 1008))
    assert fid.inception_score(uniform, splits=2) == pytest.approx((1.0, 0.0), abs=1e-9)
    confident = np.full((40, 1008), -1e4)
    confident[np.arange(40), np.arange(40) % 10] = 0.0
    assert fid.inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-9)
    logits = np.random.default_rng(8).normal(size=(60, 1008)) * 3
    got = fid.inception_score(logits, splits=3)
    np.testing.assert_allclose(got, _reference_is(logits, 3), rtol=1e-10)
    with pytest.raises(ValueError, match="splits"):
        fid.inception_score(logits, splits=0)
