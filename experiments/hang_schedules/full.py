"""The full-scale grid of hang_schedules: Hang et al. 2024's ImageNet-256 setting.

DiT-B/2 on SD-VAE latents (configs/imagenet256_latent_dit.py: batch 256, 500K steps, AdamW
1e-4, EMA 0.9999, label dropout 0.1, DDIM-50 with guidance 1.5), FID-10K against ADM's
ImageNet-256 reference batch every 100K steps. Each row starts from the config's
``:schedule=<name>`` variant, which clears the base config's Laplace parameters, and sets
every parameter of its schedule explicitly, so no row inherits another schedule's values.
Besides the v-target rows of their table: Laplace at a second scale b = 1.0, and cosine
against Laplace with the ε and x0 targets (their "consistent across prediction targets").
The README's "paper vs this grid" table lists every difference from the paper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from experiments import common

CONFIG = "configs/imagenet256_latent_dit.py"
# Every parameter of every schedule the rows use (the registry's defaults where the row has
# no value of its own), so a row's p(λ) is what the table says whatever the base config holds.
SCHEDULE_PARAMS = {
    "cosine": {},
    "cosine_shifted": {"mu": 1.0},
    "cosine_scaled": {"s": 0.5},
    "cauchy": {"mu": 0.0, "gamma": 1.0},
    "laplace": {"mu": 0.0, "b": 0.5},
    "lognormal": {"p_mean": -1.2, "p_std": 1.2},
    "flow": {},
    "logit_normal": {"m": 0.0, "s": 1.0},
}
# (row label, target, its plain loss) of the extra target rows
TARGET_ROWS = (("eps", "snr"), ("x0", "x0"))
LAPLACE_B = (0.5, 1.0)  # 0.5: their headline; 1.0: a sensitivity arm (see the README)
TOTAL_STEPS = 500_000
EVAL_EVERY = 100_000
FID_SAMPLES = 10_000  # FID-10K, Hang et al. 2024's protocol
GUIDANCE = (1.5, 2.0, 3.0)  # 1.5 during training; 2.0 and 3.0 by --mode=evaluate afterwards


def _schedule(overrides: Sequence[str]) -> str:
    prefix = "--config.noise.schedule="
    return next(o.removeprefix(prefix) for o in overrides if o.startswith(prefix))


def _param_flags(schedule: str, params: Mapping[str, float]) -> tuple[str, ...]:
    merged = {**SCHEDULE_PARAMS[schedule], **params}
    return tuple(f"--config.noise.schedule_params.{k}={v}" for k, v in merged.items())


def _cell(label: str, overrides: Sequence[str], params: Mapping[str, float] = {}) -> common.Cell:
    schedule = _schedule(overrides)
    kept = tuple(o for o in overrides if not o.startswith("--config.noise.schedule_params."))
    given = {
        o.split("=", 1)[0].rsplit(".", 1)[1]: float(o.split("=", 1)[1])
        for o in overrides
        if o.startswith("--config.noise.schedule_params.")
    }
    flags = (*kept, *_param_flags(schedule, {**given, **params}))
    return common.Cell((("row", label),), f"{CONFIG}:schedule={schedule}", flags)


def cells(rows: Mapping[str, Sequence[str]], v: Sequence[str]) -> tuple[common.Cell, ...]:
    """Every row of ``rows`` (v target and loss first, as the cpu grid), Laplace at each b of
    :data:`LAPLACE_B`, and cosine and Laplace with the ε and x0 targets."""
    out = []
    for label, overrides in rows.items():
        if label == "laplace":
            for b in LAPLACE_B:
                name = "laplace" if b == LAPLACE_B[0] else f"laplace_b{b:g}"
                out.append(_cell(name, (*v, *overrides), {"b": b}))
        else:
            out.append(_cell(label, (*v, *overrides)))
    for target, loss in TARGET_ROWS:
        for schedule in ("cosine", "laplace"):
            flags = (f"--config.noise.target={target}", f"--config.noise.weighting={loss}",
                     f"--config.noise.schedule={schedule}")  # fmt: skip
            out.append(_cell(f"{schedule}_{target}", flags))
    return tuple(out)


def grid(rows: Mapping[str, Sequence[str]], v: Sequence[str]) -> common.Grid:
    """The full grid: :func:`cells`, seed 0, FID-10K every 100K steps."""
    return common.fid_grid(
        cells(rows, v),
        (0,),
        total_steps=TOTAL_STEPS,
        eval_every=EVAL_EVERY,
        num_samples=FID_SAMPLES,
        **common.LATENTS,
    )
