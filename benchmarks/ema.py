"""Cost of post-hoc EMA (EDM2) tracking: step time with two power-function profiles vs none,
and the time and disk space of one snapshot (not a test).

    python benchmarks/ema.py [--repeats 20] [--steps 8] [--smoke]

On the digits default (``configs/digits.py``: DiT-S/4, depth 6, 16 px, batch 64) two
experiments are built, ``ema.posthoc.std = ()`` and ``(0.05, 0.10)``, and their jitted train
steps run alternately on one fixed batch (``--steps`` steps per timing, dispatched ahead and
synchronised at the ends, after compilation and a warm-up; which goes first alternates);
reported are the medians of the repeats and the median of the ratios of adjacent timings, in
wall time and in this process's CPU time (less sensitive to other jobs on a shared machine).
The profile update alone (the jitted ``update_profiles`` of both profiles on the weights) is
timed too: its share of a step is the overhead without the noise of two whole-step timings.
A snapshot: the blocking part of ``SnapshotWriter.save`` (the copy to host), the whole write
(``close``) and its bytes on disk. Appends to RESULTS.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Importing jax does not start the XLA backend; XLA_FLAGS is read when it starts (in _run).
import jax  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.common import append_results, markdown_table, run_main  # noqa: E402
from configs import digits  # noqa: E402
from jaxdiff import data as data_lib  # noqa: E402
from jaxdiff.platform import configure_xla_for_cpu  # noqa: E402
from jaxdiff.training import experiment, posthoc, sharding, snapshots  # noqa: E402

STDS = (0.05, 0.10)


def _config(stds, smoke: bool):
    c = digits.get_config("tiny" if smoke else None)
    c.ema.posthoc.std = tuple(stds)
    c.ema.posthoc.every = 100
    return c


def _timer(exp, batch, steps: int):
    """A function timing ``steps`` steps from a warm state: (wall s, CPU s) per step."""
    state = exp.init_state()
    for _ in range(2):
        state, m = exp.train_step(state, batch, exp.root_rng)
    jax.block_until_ready((state, m))
    holder = [state]

    def run():
        s = holder[0]
        w, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            s, m = exp.train_step(s, batch, exp.root_rng)
        jax.block_until_ready((s, m))
        holder[0] = s
        return (time.perf_counter() - w) / steps, (time.process_time() - c) / steps

    return run, holder


def _median_time(fn, *args, n: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _snapshot_cost(exp, state) -> tuple[float, float, int]:
    """(blocking s, total s, bytes) of one snapshot of ``state.posthoc``: the second of two
    (the first compiles the fingerprints, which a run's first checkpoint has already done)."""
    with tempfile.TemporaryDirectory() as wd:
        writer = snapshots.SnapshotWriter(wd, exp.config)
        writer.save(100, state)
        writer.ckpt.wait()
        t = time.perf_counter()
        writer.save(200, state)
        blocking = time.perf_counter() - t
        writer.close()
        total = time.perf_counter() - t
        step_dir = os.path.join(wd, snapshots.SNAPSHOT_DIR, "200")
        size = sum(
            os.path.getsize(os.path.join(root, f))
            for root, _, files in os.walk(step_dir)
            for f in files
        )
    return blocking, total, size


USAGE = "python benchmarks/ema.py [--repeats=20] [--steps=8] [--smoke]"


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_integer("repeats", 20, "alternating timings of each experiment", **f)
    flags.DEFINE_integer("steps", 8, "train steps per timing", **f)
    flags.DEFINE_bool("smoke", False, "tiny config, 1 repeat, no RESULTS.md", **f)


def _run(args) -> None:
    configure_xla_for_cpu()  # before the backend starts, as `python -m jaxdiff.main`
    if args.smoke:
        args.repeats, args.steps = 1, 2
    load_before = os.getloadavg()[0]
    exps = {name: experiment.build_experiment(_config(stds, args.smoke))
            for name, stds in (("none", ()), ("two", STDS))}  # fmt: skip
    c = exps["none"].config
    it = data_lib.make_iterator(c.data, split="train", seed=c.seed)
    batch = sharding.global_batch(next(it), exps["none"].mesh)
    timers = {name: _timer(exp, batch, args.steps) for name, exp in exps.items()}
    runs = {name: [] for name in exps}
    for i in range(args.repeats):
        for name in list(exps)[:: 1 if i % 2 == 0 else -1]:  # alternating, order swapped
            runs[name].append(timers[name][0]())
        print(" ".join(f"{n}: {1e3 * runs[n][-1][0]:.1f} ms/step" for n in exps), flush=True)
    med = {n: [statistics.median(r[i] for r in runs[n]) for i in (0, 1)] for n in exps}
    # adjacent timings share the machine's load: the median of their ratios
    paired = [statistics.median(t[i] / n[i] for t, n in zip(runs["two"], runs["none"],
                                                                  strict=True))
              for i in (0, 1)]  # fmt: skip
    state = timers["two"][1][0]
    gammas = tuple(float(g) for g in posthoc.std_to_gamma(STDS))
    update = jax.jit(lambda prof, params, t: posthoc.update_profiles(prof, params, gammas, t))
    t_update = _median_time(update, state.posthoc, state.params, state.step, n=20)
    blocking, total, size = _snapshot_cost(exps["two"], state)
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    load_after = os.getloadavg()[0]
    rows = [[c.model.name, c.data.batch_size, f"{num_params / 1e6:.2f} M", args.steps,
             1e3 * med["none"][0], 1e3 * med["two"][0], paired[0], paired[1],
             1e3 * t_update, t_update / med["none"][0],
             f"{size / 2**20:.1f} MiB", 1e3 * blocking, 1e3 * total]]  # fmt: skip
    table = markdown_table(HEADER, rows)
    print(table)
    if args.smoke:
        return
    wall = lambda n: ", ".join(f"{1e3 * r[0]:.1f}" for r in runs[n])  # noqa: E731
    append_results(
        "Post-hoc EMA: step time with two profiles vs none, snapshot cost",
        table,
        f"1-minute load average before / after: {load_before:.1f}, {load_after:.1f} (a shared "
        "machine: other engineers' jobs were running). All runs (ms/step, wall): none "
        f"{wall('none')}; two {wall('two')}. Medians of {args.repeats} alternating timings of "
        f"{args.steps} steps each on one fixed batch (dispatched ahead, synchronised at the "
        "ends; which goes first alternates); two / none: the median over repeats of the "
        "ratio of the two adjacent timings, in wall and in this process's CPU time (a "
        "loaded machine moves whole timings by 2x; adjacent ones share most of it). "
        "update: the jitted "
        "update of both profiles alone (median of 20), and its share of a step without "
        "profiles. Snapshot: both profiles (float32) through Orbax with fingerprints; "
        "blocking = until `save` returns (copy to host), total = until written. "
        "`python benchmarks/ema.py`.",
    )


HEADER = ["model", "batch", "params", "steps", "none ms/step", "two ms/step", "two / none",
          "two / none (CPU)", "update ms", "update / step", "snapshot", "snapshot blocking ms",
          "snapshot total ms"]  # fmt: skip


def main(argv=None) -> int:
    """``python benchmarks/ema.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _run, USAGE)


if __name__ == "__main__":
    sys.exit(main())
