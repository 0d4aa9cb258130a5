"""Chen 2023 (arXiv 2301.10972): does the best input scale b move down (noisier training) as
the resolution grows?

The same content at more pixels: the embedded digits (8 px natively) at 8, 16 and 32 px, a DiT
with 16 tokens at every resolution (patch = size/4: 4, 16 and 64 values per token), Chen's
compound recipe (the linear schedule γ = 1 − t, input scaling x_t = √γ·b·x0 + √(1−γ)·ε divided
by its std), the v target with the v loss. Not photo_crops with ε-prediction: that recipe does
not train at this model size (README, "Why digits and the v target"). Quality: the digits
classifier's Fréchet distance (each resolution against its own real-data floor) and accuracy.
"""

from __future__ import annotations

import os

import numpy as np

from experiments import common, digits_grid, report, stats
from experiments.chen_input_scaling import full
from experiments.claims import Claim

STUDY_NAME = "chen_input_scaling"
METRICS = digits_grid.METRICS
SIZES = (8, 16, 32)  # 8 px is the digits' own resolution; 16 and 32 px add redundant pixels
SCALES = (1.0, 0.7, 0.5, 0.35)
# Steps of the cpu recipe: the b = 1 arm at 32 px reached 1.88× its floor at 1000 steps with
# this recipe (fd 7.01 vs 3.72), halving from step 500; 2000 steps are planned to bring it
# within 1.5× (to be confirmed by the first seed's runs; README).
CPU_STEPS = 2000


def _cells(sizes, scales, schedules, tiny: bool = False) -> tuple:
    """Cells (size, b, schedule) on digits: 16 tokens at every size (patch = size/4), input
    scale b with variance normalisation, the v target and loss (overrides, so that the grid's
    common flags cannot reset them)."""
    return tuple(
        common.Cell(
            (("size", r), ("b", b), ("schedule", s)),
            digits_grid.TINY if tiny else f"{digits_grid.DIGITS}:size={r},patch={max(1, r // 4)}",
            (
                f"--config.noise.schedule={s}",
                f"--config.noise.input_scale={b}",
                "--config.noise.normalize_input=True",
                "--config.noise.target=v",
                "--config.noise.weighting=v",
            ),
        )  # fmt: skip
        for s in schedules
        for r in sizes
        for b in scales
    )


def _groups(cells) -> dict:
    """(other parameters, size) -> {b: cell name}: the b sweeps of a grid's cells."""
    out: dict = {}
    for cell in cells:
        p = dict(cell.params)
        others = tuple((k, v) for k, v in cell.params if k not in ("size", "b"))
        out.setdefault((others, p["size"]), {})[p["b"]] = cell.name
    return out


def trend_claims(cells, metric: str) -> tuple[Claim, ...]:
    """Chen 2023's claim for each sweep of the grid (per other parameters, e.g. schedule): the
    smallest b gains on the largest as the resolution grows — per seed, the slope of
    log(metric(b_min) / metric(b_max)) against log2(size) is negative (a difference in
    differences, paired by seed; experiments/claims.py, kind "trend")."""
    claims = []
    for others in sorted({o for o, _ in _groups(cells)}):
        bs = sorted({b for (o, _), sweep in _groups(cells).items() if o == others for b in sweep})
        if len(bs) < 2:
            continue
        fixed = "".join(f",{k}={v}" for k, v in others)
        claims.append(Claim(
            f"b={bs[0]} gains on b={bs[-1]} as size grows{fixed.replace(',', ', ')}",
            "Chen 2023: the best input scale b falls as the resolution grows", metric,
            f"b={bs[0]}{fixed}", f"b={bs[-1]}{fixed}", "lower", kind="trend", across="size",
        ))  # fmt: skip
    return tuple(claims)


