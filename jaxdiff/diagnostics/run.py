"""`diagnose(exp, params, workdir, step)`: every diagnostic of one set of weights, written out.

The held-out batch is a fixed, seeded subset of `settings.split`; every random number (the
subset, the ELBO's λ draws, every ε) comes from `settings.seed`, so two checkpoints (or two
runs with different schedules) are measured on identical inputs.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxdiff import data as data_lib
from jaxdiff.diagnostics import report
from jaxdiff.diagnostics.denoiser import Denoiser, network_denoiser
from jaxdiff.diagnostics.elbo import estimate_elbo
from jaxdiff.diagnostics.grad_variance import grad_var_per_lambda
from jaxdiff.diagnostics.per_lambda import lambda_bin_edges, loss_per_lambda
from jaxdiff.diffusion import NoiseSpec
from jaxdiff.training.diagnostics_settings import resolve_settings
from jaxdiff.training.hooks import DiagnosisReport

# Purposes: NumPy streams seeded by (settings.seed, purpose, ...), one per use.
_SUBSET, _ELBO, _BINS, _GRADS, _LATENT = 0xD1A0, 0xD1A1, 0xD1A2, 0xD1A3, 0xD1A4


def _is_latent(config) -> bool:
    return config.data.get("kind", "image") == "latent" or config.data.name == "latents"


def resolve_decoder(config, settings: dict) -> str:
    """settings["decoder"], with "auto" -> "gaussian" for latent data, else "discrete"."""
    if settings["decoder"] != "auto":
        return settings["decoder"]
    return "gaussian" if _is_latent(config) else "discrete"


def heldout_batch(config, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W, C) float32, labels (N,) int32): the first N = min(num_examples,
    len(split)) examples of a permutation of `settings.split` seeded by `settings.seed`.

    Latent records with a posterior std give μ + σ·ε with ε seeded likewise. Labels are the
    data's when the model is class-conditional and `use_labels`, else the null class.
    """
    source = data_lib.make_source(config.data, split=settings["split"])
    n = min(int(settings["num_examples"]), len(source))
    if n < 2:
        raise ValueError(
            f"diagnostics.split {settings['split']!r} has {len(source)} example(s); need >= 2"
        )
    rng = np.random.default_rng([settings["seed"], _SUBSET])
    order = rng.permutation(len(source))[:n]
    records = [source[int(i)] for i in order]
    images = np.stack([np.asarray(r["image"], np.float32) for r in records])
    if "latent_std" in records[0]:
        std = np.stack([np.asarray(r["latent_std"], np.float32) for r in records])
        noise = np.random.default_rng([settings["seed"], _LATENT]).standard_normal(images.shape)
        images = images + std * noise.astype(np.float32)
    labels = np.array([int(r["label"]) for r in records], np.int32)
    if not (config.model.class_conditional and settings["use_labels"]):
        labels = np.full_like(labels, int(config.data.num_classes))
    return images, labels


