"""Expectations of the importance weights and of density-mode loss weights, clip atoms included.

λ = clip(formula(t)) is a density on the schedule's open range plus atoms at its clip points.
Exactly, by quadrature against the independent float64 references of test_noise_reference:
E_A[weight] = ∫ p_A·w dλ + Σ m_A·w(atom) = 1 for every (target B, proposal A) pair of
schedules (the weights computed by jaxdiff in float32), and the density-mode objective
E_p[loss_weight·f] = ∫_lo^hi w(λ)·f(λ) dλ for every schedule. One Monte Carlo check of each
with 2M draws (mean within 3 standard errors), and the weights' second moment
(`ImportanceSampler.weight_moments`) against the same quadrature.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from test_noise_reference import ref_density, ref_tails, reference
from tiny_config import noise_fields

from jaxdiff import diffusion, noise

SCHEDULES = [(name, {}) for name in noise.list_schedules()] + [
    ("cauchy", {"gamma": 2.5}),
    ("linear", {"clip_min": 0.01}),  # an atom at logit(0.01) ≈ −4.6 ...
    ("sigmoid", {"clip_min": 0.01}),  # ... shared with this one
    ("ddpm_linear", {"num_steps": 100, "beta_start": 1e-3, "beta_end": 0.05}),
]
IDS = [f"{n}-{p}" if p else n for n, p in SCHEDULES]


@functools.lru_cache(maxsize=1)
def _quadrature():
    """Midpoint cells over [−20, 20] whose edges include every schedule's clip points and the
    DDPM knots (so piecewise-constant densities are integrated exactly); each schedule's
    float32 density at the (float32) midpoints, in one jit; float64 reference densities and
    reference atom masses."""
    scheds = [noise.get_schedule(n, **p) for n, p in SCHEDULES]
    edges = [np.linspace(-20.0, 20.0, 16_001)]
    edges += [np.asarray(s.logsnr_range) for s in scheds]
    edges += [noise.ddpm_linear_logsnr_table(**p) for n, p in SCHEDULES if n == "ddpm_linear"]
    edges = np.unique(np.concatenate(edges))
    mid = (0.5 * (edges[1:] + edges[:-1])).astype(np.float32)
    dens32 = jax.jit(lambda lam: [s.density(lam) for s in scheds])(mid)
    refs, mid64 = [reference(n, p) for n, p in SCHEDULES], mid.astype(np.float64)
    p_ref, atoms_ref = [], []
    for s, ref in zip(scheds, refs, strict=True):
        lo, hi = s.logsnr_range
        inside = (mid64 > lo) & (mid64 < hi)
        p_ref.append(np.where(inside, ref_density(ref, mid64), 0.0))
        (_, m_lo), (m_hi, _) = ref_tails(ref, np.array(lo)), ref_tails(ref, np.array(hi))
        atoms_ref.append((0.0, 0.0) if ref.closed else (float(m_lo), float(m_hi)))
    return scheds, mid, np.diff(edges), dens32, p_ref, atoms_ref


def _covers(i_b: int, i_a: int) -> bool:
    """The reference's verdict: A can draw every λ that B draws (ranges and atoms)."""
    scheds, *_, atoms_ref = _quadrature()
    (lo_b, hi_b), (lo_a, hi_a) = scheds[i_b].logsnr_range, scheds[i_a].logsnr_range
    if lo_b < lo_a or hi_b > hi_a:
        return False
    same = (lo_b == lo_a, hi_b == hi_a)
    return all(same[k] or atoms_ref[i_b][k] == 0.0 for k in (0, 1))


@pytest.mark.parametrize("target", range(len(SCHEDULES)), ids=IDS)
def test_importance_weights_have_mean_one_for_every_proposal(target):
    """Σ_cells p_A·w·Δλ + Σ_atoms m_A·w = 1 for the float32 weights, every proposal A."""
    scheds, mid, width, dens32, p_ref, atoms_ref = _quadrature()
    results = {}
    for a in range(len(SCHEDULES)):
        if not _covers(target, a):
            with pytest.raises(ValueError, match="importance"):
                noise.ImportanceSampler(scheds[target], scheds[a])
            continue
        sampler = noise.ImportanceSampler(scheds[target], scheds[a])
        w = np.asarray(sampler.weight_from_densities(mid, dens32[target], dens32[a]))
        ends = jnp.asarray(scheds[a].logsnr_range, jnp.float32)
        w_atoms = np.asarray(sampler.weight_from_densities(ends, jnp.zeros(2), jnp.zeros(2)))
        assert w.dtype == np.float32 and np.all(np.isfinite(w)) and np.all(w >= 0)
        mean = np.sum(p_ref[a] * w * width) + np.dot(atoms_ref[a], w_atoms)
        results[IDS[a]] = mean
    bad = {k: v for k, v in results.items() if abs(v - 1.0) > 2e-4}
    assert len(results) >= 2 and not bad, bad


def _ref_moment(i_b: int, i_a: int, k: int) -> float:
    """E_A[w^k] by the reference quadrature (float64 weights p_B/p_A and m_B/m_A)."""
    _, _, width, _, p_ref, atoms_ref = _quadrature()
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(p_ref[i_b] > 0, p_ref[i_b] / p_ref[i_a], 0.0)
        atoms = np.nan_to_num(np.divide(atoms_ref[i_b], atoms_ref[i_a]) ** k * atoms_ref[i_a])
    return float(np.sum(p_ref[i_a] * w**k * width) + atoms.sum())


