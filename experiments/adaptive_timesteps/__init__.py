"""Adaptive timestep sampling (Kim et al. 2024, arXiv 2411.09998): does a learned, per-example
choice of noise levels train faster than fixed ones, in steps and in wall-clock with the
sampler's own cost counted?

Samplers, all on the cosine schedule with Kim et al.'s ε-prediction and plain ε loss:
uniform t (baseline), laplace (Hang et al.'s Laplace p(λ), a fixed non-uniform choice: the
Laplace schedule sampled uniformly in t), adaptive_discrete and adaptive_continuous (Kim et
al.'s Beta policy, f_S = 40, |S| = 3; the discrete version over T levels is the paper's
default), adaptive_bins (VDM++-style adaptive p(λ) with importance
weights) and speed (SpeeD's asymmetric sampling with its P2 weight). The paper reports
CIFAR-10 FID 2.94 vs 3.57 for SpeeD and ≈35% extra compute per step for its sampler.
"""

from __future__ import annotations

from experiments import common, digits_grid
from experiments.adaptive_timesteps import full
from experiments.claims import Claim

STUDY_NAME = "adaptive_timesteps"
_EPS = ("--config.noise.target=eps", "--config.noise.weighting=snr")
SAMPLERS = {
    "uniform": (),
    "laplace": ("--config.noise.schedule=laplace",),
    "adaptive_discrete": (
        "--config.noise.timesteps=adaptive",
        "--config.noise.timesteps_params.version=discrete",
    ),
    "adaptive_continuous": (
        "--config.noise.timesteps=adaptive",
        "--config.noise.timesteps_params.version=continuous",
    ),
    "adaptive_bins": ("--config.noise.timesteps=adaptive_bins",),
    "speed": ("--config.noise.timesteps=speed",),
}
_TINY_ADAPTIVE = tuple(  # the smoke grid's policy: tiny, updated every 2 steps
    f"--config.noise.timesteps_params.{kv}"
    for kv in (
        "update_every=2",
        "num_levels=8",
        "queue_size=3",
        "channels=(4,8)",
        "hidden_width=16",
    )
)


def _cells(config, names, extra=()) -> tuple[common.Cell, ...]:
    """One cell per sampler name; ``extra`` flags go to the adaptive policy's cells."""
    policy = ("adaptive_discrete", "adaptive_continuous")
    return tuple(
        common.Cell((("sampler", n),), config, (*_EPS, *SAMPLERS[n], *(extra * (n in policy))))
        for n in names
    )


FD = digits_grid.METRICS[0]
_PAPERS = {
    "adaptive_discrete": "Kim et al. 2024: the adaptive sampler (discrete, their default) beats "
    "uniform t",
    "adaptive_continuous": "Kim et al. 2024: the adaptive sampler (continuous variant) beats "
    "uniform t",
    "adaptive_bins": "Kingma & Gao 2023 (VDM++): an adaptive p(λ) beats a fixed one",
    "speed": "Wang et al. 2024 (SpeeD): asymmetric sampling with its weight beats uniform t",
}
# Declared before the cpu runs (../shared/STUDIES.md); Holm's correction covers these nine.
# Equal compute is equal training wall-clock: both runs' digits_fd at the smaller of their final
# wall-clocks, interpolated in log(wall-clock) (the samplers' overhead included).
CLAIMS = (
    *(Claim(f"{n} beats uniform, fd at equal steps", _PAPERS[n], FD, f"sampler={n}",
            "sampler=uniform") for n in _PAPERS),
    *(Claim(f"{n} beats uniform, fd at equal wall-clock", _PAPERS[n] + " at equal compute",
            FD, f"sampler={n}", "sampler=uniform", kind="equal_wallclock") for n in _PAPERS),
    Claim(
        "adaptive_discrete speed-up over uniform",
        "Kim et al. 2024: the adaptive sampler reaches a given FID in fewer steps than uniform t",
        FD, "sampler=adaptive_discrete", "sampler=uniform",
        kind="steps_to_target", target=digits_grid.TARGET_DIGITS_FD,
    ),
)  # fmt: skip
CPU_SAMPLERS = ("uniform", "adaptive_discrete", "adaptive_continuous", "adaptive_bins", "speed")


STUDY = common.Study(
    name=STUDY_NAME,
    question=__doc__.split("\n\n")[0],
    grids={
        "smoke": digits_grid.smoke_grid(
            _cells(digits_grid.TINY, ("uniform", "adaptive_discrete"), extra=_TINY_ADAPTIVE)
        ),
        # cpu: the learned and rule-based samplers against uniform (Laplace is in the full
        # grid and in hang_schedules).
        "cpu": digits_grid.cpu_grid(_cells(digits_grid.DIGITS, CPU_SAMPLERS)),
        "full": full.grid(),  # CIFAR-10, discrete T = 1000; README: paper vs this grid
    },  # fmt: skip
    claims=CLAIMS,
)
