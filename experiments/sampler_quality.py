"""Quality against cost of every sampler on one trained run: the metric against the number of
denoiser evaluations (NFE), with and without guidance, over several sampling seeds.

``python -m experiments.sampler_quality --config=configs/digits.py --workdir=RUN --out=DIR``
evaluates the newest checkpoint of ``RUN`` (trained with that config) with each method of
``jaxdiff.sampling`` at each NFE budget (the most steps whose ``num_evaluations`` fits it), at
each guidance scale and sampling seed, on ``--num_samples`` class-balanced samples. Each
evaluation is appended to ``DIR/results.csv`` as soon as it is done, so an interrupted sweep
resumes where it stopped; ``DIR/summary.md`` (mean ± sd over seeds) and ``DIR/quality_vs_nfe.png``
are rewritten from that file at the end. A guided evaluation calls the network twice per
denoiser evaluation (conditional and unconditional rows in one batch); the table gives both.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from absl import flags

from jaxdiff import cli

COLUMNS = ("method", "nfe", "steps", "guidance", "seed", "fd", "accuracy", "wall_s")
DEFAULT_METHODS = "ddim,dpmpp_2m,unipc,euler,heun,dpmpp_2m_sde,ddpm"


def steps_for(method: str, nfe: int) -> int | None:
    """The most sampling steps whose evaluation count fits ``nfe`` (None if none does)."""
    from jaxdiff.sampling import num_evaluations

    best = None
    for steps in range(1, nfe + 1):
        if num_evaluations(method, steps) <= nfe:
            best = steps
    return best


def _read(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _done_key(row: dict) -> tuple:
    return (row["method"], int(row["steps"]), float(row["guidance"]), int(row["seed"]))


def sweep(fv) -> str:
    from jaxdiff import main as jmain
    from jaxdiff.platform import configure_xla_for_cpu

    configure_xla_for_cpu()
    import jax

    from jaxdiff.evaluation import quality
    from jaxdiff.sampling import num_evaluations
    from jaxdiff.training import generate
    from jaxdiff.training.experiment import build_experiment
    from jaxdiff.training.outputs import restore_for_inference

    parsed, err = jmain.parse(
        ["sampler_quality", f"--config={fv.config}", f"--workdir={fv.workdir}"]
    )
    if err is not None:
        raise err
    base = parsed.config
    _, state, step = restore_for_inference(base, fv.workdir)
    params = generate.sampling_params(state)
    metric = quality.get_quality_metric(base.data, os.path.join(fv.workdir, "cache"))
    os.makedirs(fv.out, exist_ok=True)
    path = os.path.join(fv.out, "results.csv")
    done = {_done_key(r) for r in _read(path)}
    new_file = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        for method in fv.methods:
            for nfe in map(int, fv.nfe):
                steps = steps_for(method, nfe)
                if steps is None:
                    continue
                for guidance in map(float, fv.guidance):
                    seeds = [
                        s for s in map(int, fv.seeds) if (method, steps, guidance, s) not in done
                    ]
                    if not seeds:
                        continue
                    c = base.copy_and_resolve_references()
                    c.unlock()
                    c.sampling.method, c.sampling.steps = method, steps
                    c.sampling.guidance_scale = guidance
                    c.lock()
                    exp = build_experiment(c)  # one compiled sampler for all the seeds
                    for seed in seeds:
                        start = time.time()
                        # the key evaluate_quality derives from config.seed = seed
                        key = jax.random.fold_in(jax.random.key(seed), 0xE7A1)
                        images, labels = generate.sample_many(exp, params, key, fv.num_samples)
                        scores = metric.score(images, labels)
                        row = {
                            "method": method, "nfe": num_evaluations(method, steps),
                            "steps": steps, "guidance": guidance, "seed": seed,
                            "fd": f"{scores['fd']:.5f}", "accuracy": f"{scores['accuracy']:.5f}",
                            "wall_s": f"{time.time() - start:.2f}",
                        }  # fmt: skip
                        writer.writerow(row)
                        f.flush()
                        print(f"step {step}: {row}", flush=True)
    return write_summary(fv.out, step)


def _groups(rows: Sequence[dict]) -> dict:
    out: dict = {}
    for r in rows:
        key = (r["method"], float(r["guidance"]), int(r["nfe"]))
        out.setdefault(key, []).append(r)
    return out


def write_summary(out: str, step: int | None = None) -> str:
    """``summary.md`` and ``quality_vs_nfe.png`` from ``results.csv``."""
    rows = _read(os.path.join(out, "results.csv"))
    groups = _groups(rows)
    lines = [
        "# Sampler quality against NFE" + (f" (checkpoint step {step})" if step else ""),
        "",
        "Mean ± sd over sampling seeds (n); NFE = denoiser evaluations per sample, network "
        "calls = NFE × 2 with guidance.",
        "",
        "| method | guidance | NFE | steps | n | fd | accuracy | s per evaluation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, g, nfe), rs in sorted(groups.items()):
        fd = np.array([float(r["fd"]) for r in rs])
        acc = np.array([float(r["accuracy"]) for r in rs])
        wall = np.array([float(r["wall_s"]) for r in rs])
        sd = lambda a: a.std(ddof=1) if len(a) > 1 else float("nan")  # noqa: E731
        lines.append(
            f"| {method} | {g:g} | {nfe} | {rs[0]['steps']} | {len(rs)} | "
            f"{fd.mean():.3f} ± {sd(fd):.3f} | {acc.mean():.4f} ± {sd(acc):.4f} | "
            f"{np.median(wall):.1f} |"
        )
    path = os.path.join(out, "summary.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot(groups, os.path.join(out, "quality_vs_nfe.png"))
    return path


def _plot(groups: dict, path: str) -> None:
    from experiments.report import pyplot

    plt = pyplot()
    guidances = sorted({g for _, g, _ in groups})
    fig, axes = plt.subplots(2, len(guidances), figsize=(5.5 * len(guidances), 7), dpi=110,
                             squeeze=False)  # fmt: skip
    methods = sorted({m for m, _, _ in groups})
    for j, g in enumerate(guidances):
        for metric, ax in zip(("fd", "accuracy"), axes[:, j], strict=True):
            for m in methods:
                pts = sorted(
                    (nfe, rs) for (mm, gg, nfe), rs in groups.items() if mm == m and gg == g
                )
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                vals = [np.array([float(r[metric]) for r in p[1]]) for p in pts]
                mean = np.array([v.mean() for v in vals])
                sd = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals])
                ax.errorbar(xs, mean, yerr=sd, marker="o", ms=3, capsize=2, label=m)
            ax.set(xscale="log", xlabel="NFE", ylabel=metric, title=f"guidance {g:g}")
            if metric == "fd":
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_string("config", "configs/digits.py", "the run's config", **f)
    flags.DEFINE_string("workdir", None, "the trained run", **f)
    flags.DEFINE_string("out", None, "output directory (results.csv is appended to)", **f)
    flags.DEFINE_list("methods", DEFAULT_METHODS, "sampling methods", **f)
    flags.DEFINE_list("nfe", "5,10,15,25,50", "denoiser-evaluation budgets", **f)
    flags.DEFINE_list("guidance", "1.0,1.1", "guidance scales", **f)
    flags.DEFINE_list("seeds", "0,1,2", "sampling seeds", **f)
    flags.DEFINE_integer("num_samples", 500, "samples per evaluation", **f)
    flags.DEFINE_bool("summary_only", False, "only rewrite summary.md and the plot", **f)


def main(argv: Sequence[str] | None = None) -> int:
    def body(fv: flags.FlagValues, args: list[str]) -> int:
        del args
        if not fv.out or (not fv.workdir and not fv.summary_only):
            raise flags.Error("--out and --workdir are required")
        path = write_summary(fv.out) if fv.summary_only else sweep(fv)
        print(f"wrote {path}")
        return 0

    usage = "python -m experiments.sampler_quality --workdir=RUN --out=DIR [--methods=...]"
    return cli.run(sys.argv if argv is None else argv, _define, body, usage, (0, 0))


if __name__ == "__main__":
    sys.exit(main())
