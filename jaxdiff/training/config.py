"""The base config every setup starts from, variant parsing, and up-front validation.

Config files in ``configs/`` call :func:`base_config` and set their paper's values; every
field is overridable on the command line (``--config.noise.schedule=laplace``). Schedule
and weighting parameters are typed placeholders so that ``--config.noise.schedule_params.b=0.75``
works; unset (None) parameters take the function's defaults.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

SCHEDULE_PARAMS = {
    "mu": float, "b": float, "gamma": float, "s": float, "p_mean": float, "p_std": float,
    "m": float, "start": float, "end": float, "tau": float, "clip_min": float,
    "image_size": int, "noise_d_low": int, "noise_d_high": int,
}  # fmt: skip
WEIGHTING_PARAMS = {"gamma": float, "sigma_data": float, "bias": float}
TIMESTEP_PARAMS = {"proposal": str, "proposal_mu": float, "proposal_b": float}


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
    c.sample_every_steps = 1000
    c.eval_every_steps = 1000  # the embedded default's quality metric (digits only)
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
             tfds_name=placeholder(str), latent_scale=1.0, num_threads=2, vae="")
    )  # fmt: skip
    c.model = ml_collections.ConfigDict(
        dict(name="DiT-S/2", overrides=ml_collections.ConfigDict(), class_conditional=True)
    )
    c.noise = ml_collections.ConfigDict(
        dict(schedule="cosine", schedule_params=_placeholders(SCHEDULE_PARAMS), input_scale=1.0,
             normalize_input=False, target="eps", weighting="snr",
             weighting_params=_placeholders(WEIGHTING_PARAMS), weight_mode="sample",
             timesteps="uniform", timesteps_params=_placeholders(TIMESTEP_PARAMS))
    )  # fmt: skip
    c.optim = ml_collections.ConfigDict(
        dict(name="adamw", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
             warmup_steps=0, decay="constant", grad_clip=1.0, grad_accum_steps=1)
    )  # fmt: skip
    # EMA warm-up: decay min(d, (1 + t) / (10 + t)) at update t, so short runs sample well.
    c.ema = ml_collections.ConfigDict(dict(decays=(0.9999,), warmup=True))
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
             clip_x0=True, num_grid=64, batch_size=64)
    )  # fmt: skip
    c.eval = ml_collections.ConfigDict(
        dict(num_samples=1000, fid_stats="", inception_weights="", digits_num_samples=500)
    )
    return c


def parse_variant(arg: str | None) -> dict:
    """``"tiny,model=DiT-B/2"`` -> ``{"tiny": True, "model": "DiT-B/2"}``."""
    out = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        out[key.strip()] = value.strip() if sep else True
    return out


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


ON_NONFINITE = ("halt", "skip")
COMPUTE_DTYPES = ("float32", "bfloat16")


def _converted_model(path: str, config):
    """The model of a directory written by ``python -m jaxdiff.models.convert`` (or None)."""
    import json
    import os

    from jaxdiff.models import model_from_config

    spec = os.path.join(path, "model.json") if path else ""
    if not spec or not os.path.exists(spec):
        return None
    with open(spec) as f:
        model = model_from_config(json.load(f))
    for field, mine in (("image_size", "image_size"), ("in_channels", "channels")):
        if getattr(model, field) != config.data[mine]:
            raise ValueError(
                f"data.{mine}={config.data[mine]} does not match the {field}="
                f"{getattr(model, field)} of the converted checkpoint in init_from={path!r}"
            )
    return model


def build_model(config):
    """The network named by ``config.model.name`` sized for ``config.data``, or, when
    ``init_from`` is a converted official checkpoint, that checkpoint's architecture."""
    from jaxdiff import models

    converted = _converted_model(config.get("init_from", ""), config)
    if converted is not None:
        return converted

    kwargs = dict(config.model.overrides.to_dict()) if config.model.overrides else {}
    kwargs.setdefault("image_size", config.data.image_size)
    kwargs.setdefault("in_channels", config.data.channels)
    kwargs.setdefault("num_classes", config.data.num_classes)
    try:
        if config.model.name.startswith("DiT"):
            kwargs.setdefault("learn_sigma", False)  # our losses train the mean only
        return models.get_model(config.model.name, **kwargs)
    except ValueError as e:
        raise ValueError(f"model: {e}") from None


def is_rin(config) -> bool:
    return config.model.name.startswith("RIN")


def _positive(value, field):
    if not value > 0:
        raise ValueError(f"{field} must be > 0, got {value!r}")


