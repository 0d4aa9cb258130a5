"""Steps/s of the real training loop against the bare jitted train step (not a test).

    python benchmarks/loop.py [--setups digits,dit,tiny] [--repeats 2] [--smoke]

The real loop is ``jaxdiff.training.loop.train``: data loading, the device-side logging
window and its deferred fetch, a metrics row every ``log_every_steps``, asynchronous
checkpoints every ``checkpoint_every_steps`` (fingerprinted, checked finite), the stop-signal
polls and the progress bar; sampling and evaluation are off (they are work, not overhead).
A short run first compiles everything (XLA's persistent cache, in a temporary directory,
then serves the step to each timed run). Each timed run is timed between the fetches of two
metrics rows (at each, that step has finished on the device and the next one is
dispatched; the host runs ahead of the device, so a host-side step count would be wrong),
a window holding a regular checkpoint (its blocking part and its background write competing
with training), not the first steps nor the final save (the last row is fetched just
before it). The bare step is the same
jitted ``train_step`` on one fixed device batch, timed the same way (from step k done,
k + 1 dispatched, to ``block_until_ready`` after the last). Setups:

- ``digits``: the embedded default (``configs/digits.py``: DiT-S/4, depth 6, 16 px, batch 64;
  log every 50, checkpoint every 250), steps 51..300 (a checkpoint at 250);
- ``dit``: DiT-S/2 on the digits at 32×32×3 (batch 8; log every 5, checkpoint every 20),
  steps 11..40 (a checkpoint at 20).

Each is run ``--repeats`` times alternating bare / loop; the best of each is reported.
Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import jax
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import append_results, markdown_table, run_main  # noqa: E402
from configs import digits  # noqa: E402
from jaxdiff import data as data_lib  # noqa: E402
from jaxdiff.errors import ConfigError  # noqa: E402
from jaxdiff.platform import FAST_CPU_XLA_FLAGS  # noqa: E402
from jaxdiff.training import experiment, loop, sharding  # noqa: E402


def _digits_config():
    c = digits.get_config()
    c.sample_every_steps = c.eval_every_steps = 0
    return c, (50, 300), 300  # config, timed between the rows of these steps, total steps


def _dit_config():
    c = digits.get_config("size=32,model=DiT-S/2")
    c.data.channels, c.data.batch_size = 3, 8
    c.sampling.batch_size = c.sampling.num_grid = 8
    c.sample_every_steps = c.eval_every_steps = 0
    c.log_every_steps, c.checkpoint_every_steps = 5, 20
    c.optim.warmup_steps = 0
    return c, (10, 40), 40


def _tiny_config():
    c = digits.get_config("tiny")
    c.sample_every_steps = c.eval_every_steps = 0
    c.log_every_steps, c.checkpoint_every_steps = 2, 4
    return c, (2, 6), 6


SETUPS = {"digits": _digits_config, "dit": _dit_config, "tiny": _tiny_config}


def bare_steps_per_s(config, steps: int) -> float:
    """The jitted step alone on one fixed batch: timed from the moment step k is done (step
    k + 1 already dispatched, as in the loop) until ``steps`` steps later are done."""
    exp = experiment.build_experiment(config)
    state = exp.init_state()
    it = data_lib.make_iterator(config.data, split="train", seed=config.seed)
    batch = sharding.global_batch(next(it), exp.mesh)
    for _ in range(2):
        state, m = exp.train_step(state, batch, exp.root_rng)
    jax.block_until_ready((state, m))
    state, done = exp.train_step(state, batch, exp.root_rng)
    state, m = exp.train_step(state, batch, exp.root_rng)
    jax.block_until_ready(done)
    t = time.perf_counter()
    for _ in range(steps - 1):
        state, m = exp.train_step(state, batch, exp.root_rng)
    jax.block_until_ready((state, m))
    return steps / (time.perf_counter() - t)


def loop_steps_per_s(config, window: tuple[int, int], total: int) -> float:
    """``loop.train`` for ``total`` steps in a fresh work dir, timed between the fetches of
    the metrics rows of the steps in ``window`` (each: that step done on the device, the
    next one dispatched)."""
    rows = {}
    real = loop._Run.flush

    def timed(run):
        step = run.pending[0] if run.pending is not None else None
        real(run)
        if step is not None:
            rows[step] = time.perf_counter()

    config.total_steps = total
    loop._Run.flush = timed
    try:
        with tempfile.TemporaryDirectory() as wd:
            loop.train(config, wd)
            end = time.perf_counter()
    finally:
        loop._Run.flush = real
    del end
    return (window[1] - window[0]) / (rows[window[1]] - rows[window[0]])


def compile_once(config) -> None:
    """A two-step run with a checkpoint: fills the compilation cache and Python's imports."""
    c = config.copy_and_resolve_references()
    c.checkpoint_every_steps, c.log_every_steps = 1, 1
    with tempfile.TemporaryDirectory() as wd:
        loop.train(c, wd, stop_at_step=2)


