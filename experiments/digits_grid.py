"""Run settings shared by the studies that train on the embedded digits at cpu scale.

One place for the step budget, the evaluation cadence and the sample count, so the studies
that compare noise-level choices on digits are comparable with each other and with the
README's default run (configs/digits.py, a DiT with 16 tokens at 16 px).
"""

from __future__ import annotations

from collections.abc import Iterable

from experiments import common

DIGITS = "configs/digits.py"
TINY = "configs/digits.py:tiny"  # the smoke grids' config
METRICS = ("eval/digits_fd", "eval/digits_accuracy", "eval/digits_fd_real")


def run_flags(steps: int, eval_every: int, samples: int, *, sampling_steps: int = 50) -> tuple:
    """--config flags: train ``steps`` steps, evaluate every ``eval_every`` steps on
    ``samples`` class-conditional samples, keep one checkpoint (for resuming), no grids."""
    return (
        f"--config.total_steps={steps}",
        f"--config.eval_every_steps={eval_every}",
        f"--config.eval.quality_num_samples={samples}",
        f"--config.checkpoint_every_steps={steps}",
        "--config.keep_checkpoints=1",
        "--config.sample_every_steps=0",
        "--config.log_every_steps=50",
        f"--config.sampling.steps={sampling_steps}",
        # the studies' rate, the noise setup their cells start from and unguided sampling
        # (the default run has used lr 3e-3, flow matching with logit-normal p(λ) and
        # guidance 1.1 since); cells override them
        "--config.optim.lr=1e-3",
        "--config.noise.schedule=cosine",
        "--config.noise.target=v",
        "--config.noise.weighting=v",
        "--config.sampling.guidance_scale=1.0",
    )


# The cpu-scale budget of the digits studies: 400 steps (the default run takes 1000) with
# batch 64, about 2 minutes per run on 2 cores; three seeds per cell.
CPU_STEPS = 400
CPU_SEEDS = (0, 1, 2)

SMOKE_FLAGS = (
    "--config.total_steps=4",
    "--config.eval_every_steps=2",
    "--config.eval.quality_num_samples=20",
    "--config.checkpoint_every_steps=4",
    "--config.sample_every_steps=0",
    "--config.log_every_steps=2",
    "--config.sampling.steps=3",
)


def smoke_grid(cells: Iterable[common.Cell]) -> common.Grid:
    """The smoke scale of a digits study: ``cells`` (on :data:`TINY`), seed 0, a few steps."""
    return common.Grid(tuple(cells), (0,), SMOKE_FLAGS, METRICS)


def cpu_grid(cells: Iterable[common.Cell], eval_every: int = 200) -> common.Grid:
    """The cpu scale of a digits study: ``cells`` (on :data:`DIGITS`) × :data:`CPU_SEEDS`,
    :data:`CPU_STEPS` steps, evaluated every ``eval_every`` steps on 250 samples drawn with
    25 sampling steps."""
    flags = run_flags(CPU_STEPS, eval_every, 250, sampling_steps=25)
    return common.Grid(tuple(cells), CPU_SEEDS, flags, METRICS)
