"""Recipes shared by several config files (one place for each paper's hyperparameters)."""

from __future__ import annotations

import ml_collections

from jaxdiff.training.config import apply_variant, base_config, make_tiny, parse_variant


def long_run(total_steps: int, keep_every: int = 50_000) -> ml_collections.ConfigDict:
    """A base config with the logging/checkpoint cadence of a multi-day accelerator run."""
    c = base_config()
    c.total_steps = total_steps
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    c.keep_every_steps = keep_every
    c.sample_every_steps = 10_000
    c.eval.num_samples = 50_000
    return c


def imagenet_data(c: ml_collections.ConfigDict, name: str, image_size: int, batch: int) -> None:
    """Class-conditional ImageNet pixels from TFDS with random flips."""
    c.data.name = name
    c.data.image_size = image_size
    c.data.channels = 3
    c.data.num_classes = 1000
    c.data.batch_size = batch
    c.data.random_flip = True
    c.data.worker_count = 8
    c.data.center_crop = name == "imagenet2012"


def rin_recipe(c: ml_collections.ConfigDict, lr: float) -> None:
    """The official RIN / Chen 2023 recipe (google-research/pix2seq configs): ε-prediction,
    variance-normalised input, LAMB (wd 1e-2, β2 0.999, 10K warm-up, cosine decay), EMA
    0.9999, latent self-conditioning 0.9, DDPM sampling on a cosine inference schedule."""
    c.noise.normalize_input = True
    c.noise.target = "eps"
    c.noise.weighting = "snr"
    c.optim.name = "lamb"
    c.optim.lr = lr
    c.optim.weight_decay = 1e-2
    c.optim.b2 = 0.999
    c.optim.warmup_steps = 10_000
    c.optim.decay = "cosine"
    c.ema.decays = (0.9999,)
    c.train.self_cond_rate = 0.9
    c.sampling.method = "ddpm"
    c.sampling.schedule = "cosine"
    c.sampling.steps = 1000
    c.sampling.clip_x0 = True


def dit_recipe(c: ml_collections.ConfigDict) -> None:
    """The DiT recipe (Peebles & Xie 2023): AdamW 1e-4, no weight decay or clipping, EMA
    0.9999, label dropout 0.1, classifier-free guidance 1.5 at sampling."""
    c.optim.name = "adamw"
    c.optim.lr = 1e-4
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 0.0
    c.ema.decays = (0.9999,)
    c.train.label_dropout = 0.1
    c.sampling.guidance_scale = 1.5


def chen_imagenet_rin(arg: str | None, image_size: int) -> ml_collections.ConfigDict:
    """Chen 2023's RIN on ImageNet at 128 or 256 px (model ``RIN-imagenet<size>``).

    Our best reading of the paper, not a released config. Chen 2023 Algorithm 2:
    x_t = √γ·b·x0 + √(1−γ)·ε divided by its std, ε-prediction, with the noisier optimum at
    higher resolution. Chen's per-resolution b was not recoverable: the default b = 0.5 is a
    starting point to sweep with ``:scale=B`` (e.g. 1.0, 0.7, 0.5, 0.35). Optimiser and
    sampling follow the ImageNet-64 recipe (`rin_recipe`, LAMB 2e-3, 150K steps, linear γ).
    ``arg`` holds the common variants (``:tiny`` is a 32 px tiny RIN).
    """
    v = parse_variant(arg)
    c = long_run(150_000)
    imagenet_data(c, "imagenet2012", image_size=image_size, batch=1024)
    c.model.name = f"RIN-imagenet{image_size}"
    rin_recipe(c, lr=2e-3)
    c.noise.schedule = "linear"
    c.noise.input_scale = 0.5
    tiny = f"RIN-imagenet{image_size}-tiny"
    return apply_variant(c, v, lambda c: make_tiny(c, tiny, image_size=32))
