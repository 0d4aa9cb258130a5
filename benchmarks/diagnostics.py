"""Time `jaxdiff.diagnostics` on DiT-S/2 with 256 held-out examples (not a test).

    python benchmarks/diagnostics.py [--cases digits16,latent32] [--examples 256]
                                     [--warm digits16] [--no-append] [--smoke]

Cases. "digits16": configs/digits.py:model=DiT-S/2 (16×16×1 digits of the test split, 64
tokens, 8-bit decoder). "latent32": DiT-S/2 on 32×32×4 inputs (256 tokens, Gaussian decoder;
N(0, 1) stand-in latents: the speed does not depend on the values). Fresh weights (the speed
does not depend on training). Default settings (`diagnostics.default_settings()`, except
`num_examples`). Each phase is timed on a cold call (compilation included: what
`--mode=diagnose` pays) and, for the cases in --warm, a warm one (what periodic diagnosis
during training pays).
Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Importing jax does not start the XLA backend; XLA_FLAGS is read when it starts (in _run).
import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from benchmarks.common import append_results, markdown_table, run_main  # noqa: E402
from configs import digits  # noqa: E402
from jaxdiff import diagnostics as dg  # noqa: E402
from jaxdiff.diagnostics import report  # noqa: E402
from jaxdiff.diagnostics.run import _BINS, _ELBO, _GRADS  # noqa: E402
from jaxdiff.platform import FAST_CPU_XLA_FLAGS  # noqa: E402
from jaxdiff.training import generate  # noqa: E402
from jaxdiff.training.experiment import build_experiment  # noqa: E402


def _case(name: str, examples: int):
    """(experiment, params, images, labels, decoder) of a benchmark case."""
    c = digits.get_config("tiny" if name == "tiny" else "model=DiT-S/2")
    c.diagnostics = dg.default_settings()
    c.diagnostics.num_examples = examples
    if name == "latent32":
        c.data.image_size, c.data.channels, c.data.kind = 32, 4, "latent"
    elif name == "tiny":  # (--smoke) the tiny DiT on 8×8 digits, few λ and bins
        c.diagnostics.update(elbo_samples=2, num_bins=4, loss_examples=4, grad_var_examples=2)
    elif name != "digits16":
        raise ValueError(f"--cases: unknown {name!r}; known: ['digits16', 'latent32', 'tiny']")
    exp = build_experiment(c, devices=jax.devices()[:1])
    params = generate.sampling_params(exp.init_state())
    settings = dg.resolve_settings(c.diagnostics)
    if name == "latent32":
        rng = np.random.default_rng(0)
        images = rng.standard_normal((examples, 32, 32, 4)).astype(np.float32)
        labels = rng.integers(0, 10, examples).astype(np.int32)
        return exp, params, images, labels, "gaussian", settings
    images, labels = dg.heldout_batch(c, settings)
    return exp, params, images, labels, "discrete", settings


def _phases(exp, params, images, labels, decoder, s):
    """[(phase, network rows, callable)] mirroring `run.compute_diagnostics`."""
    den = dg.network_denoiser(exp.apply_fn, exp.spec)
    spec, mesh, seed = exp.spec, exp.mesh, s["seed"]
    edges = dg.lambda_bin_edges(spec, s["num_bins"], s["bin_tail_mass"])
    m, g = min(s["loss_examples"], len(images)), min(s["grad_var_examples"], len(images))
    return [
        (f"ELBO ({len(images)} ex × {s['elbo_samples']} λ)", len(images) * s["elbo_samples"],
         lambda: dg.estimate_elbo(
             den, spec, params, images, labels, entropy=(seed, _ELBO),
             lam_min=s["elbo_lam_min"], lam_max=s["elbo_lam_max"], samples=s["elbo_samples"],
             decoder=decoder, batch_size=s["batch_size"], mesh=mesh)),
        (f"loss per λ ({m} ex × {s['num_bins']} bins)", m * s["num_bins"],
         lambda: dg.loss_per_lambda(
             den, spec, params, images[:m], labels[:m], edges, entropy=(seed, _BINS),
             batch_size=s["batch_size"], mesh=mesh)),
        (f"grad variance ({g} ex × {s['num_bins']} bins)", g * s["num_bins"],
         lambda: dg.grad_var_per_lambda(
             den, spec, params, images[:g], labels[:g], edges, entropy=(seed, _GRADS),
             mesh=mesh)),
    ]  # fmt: skip


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_case(name: str, examples: int, warm: bool) -> list[list]:
    (exp, params, images, labels, decoder, s), t_setup = _timed(lambda: _case(name, examples))
    rows, results = [], {}
    for phase, n_rows, fn in _phases(exp, params, images, labels, decoder, s):
        out, cold = _timed(fn)
        hot = _timed(fn)[1] if warm else "—"
        results[phase] = out
        rows.append([name, phase, n_rows, cold, hot, n_rows / hot if warm else "—"])
        print(rows[-1], flush=True)
    elbo, bins, grads = results.values()
    result = {"step": 0, **elbo, "loss_per_lambda": bins, "grad_var_per_lambda": grads,
              "settings": s}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        _, t_report = _timed(
            lambda: report.write_png(report.figure_image(result, exp.spec), tmp, 0)
        )
    rows.append([name, "setup (model init, held-out batch) + PNG", "—", t_setup + t_report,
                 "—", "—"])  # fmt: skip
    total_cold = sum(r[3] for r in rows)
    total_warm = sum(r[4] for r in rows[:-1]) if warm else "—"
    rows.append([name, "**total**", sum(r[2] for r in rows[:-1]), total_cold, total_warm, "—"])
    print(f"{name}: ELBO {elbo['elbo_bpd']:.3f} bits/dim (untrained), total {total_cold:.0f} s")
    return rows


USAGE = (
    "python benchmarks/diagnostics.py [--cases=digits16,latent32] [--examples=256] "
    "[--warm=digits16] [--no-append] [--smoke]"
)


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_list("cases", "digits16,latent32", "cases: digits16, latent32, tiny", **f)
    flags.DEFINE_integer("examples", 256, "held-out examples", **f)
    flags.DEFINE_list("warm", "digits16", "cases timed a second time", **f)
    flags.DEFINE_bool("no-append", False, "do not write RESULTS.md", **f)
    flags.DEFINE_bool(
        "smoke",
        False,
        "--cases tiny --examples 8 --warm tiny --no-append (the test suite's check that "
        "this script runs)",
        **f,
    )


def _run(args) -> None:
    # The XLA:CPU flags `python -m jaxdiff.main` sets, before the backend starts.
    os.environ["XLA_FLAGS"] = f"{FAST_CPU_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()
    if args.smoke:
        args.cases, args.examples, args.warm, args.no_append = ["tiny"], 8, ["tiny"], True
    rows = []
    for name in args.cases:
        rows += run_case(name, args.examples, name in args.warm)
    header = ["case", "phase", "network rows", "cold s", "warm s", "warm rows/s"]
    table = markdown_table(header, rows)
    print(table)
    if not args.no_append:
        append_results(
            f"Diagnostics: DiT-S/2, {args.examples} held-out examples",
            table,
            "`python benchmarks/diagnostics.py`. Default `config.diagnostics` settings; "
            "cold = first call (XLA compilation included, what `--mode=diagnose` pays), warm = "
            "the same call again (periodic diagnosis during training). A grad-variance row is "
            "one per-example gradient (forward + backward). Fresh weights; float32; one device.",
        )


def main(argv=None) -> int:
    """``python benchmarks/diagnostics.py ARGS`` for ``argv`` = ARGS; returns the exit status."""
    return run_main(argv, _define, _run, USAGE)


if __name__ == "__main__":
    sys.exit(main())
