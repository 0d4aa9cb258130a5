"""DiT on ImageNet 64×64 pixels, class-conditional.

The DiT paper trains on 256/512 latents only; this pixel-space setting is our reading:
DiT-B/4 (256 tokens at 64 px), the DiT recipe (AdamW 1e-4, no weight decay, batch 256,
EMA 0.9999, label dropout 0.1) with the cosine schedule and ε-prediction. Variants:
``:tiny``, ``:model=DiT-L/4``, ``:schedule=laplace``, ``:scale=B``, ``:target=v``.
"""

from jaxdiff.training.config import apply_variant, base_config, make_tiny, parse_variant


def get_config(arg=None):
    v = parse_variant(arg)
    c = base_config()
    c.total_steps = 400_000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    c.keep_every_steps = 50_000
    c.sample_every_steps = 10_000
    c.data.name = "imagenet_resized/64x64"
    c.data.image_size = 64
    c.data.channels = 3
    c.data.num_classes = 1000
    c.data.batch_size = 256
    c.data.random_flip = True
    c.data.worker_count = 8
    c.model.name = "DiT-B/4"
    c.noise.schedule = "cosine"
    c.noise.target = "eps"
    c.noise.weighting = "snr"
    c.optim.name = "adamw"
    c.optim.lr = 1e-4
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 0.0
    c.ema.decays = (0.9999,)
    c.train.label_dropout = 0.1
    c.sampling.method = "ddpm"
    c.sampling.schedule = "cosine"
    c.sampling.steps = 250
    c.sampling.guidance_scale = 1.5
    c.eval.num_samples = 50_000
    apply_variant(c, v)
    if v.get("tiny"):
        make_tiny(c, "DiT-tiny/2", image_size=16)
    return c
