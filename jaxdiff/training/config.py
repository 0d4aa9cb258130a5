"""The base config every setup starts from, the one ``key=value`` variant parser, and what a
config's fields build (:func:`noise_config`, :func:`build_model`).

Config files in ``configs/`` call :func:`base_config`, set their paper's values and finish
with :func:`apply_variant`. Every field is overridable on the command line
(``--config.noise.schedule=laplace``). Schedule, weighting and timestep-sampler parameters
are typed placeholders so that ``--config.noise.schedule_params.b=0.75`` works on the locked
config; unset (None) parameters take the function's defaults. Checking values is
`jaxdiff.training.validate`'s job.

Variants (``configs/x.py:tiny,schedule=laplace``) go through :func:`parse_variant`: the
common keys below work in every config, a config may declare more, and an unknown key or a
bad value raises ConfigError naming it and the allowed keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from jaxdiff import models, noise
from jaxdiff.data import photo_crops
from jaxdiff.errors import ConfigError
from jaxdiff.training.diagnostics_settings import default_settings

# Typed placeholders of every registered schedule's, weighting's, timestep sampler's and
# learned weighting's parameters (tests/test_configs.py checks that none is missing).
SCHEDULE_PARAMS = {
    "mu": float, "b": float, "gamma": float, "s": float, "p_mean": float, "p_std": float,
    "m": float, "start": float, "end": float, "tau": float, "clip_min": float,
    "image_size": int, "noise_d_low": int, "noise_d_high": int,
    "num_steps": int, "beta_start": float, "beta_end": float,
}  # fmt: skip
WEIGHTING_PARAMS = {"gamma": float, "sigma_data": float, "bias": float}
TIMESTEP_PARAMS = {
    # importance: the proposal schedule and its parameters (proposal_<name>)
    "proposal": str, "stratified": bool,
    **{f"proposal_{k}": t for k, t in SCHEDULE_PARAMS.items()},
    # adaptive (Kim et al. 2024)
    "version": str, "update_every": int, "num_selected": int, "queue_size": int,
    "policy_lr": float, "entropy_coef": float, "grad_clip": float, "num_levels": int,
    "channels": tuple, "hidden_width": int, "hidden_depth": int, "pool_size": int,
    # adaptive_bins (VDM++)
    "num_bins": int, "lam_min": float, "lam_max": float, "decay": float, "mix": float,
    # speed (SpeeD)
    "num_steps": int, "threshold": float, "sharpness": float, "offset": float, "dual": bool,
    "p2_k": float, "p2_gamma": float,
}  # fmt: skip
LEARNED_WEIGHTING_PARAMS = {
    "channels": int, "bandwidth": float, "hidden_width": int, "hidden_depth": int,
}  # fmt: skip


def _placeholders(spec: dict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({k: placeholder(t) for k, t in spec.items()})


def base_config() -> ml_collections.ConfigDict:
    """All fields with their defaults (a tiny DiT on the embedded digits)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 2000
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3
    c.keep_every_steps = 0  # also keep every checkpoint whose step is a multiple (0: off)
    c.sample_every_steps = 1000  # 0: off
    c.eval_every_steps = 1000  # the embedded datasets' quality metric (0: off)
    c.init_from = ""  # a work dir / checkpoint dir to take initial weights from
    c.on_nonfinite = "halt"  # or "skip": leave the state unchanged for that step
    # Resuming (docs/training.md): "strict" refuses a checkpoint saved with a different config
    # outside the resumable fields; "allow_changes" resumes anyway (shapes must still match).
    c.resume_policy = "strict"
    c.restore_step = 0  # resume from this checkpoint instead of the newest (0: the newest)
    c.stop_check_every_steps = 10  # multi-host: the hosts agree on a stop signal this often
    c.profile = False

    c.data = ml_collections.ConfigDict(
        dict(name="digits", image_size=16, channels=1, batch_size=64, num_classes=10,
             data_dir=placeholder(str), worker_count=0, image_key="image", label_key="label",
             center_crop=False, random_flip=False, kind="image",
             tfds_name=placeholder(str), latent_scale=1.0, latent_sample="sample",
             num_threads=2, vae="", field_of_view=photo_crops.FIELD_OF_VIEW)
    )  # fmt: skip
    c.model = ml_collections.ConfigDict(
        dict(name="DiT-S/2", overrides=ml_collections.ConfigDict(), class_conditional=True)
    )
    c.noise = ml_collections.ConfigDict(
        dict(schedule="cosine", schedule_params=_placeholders(SCHEDULE_PARAMS), input_scale=1.0,
             normalize_input=False, target="eps", weighting="snr",
             weighting_params=_placeholders(WEIGHTING_PARAMS), weight_mode="sample",
             timesteps="uniform", timesteps_params=_placeholders(TIMESTEP_PARAMS),
             learned_weighting="none",
             learned_weighting_params=_placeholders(LEARNED_WEIGHTING_PARAMS))
    )  # fmt: skip
    c.optim = ml_collections.ConfigDict(
        dict(name="adamw", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
             warmup_steps=0, decay="constant", grad_clip=1.0, grad_accum_steps=1)
    )  # fmt: skip
    # EMA warm-up: decay min(d, (1 + t) / (10 + t)) at update t, so short runs sample well.
    # Post-hoc EMA (EDM2; docs/training.md): σ_rel of the power-function profiles tracked
    # ((): off) and the interval of their snapshots in WORKDIR/ema_snapshots/.
    posthoc = ml_collections.ConfigDict(dict(std=(), every=500))
    c.ema = ml_collections.ConfigDict(dict(decays=(0.9999,), warmup=True, posthoc=posthoc))
    c.train = ml_collections.ConfigDict(
        dict(label_dropout=0.1, compute_dtype="float32", self_cond_rate=0.9)
    )
    c.mesh = ml_collections.ConfigDict(
        dict(shape=(-1, 1), axes=("data", "fsdp"), partition_rules=(), min_fsdp_size=2**14)
    )
    c.sampling = ml_collections.ConfigDict(
        dict(method="ddim", steps=50, schedule="cosine", eta=0.0, variance="small",
             guidance_scale=1.0, guidance_lam_min=placeholder(float),
             guidance_lam_max=placeholder(float), guidance_channels=placeholder(int),
             clip_x0=True, num_grid=64, batch_size=64,
             # EDM's stochastic sampling (Karras et al. 2022, Algorithm 2) for euler/heun:
             # S_churn, the σ range it applies to, and the noise scale (also dpmpp_2m_sde's)
             churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0)
    )  # fmt: skip
    c.eval = ml_collections.ConfigDict(
        dict(num_samples=1000, fid_stats="", inception_weights="", quality_num_samples=500)
    )
    # Noise-level diagnostics (jaxdiff.diagnostics; --mode=diagnose) and how often to run
    # them during training (0: never).
    c.diagnose_every_steps = 0
    c.diagnostics = default_settings()
    return c


