"""Improved precision/recall: hand-computed cases, a brute-force reference, edge cases."""

import numpy as np
import pytest

from jaxdiff.evaluation.precision_recall import (
    knn_sq_radii,
    manifold_fraction,
    pairwise_sq_distances,
    precision_recall,
)


def test_hand_computed_1d_case():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    # k = 1: each real point's nearest other member is 1 away; the fakes are 9.5 apart.
    np.testing.assert_allclose(knn_sq_radii(real, k=1), [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(knn_sq_radii(fake, k=1), [90.25, 90.25])
    # 0.5 lies in the ball of 0 (and 1); 10 is 7 from 3: outside. Every real point is within
    # 9.5 of 0.5 or of 10.
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    # k = 2 on the real line: the 2nd nearest other of 0 is 2 (squared 4), of 1 is 1.
    np.testing.assert_allclose(knn_sq_radii(real, k=2), [4.0, 1.0, 1.0, 4.0])


def _brute_force(real, fake, k):
    def radii(x):
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]

    def frac(q, c, r):
        d = ((q[:, None] - c[None]) ** 2).sum(-1)
        return float(np.mean((d <= r[None]).any(1)))

    return frac(fake, real, radii(real)), frac(real, fake, radii(fake))


@pytest.mark.parametrize("block", [7, 64, 1024])
def test_blocked_computation_matches_brute_force(block):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(150, 16))
    fake = rng.normal(loc=0.4, scale=1.3, size=(97, 16))
    want = _brute_force(real, fake, 3)
    got = precision_recall(real, fake, k=3, block=block)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0
    d = np.asarray(pairwise_sq_distances(real[:5], fake[:3]))
    np.testing.assert_allclose(d, ((real[:5, None] - fake[None, :3]) ** 2).sum(-1), rtol=1e-4)


def test_identical_and_disjoint_sets():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(60, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # A generator that collapses onto a few real points: precise but with poor recall.
    fake = np.repeat(real[:2], 30, axis=0) + 1e-3 * rng.normal(size=(60, 8))
    precision, recall = precision_recall(real, fake)
    assert precision == 1.0 and recall < 0.2
    assert manifold_fraction(real[:1], real, knn_sq_radii(real)) == 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="k must be"):
        knn_sq_radii(np.zeros((3, 2)), k=3)
    with pytest.raises(ValueError, match="features"):
        precision_recall(np.zeros((5, 2)), np.zeros((5, 3)))
