"""RIN on ImageNet 128×128 with input scaling (Chen 2023, arXiv 2301.10972).

Model: RIN-imagenet128 (6 blocks × depth 4, 256 latents × 1024, interface 512, patch 4):
our best reading of the paper, not a released config (REFERENCES.md). Chen 2023 Algorithm 2:
x_t = sqrt(γ)·b·x0 + sqrt(1−γ)·ε divided by its std, ε-prediction, with the noisier optimum
at higher resolution. Chen's per-resolution b was not recoverable: the default b = 0.5 is a
starting point to sweep with `:scale=B` (e.g. 1.0, 0.7, 0.5, 0.35). Optimiser and sampling
follow the ImageNet-64 recipe. Variants: `:tiny`, `:scale=B`, `:schedule=NAME`.
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
    c.data.name = "imagenet2012"
    c.data.image_size = 128
    c.data.channels = 3
    c.data.num_classes = 1000
    c.data.batch_size = 1024
    c.data.center_crop = True
    c.data.random_flip = True
    c.data.worker_count = 8
    c.model.name = "RIN-imagenet128"
    c.noise.schedule = "linear"
    c.noise.input_scale = 0.5
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
        make_tiny(c, "RIN-imagenet128-tiny", image_size=32)
    return c