def prune_none(d):
    """A plain dict without None values (unset placeholders)."""
    if isinstance(d, ml_collections.ConfigDict):
        d = d.to_dict()
    if isinstance(d, dict):
        return {k: prune_none(v) for k, v in d.items() if v is not None}
    return d


def noise_config(config) -> dict:
    """``config.noise`` as a plain dict with unset parameters removed."""
    return prune_none(config.noise)


def build_model(config) -> models.DiffusionModel:
    """The network of a config: `jaxdiff.models.build_model` with its ``model.*`` and
    ``data.*`` fields and ``init_from``; a model with a ``self_cond_rate`` field (RIN) gets
    ``train.self_cond_rate``."""
    overrides = config.model.overrides.to_dict() if config.model.overrides else {}
    model = models.build_model(
        config.model.name,
        overrides,
        image_size=config.data.image_size,
        channels=config.data.channels,
        num_classes=config.data.num_classes,
        init_from=config.get("init_from", ""),
    )
    if hasattr(model, "self_cond_rate"):
        if "self_cond_rate" in overrides:
            raise ConfigError(
                "model.overrides", "self_cond_rate is set by train.self_cond_rate, not here"
            )
        model = model.clone(self_cond_rate=float(config.train.self_cond_rate))
    return model


# ------------------------------------------------------------------------------- variants
def flag(value: str | bool) -> bool:
    """A variant key given bare (``:tiny``) or as ``tiny=true|false``."""
    if value is True or str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected no value or true/false, got {value!r}")


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    return n


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0 or x == float("inf"):
        raise ValueError(f"expected a finite number > 0, got {value!r}")
    return x


