"""RIN on ImageNet 64×64 (official pix2seq recipe as in Chen 2023).

Linear γ schedule, b = 1, ε-prediction, LAMB 2e-3, batch 1024, 150K steps, latent
self-conditioning 0.9, DDPM sampling with a cosine inference schedule. Variants: ``:tiny``,
``:scale=B``, ``:schedule=NAME``, ``:model=NAME``.
"""

from jaxdiff.training.config import apply_variant, make_tiny, parse_variant
from jaxdiff.training.recipes import imagenet_data, long_run, rin_recipe


def get_config(arg=None):
    v = parse_variant(arg)
    c = long_run(150_000)
    imagenet_data(c, "imagenet_resized/64x64", image_size=64, batch=1024)
    c.model.name = "RIN-imagenet64"
    rin_recipe(c, lr=2e-3)
    c.noise.schedule = "linear"
    c.noise.input_scale = 1.0
    return apply_variant(c, v, lambda c: make_tiny(c, "RIN-imagenet64-tiny", image_size=16))
