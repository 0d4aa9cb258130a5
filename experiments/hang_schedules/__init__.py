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

from experiments import common, digits_grid
from experiments.claims import Claim
from experiments.hang_schedules import full

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


CPU_ROWS = ("cosine", "laplace", "cauchy", "laplace_by_weight")


def _cells(config, rows) -> tuple[common.Cell, ...]:
    return tuple(common.Cell((("row", r),), config, (*_V, *ROWS[r])) for r in rows)


FD, ACC = digits_grid.METRICS[:2]
# Declared before the cpu runs (../shared/STUDIES.md); Holm's correction covers these four.
CLAIMS = (
    Claim(
        "laplace beats cosine, fd",
        "Hang et al. 2024: Laplace p(λ) beats cosine (FID-10K 7.96 vs 10.85, DiT-B/2, v target)",
        FD, "row=laplace", "row=cosine", "lower",
    ),
    Claim(
        "laplace beats cosine, accuracy",
        "the same comparison on class accuracy (the paper reports FID only)",
        ACC, "row=laplace", "row=cosine", "higher",
    ),
    Claim(
        "cauchy beats cosine, fd",
        "Hang et al. 2024: Cauchy p(λ) beats cosine (their schedule table)",
        FD, "row=cauchy", "row=cosine", "lower",
    ),
    Claim(
        "change p beats change w, fd",
        "Hang et al. 2024: sampling Laplace's p(λ) beats reaching the same objective by an "
        "importance weight w(λ) on cosine",
        FD, "row=laplace", "row=laplace_by_weight", "lower",
    ),
)  # fmt: skip

STUDY = common.Study(
    name=STUDY_NAME,
    question=__doc__.split("\n\n")[0],
    grids={
        "smoke": digits_grid.smoke_grid(_cells(digits_grid.TINY, ("cosine", "laplace"))),
        # cpu: the headline rows (cosine, Laplace, Cauchy) and "change p(λ)" against "change
        # w(λ)" (laplace_by_weight), v target; the other rows are in the full grid.
        "cpu": digits_grid.cpu_grid(_cells(digits_grid.DIGITS, CPU_ROWS)),
        "full": full.grid(ROWS, _V),  # ImageNet-256 latents; README: paper vs this grid
    },  # fmt: skip
    claims=CLAIMS,
)
