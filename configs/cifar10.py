"""RIN on CIFAR-10 (Jabri, Fleet & Chen 2022, official google-research/pix2seq recipe).

Unconditional (the reported FID 1.81 is), sigmoid(−3, 3, τ = 0.9) schedule, LAMB 3e-3,
batch 256, 150K steps, DDPM sampling with a cosine inference schedule (400 steps).
Variants: ``:tiny`` (seconds, tiny RIN), ``:schedule=linear`` (the recipe sweeps sigmoid and
linear), ``:scale=B`` (input scaling), ``:model=...``.
"""

from jaxdiff.training.config import apply_variant, make_tiny, parse_variant
from jaxdiff.training.recipes import long_run, rin_recipe


def get_config(arg=None):
    v = parse_variant(arg)
    c = long_run(150_000)
    c.data.name = "cifar10"
    c.data.image_size = 32
    c.data.channels = 3
    c.data.num_classes = 10
    c.data.batch_size = 256
    c.data.random_flip = True
    c.data.worker_count = 4
    c.model.name = "RIN-cifar10"
    c.model.class_conditional = False
    rin_recipe(c, lr=3e-3)
    c.noise.schedule = "sigmoid"
    c.noise.schedule_params.start = -3.0
    c.noise.schedule_params.end = 3.0
    c.noise.schedule_params.tau = 0.9
    c.train.label_dropout = 0.0
    c.sampling.steps = 400
    return apply_variant(c, v, lambda c: make_tiny(c, "RIN-cifar10-tiny", image_size=16))
