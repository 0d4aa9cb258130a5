"""What every study driver shares: the grid, running it, aggregating it, reporting it.

A study is a list of cells (grid points, each a set of ``jaxdiff.main`` config overrides)
times seeds, at three scales:

- ``smoke``: a 2-point grid, a few steps (tests and CI);
- ``cpu``: what fits a 2-core machine in about an hour, ≥ 3 seeds per cell; every run is a
  ``python -m jaxdiff.main`` subprocess in ``OUT/runs/<cell>/seed_<s>``, resumable, and
  skipped when its ``run.json`` says it finished, so a study can be spread over invocations;
- ``full``: the papers' settings; writes ``OUT/jobs.txt`` (one command per grid point) and
  ``OUT/slurm_array.sh`` (a SLURM array over those lines, one multi-host job each) and, once
  the work dirs exist, aggregates them with the same table code (``--aggregate``).

``OUT`` then holds ``results.csv`` (one row per run: ``study``, ``cell`` — the grid point as
"k=v,k=v" —, ``seed``, ``steps``, ``wall_s``, each final metric), ``curves.csv`` (every
evaluation of every run: metric against step and training wall-clock), ``summary.md`` (mean ±
standard error per cell and the study's conclusion) and PNG plots.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from absl import flags

from jaxdiff import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALES = ("smoke", "cpu", "full")
# Bump when the grid or protocol of a study changes (a finished run keeps the version it used).
PROTOCOL_VERSION = 1


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


@dataclasses.dataclass(frozen=True)
class Study:
    """A study: its name, question, grids per scale, and how to conclude and plot."""

    name: str
    question: str
    grids: dict  # scale -> Grid
    # (summary table, curve rows, grid) -> conclusion text; the headline metric is
    # grid.metrics[0]
    conclude: Callable[[dict, list[dict], Grid], str]
    plot: Callable[[dict, list[dict], str, Grid], list[str]] | None = None  # (..., out, grid)
    lower_is_better: bool = True


def fid_grid(
    cells: Sequence[Cell],
    seeds: Sequence[int],
    *,
    eval_every: int,
    num_samples: int,
    total_steps: int | None = None,
    data_dir: str | None = None,
    vae: str | None = None,
) -> Grid:
    """A full-scale grid scored by FID (``eval/fid``): ``total_steps`` (if given), evaluation
    every ``eval_every`` steps on ``num_samples`` samples, and the paths a site fills in
    (``FID_STATS``, ``INCEPTION_WEIGHTS`` and the given ``data_dir`` / ``vae``)."""
    flags_ = [f"--config.total_steps={total_steps}"] if total_steps is not None else []
    flags_ += [
        f"--config.eval_every_steps={eval_every}",
        f"--config.eval.num_samples={num_samples}",
        "--config.eval.fid_stats=FID_STATS",
        "--config.eval.inception_weights=INCEPTION_WEIGHTS",
    ]
    flags_ += [f"--config.data.data_dir={data_dir}"] if data_dir is not None else []
    flags_ += [f"--config.data.vae={vae}"] if vae is not None else []
    return Grid(tuple(cells), tuple(seeds), tuple(flags_), ("eval/fid",))


# The evaluation of the studies' full grids on ImageNet-256 SD-VAE latents: FID-10K (Hang et
# al.'s and the Min-SNR paper's protocol), the latents and the VAE from a site's paths.
LATENT_FID_10K = dict(num_samples=10_000, data_dir="LATENTS_DIR", vae="VAE_DIR")


# ------------------------------------------------------------------------------- running
def command(cell: Cell, seed: int, workdir: str, grid: Grid, python: str = "python") -> list[str]:
    """The ``jaxdiff.main`` command of one run."""
    return [
        python, "-m", "jaxdiff.main", f"--config={cell.config}", f"--workdir={workdir}",
        f"--config.seed={seed}", *grid.common, *cell.overrides,
    ]  # fmt: skip


def run_dir(out: str, cell: Cell, seed: int) -> str:
    return os.path.join(out, "runs", cell.slug, f"seed_{seed}")


def _finished(workdir: str) -> bool:
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
            if _finished(workdir):
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
srun bash -c "$CMD"
# When every task has finished:  python -m experiments.{study} --scale=full --out={out} --aggregate
"""


