"""Command-line entry: ``python -m jaxdiff.main --config=configs/X.py[:variant] --workdir=DIR``.

``--mode=train`` (default, resumes from DIR), ``sample``, ``evaluate``, ``diagnose``
(noise-level diagnostics of the latest checkpoint, ``jaxdiff.diagnostics``) or ``check`` (the
config, the data, weights and statistics it names and the work dir, then the plan: parameter
count, batch per device, memory; compiles nothing, ``jaxdiff.training.check``). Multi-host runs (TPU
pods, SLURM, Kubernetes) are joined through ``jax.distributed``. A bad config value or flag
prints one line, ``config error: <field>: <problem>; allowed: <values>``, and exits with
status 2 before anything is compiled; a run that cannot proceed safely prints
``error: <message>`` and exits with 1 (``--verbosity=1`` adds the traceback).
"""

from __future__ import annotations

import ast
import copy
import glob
import os
import sys
import traceback
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# jaxdiff runs no TensorFlow math (TF only reads TFDS data); this also silences its notice.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from jaxdiff import cli as cli_lib  # noqa: E402
from jaxdiff.errors import ConfigError, RunError  # noqa: E402

MODES = ("train", "sample", "evaluate", "diagnose", "check")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The fields every config has (drivers and tools override them by these names).
MAIN_FIELDS = """\
  seed, total_steps, log_every_steps, checkpoint_every_steps, keep_checkpoints,
  sample_every_steps, eval_every_steps, init_from, on_nonfinite
  data.name, data.image_size, data.channels, data.batch_size (global), data.num_classes,
  data.data_dir
  model.name (see jaxdiff.models.list_models()), model.overrides.<field>
  noise.schedule, noise.schedule_params.<p>, noise.input_scale, noise.normalize_input,
  noise.target, noise.weighting, noise.weighting_params.<p>, noise.weight_mode,
  noise.timesteps, noise.timesteps_params.<p>
  optim.name, optim.lr, optim.warmup_steps, optim.decay, optim.grad_clip, optim.weight_decay
  ema.decays; train.label_dropout, train.compute_dtype; mesh.shape
  sampling.method, sampling.steps, sampling.schedule, sampling.guidance_scale
  eval.num_samples, eval.fid_stats, eval.inception_weights"""


def define_flags() -> flags.FlagValues:
    """The command's flags on a fresh ``FlagValues`` (so the CLI can be run in-process).
    ``--config`` is the file; its ``--config.<field>=value`` overrides are not absl flags but
    are applied by :func:`parse` (one typed error per bad override)."""
    fv = flags.FlagValues()
    f = dict(flag_values=fv)
    flags.DEFINE_string("config", None, "Config file (configs/X.py[:variant]).", **f)
    flags.DEFINE_string("workdir", None, "Work directory (checkpoints, metrics, samples).", **f)
    flags.DEFINE_enum("mode", "train", list(MODES), "What to run.", **f)
    flags.DEFINE_integer("num_samples", None, "sample/evaluate: number of samples.", **f)
    flags.DEFINE_string("fid_stats", None, "evaluate: reference statistics .npz (mu, sigma).", **f)
    flags.DEFINE_string("inception_weights", None, "evaluate: pytorch-fid Inception weights.", **f)
    flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.", **f)
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.", **f)
    flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.", **f)
    flags.DEFINE_integer("verbosity", 0, "1 or more: tracebacks for errors, INFO logs.", **f)
    return fv


def _configs() -> list[tuple[str, str]]:
    """(path, first docstring line) of every shipped config."""
    out = []
    for path in sorted(glob.glob(os.path.join(_REPO, "configs", "*.py"))):
        with open(path) as fh:
            doc = ast.get_docstring(ast.parse(fh.read())) or ""
        out.append((os.path.relpath(path, _REPO), doc.splitlines()[0] if doc else ""))
    return out


def help_text() -> str:
    """What ``--help`` prints: usage, modes, configs, the main fields and the flags."""
    configs = "\n".join(f"  {p:34s}{doc[:66]}" for p, doc in _configs())
    return f"""\
usage: python -m jaxdiff.main --config=configs/X.py[:variant] --workdir=DIR [--mode=MODE]
                              [--config.a.b=value ...]

Trains (resuming from DIR), samples, evaluates or diagnoses a diffusion model.
Run it again to resume.

modes (--mode):   {", ".join(MODES)} (train is the default; check validates
                  the config, data, weights and work dir and prints the plan, compiling nothing)

configs (--config; each has :tiny and the variants tiny, model=, schedule=, scale=,
target=, weighting=, steps=, batch=, size=, e.g. configs/digits.py:tiny,schedule=laplace):
{configs}

main fields (override any with --config.<field>=value):
{MAIN_FIELDS}

flags:
  --workdir=DIR            checkpoints/, metrics.jsonl, TensorBoard events, samples/
  --num_samples=N          sample/evaluate: how many samples
  --fid_stats=REF.npz      evaluate: reference statistics (mu, sigma) for FID
  --inception_weights=PTH  evaluate: pytorch-fid Inception weights
  --coordinator_address, --num_processes, --process_id   multi-host (jax.distributed)
  --verbosity=1            show tracebacks and INFO logs
"""


