"""jaxdiff.noise: schedules, input scaling, targets, weightings and timestep samplers.

Pure functions of arrays (jit-able, vmap-able, float32 by default, correct in float64).
Conventions: t ∈ [0, 1] (0 clean), λ = log(α²/σ²), α² = sigmoid(λ), x_t = α·x0 + σ·ε.
See docs/noise.md for the formulas and the defaults.
"""

# The registries of schedules and timestep samplers fill here: the plug-in modules import the
# registry modules (schedules, timesteps) and register their entries; importing any module of
# this package runs this file first, so a registry is never seen half-filled.
from jaxdiff.noise import (  # noqa: F401 - imported to register their entries
    adaptive,
    adaptive_bins,
    ddpm,
    learned_weighting,
    schedule_chen,
    schedule_library,
    speed,
)
from jaxdiff.noise.adaptive import AdaptiveSampler, f_regression_scores, select_k_best
from jaxdiff.noise.adaptive_bins import AdaptiveBinsSampler
from jaxdiff.noise.ddpm import ddpm_linear_alphas_cumprod, ddpm_linear_logsnr_table
from jaxdiff.noise.scaling import (
    alpha_sigma,
    corrupt,
    effective_logsnr,
    input_norm,
    input_scaled,
    logsnr_shift,
)
from jaxdiff.noise.schedules import (
    LOGSNR_MAX,
    LOGSNR_MIN,
    FrozenParams,
    Schedule,
    bisect_inverse,
    get_schedule,
    list_schedules,
    register_schedule,
)
from jaxdiff.noise.speed import SpeedSampler
from jaxdiff.noise.targets import TARGETS, check_target, convert, make_target, to_x0_eps
from jaxdiff.noise.timesteps import (
    ImportanceSampler,
    SamplerContext,
    StratifiedSampler,
    UniformSampler,
    get_timestep_sampler,
    init_sampler_state,
    list_timestep_samplers,
    register_timestep_sampler,
    stratified_t,
    uniform_t,
)
from jaxdiff.noise.weighting import (
    Weighting,
    get_weighting,
    list_weightings,
    log_target_factor,
    register_weighting,
)

WEIGHT_MODES = ("sample", "density")

__all__ = [
    "AdaptiveBinsSampler",
    "AdaptiveSampler",
    "LOGSNR_MAX",
    "LOGSNR_MIN",
    "TARGETS",
    "WEIGHT_MODES",
    "FrozenParams",
    "ImportanceSampler",
    "SamplerContext",
    "SpeedSampler",
    "Schedule",
    "StratifiedSampler",
    "UniformSampler",
    "Weighting",
    "alpha_sigma",
    "bisect_inverse",
    "check_target",
    "convert",
    "corrupt",
    "ddpm_linear_alphas_cumprod",
    "ddpm_linear_logsnr_table",
    "effective_logsnr",
    "f_regression_scores",
    "get_schedule",
    "get_timestep_sampler",
    "get_weighting",
    "init_sampler_state",
    "input_norm",
    "input_scaled",
    "learned_weighting",
    "list_schedules",
    "list_timestep_samplers",
    "list_weightings",
    "log_target_factor",
    "logsnr_shift",
    "make_target",
    "register_schedule",
    "register_timestep_sampler",
    "register_weighting",
    "select_k_best",
    "stratified_t",
    "to_x0_eps",
    "uniform_t",
]