USAGE = "python benchmarks/loop.py [--setups=digits,dit,tiny] [--repeats=3] [--smoke]"


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_list("setups", "digits,dit", f"setups: {', '.join(SETUPS)}", **f)
    flags.DEFINE_integer("repeats", 3, "alternating bare / loop runs (the best is kept)", **f)
    flags.DEFINE_bool(
        "smoke",
        False,
        "the tiny digits config once (--setups tiny --repeats 1); RESULTS.md untouched "
        "(the test suite's check that this script runs)",
        **f,
    )


def _run(args) -> None:
    if args.smoke:
        args.setups, args.repeats = ["tiny"], 1
    unknown = [name for name in args.setups if name not in SETUPS]
    if unknown:
        raise ConfigError("--setups", f"unknown {unknown}", list(SETUPS))
    # The same XLA:CPU flags `python -m jaxdiff.main` sets (before the backend starts).
    os.environ["XLA_FLAGS"] = f"{FAST_CPU_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="jaxdiff-bench-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    rows, all_runs = [], []
    for name in args.setups:
        config, window, total = SETUPS[name]()
        steps, config.total_steps = (
            window[1] - window[0],
            total,
        )  # one step HLO (the lr schedule) for all
        compile_once(config)
        bare, real = [], []
        for _ in range(args.repeats):
            bare.append(bare_steps_per_s(config, steps))
            real.append(loop_steps_per_s(config, window, total))
            print(f"{name}: bare {bare[-1]:.3f} steps/s, loop {real[-1]:.3f} steps/s", flush=True)
        all_runs.append((name, bare, real))
        c = config
        rows.append([name, c.model.name, c.data.batch_size, c.log_every_steps,
                     c.checkpoint_every_steps, steps, max(bare), max(real),
                     max(real) / max(bare)])  # fmt: skip
    table = markdown_table(HEADER, rows)
    print(table)
    if args.smoke:
        return
    runs = "; ".join(
        f"{name}: bare {', '.join(f'{x:.3g}' for x in b)} / loop {', '.join(f'{x:.3g}' for x in r)}"
        for name, b, r in all_runs
    )
    append_results(
        "Training loop vs bare train step",
        table,
        f"All runs (steps/s): {runs}. Best of {args.repeats} alternating runs each. "
        "Loop: `loop.train` (data loading, "
        "logging window fetched one step late, async fingerprinted checkpoints, stop polls, "
        "progress bar; no sampling or evaluation), timed over `steps` steps between two "
        "metrics-row fetches (device sync points), a window with regular checkpoints in it; "
        "compilation and the final save excluded. Bare: the jitted train_step on one fixed "
        "batch, timed the same way. `python benchmarks/loop.py`.",
    )


HEADER = ["setup", "model", "batch", "log every", "ckpt every", "steps", "bare steps/s",
          "loop steps/s", "loop / bare"]  # fmt: skip


def main(argv=None) -> int:
    """``python benchmarks/loop.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _run, USAGE)


if __name__ == "__main__":
    sys.exit(main())
