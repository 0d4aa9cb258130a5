"""The train loop: resume, step, log, checkpoint, sample, evaluate, stop cleanly on SIGTERM.

The host never waits on the device between those events. Each step's metrics are folded into
a logging window on the device (a jitted accumulator that also records the first step whose
loss, gradient or new state was non-finite); a log row is fetched only after the next step
has been dispatched; the stop flag is agreed between hosts every ``stop_check_every_steps``;
checkpoints are written in the background (Orbax asynchronous saving). Before anything is
saved, sampled or evaluated, the window is read and checked: a non-finite state is never
saved (``on_nonfinite="halt"`` stops naming the step and its λ range; ``"skip"`` has left
the state unchanged for such steps).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jaxdiff import data as data_lib
from jaxdiff.errors import ConfigError, RunError
from jaxdiff.training import generate, resume, tensorboard
from jaxdiff.training import workdir as workdir_lib
from jaxdiff.training.checkpoint import Checkpointer, abstract_with_shardings, warn
from jaxdiff.training.experiment import Experiment, build_experiment
from jaxdiff.training.hooks import DiagnoseHook
from jaxdiff.training.outputs import (
    evaluate_quality,
    has_quality_metric,
    init_from_weights,
    lambda_loss_chart,
    sampling_settings,
    write_training_samples,
)
from jaxdiff.training.sampler_report import SamplerDensityLog
from jaxdiff.training.sharding import global_batch
from jaxdiff.training.snapshots import SnapshotWriter, snapshot_due
from jaxdiff.training.step import LAM_BIN_EDGES

log = logging.getLogger(__name__)


class NonFiniteLossError(RunError, FloatingPointError):
    """A step produced a non-finite loss, gradient or state (``on_nonfinite="halt"``)."""


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
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))  # a second one: at once

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def poll(self, step: int, every: int) -> bool:
        """Whether to stop now; with several hosts they agree only at multiples of ``every``."""
        if jax.process_count() == 1:
            return self.received is not None
        if step % max(int(every), 1):
            return False
        flag = np.array(self.received is not None, np.int32)
        return bool(np.any(multihost_utils.process_allgather(flag)))


# --- the logging window, on the device ------------------------------------------------------

_SUMMED = ("loss", "grad_norm", "lr", "lam_bin_loss_sum", "lam_bin_count")
_KNOWN = (*_SUMMED, "finite", "lam_min", "lam_max")


def _empty_window(m: dict, step) -> dict:
    w = {k: jnp.zeros_like(m[k]) for k in _SUMMED}
    w["lam_min"] = jnp.full_like(m["lam_min"], jnp.inf)
    w["lam_max"] = jnp.full_like(m["lam_max"], -jnp.inf)
    w.update(count=jnp.int32(0), nonfinite=jnp.int32(0), bad_step=jnp.int32(-1))
    w.update(bad_lam_min=jnp.float32(0), bad_lam_max=jnp.float32(0), first_step=step)
    return w


def _fold(w: dict, m: dict, step) -> dict:
    """Adds one step's metrics: sums over finite steps, λ range, the first non-finite step;
    other metrics (e.g. ``sampler/...``) keep their latest value."""
    ok = m["finite"]
    first_bad = (w["bad_step"] < 0) & ~ok
    out = {k: v for k, v in m.items() if k not in _KNOWN}
    for k in _SUMMED:
        out[k] = w[k] + jnp.where(ok, m[k], jnp.zeros_like(m[k]))
    out["lam_min"] = jnp.minimum(w["lam_min"], m["lam_min"])
    out["lam_max"] = jnp.maximum(w["lam_max"], m["lam_max"])
    out["count"] = w["count"] + ok.astype(jnp.int32)
    out["nonfinite"] = w["nonfinite"] + (~ok).astype(jnp.int32)
    out["bad_step"] = jnp.where(first_bad, step.astype(jnp.int32), w["bad_step"])
    out["bad_lam_min"] = jnp.where(first_bad, m["lam_min"], w["bad_lam_min"])
    out["bad_lam_max"] = jnp.where(first_bad, m["lam_max"], w["bad_lam_max"])
    out["first_step"] = w["first_step"]
    return out


_first_step = jax.jit(lambda m, step: _fold(_empty_window(m, step.astype(jnp.int32)), m, step))
_next_step = jax.jit(_fold)


def _fold_step(window, metrics, step):
    """The window with one more step (a new window if ``window`` is None); on the device."""
    return _first_step(metrics, step) if window is None else _next_step(window, metrics, step)


def _window_to_json(w) -> dict | None:
    if w is None:
        return None
    host = jax.device_get(w)
    return {k: {"dtype": str(np.asarray(v).dtype), "value": np.asarray(v).tolist()}
            for k, v in host.items()}  # fmt: skip


def _window_from_json(saved: dict | None):
    window = (saved or {}).get("window")
    if not window:
        return None
    return {k: jnp.asarray(np.asarray(v["value"], v["dtype"])) for k, v in window.items()}


def _bins():
    return zip(LAM_BIN_EDGES[:-1], LAM_BIN_EDGES[1:], strict=True)


def _bin_key(lo: float, hi: float) -> str:
    return f"train_lambda_bins/loss_{lo:+05.0f}_{hi:+05.0f}"


def _summarise(h: dict) -> dict:
    """The row of a window fetched to the host: means over its finite steps, λ range, the
    per-λ-bin mean loss, the count of non-finite steps (if any), other metrics as they are."""
    n = int(h["count"])
    mean = (lambda x: x / n) if n else (lambda x: float("nan"))  # noqa: E731
    out = {f"train/{k}": mean(float(h[k])) for k in ("loss", "grad_norm", "lr")}
    out["train/lam_min"], out["train/lam_max"] = float(h["lam_min"]), float(h["lam_max"])
    for i, (lo, hi) in enumerate(_bins()):
        if h["lam_bin_count"][i] > 0:
            out[_bin_key(lo, hi)] = float(h["lam_bin_loss_sum"][i] / h["lam_bin_count"][i])
    if int(h["nonfinite"]):
        out["train/nonfinite_steps"] = int(h["nonfinite"])
    skip = (*_KNOWN, "count", "nonfinite", "bad_step", "bad_lam_min", "bad_lam_max", "first_step")
    for k, v in h.items():
        if k in skip:
            continue
        name = k if "/" in k else f"train/{k}"
        v = np.asarray(v)
        if v.size == 1:
            out[name] = float(v.reshape(()))
        elif v.size <= 32:
            out.update({f"{name}_{i}": float(x) for i, x in enumerate(v.ravel())})
    return out


# --- the loop -----------------------------------------------------------------------------


def _save_config(config, workdir: str):
    if jax.process_index() == 0:
        tmp = os.path.join(workdir, "config.json.tmp")
        with open(tmp, "w") as f:
            f.write(config.to_json_best_effort(indent=2))
        os.replace(tmp, os.path.join(workdir, "config.json"))


def train(
    config,
    workdir: str,
    *,
    stop_at_step: int | None = None,
    devices=None,
    diagnose: DiagnoseHook | None = None,
) -> dict:
    """Trains (resuming from ``workdir``) until ``total_steps`` (or ``stop_at_step``).

    ``diagnose``: the periodic noise-level diagnosis (``diagnose_every_steps``), given by the
    caller because diagnostics sit above training (``jaxdiff.diagnostics.training_hook``;
    ``jaxdiff.main`` passes it). Holds the work dir's lock for the whole run. Returns a summary
    dict with the final step, the last logged metrics, file locations and ``stopped`` (the
    signal, if one stopped it).
    """
    if int(config.get("diagnose_every_steps", 0) or 0) and diagnose is None:
        raise ConfigError(
            "diagnose_every_steps",
            "set, but this training call has no diagnostics hook",
            "0, or train through python -m jaxdiff.main (or pass "
            "loop.train(..., diagnose=jaxdiff.diagnostics.training_hook))",
        )
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lib.WorkdirLock(workdir, jax.process_index()):
        exp = build_experiment(config, devices=devices)
        ckpt = Checkpointer(
            os.path.join(workdir, "checkpoints"),
            max_to_keep=config.keep_checkpoints,
            keep_period=config.keep_every_steps or None,
            async_save=True,
        )
        try:
            summary = _train(exp, ckpt, workdir, stop_at_step, diagnose)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                ckpt.close()
            raise
        ckpt.close()
    return summary


def _start(exp: Experiment, ckpt: Checkpointer, workdir: str):
    """(state, start step, data iterator, saved logging window, superseded steps)."""
    c = exp.config
    if jax.process_index() == 0 and ckpt.removed_temps:
        removed = ", ".join(ckpt.removed_temps)
        warn(f"removed unfinished checkpoint writes of a killed run: {removed}")
    abstract = abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    make_iter = lambda: data_lib.make_iterator(c.data, split="train", seed=c.seed)  # noqa: E731
    restored = resume.restore_for_training(ckpt, c, abstract, make_iter)
    if restored is not None:
        if jax.process_index() == 0:
            print(f"Resuming from step {restored.step} ({ckpt.directory})", flush=True)
        return (restored.state, restored.step, restored.data_iter, restored.loop_window,
                restored.superseded)  # fmt: skip
    state = exp.init_state()
    if c.init_from:
        state = init_from_weights(state, c.init_from)
    return state, 0, make_iter(), None, []


def _train(exp: Experiment, ckpt: Checkpointer, workdir: str, stop_at_step, diagnose) -> dict:
    c = exp.config
    state, start, data_iter, window, superseded = _start(exp, ckpt, workdir)
    _save_config(c, workdir)
    logs = workdir_lib.MetricsLog(workdir, primary=jax.process_index() == 0)
    aside = os.path.join(workdir, "metrics.superseded.jsonl") if superseded else None
    logs.truncate_after(start, dropped_to=aside)
    end = int(c.total_steps if stop_at_step is None else min(stop_at_step, c.total_steps))
    run = _Run(exp, ckpt, logs, data_iter, workdir)
    run.diagnose_hook = diagnose
    run.snapshots = SnapshotWriter.open(workdir, c, start, superseded)  # post-hoc EMA
    try:
        return run.loop(state, start, end, _window_from_json(window))
    finally:
        if run.bar is not None:
            run.bar.close()
        logs.close()
        if run.snapshots is not None:
            run.snapshots.close()


class _Run:
    """The per-run bookkeeping of :func:`train`'s loop (what is pending, what was checked)."""

    def __init__(self, exp: Experiment, ckpt: Checkpointer, logs, data_iter, workdir: str):
        self.exp, self.ckpt, self.logs, self.data_iter = exp, ckpt, logs, data_iter
        self.workdir = workdir
        self.samples_dir = os.path.join(workdir, "samples")
        self.cfg_json = json.loads(exp.config.to_json_best_effort())
        self.pending = None  # (step, window) of a row to write once the next step is dispatched
        self.last: dict = {}  # the latest row written
        self.last_eval: dict = {}
        self.last_step = 0
        self.saved_step: int | None = None
        self.bar = None
        self.snapshots: SnapshotWriter | None = None
        self.diagnose_hook: DiagnoseHook | None = None
        self.density = SamplerDensityLog(exp.spec, workdir)
        # Several simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count)
        # share the host's few threads: with steps queued ahead, the devices' collectives can
        # wait on each other for good (XLA:CPU's rendezvous then aborts the process), so there
        # each step is finished before the next is dispatched. GPUs, TPUs and a single CPU
        # device keep the host running ahead.
        self.serialize = exp.mesh.devices.size > 1 and jax.default_backend() == "cpu"
        # Cumulative training seconds (``train/wall_s``): time between log rows, minus the
        # time spent checkpointing, sampling, evaluating and diagnosing; carried over resumes.
        self.wall_base = logs.last_value("train/wall_s", default=0.0)
        self.wall_start = time.perf_counter()
        self.wall_paused = 0.0

    def loop(self, state, start: int, end: int, window) -> dict:
        c, exp = self.exp.config, self.exp
        self.saved_step = start if start else None
        self.bar = _progress_bar(start, c.total_steps)
        hooks = [tensorboard.ReportProgress(self.logs.writer)]
        if c.profile and jax.process_index() == 0:
            hooks.append(tensorboard.Profile(self.workdir, num_steps=5))
        step, stopped = start, None
        every_stop = int(c.get("stop_check_every_steps", 10))
        with _StopSignal() as stop:
            while step < end:
                local = next(self.data_iter)
                if not c.model.class_conditional:
                    local["label"] = np.full_like(local["label"], exp.num_classes)
                batch = global_batch(local, exp.mesh)
                state, metrics = exp.train_step_at(step)(state, batch, exp.root_rng)
                if self.serialize:
                    jax.block_until_ready((state, metrics))
                window = _fold_step(window, metrics, state.step)
                step += 1
                self.flush()  # the previous log step's row: its step is done or nearly
                for h in hooks:
                    h(step)
                if self.bar is not None:
                    self.bar.update(1)
                if step % c.log_every_steps == 0 or step == end:
                    density = self.density.dispatch(state.sampler_state, batch["image"])
                    self.pending = (step, window, density)
                    if step % c.log_every_steps == 0:
                        window = None
                stopping = stop.poll(step, every_stop)
                self.events(state, step, end, window, stopping)
                if stopping:
                    stopped = stop.received or "a stop request"
                    break
        for h in hooks:
            getattr(h, "finish", lambda: None)()
        self.flush()
        if jax.process_index() == 0:
            self.density.save()
        if stopped and jax.process_index() == 0:
            print(f"\nReceived {stopped}: checkpoint saved at step {step}.", flush=True)
        return dict(step=step, metrics=self.last, workdir=self.workdir, samples=self.samples_dir,
                    stopped=stopped, eval=self.last_eval)  # fmt: skip

    def events(self, state, step: int, end: int, window, stopping: bool) -> None:
        """Checkpoint, sample and evaluate when due; each first checks every step so far."""
        c = self.exp.config
        save = step % c.checkpoint_every_steps == 0 or step == end or stopping
        sample = bool(c.sample_every_steps) and (
            step % c.sample_every_steps == 0 or step == c.total_steps
        )
        evaluate = _eval_due(c, step)
        every = int(c.get("diagnose_every_steps", 0) or 0)
        diagnose = bool(every) and (step % every == 0 or step == c.total_steps)
        snapshot = self.snapshots is not None and snapshot_due(c, step)
        if not (save or sample or evaluate or diagnose or snapshot):
            return
        self.flush()
        started = time.perf_counter()
        if window is not None:
            self.check(jax.device_get(window), step)
        if snapshot:
            self.snapshots.save(step, state)
        if save:
            self.ckpt.save(step, state, self.data_iter, self.cfg_json,
                           loop={"window": _window_to_json(window)})  # fmt: skip
            self.saved_step = step
            self.chart()
            if stopping:
                self.ckpt.wait()
        if sample:
            write_training_samples(self.exp, state, step, self.samples_dir)
        if evaluate:
            self.evaluate(state, step)
        if diagnose:
            self.diagnose(state, step)
        self.wall_paused += time.perf_counter() - started

    def flush(self) -> None:
        """Writes the pending row (fetching its window) and checks it."""
        if self.pending is None:
            return
        step, window, density = self.pending
        self.pending = None
        host = jax.device_get(window)
        self.check(host, step)
        self.last = _summarise(host)
        wall = time.perf_counter() - self.wall_start - self.wall_paused
        self.last["train/wall_s"] = self.wall_base + wall
        self.logs.write(step, self.last)
        image = self.density.finish(step, density)
        if image is not None:
            self.logs.write_image(step, "sampler/density", image)
        self.last_step = step
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.last['train/loss']:.4f}", refresh=False)

    def check(self, host: dict, step: int) -> None:
        """NonFiniteLossError if the window holds a non-finite step (halt mode)."""
        bad = int(host["bad_step"])
        if bad < 0 or self.exp.config.on_nonfinite != "halt":
            return
        steps = self.ckpt.all_steps()
        older = [s for s in steps if s < (steps[-1] if steps else 0)]
        hint = (f" or from an older one with --config.restore_step=N (N in {older})"
                if older else "")  # fmt: skip
        saved = f"the newest checkpoint is {steps[-1]}" if steps else "no checkpoint was saved"
        raise NonFiniteLossError(
            f"non-finite loss, gradient or weights at step {bad} (steps "
            f"{int(host['first_step'])}-{step} were checked together); the batch's λ range was "
            f"[{float(host['bad_lam_min']):.3f}, {float(host['bad_lam_max']):.3f}]. Nothing "
            f"after step {self.saved_step or 0} was saved; {saved}. Resume from it with a "
            f"smaller optim.lr{hint}, or set --config.on_nonfinite=skip to skip such steps"
        )

    def chart(self) -> None:
        """The loss-per-λ bar chart of the latest row (drawn at checkpoint steps only)."""
        if self.logs.writer is not None and self.last:
            self.logs.write_image(
                self.last_step, "train/loss_by_lambda", lambda_loss_chart(self.last)
            )

    def evaluate(self, state, step: int) -> None:
        c = self.exp.config
        scores = evaluate_quality(self.exp, state, self.workdir)
        self.last_eval = {k: float(v) for k, v in scores.items()}
        settings = sampling_settings(c, int(c.eval.quality_num_samples), mode="train")
        self.logs.write(step, scores, settings=settings)
        if jax.process_index() == 0:
            text = ", ".join(f"{k.removeprefix('eval/')} {v:.4g}" for k, v in scores.items())
            _console(self.bar, f"step {step} eval: {text}")

    def diagnose(self, state, step: int) -> None:
        """Noise-level diagnostics of the sampling weights through the caller's hook
        (``jaxdiff.diagnostics.training_hook``: diagnostics/step_<N>.json and .png); its
        scalars go to metrics.jsonl and TensorBoard, its images to TensorBoard."""
        params = generate.sampling_params(state)
        report = self.diagnose_hook(self.exp, params, self.workdir, step)
        if jax.process_index() == 0:
            self.logs.write(step, report.scalars)
            for name, image in report.images.items():
                self.logs.write_image(step, name, image)
            _console(self.bar, f"step {step} diagnostics: {report.text}")


def _console(bar, text: str) -> None:
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


def _progress_bar(start: int, total: int):
    if jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=start, desc="train", unit="step", dynamic_ncols=True, smoothing=0.1
    )


def _eval_due(c, step: int) -> bool:
    return (
        has_quality_metric(c)
        and bool(c.eval_every_steps)
        and (step % c.eval_every_steps == 0 or step == c.total_steps)
    )
