"""jaxdiff.diagnostics: how well each noise level is learned, for one set of weights.

- the held-out loss per λ-bin in ε, x0 and v space and the training objective's weighted value
  (`per_lambda`);
- the continuous-time ELBO in nats/dim and bits/dim with its prior, reconstruction and
  diffusion terms and standard errors (`elbo`; Kingma et al. 2021, Kingma & Gao 2023);
- the trace of the per-example gradient covariance per λ-bin (`grad_variance`; Kim et al. 2024).

`diagnose(exp, params, workdir, step)` runs them all and writes
WORKDIR/diagnostics/step_<N>.json / .png (and TensorBoard entries through a metric writer);
`jaxdiff.diagnostics.workdir.diagnose_workdir(config, workdir)` is `--mode=diagnose`;
`training_hook` is the periodic diagnosis `jaxdiff.main` hands to the training loop.
Settings: the `config.diagnostics` section, defaults in `default_settings()`. See
docs/diagnostics.md.
"""

from jaxdiff.diagnostics.denoiser import (
    Denoiser,
    evaluate_points,
    network_denoiser,
    per_example_losses,
)
from jaxdiff.diagnostics.elbo import (
    discrete_decoder_nll,
    estimate_elbo,
    gaussian_decoder_nll,
    prior_kl,
    quantize_8bit,
)
from jaxdiff.diagnostics.grad_variance import grad_covariance_trace, grad_var_per_lambda
from jaxdiff.diagnostics.per_lambda import lambda_bin_edges, loss_per_lambda
from jaxdiff.diagnostics.report import JSON_KEYS
from jaxdiff.diagnostics.run import compute_diagnostics, diagnose, heldout_batch, training_hook
from jaxdiff.training.diagnostics_settings import default_settings, resolve_settings

__all__ = [
    "JSON_KEYS",
    "Denoiser",
    "compute_diagnostics",
    "default_settings",
    "diagnose",
    "discrete_decoder_nll",
    "estimate_elbo",
    "evaluate_points",
    "gaussian_decoder_nll",
    "grad_covariance_trace",
    "grad_var_per_lambda",
    "heldout_batch",
    "lambda_bin_edges",
    "loss_per_lambda",
    "network_denoiser",
    "per_example_losses",
    "prior_kl",
    "quantize_8bit",
    "resolve_settings",
    "training_hook",
]
