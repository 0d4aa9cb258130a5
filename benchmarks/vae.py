"""SD-VAE encode / decode throughput: the JAX port vs diffusers' PyTorch AutoencoderKL.

One diffusers `AutoencoderKL` at the sd-vae-ft-* widths with random weights is saved with
`save_pretrained` and loaded through `jaxdiff.models.vae.load_vae`, so both frameworks run
the same weights on the same images in the same process. Encode (image -> posterior
moments) and decode (latent -> image) are timed separately; JAX and PyTorch calls alternate
so that load from other processes hits both alike; the median is reported, compilation /
the first call excluded (shown apart).

    python benchmarks/vae.py [--batch 4] [--size 64] [--iters 3] [--no-append] [--smoke]

Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile
import time

from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import append_results, markdown_table, run_main  # noqa: E402
from jaxdiff.models import vae  # noqa: E402

SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)


USAGE = "python benchmarks/vae.py [--batch=4] [--size=64] [--iters=3] [--no-append] [--smoke]"


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_integer("batch", 4, "images per call", **f)
    flags.DEFINE_integer("size", 64, "image side (multiple of 8)", **f)
    flags.DEFINE_integer("iters", 3, "timed calls per framework and op", **f)
    flags.DEFINE_bool("no-append", False, "print only, leave RESULTS.md", **f)
    flags.DEFINE_bool(
        "smoke",
        False,
        "a two-block VAE of widths 8, 16 on one 16² image, one timed call; RESULTS.md "
        "untouched (the test suite's check that this script runs)",
        **f,
    )


# --smoke: the same architecture at toy widths
SMOKE_VAE = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)


def build(tmp: str, widths: dict = SD_VAE):
    """(torch model, jax ae, jax variables) holding the same random sd-vae-width weights."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    blocks = len(widths["block_out_channels"])
    net = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        **widths,
    ).eval()
    net.save_pretrained(tmp)
    ae, variables = vae.load_vae(tmp)
    return net, ae, variables


def make_calls(net, ae, variables, x, z) -> dict:
    """{(op, framework): zero-argument call returning a NHWC numpy array}."""
    import jax
    import torch

    enc = jax.jit(lambda v, x: ae.apply(v, x, method="encode")[0])
    dec = jax.jit(lambda v, z: ae.apply(v, z, method="decode"))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    zt = torch.from_numpy(z.transpose(0, 3, 1, 2).copy())

    def torch_call(fn):
        def call():
            with torch.no_grad():
                return fn().numpy().transpose(0, 2, 3, 1)

        return call

    return {
        ("encode", "jax"): lambda: jax.device_get(enc(variables, x)),
        ("encode", "torch"): torch_call(lambda: net.encode(xt).latent_dist.mean),
        ("decode", "jax"): lambda: jax.device_get(dec(variables, z)),
        ("decode", "torch"): torch_call(lambda: net.decode(zt).sample),
    }


def time_calls(calls: dict, iters: int) -> tuple[dict, dict, dict]:
    """First-call seconds, median seconds over `iters` alternating calls, and the outputs."""
    first, outs = {}, {}
    for k, call in calls.items():
        t0 = time.perf_counter()
        outs[k] = call()
        first[k] = time.perf_counter() - t0
    times = {k: [] for k in calls}
    for _ in range(iters):
        for k, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[k].append(time.perf_counter() - t0)
    return first, {k: statistics.median(v) for k, v in times.items()}, outs


def _run(args) -> None:
    if args.smoke:
        args.batch, args.size, args.iters, args.no_append = 1, 16, 1, True
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
    widths = SMOKE_VAE if args.smoke else SD_VAE
    f = 2 ** (len(widths["block_out_channels"]) - 1)  # the downsampling factor
    z = rng.normal(size=(args.batch, args.size // f, args.size // f, 4)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        net, ae, variables = build(tmp, widths)
    first, med, outs = time_calls(make_calls(net, ae, variables, x, z), args.iters)
    rows = []
    for op in ("encode", "decode"):
        err = np.max(np.abs(outs[op, "jax"] - outs[op, "torch"])) / np.max(
            np.abs(outs[op, "torch"])
        )
        jx, pt = args.batch / med[op, "jax"], args.batch / med[op, "torch"]
        rows.append(
            [
                op,
                "jaxdiff port (JAX)",
                round(first[op, "jax"], 2),
                jx,
                f"{jx / pt:.2f}x",
                f"{err:.1e}",
            ]
        )
        rows.append([op, "diffusers (PyTorch)", round(first[op, "torch"], 2), pt, "1x", "—"])
    header = ["op", "implementation", "first call s", "images/s", "vs PyTorch", "max rel diff"]
    table = markdown_table(header, rows)
    load = ", ".join(f"{a:.1f}" for a in os.getloadavg())
    notes = (
        f"{'toy' if args.smoke else 'sd-vae-ft'} widths {tuple(widths['block_out_channels'])}, "
        f"{widths['layers_per_block']} resnets per block, random weights; batch "
        f"{args.batch} of {args.size}×{args.size} images (latents {args.size // f}²×4); float32; "
        f"median of {args.iters} alternating calls after the first (JAX's first call includes "
        f"compilation). torch {torch.__version__} with {torch.get_num_threads()} threads; load "
        f"average {load} (other jobs may share the CPU: read the ratio). "
        "`python benchmarks/vae.py`."
    )
    print(table + "\n\n" + notes)
    if not args.no_append:
        append_results("SD-VAE encode/decode: JAX port vs diffusers AutoencoderKL", table, notes)


def main(argv=None) -> int:
    """``python benchmarks/vae.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _run, USAGE)


if __name__ == "__main__":
    sys.exit(main())
