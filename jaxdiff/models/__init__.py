"""Networks: DiT and RIN (Flax linen), the registry, and noise-level conditioning maps.

`get_model(name, **overrides)` builds a registered network; `list_models()` lists them;
`build_model(...)` sizes one for a config. The trainer and the samplers call networks only
through the model protocol `DiffusionModel` of `jaxdiff.models.interface`. Importers of
official checkpoints live in `jaxdiff.models.convert` (needs torch only for `.pt` files).
"""

from jaxdiff.models import conditioning
from jaxdiff.models.dit import DiT
from jaxdiff.models.interface import DiffusionModel, make_apply_fn, make_sample_fn
from jaxdiff.models.registry import (
    build_model,
    converted_model,
    get_model,
    list_models,
    model_config,
    model_from_config,
)
from jaxdiff.models.rin import RIN

__all__ = [
    "DiT",
    "DiffusionModel",
    "RIN",
    "build_model",
    "conditioning",
    "converted_model",
    "get_model",
    "list_models",
    "make_apply_fn",
    "make_sample_fn",
    "model_config",
    "model_from_config",
]
