"""One command-line style (jaxdiff/cli.py) for every entry point, checked in-process: ``--help``
prints the usage line and the tool's own flags with exit status 0, and an unknown flag is one
``error:`` line on stderr (then at most the usage) with exit status 2.

Each entry point runs through its in-process function (no subprocess): ``cli(argv)`` with
``argv[0]`` the program for the ``python -m jaxdiff.*`` tools, ``common.main(STUDY, argv)`` for
the studies, and ``main(args)`` with the arguments alone for ``experiments.index`` and the
benchmark scripts (as ``main(["--smoke"])``). Every module with a ``__main__`` guard (or a
``__main__.py``) under jaxdiff/, experiments/ and benchmarks/ must be in the table."""

import glob
import importlib
import os
import re

import pytest
from tiny_config import REPO


def _cli(module, program=None):
    """``module.cli([program, *args])``: the tools whose argv starts with the program."""
    return lambda args: importlib.import_module(module).cli([program or module, *args])


def _main(module):
    """``module.main(args)``: the arguments without the program (argparse's convention)."""
    return lambda args: importlib.import_module(module).main(list(args))


def _study(name):
    def run(args):
        from experiments import common

        study = importlib.import_module(f"experiments.{name}").STUDY
        return common.main(study, [f"experiments.{name}", *args])

    return run


def _sampler_quality(args):
    from experiments import sampler_quality

    return sampler_quality.main(["experiments.sampler_quality", *args])


# module: (run(args) -> exit status, text of its usage line, one of its own flags)
ENTRY_POINTS = {
    "jaxdiff.main": (_cli("jaxdiff.main"), "python -m jaxdiff.main", "workdir"),
    "jaxdiff.encode": (_cli("jaxdiff.encode"), "python -m jaxdiff.encode", "vae"),
    "jaxdiff.data.prepare": (_cli("jaxdiff.data.prepare"), "-m jaxdiff.data.prepare", "dataset"),
    "jaxdiff.models.convert": (
        _cli("jaxdiff.models.convert"), "python -m jaxdiff.models.convert", "dit"),
    "jaxdiff.evaluation.fid": (
        _cli("jaxdiff.evaluation.fid"), "python -m jaxdiff.evaluation.fid", "weights"),
    # (no flags: two positional arguments, named in the usage line)
    "jaxdiff.evaluation.inception_convert": (
        _cli("jaxdiff.evaluation.inception_convert"),
        "python -m jaxdiff.evaluation.inception_convert PT_INCEPTION.pth OUT.npz", None),
    "jaxdiff.noise.plot": (_cli("jaxdiff.noise.plot"), "python -m jaxdiff.noise.plot", "schedules"),
    "jaxdiff.ema": (_cli("jaxdiff.ema.__main__", "jaxdiff.ema"), "python -m jaxdiff.ema", "std"),
    "experiments.hang_schedules": (
        _study("hang_schedules"), "python -m experiments.hang_schedules", "scale"),
    "experiments.min_snr": (_study("min_snr"), "python -m experiments.min_snr", "scale"),
    "experiments.adaptive_timesteps": (
        _study("adaptive_timesteps"), "python -m experiments.adaptive_timesteps", "scale"),
    "experiments.chen_input_scaling": (
        _study("chen_input_scaling"), "python -m experiments.chen_input_scaling", "scale"),
    "experiments.sampler_quality": (
        _sampler_quality, "python -m experiments.sampler_quality", "nfe"),
    "experiments.index": (_main("experiments.index"), "python -m experiments.index", "check"),
    "benchmarks.adaptive": (
        _main("benchmarks.adaptive"), "python benchmarks/adaptive.py", "dit-variants"),
    "benchmarks.diagnostics": (
        _main("benchmarks.diagnostics"), "python benchmarks/diagnostics.py", "no-append"),
    "benchmarks.ema": (_main("benchmarks.ema"), "python benchmarks/ema.py", "steps"),
    "benchmarks.fid": (_main("benchmarks.fid"), "python benchmarks/fid.py", "size"),
    "benchmarks.loop": (_main("benchmarks.loop"), "python benchmarks/loop.py", "setups"),
    "benchmarks.models": (_main("benchmarks.models"), "python benchmarks/models.py", "plain-dense"),
    "benchmarks.samplers": (
        _main("benchmarks.samplers"), "python benchmarks/samplers.py", "no_torch"),
    "benchmarks.scaling": (
        _main("benchmarks.scaling"), "python benchmarks/scaling.py", "compute-dtype"),
    "benchmarks.train_step": (
        _main("benchmarks.train_step"), "python benchmarks/train_step.py", "no-torch"),
    "benchmarks.vae": (_main("benchmarks.vae"), "python benchmarks/vae.py", "no-append"),
}  # fmt: skip


def _entry_point_modules() -> set[str]:
    """Every module of the repository that runs as a command."""
    found = set()
    for top in ("jaxdiff", "experiments", "benchmarks"):
        for path in glob.glob(os.path.join(REPO, top, "**", "*.py"), recursive=True):
            rel = os.path.relpath(path, REPO)[: -len(".py")]
            with open(path) as f:
                guarded = 'if __name__ == "__main__":' in f.read()
            if rel.endswith("__main__"):
                found.add(os.path.dirname(rel).replace(os.sep, "."))
            elif guarded:
                found.add(rel.replace(os.sep, "."))
    return found


def test_every_entry_point_is_in_the_table():
    assert _entry_point_modules() == set(ENTRY_POINTS)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_prints_usage_and_flags(name, capsys):
    run, usage, flag = ENTRY_POINTS[name]
    status = run(["--help"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.startswith("usage: ") and usage in out.splitlines()[0], out[:500]
    if flag is not None:  # listed among the flags, after the usage (absl: --[no]name of a bool)
        flags_part = out.split("\n\n", 1)[1]
        assert re.search(rf"--(\[no\])?{re.escape(flag)}[:= ]", flags_part), out


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_unknown_flag_is_one_error_line_and_status_2(name, capsys):
    run, _, _ = ENTRY_POINTS[name]
    status = run(["--no_such_flag=1"])
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    first, *rest = err.rstrip("\n").splitlines()
    assert first.startswith(("error: ", "config error: ")) and "no_such_flag" in first, err
    assert all(line.startswith(("usage:", " ")) for line in rest), err  # at most the usage
    assert "Traceback" not in err
