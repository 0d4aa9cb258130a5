"""RIN on ImageNet 256×256 with input scaling (Chen 2023, arXiv 2301.10972).

Model: RIN-imagenet256 (6 blocks × depth 4, 256 latents × 1024, interface 512, patch 8). The
recipe, its b = 0.5 default and the variants (`:tiny`, `:scale=B`, `:schedule=NAME`) are
`jaxdiff.training.recipes.chen_imagenet_rin`'s.
"""

from jaxdiff.training.recipes import chen_imagenet_rin


def get_config(arg=None):
    return chen_imagenet_rin(arg, image_size=256)