def _one_of(known: Callable[[], list]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in known():
            raise ValueError(f"unknown {value!r}; allowed: {', '.join(known())}")
        return value

    return parse


COMMON_VARIANTS: dict[str, Callable[[Any], Any]] = {
    "tiny": flag,  # a seconds-long smoke run
    "model": _one_of(models.list_models),  # model.name (its overrides cleared)
    "schedule": _one_of(noise.list_schedules),  # noise.schedule
    "scale": _positive_float,  # noise.input_scale (Chen 2023's b)
    "target": _one_of(lambda: list(noise.TARGETS)),  # noise.target
    "weighting": _one_of(noise.list_weightings),  # noise.weighting
    "steps": _positive_int,  # total_steps
    "batch": _positive_int,  # data.batch_size
    "size": _positive_int,  # data.image_size
}


def parse_variant(arg: str | None, extra: dict[str, Callable[[Any], Any]] | None = None) -> dict:
    """``"tiny,model=DiT-B/2"`` -> ``{"tiny": True, "model": "DiT-B/2"}``, checked.

    Keys are :data:`COMMON_VARIANTS` plus the config's ``extra`` (key -> parser of the value
    string; a bare key passes True). Raises ConfigError naming an unknown key (with the
    allowed ones) or a bad value.
    """
    parsers = {**COMMON_VARIANTS, **(extra or {})}
    out: dict[str, Any] = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if key not in parsers:
            raise ConfigError("variant", f"unknown key {key!r}", sorted(parsers))
        raw: Any = value.strip() if sep else True
        try:
            out[key] = parsers[key](raw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"variant {key}", str(e)) from None
    return out


def make_tiny(
    c: ml_collections.ConfigDict, model: str, image_size: int = 16, overrides=None
) -> None:
    """Shrinks any config in place to a seconds-long smoke run (the ``:tiny`` variants)."""
    c.total_steps = 4
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.sample_every_steps = 4
    c.eval_every_steps = 0
    c.data.image_size = image_size
    c.data.batch_size = 8
    c.data.worker_count = 0
    c.model.name = model
    c.model.overrides = dict(overrides or {})
    c.optim.warmup_steps = 0
    c.optim.decay = "constant"
    c.optim.grad_accum_steps = 1
    c.sampling.steps = 4
    c.sampling.num_grid = 8
    c.sampling.batch_size = 8
    c.eval.num_samples = 8
    c.eval.quality_num_samples = 64


def apply_variant(
    c: ml_collections.ConfigDict, v: dict, tiny: Callable[[ml_collections.ConfigDict], None]
) -> ml_collections.ConfigDict:
    """Applies parsed variants: ``tiny`` (the config's own shrinking function) first, then
    the explicit common keys, which win over it. Returns ``c``."""
    if v.get("tiny"):
        tiny(c)
    if "model" in v:
        c.model.name = v["model"]
        c.model.overrides = {}
    fields = {
        "schedule": ("noise", "schedule"),
        "scale": ("noise", "input_scale"),
        "target": ("noise", "target"),
        "weighting": ("noise", "weighting"),
        "batch": ("data", "batch_size"),
        "size": ("data", "image_size"),
    }
    for key, (section, name) in fields.items():
        if key in v:
            c[section][name] = v[key]
    if "schedule" in v:  # another schedule's parameters would not apply
        c.noise.schedule_params = _placeholders(SCHEDULE_PARAMS)
    if "weighting" in v:
        c.noise.weighting_params = _placeholders(WEIGHTING_PARAMS)
    if "steps" in v:
        c.total_steps = v["steps"]
    return c
