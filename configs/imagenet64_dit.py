"""DiT on ImageNet 64×64 pixels, class-conditional.

The DiT paper trains on 256/512 latents only; this pixel-space setting is our reading:
DiT-B/4 (256 tokens at 64 px), the DiT recipe (AdamW 1e-4, no weight decay, batch 256,
EMA 0.9999, label dropout 0.1) with the cosine schedule and ε-prediction; DDPM 250 steps with
CFG 1.5 for sampling. Variants: ``:tiny``, ``:model=DiT-L/4``, ``:schedule=laplace``,
``:scale=B``, ``:target=v``.
"""

from jaxdiff.training.config import apply_variant, make_tiny, parse_variant
from jaxdiff.training.recipes import dit_recipe, imagenet_data, long_run


def get_config(arg=None):
    v = parse_variant(arg)
    c = long_run(400_000)
    imagenet_data(c, "imagenet_resized/64x64", image_size=64, batch=256)
    c.model.name = "DiT-B/4"
    c.noise.schedule = "cosine"
    c.noise.target = "eps"
    c.noise.weighting = "snr"
    dit_recipe(c)
    c.sampling.method = "ddpm"
    c.sampling.schedule = "cosine"
    c.sampling.steps = 250
    return apply_variant(c, v, lambda c: make_tiny(c, "DiT-tiny/2", image_size=16))