@pytest.mark.parametrize(
    "target,proposal,lighter",
    [("cauchy", "cosine", False), ("laplace", "cauchy", False), ("ddpm_linear", "flow", False),
     ("cosine", "laplace", True), ("cauchy", "lognormal", True)],
)  # fmt: skip
def test_weight_moments_against_quadrature(target, proposal, lighter):
    """E_A[w²] (for the trainer's warning) matches the reference; huge for lighter tails."""
    i_b, i_a = IDS.index(target), IDS.index(proposal)
    scheds = _quadrature()[0]
    got = noise.ImportanceSampler(scheds[i_b], scheds[i_a]).weight_moments()
    assert got["mean"] == pytest.approx(1.0, abs=1e-5)
    assert got["second_moment"] == pytest.approx(_ref_moment(i_b, i_a, 2), rel=1e-3)
    assert (got["ess_fraction"] < 1e-6) == lighter  # cosine/laplace: ~1e-9


def test_importance_monte_carlo_with_clip_atoms():
    """The issue's case: Cauchy target (3.2% of its mass at ±20), cosine proposal, 2M draws."""
    sampler = noise.get_timestep_sampler(
        "importance", noise.get_schedule("cauchy"), proposal="cosine"
    )
    lam, w = jax.jit(functools.partial(sampler.sample, n=2_000_000))(jax.random.key(7))
    w = np.asarray(w, np.float64)
    se = w.std() / np.sqrt(w.size)
    assert abs(w.mean() - 1.0) < 3 * se, (w.mean(), se)  # was 0.971 ± 0.001
    at_clip = np.abs(np.asarray(lam)) == 20.0
    assert 0 < at_clip.mean() < 1e-4  # the cosine proposal's own atoms (2·2.9e−5)
    np.testing.assert_allclose(w[at_clip], 0.0159022 / 2.89025e-5, rtol=1e-4)


def _w_min_snr(lam, gamma=5.0):
    """min-SNR weight of the ε-loss, written independently: min(SNR, γ)/SNR."""
    return np.minimum(1.0, gamma * np.exp(-lam))


F_MSE = lambda lam: 1.0 / (1.0 + np.exp(-lam)) * (1.0 + 0.3 * np.sin(lam)) + 0.05


def _density_spec(i, **extra):
    name, params = SCHEDULES[i]
    cfg = dict(schedule=name, schedule_params=params, weighting="min_snr", weight_mode="density")
    return diffusion.make_noise_spec(noise_fields(**cfg, **extra))


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_density_mode_objective_is_the_integral(scale):
    """E_{λ~p}[loss_weight·f] = ∫_lo^hi w(λ + 2·log b)·f(λ) dλ for every schedule: the atoms
    carry no weight, the continuous part w/p."""
    scheds, mid, width, _, p_ref, atoms_ref = _quadrature()
    shift = 2.0 * np.log(scale)
    bad = {}
    for i, s in enumerate(scheds):
        spec = _density_spec(i, input_scale=scale)
        lo, hi = s.logsnr_range
        lam = jnp.asarray(np.concatenate([mid, np.float32([lo, hi])]))
        lw = np.asarray(diffusion.loss_weight(spec, lam, lam + shift), np.float64)
        assert np.all(np.isfinite(lw)) and np.all(lw[-2:] == 0)
        mid64 = mid.astype(np.float64)
        got = np.sum(p_ref[i] * lw[:-2] * F_MSE(mid64) * width)
        integrand = lambda x: _w_min_snr(x + shift) * F_MSE(x)
        want = integrate.quad(integrand, lo, hi, limit=400, points=[-shift, 0.0])[0]
        if abs(got / want - 1.0) > 2e-4:
            bad[IDS[i]] = (got, want)
    assert not bad, bad


def test_density_mode_monte_carlo_cauchy():
    """The issue's case: with Cauchy, 3.2% of the draws sit at ±20 (weight w/p(20) = 1260·w
    before); 2M draws of the training sampler, mean within 3 standard errors of the integral,
    also through an importance proposal (weights combine to w/p_A)."""
    i = IDS.index("cauchy")
    for extra in ({}, {"timesteps": "importance", "timesteps_params": {"proposal": "cosine"}}):
        spec = _density_spec(i, **extra)

        @jax.jit
        def draw(key, spec=spec):
            lam, s_w = spec.timestep_sampler.sample(key, 2_000_000)
            return lam, diffusion.loss_weight(spec, lam, lam) * s_w

        lam, w = map(lambda a: np.asarray(a, np.float64), draw(jax.random.key(3)))
        values = w * F_MSE(lam)
        want = integrate.quad(lambda x: _w_min_snr(x) * F_MSE(x), -20, 20, points=[0.0])[0]
        se = values.std() / np.sqrt(values.size)
        assert abs(values.mean() - want) < 3 * se, (extra, values.mean(), want, se)
        assert np.all(w[np.abs(lam) == 20.0] == 0)
