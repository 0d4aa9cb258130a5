"""What every study driver shares: the grid and running it (reports: experiments/report.py).

A study is a list of cells (grid points, each a set of ``jaxdiff.main`` config overrides)
times seeds, at three scales:

- ``smoke``: a 2-point grid, a few steps (tests and CI);
- ``cpu``: what fits a 2-core machine, ≥ 5 seeds per cell paired by seed; every run is a
  ``python -m jaxdiff.main`` subprocess in ``OUT/runs/<cell>/seed_<s>``, resumable (it
  checkpoints at every evaluation), and skipped when its ``run.json`` says it finished, so a
  study can be spread over invocations;
- ``full``: the papers' settings; writes ``OUT/jobs.txt`` (one command per grid point) and
  ``OUT/slurm_array.sh`` (a SLURM array over those lines, one multi-host job each) and, once
  the work dirs exist, aggregates them with the same report code (``--aggregate``).

A study declares its claims (``Study.claims``, :class:`experiments.claims.Claim`) before it
runs; ``OUT`` then holds what :mod:`experiments.report` writes: ``results.csv`` (one row per
run and evaluation step), ``curves.csv``, ``verdicts.json``, ``summary.md`` and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from absl import flags

from experiments.claims import Claim
from jaxdiff import cli
from jaxdiff.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALES = ("smoke", "cpu", "full")
# Bump when the grid or protocol of a study changes (a finished run keeps the version it used).
# 2: trained arms (the default run's optimiser, 1000 steps), 5 paired seeds, learning curves,
# declared claims with paired tests and Holm's correction.
PROTOCOL_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Cell:
    """One grid point: its parameters (for the table) and the config it trains."""

    params: tuple[tuple[str, object], ...]  # ordered (key, value) pairs, e.g. (("b", 0.5),)
    config: str  # configs/X.py[:variant], relative to the repository
    overrides: tuple[str, ...] = ()  # --config.a.b=v flags

    @property
    def name(self) -> str:
        """The grid point as "k=v,k=v" (the ``cell`` column)."""
        return ",".join(f"{k}={v}" for k, v in self.params)

    @property
    def slug(self) -> str:
        """A directory name for the cell."""
        return self.name.replace("=", "-").replace(",", "__").replace("/", "_") or "default"

    def get(self, key: str):
        return dict(self.params)[key]


@dataclasses.dataclass(frozen=True)
class Grid:
    """The runs of one scale: cells × seeds, with overrides shared by every run."""

    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    common: tuple[str, ...] = ()  # --config.* flags for every run (steps, eval cadence, ...)
    metrics: tuple[str, ...] = ()  # metrics.jsonl keys reported, the first the headline
    # (metric, value): the quality a steps-to-target claim reaches on this grid, where it
    # differs from the claim's own (e.g. the full grids' FID 10, Min-SNR's measure)
    targets: tuple[tuple[str, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Study:
    """A study: its name, question, grids per scale, the claims it tests (declared before it
    runs; Holm's correction covers exactly these) and optional extra report sections."""

    name: str
    question: str
    grids: dict  # scale -> Grid
    claims: tuple[Claim, ...] = ()
    # (results rows, curve rows, grid) -> an extra markdown section of summary.md
    describe: Callable[[list[dict], list[dict], Grid], str] | None = None
    # (results rows, curve rows, out, grid) -> extra plot paths (report.py draws the curves)
    plot: Callable[[list[dict], list[dict], str, Grid], list[str]] | None = None


def fid_grid(
    cells: Sequence[Cell],
    seeds: Sequence[int],
    *,
    eval_every: int,
    num_samples: int,
    fid_stats: str | None,
    total_steps: int | None = None,
    data_dir: str | None = None,
    vae: str | None = None,
    targets: Sequence[tuple[str, float]] = (),
) -> Grid:
    """A full-scale grid scored by FID (``eval/fid``): ``total_steps`` (if given), evaluation
    every ``eval_every`` steps on ``num_samples`` samples against ``fid_stats``, and the paths
    a site fills in (placeholders of ``experiments.jobcheck.PLACEHOLDERS``: ``fid_stats``,
    ``INCEPTION_WEIGHTS`` and the given ``data_dir`` / ``vae``); ``fid_stats=None``: each
    cell names its own (e.g. one per resolution)."""
    flags_ = [f"--config.total_steps={total_steps}"] if total_steps is not None else []
    flags_ += [
        f"--config.eval_every_steps={eval_every}",
        f"--config.eval.num_samples={num_samples}",
        "--config.eval.inception_weights=INCEPTION_WEIGHTS",
    ]
    flags_ += [f"--config.eval.fid_stats={fid_stats}"] if fid_stats is not None else []
    flags_ += [f"--config.data.data_dir={data_dir}"] if data_dir is not None else []
    flags_ += [f"--config.data.vae={vae}"] if vae is not None else []
    return Grid(tuple(cells), tuple(seeds), tuple(flags_), ("eval/fid",), tuple(targets))


# The full grids on ImageNet-256 SD-VAE latents read the latents and the VAE from a site's
# paths and score against ADM's ImageNet-256 reference batch. The FID sample count is each
# paper's protocol and set by its study: Hang et al. 2024 FID-10K, Min-SNR FID-50K.
LATENTS = dict(data_dir="LATENTS_DIR", vae="VAE_DIR", fid_stats="FID_STATS_IMAGENET256")


def grid_claims(claims: Sequence[Claim], grid: Grid) -> tuple[Claim, ...]:
    """``claims`` as ``grid`` measures them. On a grid scored by another headline metric (the
    full grids' ``eval/fid`` for the cpu grids' distances), a claim on a distance (direction
    "lower") is measured on ``grid.metrics[0]``; a steps-to-target claim uses the grid's target
    for its metric (``Grid.targets``, e.g. Min-SNR's FID 10). Claims on other metrics (e.g.
    accuracy) that the grid does not log are kept as they are (reported as not run)."""
    targets = dict(grid.targets)
    out = []
    for claim in claims:
        metric = claim.metric
        if metric not in grid.metrics and claim.direction == "lower" and grid.metrics:
            metric = grid.metrics[0]
        if claim.kind == "steps_to_target" and metric != claim.metric and metric not in targets:
            metric = claim.metric  # no target on the grid's scale: left as declared
        target = targets.get(metric) if claim.kind == "steps_to_target" else None
        out.append(dataclasses.replace(claim, metric=metric, target=target or claim.target))
    return tuple(out)


# ------------------------------------------------------------------------------- running
def command(cell: Cell, seed: int, workdir: str, grid: Grid, python: str = "python") -> list[str]:
    """The ``jaxdiff.main`` command of one run."""
    return [
        python, "-m", "jaxdiff.main", f"--config={cell.config}", f"--workdir={workdir}",
        f"--config.seed={seed}", *grid.common, *cell.overrides,
    ]  # fmt: skip


def run_dir(out: str, cell: Cell, seed: int) -> str:
    return os.path.join(out, "runs", cell.slug, f"seed_{seed}")


def finished(workdir: str) -> bool:
    """Whether the driver finished the run in ``workdir`` (its ``run.json``)."""
    try:
        with open(os.path.join(workdir, "run.json")) as f:
            return json.load(f).get("status") == "done"
    except (OSError, ValueError):
        return False


def run_grid(study: Study, scale: str, out: str, *, log=print) -> list[str]:
    """Trains every run of ``scale`` not finished yet (subprocesses, in order); returns the
    work dirs. A failed run stops the study with its log's tail (rerun to resume)."""
    grid = study.grids[scale]
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(out, ".xla_cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    dirs = []
    for seed in grid.seeds:  # seed-major: a study cut short has every cell at some seeds
        for cell in grid.cells:
            workdir = run_dir(out, cell, seed)
            dirs.append(workdir)
            if finished(workdir):
                continue
            os.makedirs(workdir, exist_ok=True)
            cmd = command(cell, seed, workdir, grid, python=sys.executable)
            log(f"[{study.name}] {cell.name} seed {seed}")
            start = time.time()
            with open(os.path.join(workdir, "driver.log"), "a") as f:
                proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                with open(os.path.join(workdir, "driver.log")) as f:
                    tail = "".join(f.readlines()[-15:])
                raise RuntimeError(f"run failed ({shlex.join(cmd)}):\n{tail}")
            _write_json(
                os.path.join(workdir, "run.json"),
                {"status": "done", "cell": cell.name, "seed": seed, "command": cmd,
                 "wall_s": time.time() - start, "protocol": PROTOCOL_VERSION},
            )  # fmt: skip
    return dirs


def _write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def write_jobs(study: Study, out: str, scale: str = "full") -> tuple[str, str]:
    """``OUT/jobs.txt`` (one command per run) and ``OUT/slurm_array.sh`` running line
    ``$SLURM_ARRAY_TASK_ID`` of it on every task of a (multi-host) allocation."""
    grid = study.grids[scale]
    os.makedirs(out, exist_ok=True)
    lines = [
        shlex.join(command(c, s, run_dir(out, c, s), grid, python=".venv/bin/python"))
        for c in grid.cells
        for s in grid.seeds
    ]
    jobs = os.path.join(out, "jobs.txt")
    with open(jobs, "w") as f:
        f.write("\n".join(lines) + "\n")
    script = os.path.join(out, "slurm_array.sh")
    with open(script, "w") as f:
        f.write(_SLURM.format(n=len(lines), study=study.name, jobs=os.path.abspath(jobs),
                              repo=REPO, out=os.path.abspath(out)))  # fmt: skip
    return jobs, script


_SLURM = """#!/bin/bash
# {n} runs of the {study} study, one per array task. Each task may span several hosts
# (e.g. --nodes=4 --ntasks-per-node=1): srun starts the same command on every host and
# jax.distributed joins them from SLURM's environment. Adjust partition/time/GPUs to your site.
#SBATCH --job-name=jaxdiff-{study}
#SBATCH --array=1-{n}
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --output={out}/slurm-%A_%a.out
set -euo pipefail
cd {repo}
CMD=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {jobs})
# Data, weights, statistics, work dir and the plan (parameters, memory) first; compiles nothing.
srun bash -c "$CMD --mode=check"
srun bash -c "$CMD"
# When every task has finished:  python -m experiments.{study} --scale=full --out={out} --aggregate
"""


# --------------------------------------------------------------------------------- entry
def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("scale", None, list(SCALES), "smoke, cpu or full", flag_values=fv)
    flags.DEFINE_string("out", None, "output directory", flag_values=fv)
    flags.DEFINE_bool(
        "aggregate", False, "only tabulate the finished runs (no training)", flag_values=fv
    )


def main(study: Study, argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.<study> --scale=smoke|cpu|full --out=DIR [--aggregate]``."""

    def body(fv: flags.FlagValues, args: list[str]) -> int:
        del args
        if not fv.scale or not fv.out:
            raise flags.Error("--scale and --out are required")
        out = os.path.abspath(fv.out)
        os.makedirs(out, exist_ok=True)
        if fv.scale == "full" and not fv.aggregate:
            from experiments import jobcheck  # here: it loads the training stack

            grid = study.grids["full"]
            commands = [command(c, s, run_dir(out, c, s), grid) for c in grid.cells
                        for s in grid.seeds]  # fmt: skip
            try:
                placeholders = jobcheck.check_grid(commands)
            except ConfigError as e:
                print(f"config error: {e}", file=sys.stderr)
                return 2
            jobs, script = write_jobs(study, out)
            print(f"wrote {jobs} and {script}; every job passes the config part of --mode=check")
            print("fill these placeholders in jobs.txt (e.g. sed -i s,NAME,PATH,g):")
            print("\n".join(jobcheck.placeholder_lines(placeholders)))
            print("after the runs: --scale=full --aggregate")
            return 0
        if fv.scale != "full" and not fv.aggregate:
            run_grid(study, fv.scale, out)
        from experiments import report  # here: report imports this module

        report.write_outputs(study, fv.scale, out)
        print(f"wrote {os.path.join(out, 'summary.md')}")
        return 0

    usage = f"python -m experiments.{study.name} --scale=smoke|cpu|full --out=DIR [--aggregate]"
    return cli.run(sys.argv if argv is None else argv, _define, body, usage, (0, 0))
