"""Quality against σ_rel (EDM2's Fig. 5): reconstruct each σ_rel, evaluate it with the run's
own evaluation, write a table and a plot.

For each σ_rel the reconstructed weights are written to ``WORKDIR/posthoc/std_<σ>`` (as
``python -m jaxdiff.ema posthoc`` does) and evaluated with the run's config through
`jaxdiff.training.outputs.evaluate_quality` (the sampler, guidance and number of samples of
``eval.quality_num_samples``; the embedded datasets' metric). The table goes to
``WORKDIR/posthoc/sweep_step_<N>.json`` and ``.csv``, the plot to ``.png``.
"""

from __future__ import annotations

import csv
import json
import os

import jax
import ml_collections
import numpy as np

from jaxdiff.ema import reconstruct as rec
from jaxdiff.errors import ConfigError
from jaxdiff.training import outputs, snapshots
from jaxdiff.training.experiment import build_experiment


def _tuples(value):
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in ``WORKDIR/config.json`` (lists read as tuples)."""
    path = os.path.join(os.path.abspath(workdir), "config.json")
    if not os.path.isfile(path):
        raise ConfigError("workdir", f"no config.json in {workdir!r}", "a training work dir")
    with open(path) as f:
        return ml_collections.ConfigDict(_tuples(json.load(f)))


def sweep(
    workdir: str, stds, *, step: int | None = None, num_samples: int | None = None
) -> tuple[list[dict], dict]:
    """``(rows, paths)``: one row per σ_rel (``std``, ``step``, ``fit_error``, ``eval/...``)
    and the files written (``json``, ``csv``, ``png``)."""
    snapshots.open_snapshots(workdir).close()  # ConfigError when there are none
    config = load_run_config(workdir)
    if not outputs.has_quality_metric(config):
        raise ConfigError(
            "workdir",
            f"data {config.data.name!r} has no built-in quality metric",
            "evaluate each posthoc/std_* with --mode=evaluate --config.init_from=... --fid_stats",
        )
    exp = build_experiment(config)
    shardings = exp.state_shardings.params
    rows, asked = [], step
    for std in stds:
        params, info = rec.reconstruct(workdir, float(std), step=step)
        step = info["step"]  # every σ_rel at the same step
        rec.write_weights(rec.default_out(workdir, info["std"], asked), params, info)
        placed = jax.tree_util.tree_map(
            lambda a, s: jax.device_put(np.asarray(a), s), params, shardings
        )
        state = outputs.InferenceState(params=placed, ema=())
        scores = outputs.evaluate_quality(exp, state, workdir, num_samples)
        row = {"std": info["std"], "step": step, "fit_error": info["fit_error"]}
        row.update({k: float(v) for k, v in scores.items()})
        rows.append(row)
        if jax.process_index() == 0:
            print(json.dumps(row), flush=True)
    paths = write_table(rows, os.path.join(os.path.abspath(workdir), rec.POSTHOC_DIR), step)
    return rows, paths


def write_table(rows: list[dict], out_dir: str, step: int) -> dict:
    """``sweep_step_<N>.json``, ``.csv`` and ``.png`` (each ``eval/`` metric against σ_rel)."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"sweep_step_{int(step)}")
    with open(stem + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(stem + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, stem + ".png", step)
    return {"json": stem + ".json", "csv": stem + ".csv", "png": stem + ".png"}


def plot(rows: list[dict], path: str, step: int) -> str:
    """One panel per ``eval/`` metric against σ_rel, as EDM2's Fig. 5; a metric's ``_real``
    companion (the same metric on real data, e.g. ``digits_fd_real``) written in its panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("eval/")]
    metrics = [k for k in keys if not k.endswith("_real")]
    fig = Figure(figsize=(4.2 * max(len(metrics), 1), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    rows = sorted(rows, key=lambda r: r["std"])
    stds = [r["std"] for r in rows]
    for i, key in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        ax.plot(stds, [r.get(key, np.nan) for r in rows], "o-")
        if key + "_real" in keys:  # as text: a line would flatten the curve's shape
            text = f"real data: {rows[0][key + '_real']:.4g}"
            ax.text(0.02, 0.95, text, transform=ax.transAxes, va="top", fontsize=8)
        ax.set(xlabel="EMA length σ_rel", ylabel=key.removeprefix("eval/"))
        ax.set_title(f"step {step}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
