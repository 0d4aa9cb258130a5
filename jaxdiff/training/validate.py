"""Checks every config field before anything is compiled.

:func:`validate_config` raises :class:`jaxdiff.errors.ConfigError` for the first bad field:
``<field>: <problem>; allowed: <values>``, which ``jaxdiff.main`` prints as one line
(``config error: ...``, exit status 2). Ranges, types and cross-field constraints (warm-up
vs total steps, batch vs devices, classes vs the dataset, the sampler vs the network) are
all checked here, so a run never fails on a config value after training has started.
"""

from __future__ import annotations

import math
import numbers
import os

from jaxdiff.data import digits as digits_lib
from jaxdiff.data import photo_crops
from jaxdiff.diffusion import make_noise_spec
from jaxdiff.errors import ConfigError
from jaxdiff.sampling.validate import validate_sampling
from jaxdiff.training.config import build_model, noise_config
from jaxdiff.training.diagnostics_settings import resolve_settings
from jaxdiff.training.optim import DECAYS, OPTIMIZERS
from jaxdiff.training.posthoc import MAX_STD
from jaxdiff.training.sharding import resolve_mesh_shape

ON_NONFINITE = ("halt", "skip")
COMPUTE_DTYPES = ("float32", "bfloat16")
DATA_KINDS = ("image", "latent")
LATENT_SAMPLE_MODES = ("sample", "mean")
MAX_SEED = 2**32 - 1
# Embedded datasets whose class count and channels are known without reading anything.
_EMBEDDED = {
    "digits": (digits_lib.NUM_CLASSES, (1, 3)),
    "photo_crops": (photo_crops.NUM_CLASSES, (1, 3)),
}


def _get(config, field: str):
    node = config
    for part in field.split("."):
        node = node[part]
    return node


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int(config, field: str, lo: int, hi: int | None = None, allowed: str | None = None):
    value = _get(config, field)
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        rng = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise ConfigError(field, f"got {value!r}", allowed or rng)
    return int(value)


def _real(config, field: str, lo: float, hi: float, *, lo_open=False, hi_open=False):
    value = _get(config, field)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
        hi_txt = "inf" if hi == math.inf else f"{hi:g}"
        raise ConfigError(
            field, f"got {value!r}", f"a finite number in {left}{lo:g}, {hi_txt}{right}"
        )
    return float(value)


def _bool(config, field: str) -> bool:
    value = _get(config, field)
    if not isinstance(value, bool):
        raise ConfigError(field, f"got {value!r}", "True, False")
    return value


def _choice(config, field: str, choices) -> str:
    value = _get(config, field)
    if value not in choices:
        raise ConfigError(field, f"unknown {value!r}", list(choices))
    return value


def _run_fields(c) -> None:
    _int(c, "seed", 0, MAX_SEED)
    total = _int(c, "total_steps", 1)
    for field in ("log_every_steps", "checkpoint_every_steps"):
        _int(c, field, 1)
    _int(c, "keep_checkpoints", 1, allowed="an integer >= 1 (the newest checkpoints kept)")
    for field in ("keep_every_steps", "sample_every_steps", "eval_every_steps"):
        _int(c, field, 0, allowed="an integer >= 0 (0 = off)")
    _choice(c, "on_nonfinite", ON_NONFINITE)
    _bool(c, "profile")
    init_from = c.get("init_from", "")
    if not isinstance(init_from, str):
        raise ConfigError("init_from", f"got {init_from!r}", "a directory path or ''")
    if init_from and not os.path.isdir(init_from):
        allowed = "a work dir, its checkpoints dir, one checkpoint, a converted official DiT dir"
        raise ConfigError("init_from", f"no such directory {init_from!r}", allowed)
    return total


def _data_fields(c, num_devices: int) -> None:
    d = c.data
    if not isinstance(d.name, str) or not d.name:
        allowed = "digits, imagefolder, latents, or a TFDS dataset name"
        raise ConfigError("data.name", f"got {d.name!r}", allowed)
    kind = _choice(c, "data.kind", DATA_KINDS)
    _int(c, "data.image_size", 1)
    if kind == "image":
        _choice(c, "data.channels", (1, 3))
    else:
        _int(c, "data.channels", 1)
    batch = _int(c, "data.batch_size", 1)
    classes = _int(c, "data.num_classes", 1)
    _int(c, "data.worker_count", 0)
    _int(c, "data.num_threads", 1)
    for field in ("data.center_crop", "data.random_flip"):
        _bool(c, field)
    _real(c, "data.latent_scale", 0.0, math.inf, lo_open=True)
    _choice(c, "data.latent_sample", LATENT_SAMPLE_MODES)
    if d.name in _EMBEDDED:
        known, channels = _EMBEDDED[d.name]
        if classes != known:
            raise ConfigError("data.num_classes", f"{classes} for {d.name!r}", known)
        if d.channels not in channels:
            raise ConfigError("data.channels", f"{d.channels} for {d.name!r}", list(channels))
    if batch % num_devices:
        raise ConfigError(
            "data.batch_size",
            f"{batch} is not divisible by the {num_devices} devices",
            f"a multiple of {num_devices}",
        )
    accum = _int(c, "optim.grad_accum_steps", 1)
    if batch % (accum * num_devices):
        raise ConfigError(
            "optim.grad_accum_steps",
            f"{accum}: data.batch_size={batch} is not divisible by accum × devices",
            f"a divisor of {batch // num_devices}",
        )


