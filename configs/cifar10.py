"""RIN on CIFAR-10 (Jabri, Fleet & Chen 2022, official pix2seq recipe; REFERENCES.md).

Variants: ``:tiny`` (seconds, tiny RIN), ``:schedule=linear`` (the recipe sweeps sigmoid and
linear), ``:scale=B`` (input scaling), ``:model=...``.
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
    c.data.name = "cifar10"
    c.data.image_size = 32
    c.data.channels = 3
    c.data.num_classes = 10
    c.data.batch_size = 256
    c.data.random_flip = True
    c.data.worker_count = 4
    c.model.name = "RIN-cifar10"
    c.model.class_conditional = False  # the reported CIFAR-10 FID 1.81 is unconditional
    c.noise.schedule = "sigmoid"
    c.noise.schedule_params.start = -3.0
    c.noise.schedule_params.end = 3.0
    c.noise.schedule_params.tau = 0.9
    c.noise.input_scale = 1.0
    c.noise.normalize_input = True
    c.noise.target = "eps"
    c.noise.weighting = "snr"
    c.optim.name = "lamb"
    c.optim.lr = 3e-3
    c.optim.weight_decay = 1e-2
    c.optim.b2 = 0.999
    c.optim.warmup_steps = 10_000
    c.optim.decay = "cosine"
    c.ema.decays = (0.9999,)
    c.train.label_dropout = 0.0
    c.train.self_cond_rate = 0.9
    c.sampling.method = "ddpm"
    c.sampling.schedule = "cosine"
    c.sampling.steps = 400
    c.sampling.clip_x0 = True
    c.eval.num_samples = 50_000
    apply_variant(c, v)
    if v.get("tiny"):
        make_tiny(c, "RIN-cifar10-tiny", image_size=16)
    return c
