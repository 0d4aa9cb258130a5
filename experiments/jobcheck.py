"""The config part of ``jaxdiff.main --mode=check``, in-process, on every job of a full grid.

A full-scale grid names paths a site fills in (datasets, weights, reference statistics) with
the placeholders of :data:`PLACEHOLDERS`; everything else of every job must validate as
written. :func:`check_grid` parses each job's command line exactly as ``jaxdiff.main`` does,
blanks the fields holding a placeholder, validates the config and checks every input that is
not a placeholder (``jaxdiff.training.check.check_inputs``); it raises
:class:`jaxdiff.errors.ConfigError` for the first bad job and returns the placeholders used.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxdiff.errors import ConfigError

# placeholder -> (the config field it fills, what the user puts there)
PLACEHOLDERS = {
    "LATENTS_DIR": (
        "data.data_dir",
        "SD-VAE latents of ImageNet-256 written by `python -m jaxdiff.encode` (its --out)",
    ),
    "VAE_DIR": ("data.vae", "sd-vae-ft-ema (diffusers layout) to decode latent samples"),
    "TFDS_DIR": ("data.data_dir", "the TFDS data_dir holding the prepared dataset"),
    "INCEPTION_WEIGHTS": ("eval.inception_weights", "pytorch-fid's pt_inception-2015-12-05"),
    "FID_STATS_IMAGENET256": (
        "eval.fid_stats",
        "ADM's VIRTUAL_imagenet256_labeled.npz (ImageNet-256 reference batch)",
    ),
    "FID_STATS_IMAGENET128": (
        "eval.fid_stats",
        "ADM's VIRTUAL_imagenet128_labeled.npz (ImageNet-128 reference batch)",
    ),
    "FID_STATS_IMAGENET64": (
        "eval.fid_stats",
        "statistics of center-cropped ImageNet-2012 training images at 64 px (python -m "
        "jaxdiff.evaluation.fid stats), the chen grid's preprocessing; ADM's "
        "VIRTUAL_imagenet64_labeled.npz is of the box-downsampled set",
    ),
    "FID_STATS_CIFAR10": (
        "eval.fid_stats",
        "statistics of the 50K CIFAR-10 training images (python -m jaxdiff.evaluation.fid stats)",
    ),
}
# The fields that name files or directories (checked for existence unless a placeholder).
PATH_FIELDS = ("init_from", "data.data_dir", "data.vae", "eval.fid_stats",
               "eval.inception_weights")  # fmt: skip


def _get(config, field: str):
    node = config
    for part in field.split("."):
        node = node[part]
    return node


def _set(config, field: str, value) -> None:
    *parents, last = field.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value


def job_config(argv: Sequence[str]):
    """The config of one job (``python -m jaxdiff.main --config=... ...``), parsed as
    ``jaxdiff.main`` parses it; raises its ConfigError."""
    from jaxdiff import main  # noqa: PLC0415 - loads absl flags and the config machinery

    args = list(argv)
    if "jaxdiff.main" in args:
        args = args[args.index("jaxdiff.main") + 1 :]
    fv, err = main.parse(["jaxdiff.main", *args])
    if err is not None:
        raise err
    return fv.config


def check_job(argv: Sequence[str]) -> set[str]:
    """Validates one job with its placeholders allowed; returns the placeholders it uses."""
    from jaxdiff.training.check import check_inputs  # noqa: PLC0415 - loads JAX
    from jaxdiff.training.validate import validate_config  # noqa: PLC0415

    config = job_config(argv).copy_and_resolve_references()
    used = set()
    with config.unlocked():
        for field in PATH_FIELDS:
            value = _get(config, field)
            if value in PLACEHOLDERS:
                if PLACEHOLDERS[value][0] != field:
                    raise ConfigError(field, f"placeholder {value} belongs in "
                                      f"{PLACEHOLDERS[value][0]}")  # fmt: skip
                used.add(value)
                _set(config, field, "")
    validate_config(config, num_devices=1)  # checks the paths that are not placeholders
    if "INCEPTION_WEIGHTS" in used:  # statistics without weights are refused; both come later
        with config.unlocked():
            config.eval.fid_stats = ""
    data_filled = not any(PLACEHOLDERS[p][0] == "data.data_dir" for p in used)
    check_inputs(config, data=data_filled)
    return used


def check_grid(commands: Sequence[Sequence[str]]) -> dict[str, int]:
    """Checks every job (each once, whatever its seed); returns placeholder -> number of jobs
    using it. Raises ConfigError ``job <i>: <field>: ...`` for the first invalid job."""
    counts: dict[str, int] = {}
    seen: dict[tuple, set] = {}
    for i, argv in enumerate(commands, 1):
        key = tuple(a for a in argv if not a.startswith(("--config.seed=", "--workdir=")))
        if key not in seen:
            try:
                seen[key] = check_job(argv)
            except ConfigError as e:
                raise ConfigError(f"job {i} ({_short(argv)}): {e.field}", e.problem,
                                  e.allowed) from None  # fmt: skip
        for p in seen[key]:
            counts[p] = counts.get(p, 0) + 1
    return counts


def _short(argv: Sequence[str]) -> str:
    return next((a.removeprefix("--config=") for a in argv if a.startswith("--config=")), "?")


def placeholder_lines(counts: dict[str, int]) -> list[str]:
    """One line per placeholder the user must fill: name, field, what, jobs using it."""
    return [
        f"  {p}  ({PLACEHOLDERS[p][0]}: {PLACEHOLDERS[p][1]}; {n} jobs)"
        for p, n in sorted(counts.items())
    ]
