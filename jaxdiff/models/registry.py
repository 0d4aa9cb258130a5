"""Model registry: `get_model(name, **overrides)` and `list_models()`.

DiT sizes follow Peebles & Xie 2023 Table 1 (mlp ratio 4): S 12×384×6 heads, B 12×768×12,
L 24×1024×16, XL 28×1152×16, each with patch 2, 4 or 8; defaults are 32×32×4 SD-VAE
latents, 1000 classes, learned σ. "DiT-tiny/2" (depth 2, width 64, 2 heads) is for tests
and CPU demos. RIN sizes are the official pix2seq CIFAR-10 / ImageNet-64 configs (30.95M and
157.78M parameters, equal to the official implementation's counts, tested); the 128 and 256
px configs are our best reading of the paper (no released config). Each RIN config has a
"-tiny" variant with the same image size and patch but small widths.
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn

from jaxdiff.errors import ConfigError
from jaxdiff.models.dit import DiT
from jaxdiff.models.interface import DiffusionModel
from jaxdiff.models.rin import RIN

_DIT_SIZES = {
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
}

_RIN_CONFIGS = {
    "cifar10": dict(
        image_size=32, in_channels=3, patch_size=2, num_blocks=3, block_depth=2,
        num_latents=128, latent_dim=512, interface_dim=256, latent_heads=16, rw_heads=8,
        latent_mlp_ratio=4.0, interface_mlp_ratio=2.0, dropout=0.1, drop_path=0.1,
        num_classes=10,
    ),
    "imagenet64": dict(
        image_size=64, in_channels=3, patch_size=8, num_blocks=4, block_depth=4,
        num_latents=128, latent_dim=768, interface_dim=512, latent_heads=16, rw_heads=16,
        latent_mlp_ratio=4.0, interface_mlp_ratio=4.0, num_classes=1000,
    ),
    "imagenet128": dict(
        image_size=128, in_channels=3, patch_size=4, num_blocks=6, block_depth=4,
        num_latents=256, latent_dim=1024, interface_dim=512, latent_heads=16, rw_heads=16,
        latent_mlp_ratio=4.0, interface_mlp_ratio=4.0, num_classes=1000,
    ),
    "imagenet256": dict(
        image_size=256, in_channels=3, patch_size=8, num_blocks=6, block_depth=4,
        num_latents=256, latent_dim=1024, interface_dim=512, latent_heads=16, rw_heads=16,
        latent_mlp_ratio=4.0, interface_mlp_ratio=4.0, num_classes=1000,
    ),
}  # fmt: skip

_RIN_TINY = dict(
    num_blocks=2, block_depth=2, num_latents=32, latent_dim=128, interface_dim=64,
    latent_heads=4, rw_heads=4, dropout=0.0, drop_path=0.0,
)  # fmt: skip


def _build_registry() -> dict[str, tuple[type[nn.Module], dict]]:
    models: dict[str, tuple[type[nn.Module], dict]] = {}
    for size, kw in _DIT_SIZES.items():
        for patch in (2, 4, 8):
            models[f"DiT-{size}/{patch}"] = (DiT, dict(kw, patch_size=patch))
    models["DiT-tiny/2"] = (DiT, dict(depth=2, hidden_size=64, num_heads=2, patch_size=2))
    for data, kw in _RIN_CONFIGS.items():
        models[f"RIN-{data}"] = (RIN, dict(kw))
        models[f"RIN-{data}-tiny"] = (RIN, dict(kw, **_RIN_TINY))
    return models


_MODELS = _build_registry()


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def model_fields(cls: type[nn.Module]) -> list[str]:
    """The constructor fields a model class accepts as overrides."""
    return sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))


def get_model(name: str, **overrides) -> nn.Module:
    """Build registered model `name` with its config updated by `overrides`.

    Raises ValueError for an unknown name (listing the known ones), an unknown override
    (listing the accepted fields) or an invalid configuration (naming the field).
    """
    try:
        cls, kwargs = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {list_models()}") from None
    allowed = model_fields(cls)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for {name}; allowed: {allowed}")
    return cls(**{**kwargs, **overrides})


def model_config(model: nn.Module) -> dict:
    """JSON-serialisable constructor kwargs of a DiT/RIN instance plus its class name."""
    cfg = {f: getattr(model, f) for f in model_fields(type(model))}
    return {"type": type(model).__name__, **cfg}


def model_from_config(config: dict) -> nn.Module:
    """Inverse of `model_config`: the class by its name in the one registry table."""
    config = dict(config)
    kind = config.pop("type")
    classes = {cls.__name__: cls for cls, _ in _MODELS.values()}
    if kind not in classes:
        raise ValueError(f"unknown model type {kind!r}; known: {sorted(classes)}")
    return classes[kind](**config)


def converted_model(init_from: str) -> nn.Module | None:
    """The model of a directory written by ``python -m jaxdiff.models.convert`` (its
    ``model.json``), or None when ``init_from`` is not such a directory."""
    spec = os.path.join(init_from, "model.json") if init_from else ""
    if not spec or not os.path.exists(spec):
        return None
    with open(spec) as f:
        return model_from_config(json.load(f))


def build_model(
    name: str,
    overrides: dict | None = None,
    *,
    image_size: int,
    channels: int,
    num_classes: int,
    init_from: str = "",
) -> DiffusionModel:
    """The network for a config: registry model ``name`` sized for the data (``overrides``
    win; the σ head is off unless asked, our losses train the mean), or, when ``init_from``
    is a converted official checkpoint, that checkpoint's architecture (checked against the
    data). Raises ConfigError naming the field."""
    converted = converted_model(init_from)
    if converted is not None:
        for field, mine, value in (
            ("image_size", "data.image_size", image_size),
            ("in_channels", "data.channels", channels),
        ):
            if getattr(converted, field) != value:
                raise ConfigError(
                    mine,
                    f"{value} does not match the {field}={getattr(converted, field)} of the "
                    f"converted checkpoint in init_from={init_from!r}",
                    getattr(converted, field),
                )
        return converted
    kwargs = dict(overrides or {})
    kwargs.setdefault("image_size", image_size)
    kwargs.setdefault("in_channels", channels)
    kwargs.setdefault("num_classes", num_classes)
    kwargs.setdefault("learn_sigma", False)
    if name not in _MODELS:
        raise ConfigError("model.name", f"unknown model {name!r}", list_models())
    allowed = model_fields(_MODELS[name][0])
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError("model.overrides", f"unknown field(s) {unknown} for {name}", allowed)
    try:
        return get_model(name, **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError("model.overrides", f"{name}: {e}") from None
