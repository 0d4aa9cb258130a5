"""Networks: DiT and RIN (Flax linen), the registry, and noise-level conditioning maps.

`get_model(name, **overrides)` builds a registered network; `list_models()` lists them.
Importers of official checkpoints live in `jaxdiff.models.convert` (needs torch).
"""

from jaxdiff.models import conditioning
from jaxdiff.models.dit import DiT
from jaxdiff.models.registry import get_model, list_models, model_config, model_from_config
from jaxdiff.models.rin import (
    RIN,
    rin_initial_latents,
    rin_sampling_apply,
    rin_self_conditioned_apply,
)

__all__ = [
    "DiT",
    "RIN",
    "conditioning",
    "get_model",
    "list_models",
    "model_config",
    "model_from_config",
    "rin_initial_latents",
    "rin_sampling_apply",
    "rin_self_conditioned_apply",
]