def compute_diagnostics(
    denoiser: Denoiser,
    spec: NoiseSpec,
    params: Any,
    images: np.ndarray,
    labels: np.ndarray,
    settings: Any = None,
    *,
    decoder: str = "discrete",
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """ELBO, loss per λ-bin and gradient variance per λ-bin of `denoiser` on a batch (pure:
    nothing is written). `settings` as in `resolve_settings`; `decoder` "discrete"/"gaussian".

    Returns {"elbo_bpd", "elbo_nats_per_dim", "elbo_terms", "loss_per_lambda",
    "grad_var_per_lambda"}.
    """
    s = resolve_settings(settings)
    edges = lambda_bin_edges(spec, s["num_bins"], s["bin_tail_mass"], s["lam_min"], s["lam_max"])
    out = estimate_elbo(
        denoiser, spec, params, images, labels, entropy=(s["seed"], _ELBO),
        lam_min=s["elbo_lam_min"], lam_max=s["elbo_lam_max"], samples=s["elbo_samples"],
        decoder=decoder, batch_size=s["batch_size"], mesh=mesh,
    )  # fmt: skip
    m = min(s["loss_examples"], len(images))
    out["loss_per_lambda"] = loss_per_lambda(
        denoiser, spec, params, images[:m], labels[:m], edges,
        entropy=(s["seed"], _BINS), batch_size=s["batch_size"], mesh=mesh,
    )  # fmt: skip
    g = min(s["grad_var_examples"], len(images))
    out["grad_var_per_lambda"] = (
        grad_var_per_lambda(
            denoiser,
            spec,
            params,
            images[:g],
            labels[:g],
            edges,
            entropy=(s["seed"], _GRADS),
            mesh=mesh,
        )  # fmt: skip
        if g >= 2
        else []
    )
    return out


def _as_dict(value: Any) -> dict:
    if value is None:
        return {}
    return dict(value.to_dict() if hasattr(value, "to_dict") else value)


def _context(exp, images: np.ndarray, decoder: str) -> dict[str, Any]:
    spec, c = exp.spec, exp.config
    return {
        "examples_used": int(len(images)),
        "dims_per_example": int(math.prod(images.shape[1:])),
        "decoder_used": decoder,
        "data": str(c.data.name),
        "schedule": spec.schedule.name,
        "schedule_params": dict(spec.schedule.params),
        "input_scale": spec.input_scale,
        "normalize_input": spec.normalize_input,
        "target": spec.target,
        "weighting": spec.weighting.name,
        "weight_mode": spec.weight_mode,
        "elbo_proposal": "uniform on [elbo_lam_min, elbo_lam_max], stratified per example",
        "units": "elbo_terms in nats/dim; λ is the logSNR the network sees (λ_eff)",
    }


def diagnose(
    exp,
    params: Any,
    workdir: str,
    step: int,
    *,
    writer: Any = None,
    settings: Any = None,
    batch: tuple[np.ndarray, np.ndarray] | None = None,
    stem: str | None = None,
) -> dict[str, Any]:
    """Diagnoses `params` of experiment `exp` and writes WORKDIR/diagnostics/step_<N>.json
    and .png (process 0; step_<N>_<k> when that step was diagnosed before, see
    `report.free_stem`), plus TensorBoard scalars and the figure through the metric `writer`.

    settings: overrides (dict or ConfigDict) of `exp.config.diagnostics`, itself over
    `default_settings()`; batch: (images, labels) instead of `heldout_batch`; stem: the
    output files' stem (default `report.free_stem(workdir, step)`).
    Returns the JSON content (`report.JSON_KEYS`).
    """
    s = resolve_settings({**_as_dict(exp.config.get("diagnostics")), **_as_dict(settings)})
    images, labels = heldout_batch(exp.config, s) if batch is None else batch
    decoder = resolve_decoder(exp.config, s)
    core = compute_diagnostics(
        network_denoiser(exp.apply_fn, exp.spec), exp.spec, params, np.asarray(images),
        np.asarray(labels, np.int32), s, decoder=decoder, mesh=exp.mesh,
    )  # fmt: skip
    result = {"step": int(step), **core, "settings": {**s, **_context(exp, images, decoder)}}
    if jax.process_index() == 0:
        stem = report.free_stem(workdir, step) if stem is None else stem
        report.write_json(result, workdir, step, stem)
        image = report.figure_image(result, exp.spec)
        report.write_png(image, workdir, step, stem)
        if writer is not None:
            report.write_tensorboard(writer, step, result, image)
    return result


def training_hook(exp, params: Any, workdir: str, step: int) -> DiagnosisReport:
    """The periodic diagnosis the training loop runs every ``diagnose_every_steps`` (a
    ``jaxdiff.training.hooks.DiagnoseHook``): :func:`diagnose` (its JSON and PNG files),
    reported as TensorBoard scalars, the per-λ figure and one console line."""
    result = diagnose(exp, params, workdir, step)
    scalars = report.tensorboard_scalars(result)
    image = report.figure_image(result, exp.spec)
    text = f"elbo {scalars['diagnostics/elbo_bpd']:.4g} bits/dim"
    return DiagnosisReport(scalars, {"diagnostics/per_lambda": image}, text)
