"""RIN on ImageNet 64×64 (official pix2seq recipe as in Chen 2023; REFERENCES.md).

Linear γ schedule, b = 1, ε-prediction, LAMB 2e-3, batch 1024, 150K steps, latent
self-conditioning 0.9, DDPM sampling with a cosine inference schedule. Variants: ``:tiny``,
``:scale=B``, ``:schedule=NAME``, ``:model=NAME``.
"""

from jaxdiff.training.config import apply_variant, base_config, make_tiny, parse_variant


def get_config(arg=None):
    v = parse_variant(arg)
    c = base_config()
    c.total_steps = 150_000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    c.keep_every_steps = 50_000
    c.sample_every_steps = 10_000
    c.data.name = "imagenet_resized/64x64"
    c.data.image_size = 64
    c.data.channels = 3
    c.data.num_classes = 1000
    c.data.batch_size = 1024
    c.data.random_flip = True
    c.data.worker_count = 8
    c.model.name = "RIN-imagenet64"
    c.noise.schedule = "linear"
    c.noise.input_scale = 1.0
    c.noise.normalize_input = True
    c.noise.target = "eps"
    c.noise.weighting = "snr"
    c.optim.name = "lamb"
    c.optim.lr = 2e-3
    c.optim.weight_decay = 1e-2
    c.optim.b2 = 0.999
    c.optim.warmup_steps = 10_000
    c.optim.decay = "cosine"
    c.ema.decays = (0.9999,)
    c.train.label_dropout = 0.1
    c.train.self_cond_rate = 0.9
    c.sampling.method = "ddpm"
    c.sampling.schedule = "cosine"
    c.sampling.steps = 1000
    c.sampling.clip_x0 = True
    c.eval.num_samples = 50_000
    apply_variant(c, v)
    if v.get("tiny"):
        make_tiny(c, "RIN-imagenet64-tiny", image_size=16)
    return c
