"""Forward+backward training throughput of jaxdiff's networks vs PyTorch, in one process.

For each model: images/s of a jitted value_and_grad of an MSE loss over all parameters
(JAX/Flax) and of forward + loss.backward() of the same network in PyTorch where a peer
exists (diffusers' DiTTransformer2DModel for DiT; RIN has none, so only JAX is timed).
JAX and PyTorch take turns in rounds (each round: one untimed step, then the timed steps, per
framework) so that load from other processes hits both alike, while a step never directly
follows the other framework's (that cost JAX 20% here: PyTorch's threads and allocator
disturb the next step); the median step time is reported (compilation excluded).

    python benchmarks/models.py [--iters 3] [--models DiT-S/2,DiT-B/2] [--plain-dense] [--smoke]

The table is printed and appended to benchmarks/RESULTS.md with a machine description.
The XLA:CPU flags of `jaxdiff.models.layers.FAST_CPU_XLA_FLAGS` are set unless --no-xla-flags.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# Importing jax does not start the XLA backend; XLA_FLAGS is read when it starts (in main).
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.common import machine, run_main  # noqa: E402
from jaxdiff.models import get_model  # noqa: E402
from jaxdiff.platform import FAST_CPU_XLA_FLAGS  # noqa: E402

# (label, registry name, overrides, batch)
CASES = [
    ("DiT-S/2", "DiT-S/2", {}, 32),
    ("DiT-B/2", "DiT-B/2", {}, 16),
    ("RIN-cifar10-tiny", "RIN-cifar10-tiny", {}, 32),
    ("RIN-imagenet64", "RIN-imagenet64", {}, 8),
]
# --smoke: one small DiT (with its PyTorch twin) and one small RIN, batch 2
SMOKE_CASES = [
    ("DiT-tiny/2", "DiT-tiny/2", dict(image_size=8), 2),
    ("RIN-cifar10-tiny (1 block)", "RIN-cifar10-tiny",
     dict(image_size=8, num_blocks=1, block_depth=1, num_latents=4, latent_dim=16,
          interface_dim=8, latent_heads=2, rw_heads=2), 2),
]  # fmt: skip


USAGE = (
    "python benchmarks/models.py [--iters=3] [--models=DiT-S/2,DiT-B/2] [--plain-dense] "
    "[--no-xla-flags] [--results=PATH] [--smoke]"
)


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_integer("iters", 3, "timed steps per model and framework", **f)
    flags.DEFINE_list("models", [c[0] for c in CASES], "models to time", **f)
    flags.DEFINE_bool("plain-dense", False, "also time fast_dense=False", **f)
    flags.DEFINE_bool("no-xla-flags", False, "leave XLA_FLAGS as it is", **f)
    flags.DEFINE_string(
        "results", str(pathlib.Path(__file__).with_name("RESULTS.md")), "file appended to", **f
    )
    flags.DEFINE_bool(
        "smoke",
        False,
        "SMOKE_CASES, one timed step each, plain dense too; RESULTS.md untouched (the "
        "test suite's check that this script runs)",
        **f,
    )


def jax_step_fn(model, batch: int, seed: int = 0):
    """Returns step() running one jitted forward+backward; params are float32."""
    s, c = model.image_size, model.in_channels
    kx, kt = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (batch, s, s, c))
    cond = jax.random.uniform(kt, (batch,), maxval=1000.0)
    y = jnp.arange(batch, dtype=jnp.int32) % model.num_classes
    variables = jax.jit(model.init)(jax.random.key(1), x, cond, y)

    @jax.jit
    def loss_and_grad(v, x, cond, y):
        def loss(v):
            out = model.apply(v, x, cond, y)  # every model: the prediction (B, H, W, C or 2C)
            return jnp.mean((out[..., :c] - x) ** 2)

        return jax.value_and_grad(loss)(v)

    def step():
        jax.block_until_ready(loss_and_grad(variables, x, cond, y))

    return step


def torch_dit_step_fn(model, batch: int):
    """The same DiT in PyTorch (diffusers), forward + backward of the same loss."""
    import torch
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    net = DiTTransformer2DModel(
        num_attention_heads=model.num_heads,
        attention_head_dim=model.hidden_size // model.num_heads,
        in_channels=model.in_channels,
        out_channels=model.in_channels * (2 if model.learn_sigma else 1),
        num_layers=model.depth,
        sample_size=model.image_size,
        patch_size=model.patch_size,
        num_embeds_ada_norm=model.num_classes,
        norm_eps=1e-6,
    ).train()
    c, s = model.in_channels, model.image_size
    x = torch.randn(batch, c, s, s)
    t = torch.randint(0, 1000, (batch,))
    y = torch.arange(batch) % model.num_classes

    def step():
        net.zero_grad(set_to_none=True)
        out = net(x, t, y).sample
        torch.mean((out[:, :c] - x) ** 2).backward()

    return step


def time_interleaved(steps: dict, iters: int, rounds: int = 2) -> dict:
    """Median seconds per step over `rounds` turns of each step: per turn one untimed step
    (warm-up after the other framework ran), then `iters` timed ones."""
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, step in steps.items():
            step()
            for _ in range(iters):
                t0 = time.perf_counter()
                step()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(args) -> str:
    wanted = args.models
    rows = []
    for label, name, overrides, batch in SMOKE_CASES if args.smoke else CASES:
        if label not in wanted and not args.smoke:
            continue
        model = get_model(name, **overrides)
        steps = {"jax": jax_step_fn(model, batch)}
        if args.plain_dense:
            steps["jax_plain"] = jax_step_fn(model.clone(fast_dense=False), batch)
        if name.startswith("DiT"):
            steps["torch"] = torch_dit_step_fn(model, batch)
        sec = time_interleaved(steps, args.iters)
        ips = {k: batch / v for k, v in sec.items()}
        rows.append((label, batch, ips))
        print(label, {k: f"{v:.2f} img/s" for k, v in ips.items()}, flush=True)
    return format_table(rows, args)


def format_table(rows, args) -> str:
    fmt = lambda v: f"{v:.2f}" if v is not None else "—"
    header = "| model | batch | JAX img/s | PyTorch img/s | JAX / PyTorch |"
    if args.plain_dense:
        header += " JAX plain-dense img/s |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for label, batch, ips in rows:
        jx, pt = ips["jax"], ips.get("torch")
        ratio = f"{jx / pt:.2f}x" if pt else "— (no PyTorch peer)"
        line = f"| {label} | {batch} | {fmt(jx)} | {fmt(pt)} | {ratio} |"
        if args.plain_dense:
            line += f" {fmt(ips['jax_plain'])} |"
        lines.append(line)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"\n## Models: forward+backward throughput ({when})\n\n"
        f"Machine: {machine()}. Median of {args.iters} interleaved steps after one "
        "warm-up step (compilation excluded); float32; MSE loss, gradient of all parameters. "
        "`python benchmarks/models.py`.\n\n" + "\n".join(lines) + "\n"
    )


def _main(args) -> None:
    if args.smoke:
        args.iters, args.plain_dense = 1, True
    if not args.no_xla_flags:
        xla_flags = FAST_CPU_XLA_FLAGS + " " + os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = xla_flags.strip()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    report = run(args)
    print(report)
    if args.smoke:
        return
    with open(args.results, "a") as f:
        f.write(report)


def main(argv=None) -> int:
    """``python benchmarks/models.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _main, USAGE)


if __name__ == "__main__":
    sys.exit(main())
