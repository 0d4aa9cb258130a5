"""What a study writes from its work dirs: results.csv, curves.csv, verdicts.json, summary.md and
learning-curve plots (``python -m experiments.<study> --scale=S --out=DIR --aggregate``).

- ``results.csv``: one row per run and evaluation step: ``study``, ``cell``, ``seed``, ``step``,
  ``wall_s`` (cumulative training seconds at that step), then every metric of the grid;
- ``curves.csv``: the same evaluations in long form (``metric``, ``value``), one per row;
- ``verdicts.json``: every declared claim with effect, interval, n, raw and Holm-adjusted p and
  verdict (:mod:`experiments.claims`), read by ``python -m experiments.index``;
- ``summary.md``: the per-cell table at the final step (mean ± 95% t interval over seeds, n), the
  verdict table, the steps-to-target table (with censoring), the study's own section, plots.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from experiments import claims as claims_lib
from experiments import common, stats


# --------------------------------------------------------------------------- collecting
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


def _wall_clock(metrics: list[dict]) -> dict:
    """step -> cumulative training seconds (``train/wall_s``) at or before that step."""
    out, latest = {}, None
    for m in sorted(metrics, key=lambda m: m["step"]):
        latest = m.get("train/wall_s", latest)
        out[m["step"]] = latest
    return out


def collect(
    study: common.Study, grid: common.Grid, out: str, finished_only: bool = False
) -> tuple[list[dict], list[dict]]:
    """(results rows: one per run and evaluation step, curve rows: one per evaluated metric);
    ``finished_only``: only runs the driver finished (a run still training is left out)."""
    rows, curves = [], []
    for seed in grid.seeds:
        for cell in grid.cells:
            workdir = common.run_dir(out, cell, seed)
            if finished_only and not common.finished(workdir):
                continue
            metrics = read_metrics(workdir)
            wall = _wall_clock(metrics)
            evals: dict = {}  # step -> merged evaluation (a resumed run may log a step twice)
            for m in metrics:
                if any(m.get(k) is not None for k in grid.metrics):
                    evals.setdefault(m["step"], {}).update(m)
            for step in sorted(evals):
                m = evals[step]
                base = {"study": study.name, "cell": cell.name, "seed": seed, "step": step,
                        "wall_s": wall.get(step)}  # fmt: skip
                rows.append({**base, **{k: m.get(k) for k in grid.metrics}})
                curves += [{**base, "metric": k, "value": m[k]} for k in grid.metrics
                           if m.get(k) is not None]  # fmt: skip
    return rows, curves


def final_rows(rows: Sequence[dict]) -> dict:
    """cell -> [each run's last evaluation row]."""
    last: dict = {}
    for r in rows:
        key = (r["cell"], r["seed"])
        if key not in last or r["step"] >= last[key]["step"]:
            last[key] = r
    out: dict = {}
    for (cell, _), r in last.items():
        out.setdefault(cell, []).append(r)
    return out


# --------------------------------------------------------------------------- formatting
def _decimals(x: float, sig: int) -> int:
    if not math.isfinite(x):
        return 0
    return max(0, sig - 1 - math.floor(math.log10(abs(x)))) if x else sig - 1


def fmt_ci(mean: float, lo: float, hi: float, *, sig: int = 4) -> str:
    """ "mean [lo, hi]" with one number of decimals for all three: enough for ``sig``
    significant digits of the mean and two of the interval's half-width (so values that
    differ at a digit are never rounded together), at most 6."""
    if mean is None or math.isnan(mean):
        return "–"
    if lo is None or math.isnan(lo):
        return f"{mean:.{min(6, _decimals(mean, sig))}f}"
    half = (hi - lo) / 2
    half = 0.0 if half <= 1e-9 * abs(mean) else half  # rounding noise of a zero-width interval
    dec = min(6, max(_decimals(mean, sig), _decimals(half, 2)))
    return f"{mean:.{dec}f} [{lo:.{dec}f}, {hi:.{dec}f}]"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def fmt_effect(r: dict) -> str:
    """A claim's effect and its interval (or bound)."""
    if not r["n"]:
        return "–"
    if r["kind"] != "steps_to_target":
        return fmt_ci(r["effect"], r["lo"], r["hi"])
    if r["resolved"]:
        return fmt_ci(r["effect"], r["lo"], r["hi"], sig=3).replace(" [", "× [")
    lo, hi = r["lo"], r["hi"]
    if lo > 0 and math.isfinite(hi):
        return f"between {lo:.3g}× and {hi:.3g}× (censored)"
    if lo > 0:
        return f"> {lo:.3g}× (censored)"
    if math.isfinite(hi):
        return f"< {hi:.3g}× (censored)"
    return "not resolvable on this grid"


# ----------------------------------------------------------------------------- tables
def cell_table(grid: common.Grid, rows: Sequence[dict]) -> list[str]:
    """The per-cell table at each run's last evaluation: mean [95% t interval] over seeds."""
    finals = final_rows(rows)
    head = ["cell", "n", *grid.metrics, "step", "train wall-clock (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in grid.cells:
        runs = finals.get(cell.name, [])
        vals = []
        for key in (*grid.metrics, "wall_s"):
            x = [r[key] for r in runs if r.get(key) is not None]
            vals.append(fmt_ci(*stats.t_interval(x)) if x else "–")
        steps = sorted({r["step"] for r in runs})
        vals.insert(len(grid.metrics), "/".join(map(str, steps)) or "–")
        lines.append(f"| {cell.name} | {len(runs)} | " + " | ".join(vals) + " |")
    return lines


def verdict_table(results: Sequence[dict]) -> list[str]:
    head = [
        "claim",
        "paper",
        "arm vs baseline",
        "effect [95% interval]",
        "n",
        "test",
        "raw p",
        "sign-flip p",
        "Holm p",
        "verdict",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        what = {"steps_to_target": "speed-up", "trend": "trend slope"}.get(r["kind"], "arm − base")
        lines.append(
            f"| {r['name']} | {r['paper']} | {r['arm']} vs {r['baseline']} ({r['metric']}, "
            f"{r['kind']}; {r['note']}) | {what} {fmt_effect(r)} | {r['n']} | {r['test']} | "
            f"{fmt_p(r['p'])} | {fmt_p(r.get('p_exact', math.nan))} | {fmt_p(r['p_holm'])} | "
            f"**{r['verdict']}** |"
            if r["n"]
            else f"| {r['name']} | {r['paper']} | {r['arm']} vs {r['baseline']} | – | 0 | – | "
            "– | – | – | **not run yet** |"
        )
    return lines


def _steps_cell(t: float, censoring: str) -> str:
    return {stats.OBSERVED: f"{t:.0f}", stats.LEFT: f"≤ {t:.0f}", stats.RIGHT: f"> {t:.0f}"}[
        censoring
    ]


def steps_table(results: Sequence[dict]) -> list[str]:
    """Per seed: each arm's steps to the target, censored ones as "≤ first" / "> last"."""
    lines = []
    for r in results:
        if r["kind"] != "steps_to_target" or not r["n"]:
            continue
        lines += [
            f"**{r['name']}** ({r['note']}): speed-up {fmt_effect(r)}",
            "",
            "| seed | " + f"{r['arm']} | {r['baseline']} |",
            "|---|---|---|",
        ]
        for s, a, b in zip(r["seeds"], r["arm_steps"], r["baseline_steps"], strict=True):
            lines.append(f"| {s} | {_steps_cell(*a)} | {_steps_cell(*b)} |")
        lines.append("")
    return lines


def summary_markdown(study, scale, grid, rows, results, plots, extra: str = "") -> str:
    n = max((r["n"] for r in results), default=0)
    lines = [
        f"# {study.name} ({scale} scale)",
        "",
        study.question,
        "",
        f"Seeds {', '.join(map(str, grid.seeds))}, paired (seed s of every cell shares "
        "the initialisation, the data order and the evaluation noise). Run flags: "
        f"`{' '.join(grid.common)}`.",
        "",
        "## Cells at the final evaluation",
        "",
        "Mean [95% t interval at n − 1 df] over seeds; n runs.",
        "",
        *cell_table(grid, rows),
        "",
        "## Claims",
        "",
    ]
    if results:
        lines += [
            f"Declared before running ({len(results)} comparisons). Effect: mean per-seed paired "
            "difference arm − baseline with its 95% t interval, or for a speed-up the geometric "
            "mean of per-seed ratios with a paired bootstrap interval "
            f"({stats.N_BOOT} resamples, seed {stats.BOOT_SEED}), or its bound when a run is "
            "censored. p: the paired t-test at n − 1 degrees of freedom (the exact sign-flip "
            "test over all 2^n sign patterns is shown beside it as a distribution-free check); "
            f"Holm–Bonferroni over all "
            f"{len(results)} claims (one not run counts as p = 1); verdict at adjusted "
            f"p < {stats.ALPHA}.",
            "",
            *verdict_table(results),
            "",
        ]
        if 0 < n <= stats.EXACT_MAX_N:
            lines += [
                f"With n = {n} pairs the sign-flip test's smallest two-sided p is "
                f"{stats.min_exact_p(n):.4g}; Holm's first threshold is "
                f"{stats.ALPHA / len(results):.4g}: where only the t-test is below it, the "
                "verdict rests on the t-test's normality assumption.",
                "",
            ]
        steps = steps_table(results)
        if steps:
            lines += [
                "## Steps to target",
                "",
                "Interpolated linearly in log(step) between evaluations; ≤ s: reached at "
                "the first evaluation (left-censored), > s: not reached by the last "
                "(right-censored). A ratio is given only when no run is censored.",
                "",
                *steps,
            ]
    else:
        lines += ["This study declares no claims.", ""]
    if extra:
        lines += [extra, ""]
    lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ plots
def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use)."""
    import matplotlib  # the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves, metric, path, *, x="step", cells=None, title="", targets=()) -> str:
    """Mean over seeds of ``metric`` against ``x`` ("step" or "wall_s"), one line per cell, with
    its 95% t interval over seeds as a band (x: the seeds' mean at each evaluation step), and
    the steps-to-target claims' ``targets`` as dashed lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name in cells or sorted({c["cell"] for c in curves}):
        pts: dict = {}
        for c in curves:
            if c["cell"] == name and c["metric"] == metric and c.get(x) is not None:
                pts.setdefault(c["step"], []).append((c[x], c["value"]))
        if not pts:
            continue
        steps = sorted(pts)
        xs = [np.mean([p[0] for p in pts[s]]) for s in steps]
        ci = np.array([stats.t_interval([p[1] for p in pts[s]]) for s in steps])
        ax.plot(xs, ci[:, 0], marker="o", ms=3, label=name)
        if np.isfinite(ci[:, 1]).all():
            ax.fill_between(xs, ci[:, 1], ci[:, 2], alpha=0.2)
    for t in targets:
        ax.axhline(t, color="k", ls="--", lw=0.8, label=f"target {t:g}")
    ax.set(
        xlabel="training steps" if x == "step" else "training wall-clock (s)",
        ylabel=metric,
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def default_plots(curves, out: str, grid: common.Grid, targets=()) -> list[str]:
    """The headline metric against steps and against training wall-clock."""
    metric, cells = grid.metrics[0], [c.name for c in grid.cells]
    short = metric.split("/")[-1]
    return [
        plot_curves(
            curves,
            metric,
            os.path.join(out, f"{short}_vs_steps.png"),
            cells=cells,
            title=f"{metric} vs steps (mean, 95% t interval over seeds)",
            targets=targets,
        ),
        plot_curves(
            curves,
            metric,
            os.path.join(out, f"{short}_vs_wallclock.png"),
            x="wall_s",
            cells=cells,
            title=f"{metric} vs training wall-clock (mean, 95% t interval)",
        ),
    ]


# ------------------------------------------------------------------------------ output
def write_csv(path: str, columns: Sequence[str], rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_outputs(study: common.Study, scale: str, out: str) -> list[dict]:
    """results.csv, curves.csv, verdicts.json, summary.md and plots in ``out``; returns the
    evaluated claims."""
    grid = study.grids[scale]
    rows, curves = collect(study, grid, out, finished_only=scale != "full")
    write_csv(
        os.path.join(out, "results.csv"),
        ["study", "cell", "seed", "step", "wall_s", *grid.metrics],
        rows,
    )
    write_csv(
        os.path.join(out, "curves.csv"),
        ["study", "cell", "seed", "step", "wall_s", "metric", "value"],
        curves,
    )
    declared = common.grid_claims(study.claims, grid)  # as this grid measures them
    results = claims_lib.evaluate(declared, curves)
    with open(os.path.join(out, "verdicts.json"), "w") as f:
        json.dump(
            _json_safe(
                {
                    "study": study.name,
                    "scale": scale,
                    "protocol": common.PROTOCOL_VERSION,
                    "seeds": list(grid.seeds),
                    "claims": results,
                }
            ),
            f,
            indent=1,
        )
    targets = sorted({c.target for c in declared
                      if c.kind == "steps_to_target" and c.metric == grid.metrics[0]})  # fmt: skip
    plots = default_plots(curves, out, grid, targets) if curves else []
    if study.plot and curves:
        plots += study.plot(rows, curves, out, grid)
    extra = study.describe(rows, curves, grid) if study.describe and curves else ""
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(study, scale, grid, rows, results, plots, extra))
    return results
