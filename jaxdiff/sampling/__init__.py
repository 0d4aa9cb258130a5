"""Samplers (DDPM, DDIM, EDM Heun) over any inference schedule, and classifier-free guidance."""

from jaxdiff.sampling.guidance import cfg_denoise_fn, guided_prediction
from jaxdiff.sampling.samplers import (
    ddim_update,
    ddpm_moments,
    get_sampler,
    heun_update,
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
    "list_samplers",
    "num_evaluations",
    "register",
    "sample",
]
