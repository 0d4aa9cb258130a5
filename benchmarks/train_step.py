"""Train-step throughput of DiT-S/2 and DiT-B/2 at 32×32×4 (not a test).

    python benchmarks/train_step.py [--models DiT-S/2,DiT-B/2] [--batch 32] [--steps 5] [--no-torch]
                                    [--smoke]

For each model: images/s of jaxdiff's full jitted train step (noise sampling, forward,
backward, AdamW, EMA) and its achieved FLOP/s (XLA's cost analysis of the compiled step),
next to a float32 matrix-multiply peak measured in the same run (model FLOP utilisation =
achieved / peak). The peer is the same network in PyTorch (diffusers' DiTTransformer2DModel,
which loads the official DiT weights) with the same step (fwd + bwd + AdamW + EMA), timed in
the same run; the table reports jaxdiff / PyTorch. On a GPU, the PyTorch peer runs on it too.
Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import sys
import time

try:  # Triton (imported by diffusers via torch._dynamo) must load before TensorFlow.
    import torch  # noqa: F401
    import triton  # noqa: F401
except ImportError:
    pass
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import append_results, markdown_table, run_main  # noqa: E402
from jaxdiff.platform import FAST_CPU_XLA_FLAGS  # noqa: E402
from jaxdiff.training import experiment, sharding  # noqa: E402
from jaxdiff.training.config import base_config  # noqa: E402


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Best float32 FLOP/s of an n×n matmul on the default device."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


# --smoke: a one-block DiT (depth, width, heads) at 8×8×4, one step, both frameworks
SMOKE = dict(size=8, depth=1, width=32, heads=2)


def _config(model: str, batch: int, size: int = 32, overrides: dict | None = None):
    """ImageNet-256 latents (size×size×4, 1000 classes); the batches are made here, no data
    is read."""
    c = base_config()
    c.data.name, c.data.kind = "latents", "latent"
    c.data.image_size, c.data.channels, c.data.num_classes = size, 4, 1000
    c.data.batch_size = batch
    c.model.name = model
    c.model.overrides = dict(overrides or {})
    c.ema.decays = (0.9999,)
    return c


def jax_step(
    model: str, batch: int, steps: int, size: int = 32, overrides: dict | None = None
) -> tuple[float, float]:
    """(images/s, FLOPs per step) of jaxdiff's train step."""
    exp = experiment.build_experiment(_config(model, batch, size, overrides))
    state = exp.init_state()
    rng = np.random.default_rng(0)
    local = {
        "image": rng.standard_normal((batch, size, size, 4)).astype(np.float32),
        "label": rng.integers(0, 1000, batch).astype(np.int32),
    }
    b = sharding.global_batch(local, exp.mesh)
    compiled = exp.train_step.lower(state, b, exp.root_rng).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", float("nan")))
    state, m = compiled(state, b, exp.root_rng)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, b, exp.root_rng)
    jax.block_until_ready(m)
    return batch * steps / (time.perf_counter() - t), flops


def torch_step(
    model: str, batch: int, steps: int, size: int = 32, dims: tuple | None = None
) -> float:
    """images/s of the same step in PyTorch (diffusers' DiT, official architecture);
    ``dims`` = (depth, width, heads) replaces the model's."""
    import copy

    import torch
    from diffusers import DiTTransformer2DModel

    sizes = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
    depth, width, heads = dims or sizes[model.split("-")[1].split("/")[0]]
    patch = int(model.split("/")[1])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    net = DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=width // heads, in_channels=4,
        out_channels=4, num_layers=depth, sample_size=size, patch_size=patch,
        num_embeds_ada_norm=1000,
    ).to(dev)  # fmt: skip
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
    x0 = torch.randn(batch, 4, size, size, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def step():
        t = torch.randint(0, 1000, (batch,), device=dev)
        eps = torch.randn_like(x0)
        a = torch.cos(t.float() / 1000 * torch.pi / 2).view(-1, 1, 1, 1)
        xt = a * x0 + (1 - a**2).sqrt() * eps
        loss = ((net(xt, timestep=t, class_labels=y).sample - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1e-4)

    step()
    if dev == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


USAGE = (
    "python benchmarks/train_step.py [--models=DiT-S/2,DiT-B/2] [--batch=32] [--steps=5] "
    "[--no-torch] [--smoke]"
)


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_list("models", "DiT-S/2,DiT-B/2", "DiT models to time", **f)
    flags.DEFINE_integer("batch", 32, "images per step", **f)
    flags.DEFINE_integer("steps", 5, "timed steps per model and framework", **f)
    flags.DEFINE_bool("no-torch", False, "skip the PyTorch peer", **f)
    flags.DEFINE_bool(
        "smoke",
        False,
        "one step of a one-block DiT at 8×8×4 in each framework; RESULTS.md untouched "
        "(the test suite's check that this script runs)",
        **f,
    )


def _run(args) -> None:
    # The same XLA:CPU flags `python -m jaxdiff.main` sets (before the backend starts).
    os.environ["XLA_FLAGS"] = f"{FAST_CPU_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
    size, overrides, dims = 32, None, None
    if args.smoke:
        args.models, args.batch, args.steps = args.models[:1], 2, 1
        size, dims = SMOKE["size"], (SMOKE["depth"], SMOKE["width"], SMOKE["heads"])
        overrides = dict(depth=dims[0], hidden_size=dims[1], num_heads=dims[2])
    peak = matmul_peak(64, 1) if args.smoke else matmul_peak()
    rows = []
    for name in args.models:
        ips, flops = jax_step(name, args.batch, args.steps, size, overrides)
        achieved = flops * ips / args.batch
        peer = (
            float("nan") if args.no_torch else torch_step(name, args.batch, args.steps, size, dims)
        )
        rows.append(
            [name, args.batch, ips, peer, ips / peer, achieved / 1e9, peak / 1e9, achieved / peak]
        )
        print(markdown_table(HEADER, rows[-1:]), flush=True)
    table = markdown_table(HEADER, rows)
    print(table)
    if args.smoke:
        return
    append_results(
        f"Train step, 32×32×4, batch {args.batch}",
        table,
        "jaxdiff: full jitted train step (noise, fwd, bwd, AdamW, EMA); FLOPs from XLA cost "
        "analysis. Peer: diffusers DiTTransformer2DModel, same step in PyTorch, same run.",
    )


HEADER = [
    "model",
    "batch",
    "jaxdiff img/s",
    "PyTorch img/s",
    "ratio",
    "GFLOP/s",
    "matmul peak GFLOP/s",
    "MFU",
]


def main(argv=None) -> int:
    """``python benchmarks/train_step.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _run, USAGE)


if __name__ == "__main__":
    sys.exit(main())
