"""Hang et al. 2024 (arXiv 2407.03297): which distribution of noise levels p(λ) trains best at
equal steps, and is changing p(λ) better than changing the loss weight w(λ)?

Rows of their table on the embedded digits (v-prediction with the plain v loss, as their
headline table): cosine (baseline), cosine_shifted (μ = 1), cosine_scaled (s = 0.5), cauchy
(γ = 1), laplace (b = 0.5), the EDM row (lognormal p(λ), x0 target with the edm weight
SNR + 4), flow (FM-OT: flow path, velocity target and loss), SD3's logit_normal on the flow path,
and the weightings min_snr (γ = 5) and soft_min_snr (γ = 5) on cosine. "Change p(λ) vs change
w(λ)": Laplace's objective E_laplace[MSE_v] reached by sampling laplace (p) or by
sampling cosine with the importance weight p_laplace/p_cosine (w). Their paper: Laplace
7.96 vs cosine 10.85 FID-10K (DiT-B/2, ImageNet-256 latents); p beats w in practice.
"""

from __future__ import annotations

import os

from experiments import common, digits_grid

STUDY_NAME = "hang_schedules"
_V = ("--config.noise.target=v", "--config.noise.weighting=v")
ROWS = {  # cell label -> overrides (after the v target and loss)
    "cosine": ("--config.noise.schedule=cosine",),
    "cosine_shifted": ("--config.noise.schedule=cosine_shifted",
                       "--config.noise.schedule_params.mu=1.0"),
    "cosine_scaled": ("--config.noise.schedule=cosine_scaled",
                      "--config.noise.schedule_params.s=0.5"),
    "cauchy": ("--config.noise.schedule=cauchy",),
    "laplace": ("--config.noise.schedule=laplace",),
    "edm": ("--config.noise.schedule=lognormal", "--config.noise.weighting=edm",
            "--config.noise.target=x0"),
    "flow": ("--config.noise.schedule=flow", "--config.noise.target=flow",
             "--config.noise.weighting=flow"),
    "logit_normal": ("--config.noise.schedule=logit_normal", "--config.noise.target=flow",
                     "--config.noise.weighting=flow"),
    "min_snr": ("--config.noise.schedule=cosine", "--config.noise.weighting=min_snr"),
    "soft_min_snr": ("--config.noise.schedule=cosine", "--config.noise.weighting=soft_min_snr"),
    # Laplace's objective, compute spread like cosine: "change w(λ)" instead of p(λ)
    "laplace_by_weight": ("--config.noise.schedule=laplace",
                          "--config.noise.timesteps=importance",
                          "--config.noise.timesteps_params.proposal=cosine"),
}  # fmt: skip


def _cells(config, rows) -> tuple[common.Cell, ...]:
    return tuple(common.Cell((("row", r),), config, (*_V, *ROWS[r])) for r in rows)


def conclude(table: dict, curves: list[dict], grid: common.Grid) -> str:
    metric = grid.metrics[0]
    best = common.best_line(table, metric, [f"row={r}" for r in ROWS])
    if best is None:
        return "No finished runs."
    lines = [best]
    for a, b, what in (("laplace", "cosine", "Laplace vs cosine (paper: Laplace better)"),
                       ("laplace", "laplace_by_weight",
                        "change p(λ) vs change w(λ) (paper: p better)")):  # fmt: skip
        ea, eb = table.get(f"row={a}"), table.get(f"row={b}")
        if ea and eb:
            verdict = (
                "differ beyond 2 SE"
                if common.differs(ea[metric], eb[metric])
                else ("do not differ beyond 2 SE")
            )
            lines.append(f"- {what}: {common.fmt(ea[metric])} vs {common.fmt(eb[metric])}, "
                         f"{verdict}")  # fmt: skip
    return "\n".join(lines)


def plot(table: dict, curves: list[dict], out: str, grid: common.Grid) -> list[str]:
    rows = [f"row={r}" for r in ROWS]
    return [
        common.plot_curves(curves, grid.metrics[0], os.path.join(out, "fd_vs_steps.png"),
                           cells=rows, title=f"{grid.metrics[0]} vs steps (mean ± SE over seeds)"),
        common.plot_bars(table, grid.metrics[0], os.path.join(out, "final_fd.png"),
                         [r for r in rows if r in table]),
    ]  # fmt: skip


STUDY = common.Study(
    name=STUDY_NAME,
    question=__doc__.split("\n\n")[0],
    grids={
        "smoke": digits_grid.smoke_grid(_cells(digits_grid.TINY, ("cosine", "laplace"))),
        # cpu: the paper's headline comparison, Laplace against cosine; the other rows and
        # "change p(λ)" against "change w(λ)" (laplace_by_weight) are in the full grid.
        "cpu": digits_grid.cpu_grid(_cells(digits_grid.DIGITS, ("cosine", "laplace"))),
        "full": common.fid_grid(
            _cells("configs/imagenet256_latent_dit.py", tuple(ROWS)),
            (0,),
            total_steps=500_000,
            eval_every=100_000,
            **common.LATENT_FID_10K,
        ),
    },  # fmt: skip
    conclude=conclude,
    plot=plot,
)
