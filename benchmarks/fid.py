"""Images/s of FID Inception feature extraction: the JAX port vs pytorch-fid (not a test).

    python benchmarks/fid.py [--batch 8] [--size 256] [--repeats 3] [--smoke]

Both networks get the same random weights (pytorch-fid's FID Inception built without a
download, its state dict converted by `jaxdiff.evaluation.inception_convert`) and the same
uint8 images of `--size`² pixels (resized to 299 inside each). After one warm-up call (the
JAX compile), each is timed over `--repeats` batches in the same process on this machine.
Prints a table and appends it, with a machine description, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import append_results, machine, markdown_table, run_main  # noqa: E402
from jaxdiff.evaluation import fid, inception_convert  # noqa: E402

if TYPE_CHECKING:
    import torch


def _pytorch_fid_model() -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    """pytorch-fid's InceptionV3 (2048-d block) with random weights, and its state dict."""
    import torchvision
    from pytorch_fid import inception as pfi

    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=False
    )
    state_dict = net.state_dict()
    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pfi.load_state_dict_from_url = original
    return model, {k: v.numpy() for k, v in state_dict.items()}


def _time(fn, repeats: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of `repeats` further calls)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


USAGE = "python benchmarks/fid.py [--batch=8] [--size=256] [--repeats=3] [--smoke]"


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_integer("batch", 8, "images per batch", **f)
    flags.DEFINE_integer("size", 256, "image side in pixels (resized to 299 inside)", **f)
    flags.DEFINE_integer("repeats", 3, "timed batches after the warm-up call", **f)
    flags.DEFINE_bool(
        "smoke",
        False,
        "one 32² image, one timed call each; RESULTS.md untouched (the test suite's "
        "check that this script runs)",
        **f,
    )


def _run(args) -> None:
    import torch

    if args.smoke:
        args.batch, args.size, args.repeats = 1, 32, 1

    model, state_dict = _pytorch_fid_model()
    extractor = fid.InceptionFeatures(params=inception_convert.convert_state_dict(state_dict))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.batch, args.size, args.size, 3), dtype=np.uint8)

    outputs = {}

    def run_torch():
        x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        with torch.no_grad():
            outputs["torch"] = model(x)[0][:, :, 0, 0].numpy()

    def run_jax():
        outputs["jax"] = extractor(images)

    rows = []
    for name, fn in (("pytorch-fid (torch CPU)", run_torch), ("jaxdiff port (JAX/XLA)", run_jax)):
        first, median = _time(fn, args.repeats)
        rows.append([name, args.batch, f"{args.size}²→299²", first, median, args.batch / median])
    diff = np.abs(outputs["jax"] - outputs["torch"]).max() / np.abs(outputs["torch"]).max()
    header = ["implementation", "batch", "input", "first call s", "s / batch", "images/s"]
    table = markdown_table(header, rows)
    load = os.getloadavg()[0]
    notes = (
        f"Same random weights and uint8 images; max |Δfeature| / max |feature| = {diff:.1e}. "
        f"torch threads {torch.get_num_threads()}; load average at the end ≈ {load:.1f} "
        "(other jobs may have been running: read the ratio, not the absolute numbers). "
        "JAX's first call includes compilation."
    )
    print(machine())
    print(table)
    print(notes)
    if args.smoke:
        return
    append_results("FID Inception feature extraction: JAX port vs pytorch-fid", table, notes)


def main(argv=None) -> int:
    """``python benchmarks/fid.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _run, USAGE)


if __name__ == "__main__":
    sys.exit(main())
