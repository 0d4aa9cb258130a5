"""Post-hoc EMA tools (EDM2): reconstruct the EMA at any σ_rel from a run's snapshots and
sweep σ_rel against quality. ``python -m jaxdiff.ema posthoc|sweep --workdir=DIR --std=...``;
the profiles are tracked during training by `jaxdiff.training.posthoc`."""