def _flag_error(err: flags.Error, fv: flags.FlagValues, argv: list[str]) -> ConfigError:
    """A ConfigError naming the flag of an absl parsing failure."""
    if isinstance(err, flags.UnrecognizedFlagError):
        return ConfigError(f"--{err.flagname}", "unknown flag", [f"--{n}" for n in fv])
    for arg in argv[1:]:  # a bad value: find the flag whose value does not parse
        name, _, raw = arg.lstrip("-").partition("=")
        if name in fv:
            try:
                copy.deepcopy(fv[name]).parse(raw)
            except (flags.Error, ValueError):
                allowed = getattr(fv[name].parser, "enum_values", None) or fv[name].flag_type()
                return ConfigError(f"--{name}", f"cannot read {raw!r}", allowed)
    return ConfigError("flags", (str(err).strip().splitlines() or [""])[0])


def parse(argv: list[str]):
    """(arguments, None) or (None, ConfigError) for ``argv``: the absl flags as attributes
    (``workdir``, ``mode``, ...) and ``config``, the loaded config with its overrides."""
    fv = define_flags()
    try:
        rest, overrides = cli_lib.split_overrides(list(argv))
        try:
            fv(rest)
        except flags.Error as e:
            raise _flag_error(e, fv, rest) from None
        if not fv.config:
            raise ConfigError("--config", "required", cli_lib.shipped_configs(_REPO))
        config = cli_lib.load_config(fv.config, _REPO)
        for path, raw in overrides:
            cli_lib.apply_override(config, path, raw)
        if not fv.workdir:
            raise ConfigError("--workdir", "required", "a directory (created if missing)")
        if os.path.exists(fv.workdir) and not os.path.isdir(fv.workdir):
            raise ConfigError("--workdir", f"{fv.workdir!r} is a file", "a directory")
    except ConfigError as e:
        return None, e
    args = types.SimpleNamespace(**{name: fv[name].value for name in fv})
    args.config = config
    return args, None


def _check_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError("--workdir", f"cannot create {workdir!r} ({e.strerror})") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError("--workdir", f"{workdir!r} is not writable", "a writable directory")


def run(fv) -> object:
    """Validates the config and runs the mode.

    The imports are here, not at the top, so that ``--help`` and flag errors answer without
    loading the training stack (JAX, Flax, Orbax: several seconds), and so that the
    XLA:CPU flags are in the environment before anything can start JAX's backend.
    """
    from jaxdiff.distributed import init_distributed
    from jaxdiff.platform import configure_xla_for_cpu

    # XLA:CPU flags that speed up the DiT train step (benchmarks/RESULTS.md); they configure
    # only XLA's CPU compiler, read when the backend starts, i.e. after this point.
    configure_xla_for_cpu()
    import jax

    from jaxdiff.training.validate import importance_warning, validate_config
    from jaxdiff.training.workdir import setup_logging

    init_distributed(fv.coordinator_address, fv.num_processes, fv.process_id)
    validate_config(fv.config, num_devices=jax.device_count())
    warning = importance_warning(fv.config)
    if warning and jax.process_index() == 0:
        print(warning, file=sys.stderr, flush=True)
    from jaxdiff.training import check

    if fv.mode == "check":  # creates, compiles and reads nothing
        lines = check.run_check(fv.config, fv.workdir, num_devices=jax.device_count())
        if jax.process_index() == 0:
            print("\n".join(["check: ok", *lines]), flush=True)
        return lines
    # the data, weights and statistics the config names exist, before anything is built
    check.check_inputs(fv.config, data=fv.mode == "train")
    for flag in ("fid_stats", "inception_weights"):
        path = getattr(fv, flag)
        if path and not os.path.isfile(path):
            raise ConfigError(f"--{flag}", f"no such file {path!r}", "an existing file")
    _check_workdir(fv.workdir)
    if jax.process_index() == 0:
        setup_logging(fv.workdir, fv.verbosity)  # third-party logs to WORKDIR/train.log
    from jaxdiff import diagnostics

    if fv.mode == "diagnose":
        from jaxdiff.diagnostics.workdir import diagnose_workdir

        return diagnose_workdir(fv.config, fv.workdir)
    from jaxdiff.training import runner

    return runner.run(
        fv.config,
        fv.workdir,
        mode=fv.mode,
        num_samples=fv.num_samples,
        fid_stats=fv.fid_stats,
        inception_weights=fv.inception_weights,
        diagnose=diagnostics.training_hook,
    )


def cli(argv: list[str]) -> int:
    """Runs the command for ``argv`` (``argv[0]`` is the program); returns the exit status."""
    if any(a in ("--help", "-h", "--helpfull", "-help") for a in argv[1:]):
        print(help_text())
        return 0
    fv, err = parse(argv)
    verbose = fv is not None and fv.verbosity > 0
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    try:
        if err is not None:
            raise err
        run(fv)
    except ConfigError as e:
        if verbose:
            traceback.print_exc()
        print(f"config error: {e}", file=sys.stderr, flush=True)
        return 2
    except RunError as e:
        if verbose:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def main() -> None:
    sys.exit(cli(sys.argv))


if __name__ == "__main__":
    main()
