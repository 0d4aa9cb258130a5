"""DiT-B/2 on ImageNet-256 SD-VAE latents: the setting of Hang et al. 2024 (arXiv 2407.03297).

500K iterations, batch 256, Laplace schedule (μ = 0, b = 0.5), v-prediction (their headline
table), AdamW 1e-4, EMA 0.9999, label dropout 0.1; DDIM 50 steps, CFG 1.5 / 2.0 / 3.0, FID on
10K samples. Latents are pre-encoded (32×32×4) and read from
``data.data_dir`` (the output of ``python -m jaxdiff.encode``; or a TFDS dataset named by
``data.tfds_name``); ``data.latent_scale`` = 0.18215 (SD-VAE); ``data.vae`` decodes samples.
Variants: ``:tiny``, ``:schedule=cosine`` (their baseline), ``:target=eps``, ``:weighting=min_snr``.
"""

from jaxdiff.training.config import apply_variant, make_tiny, parse_variant
from jaxdiff.training.recipes import dit_recipe, long_run


def get_config(arg=None):
    v = parse_variant(arg)
    c = long_run(500_000, keep_every=100_000)
    c.data.name = "latents"
    # Latents written by `python -m jaxdiff.encode --out=DIR`: pass --config.data.data_dir=DIR
    # (or set data.tfds_name to read a TFDS latent dataset instead).
    c.data.latent_scale = 0.18215
    c.data.vae = ""  # a diffusers-layout sd-vae-ft-ema/mse dir (or converted) to decode samples
    c.data.kind = "latent"
    c.data.image_size = 32
    c.data.channels = 4
    c.data.num_classes = 1000
    c.data.batch_size = 256
    c.data.worker_count = 8
    c.model.name = "DiT-B/2"
    c.noise.schedule = "laplace"
    c.noise.schedule_params.mu = 0.0
    c.noise.schedule_params.b = 0.5
    c.noise.target = "v"
    c.noise.weighting = "v"
    dit_recipe(c)
    c.sampling.method = "ddim"
    c.sampling.schedule = "cosine"
    c.sampling.steps = 50
    c.sampling.clip_x0 = False
    c.eval.num_samples = 10_000
    return apply_variant(c, v, lambda c: make_tiny(c, "DiT-tiny/2", image_size=8))