# --------------------------------------------------------------------------- aggregating
def read_metrics(workdir: str) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (invalid lines skipped)."""
    rows = []
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return rows


def run_results(
    study: Study, grid: Grid, out: str, finished_only: bool = False
) -> tuple[list[dict], list[dict]]:
    """(one result row per run with an evaluation, every evaluation as a curve row);
    ``finished_only``: only runs the driver finished (a run still training is left out)."""
    rows, curves = [], []
    for seed in grid.seeds:
        for cell in grid.cells:
            workdir = run_dir(out, cell, seed)
            if finished_only and not _finished(workdir):
                continue
            metrics = read_metrics(workdir)
            evals = [m for m in metrics if any(k in m for k in grid.metrics)]
            if not evals:
                continue
            wall = _wall_clock(metrics)
            for m in evals:
                for key in grid.metrics:
                    if m.get(key) is not None:
                        curves.append({"study": study.name, "cell": cell.name, "seed": seed,
                                       "step": m["step"], "wall_s": wall.get(m["step"]),
                                       "metric": key, "value": m[key]})  # fmt: skip
            last = evals[-1]
            row = {"study": study.name, "cell": cell.name, "seed": seed, "steps": last["step"],
                   "wall_s": wall.get(last["step"])}  # fmt: skip
            row.update({k: last.get(k) for k in grid.metrics})
            rows.append(row)
    return rows, curves


def _wall_clock(metrics: list[dict]) -> dict:
    """step -> cumulative training seconds (``train/wall_s``) at or before that step."""
    out, latest = {}, None
    for m in sorted(metrics, key=lambda m: m["step"]):
        latest = m.get("train/wall_s", latest)
        out[m["step"]] = latest
    return out


def summarise(rows: list[dict], metrics: Sequence[str]) -> dict:
    """cell -> {metric: (mean, standard error, n)} over seeds (SE = sd/√n, ddof 1)."""
    table: dict = {}
    for row in rows:
        table.setdefault(row["cell"], {}).setdefault("_rows", []).append(row)
    for entry in table.values():
        for key in (*metrics, "wall_s", "steps"):
            values = np.array(
                [r[key] for r in entry["_rows"] if r.get(key) is not None], dtype=np.float64
            )
            n = len(values)
            mean = float(values.mean()) if n else math.nan
            se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            entry[key] = (mean, se, n)
    return table


def differs(a: tuple, b: tuple, k: float = 2.0) -> bool:
    """Whether two (mean, se, n) differ beyond k combined standard errors with n ≥ 3 each."""
    if a[2] < 3 or b[2] < 3:
        return False
    return abs(a[0] - b[0]) > k * math.hypot(a[1], b[1])


def fmt(entry: tuple, digits: int = 3) -> str:
    mean, se, n = entry
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def write_outputs(study: Study, scale: str, out: str) -> dict:
    """results.csv, curves.csv, summary.md and the study's plots in ``out``; returns the
    summary table."""
    grid = study.grids[scale]
    rows, curves = run_results(study, grid, out, finished_only=scale != "full")
    columns = ["study", "cell", "seed", "steps", "wall_s", *grid.metrics]
    _write_csv(os.path.join(out, "results.csv"), columns, rows)
    curve_cols = ["study", "cell", "seed", "step", "wall_s", "metric", "value"]
    _write_csv(os.path.join(out, "curves.csv"), curve_cols, curves)
    table = summarise(rows, grid.metrics)
    plots = study.plot(table, curves, out, grid) if study.plot and rows else []
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(study, scale, grid, table, curves, plots))
    return table


def _write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def summary_markdown(study: Study, scale: str, grid: Grid, table: dict, curves, plots) -> str:
    head = ["cell", "n", *grid.metrics, "steps", "train wall-clock (s)"]
    lines = [
        f"# {study.name} ({scale} scale)",
        "",
        study.question,
        "",
        f"Seeds: {', '.join(map(str, grid.seeds))}. Mean ± standard error over seeds; a "
        "difference counts only beyond 2 standard errors with ≥ 3 seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for cell in grid.cells:
        entry = table.get(cell.name)
        if entry is None:
            lines.append(f"| {cell.name} | 0 |" + " – |" * (len(head) - 2))
            continue
        n = len(entry["_rows"])
        vals = [fmt(entry[m], 4) for m in grid.metrics]
        vals += [fmt(entry["steps"], 0), fmt(entry["wall_s"], 1)]
        lines.append(f"| {cell.name} | {n} | " + " | ".join(vals) + " |")
    conclusion = study.conclude(table, curves, grid) if table else "No finished runs."
    lines += ["", "## Conclusion", "", conclusion, ""]
    lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- plots
def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use)."""
    import matplotlib  # noqa: PLC0415 - the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_curves(
    curves: list[dict],
    metric: str,
    path: str,
    *,
    x: str = "step",
    cells: Sequence[str] | None = None,
    title: str = "",
) -> str:
    """Mean over seeds of ``metric`` against ``x`` ("step" or "wall_s"), one line per cell,
    with a ±1 standard-error band."""  # fmt: skip
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    names = cells or sorted({c["cell"] for c in curves})
    for name in names:
        pts: dict = {}
        for c in curves:
            if c["cell"] == name and c["metric"] == metric and c.get(x) is not None:
                pts.setdefault(c["step"], []).append((c[x], c["value"]))
        if not pts:
            continue
        steps = sorted(pts)
        xs = [np.mean([p[0] for p in pts[s]]) for s in steps]
        vals = [np.array([p[1] for p in pts[s]], np.float64) for s in steps]
        mean = np.array([v.mean() for v in vals])
        se = np.array([v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0 for v in vals])
        ax.plot(xs, mean, marker="o", ms=3, label=name)
        ax.fill_between(xs, mean - se, mean + se, alpha=0.2)
    ax.set(xlabel="training steps" if x == "step" else "training wall-clock (s)",
           ylabel=metric, title=title)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_bars(table: dict, metric: str, path: str, cells: Sequence[str], title: str = "") -> str:
    """Final ``metric`` per cell: mean ± standard error (error bars) and the seeds as dots."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * len(cells) + 2), 4.2), dpi=110)
    for i, name in enumerate(cells):
        entry = table.get(name)
        if entry is None:
            continue
        mean, se, _ = entry[metric]
        ax.bar(i, mean, yerr=0 if math.isnan(se) else se, color="tab:blue", alpha=0.6, capsize=3)
        seeds = [r[metric] for r in entry["_rows"] if r.get(metric) is not None]
        ax.plot([i] * len(seeds), seeds, "k.", ms=4)
    ax.set_xticks(range(len(cells)), cells, rotation=45, ha="right", fontsize=7)
    ax.set(ylabel=metric, title=title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def best_cell(table: dict, metric: str, cells: Sequence[str], lower_is_better: bool = True):
    """(the best cell by mean, [cells not distinguishable from it at 2 standard errors])."""
    present = [c for c in cells if c in table and not math.isnan(table[c][metric][0])]
    if not present:
        return None, []
    sign = 1 if lower_is_better else -1
    best = min(present, key=lambda c: sign * table[c][metric][0])
    ties = [c for c in present if c != best and not differs(table[c][metric], table[best][metric])]
    return best, ties


def best_line(table: dict, metric: str, cells: Sequence[str]) -> str | None:
    """``- lowest final <metric>: <value> (mean ± se)`` and the cells within 2 SE of it, each
    named by its one parameter's value (cells "key=value"); None when no cell has finished."""
    best, ties = best_cell(table, metric, cells)
    if best is None:
        return None
    value = lambda name: name.split("=", 1)[1]  # noqa: E731
    line = f"- lowest final {metric}: {value(best)} ({fmt(table[best][metric])})"
    return line + (f"; within 2 SE: {', '.join(map(value, ties))}" if ties else "")


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
            jobs, script = write_jobs(study, out)
            print(f"wrote {jobs} and {script}; after the runs: --scale=full --aggregate")
            return 0
        if fv.scale != "full" and not fv.aggregate:
            run_grid(study, fv.scale, out)
        write_outputs(study, fv.scale, out)
        print(f"wrote {os.path.join(out, 'summary.md')}")
        return 0

    usage = f"python -m experiments.{study.name} --scale=smoke|cpu|full --out=DIR [--aggregate]"
    return cli.run(sys.argv if argv is None else argv, _define, body, usage, (0, 0))
