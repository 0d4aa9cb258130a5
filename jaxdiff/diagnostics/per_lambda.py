"""Held-out loss per λ-bin: a fixed grid of noise levels, seeded ε, every loss space.

The bins split [lo, hi] of the effective logSNR (the λ the network sees) into equal widths.
Range rule: lo = λ_eff(1 − δ), hi = λ_eff(δ) of the training schedule (input scaling
included) with δ = `bin_tail_mass`: all but a mass δ at each end of its p(λ) (t ~ U(0, 1)),
unless `lam_min` / `lam_max` override them. Every example of the fixed held-out subset is
evaluated at every bin centre with its own seeded ε, so two checkpoints see identical inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from jax.sharding import Mesh

from jaxdiff.diagnostics.denoiser import Denoiser, evaluate_points
from jaxdiff.diffusion import NoiseSpec

LOSS_KEYS = ("mse_eps", "mse_x0", "mse_v", "weighted")


def lambda_bin_edges(
    spec: NoiseSpec,
    num_bins: int,
    tail_mass: float = 1e-3,
    lam_min: float | None = None,
    lam_max: float | None = None,
) -> np.ndarray:
    """(num_bins + 1,) equally spaced edges in λ_eff over the range rule (module docstring)."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if not 0.0 < tail_mass < 0.5:
        raise ValueError(f"tail_mass must lie in (0, 0.5), got {tail_mass}")
    sched = spec.effective_schedule
    lo = float(sched.logsnr(1.0 - tail_mass)) if lam_min is None else float(lam_min)
    hi = float(sched.logsnr(tail_mass)) if lam_max is None else float(lam_max)
    if not lo < hi:
        raise ValueError(f"the λ-bin range must have lam_min < lam_max, got [{lo}, {hi}]")
    return np.linspace(lo, hi, num_bins + 1)


def bin_centres(edges: np.ndarray) -> np.ndarray:
    """Midpoints (B,) of the bins."""
    edges = np.asarray(edges, np.float64)
    return 0.5 * (edges[:-1] + edges[1:])


def loss_per_lambda(
    denoiser: Denoiser,
    spec: NoiseSpec,
    params: Any,
    images: np.ndarray,
    labels: np.ndarray,
    edges: np.ndarray,
    *,
    entropy: tuple[int, ...] = (0,),
    batch_size: int = 64,
    mesh: Mesh | None = None,
) -> list[dict[str, float]]:
    """Mean held-out losses of every example in `images` (M, ...) at each bin centre.

    Returns one dict per bin: lam_lo, lam_hi, mse_eps, mse_x0, mse_v (unweighted, mean over
    dims and examples) and weighted (the training objective's per-example value
    loss_weight(spec, λ_u, λ)·MSE in spec.target space, averaged; its integral against the
    schedule's p(λ) estimates the training loss in both weight modes). ε of (bin j, example
    i) is `point_noise(entropy, [j·M + i])`.
    """
    centres = bin_centres(edges)
    m, b = len(images), len(centres)
    index = np.tile(np.arange(m), b)
    lam = np.repeat(centres, m).astype(np.asarray(images).dtype)
    out = evaluate_points(
        denoiser, spec, params, images, labels, index, lam, entropy,
        batch_size=batch_size, mesh=mesh,
    )  # fmt: skip
    rows = []
    for j in range(b):
        sl = slice(j * m, (j + 1) * m)
        row = {"lam_lo": float(edges[j]), "lam_hi": float(edges[j + 1])}
        row.update({k: float(np.mean(out[k][sl], dtype=np.float64)) for k in LOSS_KEYS})
        rows.append(row)
    return rows
