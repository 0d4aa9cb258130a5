"""The full-scale grid of chen_input_scaling: Chen 2023's RIN on ImageNet at 64, 128, 256 px.

RIN with the official pix2seq recipe (configs/imagenet{64,128,256}_rin.py: LAMB, batch 1024,
150K steps, ε-prediction, variance-normalised input, DDPM sampling on a cosine inference
schedule), both schedule functions the paper compares across resolutions (cosine and linear
γ = 1 − t) × four input scales b × three resolutions. Every resolution reads the same
preprocessing: ImageNet-2012 center-cropped (ADM's ``center_crop_arr``) and resized to the
resolution, so the only thing that changes along the resolution axis is the number of pixels
(the 64 px config's default, ``imagenet_resized/64x64``, box-downsamples whole images: a
different crop and filter, a confound inside a resolution study). The b values are a
geometric grid bracketing the optimum, not values taken from the paper (Chen's per-resolution
b were not recoverable from its text; jaxdiff/training/recipes.py). FID-50K against reference
statistics of the same preprocessing at each resolution, every 50K steps.
"""

from __future__ import annotations

from experiments import common

SIZES = (64, 128, 256)
SCALES = (1.0, 0.7, 0.5, 0.35)  # ours: a geometric grid (ratio ≈ 1/√2), see the docstring
SCHEDULES = ("cosine", "linear")
# One preprocessing for every resolution: center-cropped ImageNet-2012 (as 128 and 256 px).
SAME_SOURCE = ("--config.data.name=imagenet2012", "--config.data.center_crop=True")
EVAL_EVERY = 50_000
FID_SAMPLES = 50_000


def cell(size: int, b: float, schedule: str) -> common.Cell:
    return common.Cell(
        (("size", size), ("b", b), ("schedule", schedule)),
        f"configs/imagenet{size}_rin.py:scale={b},schedule={schedule}",
        (*SAME_SOURCE, "--config.data.data_dir=TFDS_DIR",
         f"--config.eval.fid_stats=FID_STATS_IMAGENET{size}"),
    )  # fmt: skip


def grid() -> common.Grid:
    """schedules × sizes × b, seed 0, FID-50K every 50K steps (the configs' 150K steps)."""
    cells = [cell(r, b, s) for s in SCHEDULES for r in SIZES for b in SCALES]
    return common.fid_grid(
        cells, (0,), eval_every=EVAL_EVERY, num_samples=FID_SAMPLES, fid_stats=None
    )  # each cell names its own resolution's statistics
