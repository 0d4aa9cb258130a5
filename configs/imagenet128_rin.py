"""RIN on ImageNet 128×128 with input scaling (Chen 2023, arXiv 2301.10972).

Model: RIN-imagenet128 (6 blocks × depth 4, 256 latents × 1024, interface 512, patch 4):
our best reading of the paper, not a released config. Chen 2023 Algorithm 2:
x_t = sqrt(γ)·b·x0 + sqrt(1−γ)·ε divided by its std, ε-prediction, with the noisier optimum
at higher resolution. Chen's per-resolution b was not recoverable: the default b = 0.5 is a
starting point to sweep with `:scale=B` (e.g. 1.0, 0.7, 0.5, 0.35). Optimiser and sampling
follow the ImageNet-64 recipe. Variants: `:tiny`, `:scale=B`, `:schedule=NAME`.
"""

from jaxdiff.training.recipes import chen_imagenet_rin


def get_config(arg=None):
    return chen_imagenet_rin(arg, image_size=128)
