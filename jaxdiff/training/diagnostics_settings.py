"""The `config.diagnostics` section: its fields, defaults (here and nowhere else) and checks.

It lives with the training config (the base config holds it; training validates it) so that
training never imports `jaxdiff.diagnostics`, which sits above it (docs/architecture.md).

`default_settings()` is the section the base config holds; `resolve_settings(value)` merges a
ConfigDict / dict (or None) onto it and validates every field, raising ConfigError naming the
field (`diagnostics.<field>`) and its allowed values.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from jaxdiff.errors import ConfigError, read_section

DECODERS = ("auto", "discrete", "gaussian")


def default_settings() -> ml_collections.ConfigDict:
    """The defaults of every diagnostics setting (the base config's `diagnostics` section).

    num_examples: held-out examples (the ELBO uses all of them);
    split: the data split they come from ("test"; ImageNet in TFDS calls it "validation");
    seed: seeds the held-out subset, the λ draws and every ε;
    use_labels: condition a class-conditional model on the true labels (else the null label);
    num_bins: λ-bins of the loss and gradient-variance curves;
    bin_tail_mass: the bins cover [λ_eff(1 − δ), λ_eff(δ)] of the training schedule, i.e.
      all but a mass δ at each end of its p(λ) (δ = bin_tail_mass);
    lam_min / lam_max: override that range (None: use the rule);
    loss_examples: held-out examples evaluated at every bin centre (the first ones);
    elbo_samples: λ draws per example for the ELBO's diffusion term (stratified);
    elbo_lam_min / elbo_lam_max: the ELBO's end points (VDM's γ_max = 5, γ_min = −13.3);
    decoder: "discrete" (VDM's 8-bit decoder), "gaussian" (continuous data), or "auto"
      (discrete for images, gaussian for latents);
    grad_var_examples: per-example gradients per bin (0 disables the gradient variance);
    batch_size: network rows per call.
    """
    return ml_collections.ConfigDict(
        dict(
            num_examples=256,
            split="test",
            seed=0,
            use_labels=True,
            num_bins=32,
            bin_tail_mass=1e-3,
            lam_min=placeholder(float),
            lam_max=placeholder(float),
            loss_examples=32,
            elbo_samples=4,
            elbo_lam_min=-5.0,
            elbo_lam_max=13.3,
            decoder="auto",
            grad_var_examples=8,
            batch_size=16,
        )
    )


def _int(s: dict, field: str, minimum: int) -> None:
    v = s[field]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"diagnostics.{field}", f"got {v!r}", f"an integer >= {minimum}")


def _float(s: dict, field: str, optional: bool = False) -> None:
    v = s[field]
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        need = "a finite number or None" if optional else "a finite number"
        raise ConfigError(f"diagnostics.{field}", f"got {v!r}", need)
    s[field] = float(v)


def _check(s: dict) -> None:
    for field, minimum in [
        ("num_examples", 2), ("seed", 0), ("num_bins", 1), ("loss_examples", 1),
        ("elbo_samples", 1), ("grad_var_examples", 0), ("batch_size", 1),
    ]:  # fmt: skip
        _int(s, field, minimum)
    if s["grad_var_examples"] == 1:
        raise ConfigError("diagnostics.grad_var_examples", "got 1", "0 (off) or an integer >= 2")
    for field in ("bin_tail_mass", "elbo_lam_min", "elbo_lam_max"):
        _float(s, field)
    for field in ("lam_min", "lam_max"):
        _float(s, field, optional=True)
    if not 0.0 < s["bin_tail_mass"] < 0.5:
        raise ConfigError("diagnostics.bin_tail_mass", f"got {s['bin_tail_mass']}", "(0, 0.5)")
    if s["elbo_lam_min"] >= s["elbo_lam_max"]:
        raise ConfigError(
            "diagnostics.elbo_lam_min",
            f"{s['elbo_lam_min']} >= elbo_lam_max {s['elbo_lam_max']}",
            "a value < elbo_lam_max",
        )
    if s["lam_min"] is not None and s["lam_max"] is not None and s["lam_min"] >= s["lam_max"]:
        raise ConfigError(
            "diagnostics.lam_min", f"{s['lam_min']} >= lam_max {s['lam_max']}", "a value < lam_max"
        )
    if s["decoder"] not in DECODERS:
        raise ConfigError("diagnostics.decoder", f"unknown {s['decoder']!r}", list(DECODERS))
    if not isinstance(s["split"], str) or not s["split"]:
        raise ConfigError("diagnostics.split", f"got {s['split']!r}", "a split name")
    if not isinstance(s["use_labels"], bool):
        raise ConfigError("diagnostics.use_labels", f"got {s['use_labels']!r}", "True, False")


def resolve_settings(value: Any = None) -> dict[str, Any]:
    """`value` (ConfigDict, dict or None) over `default_settings()`, validated; a plain dict.

    Unknown fields and bad values raise ConfigError naming the field.
    """
    defaults = default_settings().to_dict()
    s = read_section("diagnostics", {} if value is None else value, defaults, defaults=defaults)
    _check(s)
    return s
