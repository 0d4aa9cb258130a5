"""Samplers (DDPM, DDIM, EDM Euler/Heun, DPM-Solver++(2M), its SDE, UniPC) over any inference
schedule or λ grid, respaced DDPM grids, and classifier-free guidance."""

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
from jaxdiff.sampling.solvers import (  # registers euler, heun, dpmpp_2m(_sde), unipc
    dpmpp_2m_sde_update,
    dpmpp_2m_update,
    unic_bh2,
)

__all__ = [
    "cfg_denoise_fn",
    "ddim_update",
    "ddpm_moments",
    "dpmpp_2m_sde_update",
    "dpmpp_2m_update",
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
    "unic_bh2",
]
