"""Min-SNR-γ (Hang et al. 2023, arXiv 2303.09556): does clamping the loss weight at SNR = γ
speed up convergence, for ε, x0 and v targets?

Weightings (defined in x0 space, divided per target): snr (the plain ε loss), x0 (constant),
max_snr (γ = 1), min_snr with γ ∈ {1, 5, 20}, soft_min_snr (γ = 5). The paper reports 3.4×
faster convergence than the previous weightings. Speed-up here: for each target, the steps the
baseline weighting needs to reach its own final digits_fd, divided by the steps min_snr
(γ = 5) needs to reach the same value (from the seed-mean curves). Baselines: the plain loss of
the target where the grid has it (ε: snr, x0: x0) and for v the truncated SNR max(SNR, 1)
(max_snr γ = 1), the previous weighting the paper compares v-prediction with.
"""

from __future__ import annotations

import math
import os

import numpy as np

from experiments import common, digits_grid

STUDY_NAME = "min_snr"
TARGETS = ("eps", "x0", "v")
WEIGHTINGS = (  # (cell label, weighting, gamma)
    ("snr", "snr", None), ("x0", "x0", None), ("max_snr1", "max_snr", 1.0),
    ("min_snr1", "min_snr", 1.0), ("min_snr5", "min_snr", 5.0), ("min_snr20", "min_snr", 20.0),
    ("soft_min_snr5", "soft_min_snr", 5.0),
)  # fmt: skip
BASELINE = {"eps": "snr", "x0": "x0", "v": "max_snr1"}


def _cell(config: str, target: str, label: str, weighting: str, gamma) -> common.Cell:
    flags = [f"--config.noise.target={target}", f"--config.noise.weighting={weighting}"]
    if gamma is not None:
        flags.append(f"--config.noise.weighting_params.gamma={gamma}")
    return common.Cell((("target", target), ("weighting", label)), config, tuple(flags))


def steps_to_reach(curves: list[dict], cell: str, metric: str, threshold: float) -> float:
    """First evaluated step at which the seed-mean curve of ``cell`` is ≤ threshold (inf if
    never)."""
    by_step: dict = {}
    for c in curves:
        if c["cell"] == cell and c["metric"] == metric:
            by_step.setdefault(c["step"], []).append(c["value"])
    for step in sorted(by_step):
        if np.mean(by_step[step]) <= threshold:
            return float(step)
    return math.inf


def speedups(table: dict, curves: list[dict], metric: str) -> dict:
    """target -> (steps of its baseline, steps of min_snr5, speed-up) to the baseline's final
    mean metric."""
    out = {}
    for target in TARGETS:
        base = f"target={target},weighting={BASELINE[target]}"
        mine = f"target={target},weighting=min_snr5"
        if base not in table or mine not in table:
            continue
        threshold = table[base][metric][0]
        a, b = (
            steps_to_reach(curves, base, metric, threshold),
            steps_to_reach(curves, mine, metric, threshold),
        )
        out[target] = (a, b, a / b if b and math.isfinite(b) else math.nan)
    return out


def conclude(table: dict, curves: list[dict], grid: common.Grid) -> str:
    metric = grid.metrics[0]
    lines = []
    for target in TARGETS:
        cells = [f"target={target},weighting={w[0]}" for w in WEIGHTINGS]
        best, ties = common.best_cell(table, metric, cells)
        if best is None:
            continue
        lines.append(
            f"- target {target}: lowest final {metric} with weighting "
            f"{best.split('weighting=')[1]} ({common.fmt(table[best][metric])})"
            + (f"; not distinguishable (2 SE) from {', '.join(c.split('=')[-1] for c in ties)}"
               if ties else "; better than every other weighting beyond 2 SE")
        )  # fmt: skip
    for target, (a, b, s) in speedups(table, curves, metric).items():
        lines.append(
            f"- target {target}: min_snr (γ=5) reaches the baseline's final {metric} at step "
            f"{b:g} vs {a:g} for the baseline: speed-up {s:.2f}× (paper: 3.4×)"
        )
    return "\n".join(lines) or "No finished runs."


def plot(table: dict, curves: list[dict], out: str, grid: common.Grid) -> list[str]:
    paths = []
    for target in TARGETS:
        cells = [f"target={target},weighting={w[0]}" for w in WEIGHTINGS]
        if not any(c in table for c in cells):
            continue  # a target this grid does not train
        paths.append(common.plot_curves(
            curves, grid.metrics[0], os.path.join(out, f"curves_{target}.png"), cells=cells,
            title=f"{grid.metrics[0]} vs steps, target {target}"))  # fmt: skip
    cells = [c.name for c in grid.cells if c.name in table] or list(table)
    paths.append(common.plot_bars(table, grid.metrics[0], os.path.join(out, "final_fd.png"), cells))
    return paths


STUDY = common.Study(
    name=STUDY_NAME,
    question=__doc__.split("\n\n")[0],
    grids={
        "smoke": digits_grid.smoke_grid(
            _cell(digits_grid.TINY, "eps", *w) for w in (WEIGHTINGS[0], WEIGHTINGS[4])
        ),
        # cpu: the paper's headline comparison, the plain ε loss against Min-SNR-5 (its
        # recommended γ), evaluated every 100 steps for the steps-to-threshold speed-up; the
        # other targets and weightings are in the full grid.
        "cpu": digits_grid.cpu_grid(
            (
                _cell(digits_grid.DIGITS, "eps", *w)
                for w in WEIGHTINGS
                if w[0] in (BASELINE["eps"], "min_snr5")
            ),
            eval_every=100,
        ),
        "full": common.fid_grid(
            [
                _cell("configs/imagenet256_latent_dit.py:schedule=cosine", t, *w)
                for t in TARGETS
                for w in WEIGHTINGS
            ],
            (0,),
            total_steps=400_000,
            eval_every=50_000,
            **common.LATENT_FID_10K,
        ),
    },  # fmt: skip
    conclude=conclude,
    plot=plot,
)
