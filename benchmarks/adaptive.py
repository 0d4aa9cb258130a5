"""Cost of the adaptive timestep sampler (Kim et al. 2024) per train step (not a test).

    python benchmarks/adaptive.py [--setups digits,dit,tiny] [--repeats 5] [--cycles 2] [--smoke]

The sampler (``noise.timesteps="adaptive"``) draws u from its policy in every step (a
conv net forward pass over the batch) and refreshes the policy every f_S = ``update_every``
steps (40 by default): two forward passes of the model over K + B·|S| inputs and the policy's
backward pass. Its cost per step is averaged over a whole cycle of f_S steps and compared
with uniform timesteps, the same model, batch and step otherwise. Variants:

- ``uniform``: ``noise.timesteps="uniform"`` (the baseline);
- ``continuous cond`` / ``discrete cond``: the adaptive sampler, version ``continuous``
  (K = 128 levels) or ``discrete`` (K = T = 1000), refreshed by a ``lax.cond`` inside the
  one jitted step (``train_step(..., sampler_due=None)``);
- ``continuous split`` / ``discrete split``: two jitted steps, one compiled without the
  refresh (``sampler_due=False``), one with it unconditionally (``sampler_due=True``), chosen
  on the host by ``step % f_S == 0``;
- ``continuous separate``: the training loop's step (``Experiment.train_step_at``): the
  step compiled without the refresh every step and, on due steps, the refresh as its own
  jitted call (``step.refresh_sampler``) on the inputs the step returns, after a copy of the
  parameters before the step (the step donates the state).

Timing (all on one fixed device batch, as ``benchmarks/loop.py``'s bare step; compilation
and a warm-up excluded; the variants interleaved in every repetition so that they share the
machine's load):

- parts (``--repeats``, first, also the warm-up): single steps, synchronised before and
  after: a due step (the state's step set to a multiple of f_S) and two steps that are not;
  per cycle ((f_S − 1)·median(not due) + median(due)) / f_S;
- cycles (``--cycles``, ``digits`` only): whole cycles of f_S consecutive steps (the first
  one due), synchronised only at the cycle's ends (the host dispatches ahead, as in the
  training loop); median cycle time / f_S;
- the refresh alone, separately jitted (``sampler.refresh`` on a SamplerContext built from
  the state and batch) and its pieces: the Δ terms (two model forward passes over
  K + B·|S| inputs) and the policy's REINFORCE step; and ``draw`` (policy forward + Beta
  draws) that every adaptive step runs.

Setups: ``digits`` (``configs/digits.py``: DiT-S/4, depth 6, hidden 192, 16 px, batch 64)
and ``dit`` (DiT-S/2 at 32×32×4, batch 16; parts only). Appends the tables to
benchmarks/RESULTS.md with the machine and its load.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import append_results, markdown_table, run_main  # noqa: E402
from configs import digits  # noqa: E402
from jaxdiff import noise  # noqa: E402
from jaxdiff.training import experiment, sharding  # noqa: E402
from jaxdiff.training.step import jit_train_step, x0_error_fn  # noqa: E402

VARIANTS = {  # name: (timesteps, version, mode)
    "uniform": ("uniform", None, "cond"),
    "continuous cond": ("adaptive", "continuous", "cond"),
    "continuous split": ("adaptive", "continuous", "split"),
    "continuous separate": ("adaptive", "continuous", "separate"),
    "discrete cond": ("adaptive", "discrete", "cond"),
    "discrete split": ("adaptive", "discrete", "split"),
    "discrete separate": ("adaptive", "discrete", "separate"),
}
DEFAULT = ",".join(VARIANTS)


def _setup_config(setup: str):
    if setup == "digits":
        return digits.get_config()
    if setup == "tiny":  # (--smoke)
        return digits.get_config("tiny")
    c = digits.get_config("size=32,model=DiT-S/2")  # on 32×32×4 latents (batches made here)
    c.data.name, c.data.kind, c.data.channels, c.data.batch_size = "latents", "latent", 4, 16
    return c


def _config(setup: str, variant: str):
    c = _setup_config(setup)
    timesteps, version, _ = VARIANTS[variant]
    c.noise.timesteps = timesteps
    if version is not None:
        c.noise.timesteps_params.version = version
        if setup == "tiny":
            c.noise.timesteps_params.update_every = 4  # a short f_S cycle
    return c


@dataclasses.dataclass
class Run:
    """One variant: its experiment, jitted step(s), state and fixed batch."""

    name: str
    exp: object
    step_at: object  # host step -> (state, batch, rng) -> (state, metrics)
    every: int
    state: object = None
    batch: object = None
    compile_s: float = 0.0

    def set_step(self, step: int) -> None:
        s = jax.device_put(np.int32(step), self.exp.state_shardings.step)
        self.state = self.state.replace(step=s)

    def run(self, step: int):
        self.state, m = self.step_at(step)(self.state, self.batch, self.exp.root_rng)
        return m


def build_run(setup: str, variant: str) -> Run:
    """Builds the experiment and runs each of its executables once (compiles them)."""
    c = _config(setup, variant)
    exp = experiment.build_experiment(c)
    sampler = exp.spec.timestep_sampler
    every = int(getattr(sampler, "update_every", 40)) if sampler.stateful else 40
    mode = VARIANTS[variant][2]
    if mode == "cond":
        step_at = lambda s: exp.train_step  # noqa: E731
    elif mode == "separate":  # the training loop's step
        step_at = exp.train_step_at
    else:
        steps = {
            due: jit_train_step(
                functools.partial(exp.step_fn, sampler_due=due), exp.state_shardings, exp.mesh
            )
            for due in (True, False)
        }
        step_at = lambda s: steps[s % every == 0]  # noqa: E731
    rng = np.random.default_rng(0)
    d = c.data
    local = {
        "image": rng.uniform(-1, 1, (d.batch_size, d.image_size, d.image_size, d.channels)),
        "label": rng.integers(0, d.num_classes, d.batch_size).astype(np.int32),
    }
    local["image"] = local["image"].astype(np.float32)
    r = Run(variant, exp, step_at, every, exp.init_state(), sharding.global_batch(local, exp.mesh))
    t = time.perf_counter()
    for s in (0, 1):  # the due and the not-due executable (one executable: compiled once)
        r.set_step(s)
        jax.block_until_ready(r.run(s))
        jax.block_until_ready(r.state)
    r.compile_s = time.perf_counter() - t
    return r


def _clock() -> np.ndarray:
    """(wall seconds, this process's CPU seconds over all its threads)."""
    return np.array([time.perf_counter(), time.process_time()])


def _median(samples: list) -> np.ndarray:
    return np.median(np.asarray(samples), axis=0)


def time_cycle(r: Run) -> np.ndarray:
    """(wall, CPU) seconds per step over one whole cycle of f_S steps (the first due),
    dispatched ahead, synchronised at both ends."""
    r.set_step(0)
    jax.block_until_ready(r.state)
    t = _clock()
    m = None
    for s in range(r.every):
        m = r.run(s)
    jax.block_until_ready((r.state, m))
    return (_clock() - t) / r.every


def time_parts(r: Run, not_due: int = 2) -> list[np.ndarray]:
    """(wall, CPU) seconds of a due step, then of ``not_due`` steps that are not due, each
    synchronised before and after."""
    times = []
    for s in range(1 + not_due):
        r.set_step(s)
        jax.block_until_ready(r.state)
        t = _clock()
        m = r.run(s)
        jax.block_until_ready((r.state, m))
        times.append(_clock() - t)
    return times


def _timed(fns: dict, reps: int) -> dict:
    """Median wall seconds of each zero-argument function, compiled first, interleaved."""
    for f in fns.values():
        jax.block_until_ready(f())
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def time_refresh(r: Run, reps: int) -> dict:
    """Median seconds of the separately jitted draw, refresh (inline and inside a lax.cond
    with a true predicate) and its pieces, on r's state and batch."""
    exp, sampler = r.exp, r.exp.spec.timestep_sampler
    x0, labels = r.batch["image"], r.batch["label"]
    n = x0.shape[0]
    key = jax.random.key(3)
    draw = jax.jit(lambda ss, x, k: sampler.draw(k, n, ss, x))
    lam, _, info = draw(r.state.sampler_state, x0, key)
    ctx = noise.SamplerContext(
        step=jnp.int32(0), key=key, x0=x0, labels=labels, lam=lam, info=info,
        params_before=r.state.params, params_after=r.state.ema[0],
        x0_error=x0_error_fn(exp.apply_fn, exp.spec),
    )  # fmt: skip
    ss = r.state.sampler_state
    deltas = jax.jit(lambda ss, ctx: sampler._deltas(ss["selected"], ctx))
    _, d_sel = deltas(ss, ctx)
    policy = jax.jit(lambda ss, ctx, d: sampler._policy_step(ss, ctx, d))
    refresh = jax.jit(sampler.refresh)
    in_cond = jax.jit(lambda ss, ctx, p: jax.lax.cond(p, sampler.refresh, lambda s, c: s, ss, ctx))
    t = _timed(
        {
            "draw": lambda: draw(ss, x0, key),
            "refresh": lambda: refresh(ss, ctx),
            "in_cond": lambda: in_cond(ss, ctx, jnp.bool_(True)),
            "deltas": lambda: deltas(ss, ctx),
            "policy": lambda: policy(ss, ctx, d_sel),
        },
        reps,
    )
    return {**t, "inputs": sampler.num_levels + n * sampler.num_selected}


def _parts(runs: list[Run], repeats: int, setup: str) -> tuple[dict, dict]:
    due, not_due = {r.name: [] for r in runs}, {r.name: [] for r in runs}
    for i in range(repeats):
        for r in runs:
            d, *nd = time_parts(r)
            due[r.name].append(d)
            not_due[r.name] += nd
        print(f"{setup} parts {i} (due/not due, wall): " + ", ".join(
            f"{k} {due[k][-1][0] * 1e3:.0f}/{not_due[k][-1][0] * 1e3:.0f}" for k in due) + " ms",
            flush=True)  # fmt: skip
    return due, not_due


def _cycles(runs: list[Run], cycles: int, setup: str) -> dict:
    cyc = {r.name: [] for r in runs}
    for i in range(cycles):
        for r in runs:
            cyc[r.name].append(time_cycle(r))
        print(f"{setup} cycle {i} (wall/CPU): " + ", ".join(
            f"{k} {v[-1][0] * 1e3:.0f}/{v[-1][1] * 1e3:.0f}" for k, v in cyc.items()) + " ms/step",
            flush=True)  # fmt: skip
    return cyc


def measure(setup: str, variants: list[str], repeats: int, cycles: int) -> tuple[list, list]:
    """(rows of HEADER, rows of PARTS_HEADER) of one setup; variants[0] is the baseline."""
    runs = []
    for v in variants:
        runs.append(build_run(setup, v))
        print(f"{setup}: built {v} (first calls {runs[-1].compile_s:.1f} s)", flush=True)
    due, not_due = _parts(runs, repeats, setup)  # (also the warm-up of the cycles)
    cyc = _cycles(runs, cycles, setup)
    rows, base = [], {}
    nan = np.full(2, np.nan)
    for r in runs:
        d, nd = _median(due[r.name]), _median(not_due[r.name])
        per = ((r.every - 1) * nd + d) / r.every  # (wall, CPU)
        c = _median(cyc[r.name]) if cycles else nan
        base = base or {"parts": per, "cycles": c}
        pr, cr = per / base["parts"], c / base["cycles"]
        rate = 1 / (c[0] if cycles else per[0])
        compile_s = r.compile_s - d[0] - nd[0]  # first calls less a due and a not-due step
        rows.append([setup, r.name, r.every, nd[0] * 1e3, d[0] * 1e3, per[0] * 1e3, pr[0], pr[1],
                     c[0] * 1e3, cr[0], cr[1], rate, compile_s])  # fmt: skip
    parts = []
    for r in runs:
        if r.exp.spec.timestep_sampler.stateful and "cond" in r.name:
            t = time_refresh(r, repeats)
            step = base["parts"][0]
            parts.append([setup, r.name.split()[0], t["inputs"], step * 1e3, t["draw"] * 1e3,
                          t["refresh"] * 1e3, t["in_cond"] * 1e3, t["deltas"] * 1e3,
                          t["policy"] * 1e3, t["refresh"] / r.every / step])  # fmt: skip
    return rows, parts


HEADER = ["setup", "variant", "f_S", "not-due step ms", "due step ms", "parts ms/step",
          "parts / uniform", "(CPU)", "cycles ms/step", "cycles / uniform", "(CPU)", "steps/s",
          "compile s"]  # fmt: skip
PARTS_HEADER = ["setup", "version", "K + B·#S inputs", "uniform step ms", "draw ms", "refresh ms",
                "refresh in lax.cond ms", "Δ terms ms", "policy step ms",
                "refresh / f_S / uniform step"]  # fmt: skip


USAGE = (
    "python benchmarks/adaptive.py [--setups=digits,dit,tiny] [--variants=uniform,...] "
    "[--dit-variants=...] [--repeats=5] [--cycles=2] [--smoke]"
)


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_list("setups", "digits,dit", "setups: digits, dit, tiny", **f)
    flags.DEFINE_list("variants", DEFAULT, f"variants of the digits setups; of {DEFAULT}", **f)
    flags.DEFINE_list(
        "dit-variants",
        "uniform,continuous cond,continuous split,continuous separate",
        "variants of the dit setup",
        **f,
    )
    flags.DEFINE_integer("repeats", 5, "interleaved repetitions of the parts", **f)
    flags.DEFINE_integer("cycles", 2, "whole f_S cycles (digits only)", **f)
    flags.DEFINE_bool(
        "smoke",
        False,
        "the tiny digits config, uniform against the adaptive sampler's cond and separate "
        "refreshes, once; RESULTS.md untouched (the test suite's check that this script runs)",
        **f,
    )


def _run(args) -> None:
    from jaxdiff.platform import FAST_CPU_XLA_FLAGS

    # The same XLA:CPU flags `python -m jaxdiff.main` sets (before the backend starts).
    os.environ["XLA_FLAGS"] = f"{FAST_CPU_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
    if args.smoke:
        args.setups, args.repeats, args.cycles = ["tiny"], 1, 1
        args.variants = ["uniform", "continuous cond", "continuous separate"]
    rows, parts = [], []
    load = [os.getloadavg()[0]]
    for setup in args.setups:
        variants = args.dit_variants if setup == "dit" else args.variants
        cycles = 0 if setup == "dit" else args.cycles
        r, pt = measure(setup, variants, args.repeats, cycles)
        rows += r
        parts += pt
        load.append(os.getloadavg()[0])
        print(markdown_table(HEADER, r), flush=True)
    table = markdown_table(HEADER, rows) + "\n\n" + markdown_table(PARTS_HEADER, parts)
    print(table)
    if args.smoke:
        return
    append_results(
        "Adaptive timestep sampler: cost per step over an f_S cycle",
        table,
        f"1-minute load average before / after each setup: {', '.join(f'{x:.1f}' for x in load)}."
        f" Medians of {args.repeats} interleaved repetitions (parts: 1 due + 2 not-due steps "
        f"each, synchronised per step) and of {args.cycles} whole cycles (digits; dispatched "
        "ahead, synchronised at the ends), after compilation and a warm-up; one fixed batch. "
        "Ratios to uniform in wall time and, (CPU), in this process's CPU time (all its "
        "threads; less sensitive to other jobs on a shared machine). cond: the refresh as a "
        "lax.cond in the one jitted step; split: a step compiled without and one with the "
        "refresh, chosen on the host; separate: the step without it, then the refresh as its "
        "own jitted call on due steps. compile: the first calls of the variant's executables "
        "(a due and a not-due step) less the median due and not-due step. Refresh pieces: "
        "separately jitted, median wall times. "
        "`python benchmarks/adaptive.py`.",
    )


def main(argv=None) -> int:
    """``python benchmarks/adaptive.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _run, USAGE)


if __name__ == "__main__":
    sys.exit(main())
