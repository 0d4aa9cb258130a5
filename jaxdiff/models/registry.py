"""Model registry: `get_model(name, **overrides)` and `list_models()`.

DiT sizes follow Peebles & Xie 2023 Table 1 (mlp ratio 4): S 12×384×6 heads, B 12×768×12,
L 24×1024×16, XL 28×1152×16, each with patch 2, 4 or 8; defaults are 32×32×4 SD-VAE
latents, 1000 classes, learned σ. "DiT-tiny/2" (depth 2, width 64, 2 heads) is for tests
and CPU demos. RIN sizes are the official pix2seq CIFAR-10 / ImageNet-64 configs (30.95M and
157.78M parameters, equal to the official implementation's counts, tested); the 128 and 256
px configs are our best reading of the paper (see REFERENCES.md). Each RIN config has a
"-tiny" variant with the same image size and patch but small widths.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxdiff.models.dit import DiT
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
    """Inverse of `model_config`."""
    config = dict(config)
    kind = config.pop("type")
    classes = {"DiT": DiT, "RIN": RIN}
    if kind not in classes:
        raise ValueError(f"unknown model type {kind!r}; known: {sorted(classes)}")
    return classes[kind](**config)
