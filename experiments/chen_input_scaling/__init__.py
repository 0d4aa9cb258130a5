"""Chen 2023 (arXiv 2301.10972): does the best input scale b move down (noisier training) as
the resolution grows?

Natural images with the same content at more pixels: the embedded `photo_crops` (128×128
source-pixel crops of 16 bundled photos, area-downsampled to 16, 32 and 64 px, class = which
photo), a DiT with 16 tokens at every resolution (patch = size/4), Chen's Algorithm 2
(x_t = √γ·b·x0 + √(1−γ)·ε divided by its std, ε-prediction). Quality: the sliced Wasserstein
distance on Laplacian-pyramid patches (SWD ×10³, steadier than the classifier Fréchet distance
at this sample count) and the photo classifier's Fréchet distance and accuracy.
"""

from __future__ import annotations

import math
import os

from experiments import common

STUDY_NAME = "chen_input_scaling"
CONFIG = "configs/photo_crops.py"
METRICS = ("eval/photo_crops_swd", "eval/photo_crops_fd", "eval/photo_crops_accuracy",
           "eval/photo_crops_swd_real")  # fmt: skip


def _cells(sizes, scales, schedules, variant="") -> tuple:
    return tuple(
        common.Cell(
            (("size", r), ("b", b), ("schedule", s)),
            f"{CONFIG}:{variant}size={r},scale={b},schedule={s}",
        )  # fmt: skip
        for s in schedules
        for r in sizes
        for b in scales
    )


def _flags(steps: int, eval_every: int, samples: int, sampling_steps: int = 50) -> tuple:
    return (f"--config.total_steps={steps}", f"--config.eval_every_steps={eval_every}",
            f"--config.eval.quality_num_samples={samples}", "--config.sample_every_steps=0",
            f"--config.checkpoint_every_steps={steps}", "--config.keep_checkpoints=1",
            f"--config.sampling.steps={sampling_steps}")  # fmt: skip


def _parse(name: str) -> dict:
    out = {}
    for part in name.split(","):
        k, v = part.split("=")
        out[k] = float(v) if k == "b" else int(v) if k == "size" else v
    return out


def best_scales(table: dict, metric: str) -> dict:
    """(size, schedule) -> (best b, its (mean, se, n), [b within 2 SE of it])."""
    groups: dict = {}
    for name in table:
        p = _parse(name)
        groups.setdefault((p["size"], p.get("schedule", "")), []).append(name)
    out = {}
    for key, names in groups.items():
        best, ties = common.best_cell(table, metric, names)
        if best is not None:
            out[key] = (_parse(best)["b"], table[best][metric], [_parse(t)["b"] for t in ties])
    return out


def conclude(table: dict, curves: list[dict], grid: common.Grid) -> str:
    best = best_scales(table, grid.metrics[0])
    lines = []
    for (size, schedule), (b, entry, ties) in sorted(best.items()):
        lines.append(
            f"- {schedule}, {size} px: best b = {b} ({grid.metrics[0]} {common.fmt(entry, 2)})"
            + (f"; not distinguishable at 2 SE from b = {', '.join(map(str, ties))}"
               if ties else "; better than every other b beyond 2 SE")
        )  # fmt: skip
    for schedule in sorted({k[1] for k in best}):
        seq = [(size, best[(size, schedule)][0])
               for size in sorted(k[0] for k in best if k[1] == schedule)]  # fmt: skip
        pairs = list(zip(seq, seq[1:], strict=False))
        falls = all(b2 <= b1 for (_, b1), (_, b2) in pairs)
        strict = any(b2 < b1 for (_, b1), (_, b2) in pairs)
        trend = ("falls with resolution, as Chen 2023 reports" if falls and strict
                 else "does not fall with resolution" if not falls
                 else "stays the same across resolutions")  # fmt: skip
        lines.append(f"- {schedule}: best b by resolution {seq}: {trend} (point estimates; "
                     "see the ties above for their uncertainty)")  # fmt: skip
    return "\n".join(lines) or "No finished runs."


def plot(table: dict, curves: list[dict], out: str, grid: common.Grid) -> list[str]:
    plt = common.pyplot()
    parsed = {name: _parse(name) for name in table}
    paths = []
    for metric in grid.metrics[:2]:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for key in sorted({(p["size"], p.get("schedule", "")) for p in parsed.values()}):
            group = [n for n, p in parsed.items() if (p["size"], p.get("schedule", "")) == key]
            group.sort(key=lambda n: parsed[n]["b"])
            bs = [parsed[n]["b"] for n in group]
            mean = [table[n][metric][0] for n in group]
            se = [0 if math.isnan(table[n][metric][1]) else table[n][metric][1] for n in group]
            ax.errorbar(bs, mean, yerr=se, marker="o", capsize=3, label=f"{key[0]} px, {key[1]}")
        ax.set(xscale="log", xlabel="input scale b", ylabel=metric,
               title="quality vs input scale (mean ± SE over seeds)")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, f"{metric.split('/')[-1]}_vs_b.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


STUDY = common.Study(
    name=STUDY_NAME,
    question=__doc__.split("\n\n")[0],
    grids={
        "smoke": common.Grid(
            _cells((8,), (1.0, 0.5), ("cosine",), variant="tiny,"),
            (0,),
            (
                "--config.total_steps=4",
                "--config.eval_every_steps=4",
                "--config.eval.quality_num_samples=16",
                "--config.sample_every_steps=0",
                "--config.sampling.steps=3",
            ),
            METRICS,
        ),
        # cpu: two resolutions (the same field of view at 16 and 32 px) × b ∈ {1, 0.5},
        # cosine; 64 px, b ∈ {0.7, 0.35} and the linear schedule are in the full grid.
        "cpu": common.Grid(
            _cells((16, 32), (1.0, 0.5), ("cosine",)),
            (0, 1, 2),
            _flags(400, 200, 250, sampling_steps=25),
            METRICS,
        ),
        "full": common.fid_grid(
            tuple(
                common.Cell(
                    (("size", r), ("b", b)),
                    f"configs/imagenet{r}_rin.py:scale={b}",
                    ("--config.data.data_dir=TFDS_DIR",),
                )
                for r in (64, 128, 256)
                for b in (1.0, 0.7, 0.5, 0.35)
            ),
            (0,),
            eval_every=50_000,
            num_samples=50_000,
        ),
    },  # fmt: skip
    conclude=conclude,
    plot=plot,
)
