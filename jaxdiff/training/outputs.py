"""What a run writes besides checkpoints: sample grids, evaluation rows and their names, the
loss-per-λ chart; and the weights sampling and evaluation start from.

Outputs of ``--mode=sample`` / ``--mode=evaluate`` are named and tagged by the sampler
settings (:func:`settings_tag`, e.g. ``ddim50_cfg1.5``), so runs with other settings never
overwrite or blur into each other; an existing file is never overwritten (:func:`free_stem`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import ConfigError
from jaxdiff.evaluation import quality
from jaxdiff.training import generate, resume
from jaxdiff.training.checkpoint import Checkpointer, abstract_with_shardings, load_params
from jaxdiff.training.experiment import Experiment, build_experiment
from jaxdiff.training.step import LAM_BIN_EDGES


@dataclasses.dataclass(frozen=True)
class InferenceState:
    """The weights sampling needs (``params`` and the EMA copies), without optimizer state."""

    params: Any
    ema: tuple = ()


def _placed_weights(ref_params, path: str, num_ema: int):
    """(params, EMA copies found, at most ``num_ema``) of another run or converted checkpoint,
    placed like ``ref_params`` (arrays or abstract arrays with shardings)."""
    saved = load_params(path)
    place = lambda ref, x: jax.device_put(np.asarray(x, ref.dtype), ref.sharding)  # noqa: E731
    params = jax.tree_util.tree_map(place, ref_params, saved["params"])
    ema = saved.get("ema")
    if isinstance(ema, dict):
        ema = tuple(ema[k] for k in sorted(ema, key=int))
    ema = tuple(jax.tree_util.tree_map(place, params, e) for e in (ema[:num_ema] if ema else ()))
    return params, ema


def init_from_weights(state, path: str):
    """``state`` with params (and EMA) replaced by another run's weights."""
    params, ema = _placed_weights(state.params, path, len(state.ema))
    # Fresh buffers: the state is donated to the step, so no two leaves may share one.
    ema = ema + tuple(
        jax.tree_util.tree_map(jnp.copy, params) for _ in range(len(state.ema) - len(ema))
    )
    return state.replace(params=params, ema=ema)


def restore_for_inference(config, workdir: str, devices=None):
    """(experiment, state, step) of the newest checkpoint of ``workdir`` that verifies (or
    ``restore_step``), after checking its config; nothing in the work dir is changed.

    Without a checkpoint there, the weights of ``config.init_from`` (another run, or a
    converted official DiT) are used as an ``InferenceState`` at step 0, so an imported
    checkpoint samples and evaluates with no training run.
    """
    exp = build_experiment(config, devices=devices)
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    abstract = abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    restored = None
    if os.path.isdir(directory):
        ckpt = Checkpointer(directory, max_to_keep=None, read_only=True)
        restored = resume.restore_read_only(ckpt, config, abstract)
    if restored is None:
        if config.get("init_from"):
            print(f"No checkpoint in {workdir}; using the weights of {config.init_from}")
            params, ema = _placed_weights(abstract.params, config.init_from, len(abstract.ema))
            return exp, InferenceState(params=params, ema=ema), 0
        raise ConfigError(
            "workdir", f"no checkpoint found in {workdir!r}; train first (or set init_from)"
        )
    state, step = restored
    return exp, state, step


# --- naming by settings -------------------------------------------------------------------


def settings_tag(config) -> str:
    """``<method><steps>[_eta<η>]_cfg<scale>[_lam<lo>,<hi>]``, e.g. ``ddim50_cfg1.5``."""
    s = config.sampling
    tag = f"{s.method}{int(s.steps)}"
    if float(s.get("eta", 0.0) or 0.0):
        tag += f"_eta{float(s.eta):g}"
    tag += f"_cfg{float(s.guidance_scale):g}"
    lo, hi = s.get("guidance_lam_min"), s.get("guidance_lam_max")
    if lo is not None or hi is not None:
        tag += f"_lam{'' if lo is None else f'{lo:g}'},{'' if hi is None else f'{hi:g}'}"
    return tag


def sampling_settings(config, num_samples: int, mode: str) -> dict:
    """The settings an evaluation row records (``mode`` "train" or "evaluate")."""
    s = config.sampling
    return {
        "mode": mode,
        "tag": settings_tag(config),
        "method": s.method,
        "steps": int(s.steps),
        "schedule": s.schedule,
        "eta": float(s.eta),
        "guidance_scale": float(s.guidance_scale),
        "num_samples": int(num_samples),
        "seed": int(config.seed),
    }


def free_stem(base: str, extensions=(".png", ".npz")) -> str:
    """``base``, or ``base_2``, ``base_3``, ...: the first stem with no ``stem + ext`` taken."""
    stem, n = base, 1
    while any(os.path.exists(stem + ext) for ext in extensions):
        n += 1
        stem = f"{base}_{n}"
    return stem


# --- samples, evaluation, charts ----------------------------------------------------------


def write_training_samples(exp: Experiment, state, step: int, samples_dir: str) -> str | None:
    """The grid ``samples/step_<step>.png`` drawn during training."""
    c = exp.config
    n = int(c.sampling.num_grid)
    key = jax.random.fold_in(jax.random.key(c.seed), 0x5A4D ^ step)
    images, _ = generate.sample_many(exp, generate.sampling_params(state), key, n)
    if jax.process_index() != 0:
        return None
    return generate.save_grid(images, os.path.join(samples_dir, f"step_{step:07d}.png"))


def has_quality_metric(config) -> bool:
    """Whether ``data.name`` has an embedded quality metric (digits, photo_crops)."""
    return config.data.name in quality.QUALITY_METRICS


def evaluate_quality(
    exp: Experiment, state, workdir: str, num: int | None = None, progress=None
) -> dict:
    """The dataset's quality metric (``jaxdiff.evaluation.quality``) on ``num`` samples with
    balanced labels, as ``eval/<data.name>_<key>`` (e.g. ``eval/digits_fd``); {} if it has none."""
    c = exp.config
    metric = quality.get_quality_metric(c.data, os.path.join(workdir, "cache"))
    if metric is None:
        return {}
    num = int(num or c.eval.quality_num_samples)
    key = jax.random.fold_in(jax.random.key(c.seed), 0xE7A1)
    params = generate.sampling_params(state)
    images, labels = generate.sample_many(exp, params, key, num, progress=progress)
    scores = metric.score(images, labels if c.model.class_conditional else None)
    return {f"eval/{c.data.name}_{k}": v for k, v in scores.items()}


def lambda_loss_chart(summary: dict) -> np.ndarray:
    """A bar chart (HWC uint8) of the mean loss per λ-bin of a logged row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo = np.asarray(LAM_BIN_EDGES[:-1])
    width = np.diff(LAM_BIN_EDGES)
    keys = [
        f"train_lambda_bins/loss_{a:+05.0f}_{b:+05.0f}"
        for a, b in zip(LAM_BIN_EDGES[:-1], LAM_BIN_EDGES[1:], strict=True)
    ]
    values = [summary.get(k, np.nan) for k in keys]
    fig = Figure(figsize=(5, 2.6), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(lo, values, width=width, align="edge", color="tab:blue")
    ax.set(xlabel="λ = log SNR", ylabel="mean loss", title="loss per noise level")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
