"""Samplers (DDPM, DDIM, EDM Heun) over any inference schedule or λ grid, respaced DDPM grids,
and classifier-free guidance."""

from jaxdiff.sampling.guidance import cfg_denoise_fn, guided_prediction
from jaxdiff.sampling.respace import (
    respaced_betas,
    respaced_logsnr,
    respaced_timesteps,
    space_timesteps,
)
from jaxdiff.sampling.samplers import (
    ddim_update,
    ddpm_moments,
    get_sampler,
    heun_update,
    learned_range_variance,
    list_samplers,
    num_evaluations,
    register,
    sample,
)

__all__ = [
    "cfg_denoise_fn",
    "ddim_update",
    "ddpm_moments",
    "get_sampler",
    "guided_prediction",
    "heun_update",
    "learned_range_variance",
    "list_samplers",
    "num_evaluations",
    "register",
    "respaced_betas",
    "respaced_logsnr",
    "respaced_timesteps",
    "sample",
    "space_timesteps",
]
