"""`diagnose_workdir(config, workdir)`: what `--mode=diagnose` runs on a trained work dir.

Kept out of the package's `__init__` (import it as `jaxdiff.diagnostics.workdir`): it needs
`training.loop`, which in turn may call `jaxdiff.diagnostics.diagnose` during training.
"""

from __future__ import annotations

import json
import os

import jax

from jaxdiff.diagnostics import report
from jaxdiff.diagnostics.run import diagnose
from jaxdiff.training import generate, outputs
from jaxdiff.training.tensorboard import open_writer


def diagnose_workdir(config, workdir: str, settings=None) -> dict:
    """Diagnoses the latest checkpoint of `workdir` (its first EMA copy, as sampling uses;
    `config.init_from`'s weights at step 0 without a checkpoint) with `config.diagnostics`
    (`settings` overrides fields of it). Writes diagnostics/step_<N>.json / .png (step_<N>_<k>
    when that step was diagnosed before, e.g. during training) and
    TensorBoard entries under `workdir`; prints the ELBO; returns the JSON content.
    """
    workdir = os.path.abspath(workdir)
    exp, state, step = outputs.restore_for_inference(config, workdir)
    params = generate.sampling_params(state)
    writer = open_writer(workdir, primary=jax.process_index() == 0)
    stem = report.free_stem(workdir, step)  # a step diagnosed before keeps its files
    result = diagnose(exp, params, workdir, step, writer=writer, settings=settings, stem=stem)
    writer.close()
    if jax.process_index() == 0:
        summary = {k: result[k] for k in ("step", "elbo_bpd", "elbo_nats_per_dim", "elbo_terms")}
        print(json.dumps(summary, indent=1), flush=True)
        print(f"Diagnostics: {report.output_path(workdir, step, 'json', stem)}", flush=True)
    return result
