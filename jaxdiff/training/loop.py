"""The train loop: resume, step, log, checkpoint, sample, evaluate, stop cleanly on SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from jaxdiff import data as data_lib
from jaxdiff.training import generate
from jaxdiff.training.checkpoint import Checkpointer, abstract_with_shardings, load_params
from jaxdiff.training.experiment import Experiment, build_experiment
from jaxdiff.training.sharding import global_batch
from jaxdiff.training.step import LAM_BIN_EDGES

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when a train step produced a non-finite loss (``on_nonfinite="halt"``)."""


class _StopSignal:
    """Records SIGTERM / SIGINT so the loop can checkpoint before exiting."""

    def __init__(self):
        self.received = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def any_host(self) -> bool:
        flag = np.array(self.received is not None, np.int32)
        if jax.process_count() > 1:
            flag = multihost_utils.process_allgather(flag)
        return bool(np.any(flag))


class MetricsLog:
    """``metrics.jsonl`` (process 0 only) plus clu writers (TensorBoard + console)."""

    def __init__(self, workdir: str):
        self.primary = jax.process_index() == 0
        self.writer = metric_writers.create_default_writer(
            workdir, just_logging=not self.primary, asynchronous=False
        )
        self.path = os.path.join(workdir, "metrics.jsonl")

    def write(self, step: int, scalars: dict):
        scalars = {k: float(v) for k, v in scalars.items()}
        self.writer.write_scalars(step, scalars)
        if self.primary:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": int(step), **scalars}) + "\n")

    def write_image(self, step: int, name: str, image: np.ndarray):
        """One HWC uint8 image to TensorBoard (process 0)."""
        if self.primary:
            self.writer.write_images(step, {name: image[None]})

    def flush(self):
        self.writer.flush()


def lambda_loss_chart(summary: dict) -> np.ndarray:
    """A bar chart (HWC uint8) of the mean loss per λ-bin from a :func:`_summarise` dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo = np.asarray(LAM_BIN_EDGES[:-1])
    width = np.diff(LAM_BIN_EDGES)
    values = [summary.get(_bin_key(a, b), np.nan) for a, b in _bins()]
    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=80)
    ax.bar(lo, values, width=width, align="edge", color="tab:blue")
    ax.set(xlabel="λ = log SNR", ylabel="mean loss", title="loss per noise level")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def _summarise(acc: dict, n: int) -> dict:
    """Host-side means of accumulated step metrics, with the per-λ-bin mean loss."""
    host = jax.device_get(acc)
    out = {f"train/{k}": host[k] / n for k in ("loss", "grad_norm", "lr")}
    out["train/lam_min"] = host["lam_min"]
    out["train/lam_max"] = host["lam_max"]
    counts = host["lam_bin_count"]
    for i, (lo, hi) in enumerate(_bins()):
        if counts[i] > 0:
            out[_bin_key(lo, hi)] = host["lam_bin_loss_sum"][i] / counts[i]
    return out


def _bins():
    return zip(LAM_BIN_EDGES[:-1], LAM_BIN_EDGES[1:], strict=True)


def _bin_key(lo: float, hi: float) -> str:
    return f"train_lambda_bins/loss_{lo:+05.0f}_{hi:+05.0f}"


def _accumulate(acc, m):
    if acc is None:
        return dict(m)
    out = {
        k: acc[k] + m[k] for k in ("loss", "grad_norm", "lr", "lam_bin_loss_sum", "lam_bin_count")
    }
    out["lam_min"] = jnp.minimum(acc["lam_min"], m["lam_min"])
    out["lam_max"] = jnp.maximum(acc["lam_max"], m["lam_max"])
    return out


def _check_finite(metrics, step: int):
    finite, lo, hi, loss = jax.device_get(
        (metrics["finite"], metrics["lam_min"], metrics["lam_max"], metrics["loss"])
    )
    if not finite:
        raise NonFiniteLossError(
            f"non-finite loss ({loss}) or gradient at step {step}; the batch's λ range was "
            f"[{lo:.3f}, {hi:.3f}]. Set on_nonfinite='skip' to skip such updates instead; the "
            "last good checkpoint is kept."
        )


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


def _init_from(exp: Experiment, state, path: str):
    """Replace params (and EMA) with another run's weights."""
    params, ema = _placed_weights(state.params, path, len(state.ema))
    # Fresh buffers: the state is donated to the step, so no two leaves may share one.
    ema = ema + tuple(
        jax.tree_util.tree_map(jnp.copy, params) for _ in range(len(state.ema) - len(ema))
    )
    return state.replace(params=params, ema=ema)


