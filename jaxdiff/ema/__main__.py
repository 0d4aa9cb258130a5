"""``python -m jaxdiff.ema``: post-hoc EMA from a run's snapshots (EDM2).

  python -m jaxdiff.ema posthoc --workdir=DIR --std=0.07 [--step=N] [--out=PATH]
  python -m jaxdiff.ema posthoc --workdir=DIR --decay=0.999 [--step=N]
  python -m jaxdiff.ema sweep --workdir=DIR --std=0.03,0.05,0.07,0.1,0.15 [--num_samples=N]

``posthoc`` writes the weights to ``DIR/posthoc/std_0.070`` (``..._step_N`` with ``--step``),
which ``--config.init_from=`` accepts (training, ``--mode=sample|evaluate`` in a work dir
without checkpoints). ``--decay`` reconstructs the σ_rel of a classic EMA with that decay at
the step. ``sweep`` also evaluates each σ_rel and writes ``DIR/posthoc/sweep_step_N.{json,
csv,png}``. A bad value prints one line and exits with status 2.
"""

from __future__ import annotations

import sys

from absl import flags

from jaxdiff.cli import run
from jaxdiff.errors import ConfigError

COMMANDS = ("posthoc", "sweep")
USAGE = (
    "python -m jaxdiff.ema posthoc|sweep --workdir=DIR (--std=S[,S...] | --decay=D) "
    "[--step=N] [--out=PATH] [--num_samples=N]"
)


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "The training run's work dir.", **f)
    flags.DEFINE_string("std", None, "σ_rel to reconstruct (sweep: comma-separated).", **f)
    flags.DEFINE_float("decay", None, "posthoc: a classic EMA decay instead of --std.", **f)
    flags.DEFINE_integer("step", None, "Snapshot step to reconstruct at (default: newest).", **f)
    flags.DEFINE_string("out", None, "posthoc: output directory (default DIR/posthoc/...).", **f)
    flags.DEFINE_integer("num_samples", None, "sweep: samples per evaluation.", **f)


def _stds(text: str | None, many: bool) -> list[float]:
    if text is None:
        return []
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError("--std", f"not a number in {text!r}", "e.g. 0.07 or 0.05,0.1") from None
    if not values or (len(values) > 1 and not many):
        raise ConfigError("--std", f"got {text!r}", "one value" if not many else "values")
    return values


def _body(fv: flags.FlagValues, args: list[str]) -> int:
    command = args[0]
    if command not in COMMANDS:
        raise ConfigError("command", f"unknown {command!r}", COMMANDS)
    if not fv.workdir:
        raise ConfigError("--workdir", "required", "a training work dir")
    from jaxdiff.platform import configure_xla_for_cpu

    configure_xla_for_cpu()  # before JAX starts its backend
    from jaxdiff.ema import reconstruct as rec
    from jaxdiff.training.posthoc import MAX_STD

    stds = _stds(fv.std, many=command == "sweep")
    for s in stds:
        if not 0.0 < s < MAX_STD:
            raise ConfigError("--std", f"got {s:g}", f"values in (0, {MAX_STD:.4f})")
    if command == "sweep":
        from jaxdiff.ema.sweep import sweep

        if not stds:
            raise ConfigError("--std", "required", "comma-separated σ_rel, e.g. 0.05,0.1")
        _, paths = sweep(fv.workdir, stds, step=fv.step, num_samples=fv.num_samples)
        print(f"Wrote {paths['json']}, {paths['csv']} and {paths['png']}", flush=True)
        return 0
    params, info = rec.reconstruct(
        fv.workdir, stds[0] if stds else None, decay=fv.decay, step=fv.step
    )
    out = fv.out or rec.default_out(fv.workdir, info["std"], fv.step)
    rec.write_weights(out, params, info)
    print(
        f"Wrote the EMA with sigma_rel {info['std']:.4g} (gamma {info['gamma']:.4g}) at step "
        f"{info['step']} from {len(info['snapshots'])} snapshots (profile fit error "
        f"{info['fit_error']:.2e}) to {out}",
        flush=True,
    )
    return 0


def cli(argv: list[str]) -> int:
    """Runs the command for ``argv`` (``argv[0]`` is the program); returns the exit status."""
    return run(argv, _define, _body, USAGE, (1, 1))


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
