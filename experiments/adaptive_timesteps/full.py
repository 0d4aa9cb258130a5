"""The full-scale grid of adaptive_timesteps: Kim et al. 2024's CIFAR-10 setting, as near as
jaxdiff gets.

The paper trains DDPM/ADM UNets with ε-prediction on the discrete 1000-step linear-β DDPM; its
sampler is the discrete policy (t = round(u·(T − 1))). jaxdiff has no UNet, so the network is
RIN (configs/cifar10.py: LAMB 3e-3, batch 256, 150K steps); everything about the noise levels
follows the paper: the linear-β DDPM schedule (``ddpm_linear``, T = 1000) for training and
sampling, ε target with the plain ε loss, and the adaptive sampler's discrete version (the
paper's default) besides the continuous one. Samplers: uniform, laplace (a fixed non-uniform
p(λ)), adaptive (discrete), adaptive_continuous, adaptive_bins, speed. FID-50K against the
CIFAR-10 training set's statistics every 25K steps, three seeds. The README's "paper vs this
grid" table lists the differences.
"""

from __future__ import annotations

from experiments import common

CONFIG = "configs/cifar10.py:schedule=ddpm_linear"
_EPS = ("--config.noise.target=eps", "--config.noise.weighting=snr")
# DDPM's ancestral sampler over the training schedule's 1000 steps
_SAMPLING = ("--config.sampling.method=ddpm", "--config.sampling.schedule=ddpm_linear",
             "--config.sampling.steps=1000")  # fmt: skip
SAMPLERS = {
    "uniform": (),
    "laplace": ("--config.noise.schedule=laplace", "--config.noise.schedule_params.mu=0.0",
                "--config.noise.schedule_params.b=0.5"),
    "adaptive": ("--config.noise.timesteps=adaptive",
                 "--config.noise.timesteps_params.version=discrete"),
    "adaptive_continuous": ("--config.noise.timesteps=adaptive",
                            "--config.noise.timesteps_params.version=continuous"),
    "adaptive_bins": ("--config.noise.timesteps=adaptive_bins",),
    "speed": ("--config.noise.timesteps=speed",),
}  # fmt: skip
SEEDS = (0, 1, 2)
EVAL_EVERY = 25_000
FID_SAMPLES = 50_000


def grid() -> common.Grid:
    """Every sampler × three seeds, FID-50K every 25K steps (the config's 150K steps)."""
    cells = [
        common.Cell((("sampler", name),), CONFIG, (*_EPS, *_SAMPLING, *flags))
        for name, flags in SAMPLERS.items()
    ]
    return common.fid_grid(
        cells,
        SEEDS,
        eval_every=EVAL_EVERY,
        num_samples=FID_SAMPLES,
        data_dir="TFDS_DIR",
        fid_stats="FID_STATS_CIFAR10",
    )