def _save_config(config, workdir: str):
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def train(config, workdir: str, *, stop_at_step: int | None = None, devices=None) -> dict:
    """Trains (resuming from ``workdir``) until ``total_steps`` (or ``stop_at_step``).

    Returns a summary dict with the final step, the last logged metrics and file locations.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    exp = build_experiment(config, devices=devices)
    _save_config(config, workdir)
    data_iter = data_lib.make_iterator(config.data, split="train", seed=config.seed)
    ckpt = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=config.keep_checkpoints,
        keep_period=config.keep_every_steps or None,
    )
    abstract = abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    restored = ckpt.restore_latest(abstract, data_iter)
    if restored is not None:
        state, start = restored
        print(f"Resuming from step {start} ({ckpt.directory})", flush=True)
    else:
        state, start = exp.init_state(), 0
        if config.init_from:
            state = _init_from(exp, state, config.init_from)
    end = int(config.total_steps if stop_at_step is None else min(stop_at_step, config.total_steps))
    summary = _run(exp, state, start, end, data_iter, ckpt, workdir)
    ckpt.close()
    return summary


def _run(exp: Experiment, state, start: int, end: int, data_iter, ckpt, workdir: str) -> dict:
    c = exp.config
    logs = MetricsLog(workdir)
    hooks = [periodic_actions.ReportProgress(num_train_steps=c.total_steps, writer=logs.writer)]
    if c.profile and jax.process_index() == 0:
        hooks.append(periodic_actions.Profile(num_profile_steps=5, logdir=workdir))
    bar = _progress_bar(start, c.total_steps)
    cfg_json = json.loads(c.to_json_best_effort())
    acc, n_acc, last, step = None, 0, {}, start
    samples_dir = os.path.join(workdir, "samples")
    with _StopSignal() as stop:
        while step < end:
            local = next(data_iter)
            if not c.model.class_conditional:
                local["label"] = np.full_like(local["label"], exp.num_classes)
            state, metrics = exp.train_step(state, global_batch(local, exp.mesh), exp.root_rng)
            step += 1
            if c.on_nonfinite == "halt":
                _check_finite(metrics, step)
            acc, n_acc = _accumulate(acc, metrics), n_acc + 1
            for h in hooks:
                h(step)
            if step % c.log_every_steps == 0 or step == end:
                last = _summarise(acc, n_acc)
                logs.write(step, last)
                logs.write_image(step, "train/loss_by_lambda", lambda_loss_chart(last))
                acc, n_acc = None, 0
                if bar is not None:
                    bar.set_postfix(loss=f"{last['train/loss']:.4f}")
            if bar is not None:
                bar.update(1)
            stopping = stop.any_host()
            if step % c.checkpoint_every_steps == 0 or step == end or stopping:
                ckpt.save(step, state, data_iter, cfg_json, force=True)
            if c.sample_every_steps and (step % c.sample_every_steps == 0 or step == c.total_steps):
                _write_samples(exp, state, step, samples_dir)
            if _digits_eval_due(c, step):
                logs.write(step, evaluate_digits(exp, state, workdir))
            if stopping:
                print(
                    f"\nReceived {stop.received or 'a stop request'}: "
                    f"checkpoint saved at step {step}."
                )
                break
    if bar is not None:
        bar.close()
    logs.flush()
    return {"step": step, "metrics": last, "workdir": workdir, "samples": samples_dir}


def _progress_bar(start: int, total: int):
    if jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, smoothing=0.1
    )


def _digits_eval_due(c, step: int) -> bool:
    return (
        c.data.name == "digits"
        and bool(c.eval_every_steps)
        and (step % c.eval_every_steps == 0 or step == c.total_steps)
    )


def _write_samples(exp: Experiment, state, step: int, samples_dir: str) -> str | None:
    c = exp.config
    n = int(c.sampling.num_grid)
    key = jax.random.fold_in(jax.random.key(c.seed), 0x5A4D ^ step)
    images, _ = generate.sample_many(exp, generate.sampling_params(state, c), key, n)
    if jax.process_index() != 0:
        return None
    path = generate.save_grid(images, os.path.join(samples_dir, f"step_{step:07d}.png"))
    return path


def evaluate_digits(exp: Experiment, state, workdir: str, num: int | None = None) -> dict:
    """The embedded default's quality metric on class-conditional samples."""
    from jaxdiff.evaluation.digits_metric import DigitsMetric

    c = exp.config
    num = int(num or c.eval.quality_num_samples)
    metric = DigitsMetric.create(c.data.image_size, c.data.channels, os.path.join(workdir, "cache"))
    key = jax.random.fold_in(jax.random.key(c.seed), 0xE7A1)
    images, labels = generate.sample_many(exp, generate.sampling_params(state, c), key, num)
    scores = metric.score(images, labels if c.model.class_conditional else None)
    return {f"eval/digits_{k}": v for k, v in scores.items()}


@dataclasses.dataclass(frozen=True)
class InferenceState:
    """The weights sampling needs (``params`` and the EMA copies), without optimizer state."""

    params: Any
    ema: tuple = ()


def restore_for_inference(config, workdir: str, devices=None):
    """(experiment, state, step) from the latest readable checkpoint of ``workdir``.

    Without a checkpoint there, the weights of ``config.init_from`` (another run, or a
    converted official DiT) are used as an ``InferenceState`` at step 0, so an imported
    checkpoint samples and evaluates with no training run.
    """
    exp = build_experiment(config, devices=devices)
    ckpt = Checkpointer(os.path.join(os.path.abspath(workdir), "checkpoints"))
    abstract = abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    restored = ckpt.restore_latest(abstract)
    if restored is None:
        if config.get("init_from"):
            print(f"No checkpoint in {workdir}; using the weights of {config.init_from}")
            params, ema = _placed_weights(abstract.params, config.init_from, len(abstract.ema))
            return exp, InferenceState(params=params, ema=ema), 0
        raise ValueError(
            f"workdir: no checkpoint found in {workdir!r}; train first (or set init_from)"
        )
    state, step = restored
    return exp, state, step


def elapsed(t0: float) -> str:
    return f"{time.time() - t0:.1f}s"
