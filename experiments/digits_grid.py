"""The cpu protocol of the studies that train on the embedded digits (../shared/STUDIES.md).

One recipe for every arm of every digits study, so they are comparable with each other and
with the default run (configs/digits.py: a DiT with 16 tokens at 16 px):

- training: configs/digits.py's optimiser (AdamW, lr 3e-3, 100 warm-up steps, cosine decay,
  gradient clip 1, batch 64, EMA 0.999) for :data:`CPU_STEPS` steps; the noise baseline is the
  cosine schedule with the v target and loss (arms override it), label dropout 0.1;
- learning curves: an evaluation every :data:`EVAL_EVERY` steps on :data:`EVAL_SAMPLES`
  class-balanced samples, every arm sampled by :data:`SAMPLER_METHOD` with
  :data:`SAMPLER_STEPS` steps, unguided;
- resuming: a checkpoint at every evaluation (one kept), so a killed run loses at most
  :data:`EVAL_EVERY` steps;
- pairing: seeds :data:`CPU_SEEDS`. ``config.seed`` is the only source of randomness of a run:
  the initialisation (``fold_in(key(seed), 0x1A17)``), the data order (the pipeline's
  ``index_shuffle`` seeded by seed + epoch), each step's noise levels and noise
  (``fold_in(key(seed), step)``) and the evaluation's sampling noise
  (``fold_in(key(seed), 0xE7A1)``, the same at every evaluation step). Seed s of two arms
  therefore shares the initialisation (where the arms' parameter shapes agree), the data order
  and the evaluation noise; the training noise is drawn from the same key but its use depends
  on the arm (e.g. a different timestep sampler consumes it differently). The real-data floor
  (``eval/digits_fd_real``) is a property of the sample count only (fixed draws).
"""

from __future__ import annotations

from collections.abc import Iterable

from experiments import common

DIGITS = "configs/digits.py"
TINY = "configs/digits.py:tiny"  # the smoke grids' config
METRICS = ("eval/digits_fd", "eval/digits_accuracy", "eval/digits_fd_real")

CPU_STEPS = 1000
CPU_SEEDS = (0, 1, 2, 3, 4)
EVAL_EVERY = 250  # learning curves at steps 250, 500, 750, 1000
EVAL_SAMPLES = 500
# One sampler for every arm of every digits study, chosen before protocol 2's runs started:
# DPM-Solver++(2M) with 25 steps matched DDIM-50 at half the network calls on a digits model
# trained with this protocol's recipe (x0 target, cosine; seeds 0/1: digits_fd 2.82/2.96 vs
# DDIM-50's 2.90/3.09, accuracy 0.954/0.954 vs 0.958/0.960; docs/sampling.md). A change needs
# a new PROTOCOL_VERSION.
SAMPLER_METHOD = "dpmpp_2m"
SAMPLER_STEPS = 25

# The real-data floor of digits_fd at 500 samples (mean over resampled real sets,
# docs/digits_default.md: 2.897, sd 0.41) and the target quality of the steps-to-target claims:
# 1.5× the floor, the standard's "trained" bar.
DIGITS_FD_FLOOR_500 = 2.897
TARGET_DIGITS_FD = 4.35


def run_flags(
    steps: int = CPU_STEPS,
    eval_every: int = EVAL_EVERY,
    samples: int = EVAL_SAMPLES,
    *,
    method: str = SAMPLER_METHOD,
    sampling_steps: int = SAMPLER_STEPS,
) -> tuple:
    """--config flags of a cpu run: ``steps`` steps of the default optimiser, an evaluation
    every ``eval_every`` steps on ``samples`` samples drawn unguided by ``method`` in
    ``sampling_steps`` steps, a checkpoint at every evaluation (one kept), no sample grids, and
    the baseline noise setup (cosine, v target and loss) that the cells override."""
    return (
        f"--config.total_steps={steps}",
        f"--config.eval_every_steps={eval_every}",
        f"--config.eval.quality_num_samples={samples}",
        f"--config.checkpoint_every_steps={eval_every}",
        "--config.keep_checkpoints=1",
        "--config.sample_every_steps=0",
        "--config.log_every_steps=50",
        f"--config.sampling.method={method}",
        f"--config.sampling.steps={sampling_steps}",
        "--config.sampling.guidance_scale=1.0",
        "--config.noise.schedule=cosine",
        "--config.noise.target=v",
        "--config.noise.weighting=v",
    )


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


def cpu_grid(cells: Iterable[common.Cell]) -> common.Grid:
    """The cpu scale of a digits study: ``cells`` (on :data:`DIGITS`) × :data:`CPU_SEEDS` under
    :func:`run_flags`."""
    return common.Grid(tuple(cells), CPU_SEEDS, run_flags(), METRICS)