def _optim_fields(c, total: int) -> None:
    _choice(c, "optim.name", OPTIMIZERS)
    _choice(c, "optim.decay", DECAYS)
    _real(c, "optim.lr", 0.0, math.inf, lo_open=True)
    for field in ("optim.b1", "optim.b2"):
        _real(c, field, 0.0, 1.0, hi_open=True)
    _real(c, "optim.eps", 0.0, math.inf, lo_open=True)
    _real(c, "optim.weight_decay", 0.0, math.inf)
    _real(c, "optim.grad_clip", 0.0, math.inf)
    warmup = _int(c, "optim.warmup_steps", 0)
    if warmup > total:
        raise ConfigError("optim.warmup_steps", f"{warmup} > total_steps={total}", f"[0, {total}]")
    decays = c.ema.decays
    if not isinstance(decays, tuple | list) or not decays:
        raise ConfigError("ema.decays", f"got {decays!r}", "a non-empty tuple of values in [0, 1)")
    for d in decays:
        if not isinstance(d, numbers.Real) or isinstance(d, bool) or not 0.0 <= d < 1.0:
            raise ConfigError("ema.decays", f"got {tuple(decays)}", "values in [0, 1)")
    _bool(c, "ema.warmup")
    _posthoc_fields(c)
    _real(c, "train.label_dropout", 0.0, 1.0, hi_open=True)
    _real(c, "train.self_cond_rate", 0.0, 1.0)
    _choice(c, "train.compute_dtype", COMPUTE_DTYPES)


def _posthoc_fields(c) -> None:
    """``ema.posthoc.std``: distinct σ_rel in (0, 1/√12); ``ema.posthoc.every`` >= 1."""
    posthoc = c.ema.get("posthoc")
    if posthoc is None:
        return
    stds = posthoc.get("std", ())
    allowed = f"a tuple of distinct values in (0, {MAX_STD:.4f}), () for off"
    if not isinstance(stds, tuple | list):
        raise ConfigError("ema.posthoc.std", f"got {stds!r}", allowed)
    for s in stds:
        if not isinstance(s, numbers.Real) or isinstance(s, bool) or not 0.0 < s < MAX_STD:
            raise ConfigError("ema.posthoc.std", f"got {tuple(stds)}", allowed)
    if len(set(stds)) != len(stds):
        raise ConfigError("ema.posthoc.std", f"repeated values in {tuple(stds)}", allowed)
    _int(c, "ema.posthoc.every", 1)


def _noise_fields(c) -> None:
    make_noise_spec(noise_config(c))  # raises ConfigError naming the field


def _model_fields(c):
    _bool(c, "model.class_conditional")
    return build_model(c)


def _eval_fields(c) -> None:
    _int(c, "eval.num_samples", 1)
    _int(c, "eval.quality_num_samples", 2)
    for field in ("eval.fid_stats", "eval.inception_weights"):
        path = _get(c, field)
        if not isinstance(path, str):
            raise ConfigError(field, f"got {path!r}", "a file path or ''")
        if path and not os.path.isfile(path):
            raise ConfigError(field, f"no such file {path!r}", "an existing file or ''")


def _guidance_needs_null_class(c) -> None:
    """Classifier-free guidance mixes in the unconditional prediction, which a model trained
    from scratch learns only through label dropout: with ``train.label_dropout = 0`` its null
    class is untrained and guided samples are silently wrong. (Weights taken from elsewhere,
    ``init_from``, may have learnt it there.)"""
    if not c.model.class_conditional or c.sampling.guidance_scale == 1.0 or c.get("init_from"):
        return
    if c.train.label_dropout == 0.0:
        raise ConfigError(
            "sampling.guidance_scale",
            f"{c.sampling.guidance_scale} needs an unconditional model, but train.label_dropout "
            "= 0 never trains one",
            "1.0 (no guidance), or train with train.label_dropout > 0 (e.g. 0.1)",
        )


def importance_warning(config, min_ess: float = 0.1) -> str | None:
    """A one-line warning when ``noise.timesteps="importance"`` has a proposal with lighter
    tails than its target: the weights' effective-sample fraction 1/E[w²] (by quadrature) is
    below ``min_ess``, so a few examples carry the loss (unbiased, but its variance explodes)."""
    sampler = make_noise_spec(noise_config(config)).timestep_sampler
    if not hasattr(sampler, "weight_moments"):
        return None
    moments = sampler.weight_moments()
    if moments["ess_fraction"] >= min_ess:
        return None
    return (
        f"warning: noise.timesteps_params.proposal: {sampler.proposal.name!r} has lighter tails "
        f"than the schedule {sampler.schedule.name!r}: importance weights have E[w²] = "
        f"{moments['second_moment']:.3g} (effective sample fraction "
        f"{moments['ess_fraction']:.2g}); choose a proposal with heavier tails (e.g. cauchy)"
    )


def validate_config(config, num_devices: int) -> None:
    """Checks ``config`` for ``num_devices`` devices; raises ConfigError naming the field."""
    total = _run_fields(config)
    _data_fields(config, num_devices)
    _optim_fields(config, total)
    _noise_fields(config)
    model = _model_fields(config)
    validate_sampling(config.sampling, learn_sigma=model.learn_sigma, channels=config.data.channels)
    _guidance_needs_null_class(config)
    _eval_fields(config)
    _int(config, "mesh.min_fsdp_size", 1)
    _int(config, "diagnose_every_steps", 0, allowed="an integer >= 0 (0 = off)")
    resolve_settings(config.get("diagnostics"))  # raises ConfigError naming the field
    resolve_mesh_shape(config.mesh.shape, config.mesh.axes, num_devices)