def best_scales(rows: list[dict], cells, metric: str) -> dict:
    """(other parameters, size) -> (the b values, the best b by mean over seeds, how often each b
    is best over paired bootstrap resamples of the seeds, n seeds), at each run's final step."""
    finals = report.final_rows(rows)
    out = {}
    for key, sweep in sorted(_groups(cells).items()):
        bs = sorted(sweep)
        per_b = [{r["seed"]: r[metric] for r in finals.get(sweep[b], [])
                  if r.get(metric) is not None} for b in bs]  # fmt: skip
        seeds = sorted(set.intersection(*(set(x) for x in per_b)))
        if len(seeds) < 2:
            continue
        matrix = np.array([[x[s] for x in per_b] for s in seeds], np.float64)
        best, freq = stats.best_index_bootstrap(matrix)
        out[key] = (bs, bs[best], freq, len(seeds))
    return out


def describe(rows: list[dict], curves: list[dict], grid: common.Grid) -> str:
    metric = grid.metrics[0]
    lines = ["## Best input scale per resolution", "",
             f"At the final evaluation, the b with the lowest mean {metric} over seeds; the "
             f"distribution of the best b over {stats.N_BOOT} paired bootstrap resamples of the "
             f"seeds (seed {stats.BOOT_SEED}) and its central 95% range.", "",
             "| sweep | size | n | best b | bootstrap P(best) per b | 95% range of best b |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for (others, size), (bs, best, freq, n) in best_scales(rows, grid.cells, metric).items():
        dist = ", ".join(f"{b:g}: {f:.2f}" for b, f in zip(bs, freq, strict=True))
        cdf = np.cumsum(freq)
        lo = bs[int(np.searchsorted(cdf, 0.025 - 1e-12))]
        hi = bs[int(np.searchsorted(cdf, 0.975 - 1e-12))]
        sweep = ", ".join(f"{k}={v}" for k, v in others) or "–"
        lines.append(f"| {sweep} | {size} | {n} | {best:g} | {dist} | [{lo:g}, {hi:g}] |")
    return "\n".join(lines)


def plot(rows: list[dict], curves: list[dict], out: str, grid: common.Grid) -> list[str]:
    """Each resolution's final metric against b: mean and 95% t interval over seeds."""
    plt = report.pyplot()
    finals = report.final_rows(rows)
    paths = []
    for metric in grid.metrics[:2]:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for (others, size), sweep in sorted(_groups(grid.cells).items()):
            bs = sorted(b for b in sweep if finals.get(sweep[b]))
            if not bs:
                continue
            values = [[r[metric] for r in finals[sweep[b]] if r.get(metric) is not None]
                      for b in bs]  # fmt: skip
            ci = np.array([stats.t_interval(v) for v in values])
            err = np.nan_to_num(np.abs(ci[:, 1:].T - ci[:, 0]))
            label = ", ".join([f"{size} px", *(str(v) for _, v in others)])
            ax.errorbar(bs, ci[:, 0], yerr=err, marker="o", capsize=3, label=label)
        ax.set(xscale="log", xlabel="input scale b", ylabel=metric,
               title="final quality vs input scale (mean, 95% t interval)")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, f"{metric.split('/')[-1]}_vs_b.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


_CPU_CELLS = _cells(SIZES, SCALES, ("linear",))


STUDY = common.Study(
    name=STUDY_NAME,
    question=__doc__.split("\n\n")[0],
    grids={
        "smoke": digits_grid.smoke_grid(_cells((8,), (1.0, 0.5), ("linear",), tiny=True)),
        # cpu: 8/16/32 px × b ∈ {1, 0.7, 0.5, 0.35}, the linear schedule, 2000 steps of the
        # digits studies' recipe (optimiser, evaluation every 250 steps, sampler, seeds)
        "cpu": common.Grid(
            _CPU_CELLS, digits_grid.CPU_SEEDS, digits_grid.run_flags(steps=CPU_STEPS), METRICS
        ),  # fmt: skip
        "full": full.grid(),  # ImageNet 64/128/256 px; README: paper vs this grid
    },  # fmt: skip
    claims=trend_claims(_CPU_CELLS, METRICS[0]),
    describe=describe,
    plot=plot,
)
