"""Samples/s and network evaluations/s of each sampler with a small DiT (not a test).

    python benchmarks/samplers.py [--model DiT-S/2] [--batch 16] [--steps 50] [--cfg 1.5]
                                  [--methods ddim,dpmpp_2m,...] [--no_torch] [--smoke]

Times the compiled `jaxdiff.sampling.sample` (after a warm-up call that compiles it) for
every registered sampler (or `--methods`) with classifier-free guidance (two network rows
per sample), and the bare guided network call alone, so the sampler's own overhead per
evaluation shows. The peer, in the same run: an equivalent network in PyTorch (diffusers'
DiTTransformer2DModel of the same size, random weights) stepped by the diffusers scheduler
of the same method (`PEER_SCHEDULERS`) with the same steps, evaluations and guidance
(`--no_torch` skips it); the table gives, per method, the peer's time / jaxdiff's (> 1:
jaxdiff is faster). Prints the table and appends it, with a machine description, to
benchmarks/RESULTS.md. `--smoke`: DiT-tiny/2 on 8×8, batch 2, 2 steps, one repeat, nothing
written (the test suite's check that this script runs).
"""

from __future__ import annotations

import datetime
import functools
import os
import sys
import time

try:  # Triton (imported by diffusers via torch._dynamo) must load before TensorFlow.
    import torch  # noqa: F401
    import triton  # noqa: F401
except ImportError:
    pass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Importing jax does not start the XLA backend; XLA_FLAGS is read when it starts (in _run).
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import flags  # noqa: E402
from jax.tree_util import Partial  # noqa: E402

from benchmarks.common import RESULTS, machine, run_main  # noqa: E402
from jaxdiff import noise, sampling  # noqa: E402
from jaxdiff.models import get_model  # noqa: E402
from jaxdiff.models.conditioning import logsnr_to_cond  # noqa: E402
from jaxdiff.platform import FAST_CPU_XLA_FLAGS  # noqa: E402


def _apply(model, variables, x, lam, y):
    """model_fn(x, lam, y) of the guidance wrapper: λ -> cond, first C output channels."""
    out = model.apply(variables, x, logsnr_to_cond(lam), y)
    return out[..., : x.shape[-1]]


def _time(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls of fn() (results blocked on)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


# method -> (diffusers scheduler class, its kwargs): the peer of each jaxdiff method, with the
# conventions the parity tests check (tests/test_sampling_solvers.py).
PEER_SCHEDULERS = {
    "ddim": ("DDIMScheduler", dict(clip_sample=False)),
    "ddpm": ("DDPMScheduler", dict(clip_sample=False, variance_type="fixed_small")),
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", dict(
        algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
        final_sigmas_type="zero")),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", dict(
        algorithm_type="sde-dpmsolver++", solver_order=2, lower_order_final=True,
        final_sigmas_type="zero")),
    "unipc": ("UniPCMultistepScheduler", dict(
        solver_type="bh2", solver_order=2, predict_x0=True, lower_order_final=True,
        final_sigmas_type="zero")),
}  # fmt: skip


def run(args) -> list[dict]:
    model = get_model(
        args.model,
        image_size=args.image_size,
        in_channels=args.channels,
        num_classes=10,
        learn_sigma=False,
    )
    shape = (args.batch, args.image_size, args.image_size, args.channels)
    x = jnp.zeros(shape)
    y = jnp.arange(args.batch, dtype=jnp.int32) % 10
    variables = model.init(jax.random.key(0), x, jnp.zeros(args.batch), y)
    model_fn = Partial(functools.partial(_apply, model), variables)  # model static, params data
    denoise = sampling.cfg_denoise_fn(model_fn, y, 10, args.cfg)
    schedule = noise.get_schedule("cosine")
    lam = jnp.zeros(args.batch)

    bare = jax.jit(lambda f, x, lam: f(x, lam))
    jax.block_until_ready(bare(denoise, x, lam))
    t_net = _time(lambda: bare(denoise, x, lam), args.repeats)
    rows = [dict(method="network only", steps=1, nfe=1, seconds=t_net)]
    methods = args.methods or sampling.list_samplers()
    for method in methods:
        call = lambda m=method: sampling.sample(
            jax.random.key(1), denoise, shape, schedule, args.steps, method=m
        )
        start = time.perf_counter()
        jax.block_until_ready(call())
        compile_s = time.perf_counter() - start
        nfe = sampling.num_evaluations(method, args.steps)
        seconds = _time(call, args.repeats)
        rows.append(
            dict(method=method, steps=args.steps, nfe=nfe, seconds=seconds, compile_s=compile_s)
        )
    if not args.no_torch:
        net = torch_dit(model, args)
        for method in methods:
            if method not in PEER_SCHEDULERS:
                continue
            seconds, nfe = torch_seconds(net, method, args)
            rows.append(dict(method=f"{PEER}{method}", steps=args.steps, nfe=nfe, seconds=seconds))
    for r in rows:
        r["samples_per_s"] = args.batch / r["seconds"] if r["method"] != "network only" else None
        # Guided: each evaluation runs the network on 2·batch rows.
        r["evals_per_s"] = 2 * args.batch * r["nfe"] / r["seconds"]
    return rows