def validate_config(config, num_devices: int | None = None) -> None:
    """Checks the config before anything is compiled; raises ValueError naming the field."""
    import jax

    from jaxdiff.diffusion import make_noise_spec

    num_devices = jax.device_count() if num_devices is None else num_devices
    for field in ("total_steps", "log_every_steps", "checkpoint_every_steps"):
        _positive(config[field], field)
    for field in ("data.image_size", "data.channels", "data.batch_size"):
        sec, name = field.split(".")
        _positive(config[sec][name], field)
    if config.data.batch_size % num_devices:
        raise ValueError(
            f"data.batch_size={config.data.batch_size} must be divisible by the device count "
            f"({num_devices})"
        )
    accum = config.optim.grad_accum_steps
    _positive(accum, "optim.grad_accum_steps")
    if config.data.batch_size % (accum * num_devices):
        raise ValueError(
            f"data.batch_size={config.data.batch_size} must be divisible by "
            f"optim.grad_accum_steps × devices = {accum * num_devices}"
        )
    _positive(config.optim.lr, "optim.lr")
    if config.on_nonfinite not in ON_NONFINITE:
        raise ValueError(
            f"on_nonfinite: unknown {config.on_nonfinite!r}; known: {list(ON_NONFINITE)}"
        )
    if config.train.compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"train.compute_dtype: unknown {config.train.compute_dtype!r}; "
            f"known: {list(COMPUTE_DTYPES)}"
        )
    if not 0.0 <= config.train.label_dropout < 1.0:
        raise ValueError(f"train.label_dropout must be in [0, 1), got {config.train.label_dropout}")
    decays = tuple(config.ema.decays)
    if not decays or any(not 0.0 <= d < 1.0 for d in decays):
        raise ValueError(f"ema.decays must be a non-empty list of values in [0, 1), got {decays}")
    from jaxdiff.training.optim import make_optimizer

    make_optimizer(config.optim, config.total_steps)
    make_noise_spec(noise_config(config))
    validate_sampling(config, build_model(config))
    from jaxdiff.training.sharding import resolve_mesh_shape

    resolve_mesh_shape(config.mesh.shape, config.mesh.axes, num_devices)


def validate_sampling(config, model) -> None:
    """Checks ``config.sampling`` against the samplers and the model; ValueError names the field."""
    from jaxdiff import noise
    from jaxdiff.sampling import list_samplers
    from jaxdiff.sampling.respace import DDPM_LINEAR_GRID, NUM_TRAIN_STEPS
    from jaxdiff.sampling.samplers import VARIANCES

    s = config.sampling
    if s.method not in list_samplers():
        raise ValueError(f"sampling.method: unknown {s.method!r}; known: {list_samplers()}")
    schedules = [*noise.list_schedules(), DDPM_LINEAR_GRID]
    if s.schedule not in schedules:
        raise ValueError(f"sampling.schedule: unknown {s.schedule!r}; known: {schedules}")
    if not isinstance(s.steps, int) or s.steps < 1:
        raise ValueError(f"sampling.steps must be an integer >= 1, got {s.steps!r}")
    if s.schedule == DDPM_LINEAR_GRID and s.steps > NUM_TRAIN_STEPS:
        raise ValueError(
            f"sampling.steps={s.steps}: the {DDPM_LINEAR_GRID} grid has at most "
            f"{NUM_TRAIN_STEPS} steps"
        )
    if s.variance not in VARIANCES:
        raise ValueError(f"sampling.variance: unknown {s.variance!r}; known: {list(VARIANCES)}")
    if s.variance == "learned" and not getattr(model, "learn_sigma", False):
        raise ValueError(
            "sampling.variance='learned' needs a network with a learned variance output (a "
            "converted official DiT checkpoint in init_from); use 'small' or 'large'"
        )
    if s.variance == "learned" and is_rin(config):
        raise ValueError("sampling.variance='learned' is not available for RIN models")
    k = s.get("guidance_channels")
    if k is not None and not 1 <= k <= config.data.channels:
        raise ValueError(
            f"sampling.guidance_channels must be None or in [1, {config.data.channels}] "
            f"(data.channels), got {k!r}"
        )


def make_tiny(c: ml_collections.ConfigDict, model: str, image_size: int = 16) -> None:
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
    c.model.overrides = {}
    c.optim.warmup_steps = 0
    c.optim.decay = "constant"
    c.optim.grad_accum_steps = 1
    c.sampling.steps = 4
    c.sampling.num_grid = 8
    c.sampling.batch_size = 8
    c.eval.num_samples = 8
    c.eval.digits_num_samples = 64


def apply_variant(c: ml_collections.ConfigDict, v: dict) -> None:
    """Common ``key=value`` variants: ``model=``, ``schedule=``, ``scale=``, ``target=``,
    ``weighting=``, ``steps=``, ``batch=``."""
    if "model" in v:
        c.model.name = v["model"]
        c.model.overrides = {}
    if "schedule" in v:
        c.noise.schedule = v["schedule"]
    if "scale" in v:
        c.noise.input_scale = float(v["scale"])
    if "target" in v:
        c.noise.target = v["target"]
    if "weighting" in v:
        c.noise.weighting = v["weighting"]
    if "steps" in v:
        c.total_steps = int(v["steps"])
    if "batch" in v:
        c.data.batch_size = int(v["batch"])