PEER = "PyTorch peer: diffusers "


def torch_dit(model, args):
    """diffusers' DiTTransformer2DModel with the size of ``model`` (random weights)."""
    import torch
    from diffusers import DiTTransformer2DModel

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    heads = model.num_heads
    return DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=model.hidden_size // heads,
        in_channels=args.channels, out_channels=args.channels, num_layers=model.depth,
        sample_size=args.image_size, patch_size=model.patch_size, num_embeds_ada_norm=10,
    ).to(dev).eval()  # fmt: skip


def torch_seconds(net, method: str, args) -> tuple[float, int]:
    """Best wall time of diffusers' loop for ``method`` (guided, 2 rows per sample) and its
    number of network evaluations."""
    import diffusers
    import torch

    name, kwargs = PEER_SCHEDULERS[method]
    sched = getattr(diffusers, name)(num_train_timesteps=1000, beta_schedule="linear", **kwargs)
    dev = next(net.parameters()).device
    y = torch.arange(args.batch, device=dev) % 10
    y2 = torch.cat([y, torch.full_like(y, 10)])

    @torch.no_grad()
    def loop():
        sched.set_timesteps(args.steps)
        x = torch.randn(args.batch, args.channels, args.image_size, args.image_size, device=dev)
        x = x * sched.init_noise_sigma
        for t in sched.timesteps:
            x_in = sched.scale_model_input(x, t)
            tt = torch.full((2 * args.batch,), int(t), device=dev)
            out = net(torch.cat([x_in, x_in]), timestep=tt, class_labels=y2).sample
            cond, uncond = out.chunk(2)
            x = sched.step(uncond + args.cfg * (cond - uncond), t, x).prev_sample
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return x

    loop()
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        loop()
        best = min(best, time.perf_counter() - start)
    return best, len(sched.timesteps)


def format_table(rows: list[dict], args) -> str:
    head = (
        f"### Samplers: {args.model}, {args.image_size}×{args.image_size}×{args.channels}, "
        f"batch {args.batch}, CFG {args.cfg} (2 rows per sample), cosine schedule\n\n"
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {machine()}\n\n"
        "| method | steps | NFE | s / batch | samples/s | network rows/s | compile s |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = []
    by_method = {r["method"]: r for r in rows}
    for r in rows:
        sps = "—" if r["samples_per_s"] is None else f"{r['samples_per_s']:.1f}"
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else "—"
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['nfe']} | {r['seconds']:.3f} | {sps} | "
            f"{r['evals_per_s']:.0f} | {comp} |"
        )
    ratios = [
        f"{m} {by_method[PEER + m]['seconds'] / r['seconds']:.2f}x"
        for m, r in by_method.items()
        if PEER + m in by_method
    ]
    ratio = ""
    if ratios:
        ratio = "\njaxdiff / diffusers, samples/s at the same steps and NFE: " + ", ".join(ratios)
    return head + "\n".join(lines) + "\n" + ratio + "\n"


USAGE = (
    "python benchmarks/samplers.py [--model=DiT-S/2] [--image_size=16] [--channels=4] "
    "[--batch=16] [--steps=50] [--cfg=1.5] [--repeats=3] [--methods=ddim,dpmpp_2m,...] "
    "[--no_write] [--no_torch] [--smoke]"
)


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_string("model", "DiT-S/2", "registered model name", **f)
    flags.DEFINE_integer("image_size", 16, "image side", **f)
    flags.DEFINE_integer("channels", 4, "image channels", **f)
    flags.DEFINE_integer("batch", 16, "samples per batch", **f)
    flags.DEFINE_integer("steps", 50, "sampling steps", **f)
    flags.DEFINE_float("cfg", 1.5, "classifier-free guidance scale", **f)
    flags.DEFINE_integer("repeats", 3, "timed calls (the best is kept)", **f)
    flags.DEFINE_bool("no_write", False, "do not append to RESULTS.md", **f)
    flags.DEFINE_bool("no_torch", False, "skip the PyTorch peers", **f)
    flags.DEFINE_list("methods", None, "comma-separated (default: every one)", **f)
    flags.DEFINE_bool(
        "smoke",
        False,
        "DiT-tiny/2, 8x8, batch 2, 2 steps, one repeat; RESULTS.md untouched (the test "
        "suite's check that this script runs)",
        **f,
    )


def _run(args) -> None:
    # The XLA:CPU flags `python -m jaxdiff.main` sets, before the backend starts.
    os.environ["XLA_FLAGS"] = f"{FAST_CPU_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
    if args.smoke:
        args.model, args.image_size, args.batch, args.steps = "DiT-tiny/2", 8, 2, 2
        args.repeats, args.no_write = 1, True
    table = format_table(run(args), args)
    print(table)
    if not args.no_write:
        with open(RESULTS, "a") as f:
            f.write("\n" + table)
        print(f"appended to {RESULTS}")


def main(argv=None) -> int:
    """``python benchmarks/samplers.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _run, USAGE)


if __name__ == "__main__":
    sys.exit(main())
