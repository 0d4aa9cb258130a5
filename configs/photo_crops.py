"""A small DiT on the embedded natural-photo crops (no download): Chen 2023's resolution study.

`photo_crops` (jaxdiff.data.photo_crops): 128×128-source-pixel crops of the 16 photos bundled
with scikit-image and scikit-learn, area-downsampled to `:size=` (16/32/64 px: the same content
at more pixels), class = which photo. The patch grows with the resolution (size/4), so every
resolution has 16 tokens and costs about the same. Quality: a Fréchet distance in a small
photo classifier's features, its accuracy on class-conditional samples and the sliced
Wasserstein distance on Laplacian-pyramid patches (logged as eval/photo_crops_*), each with
its real-data floor (`*_real`). Chen 2023's setting: ε-prediction, variance-normalised input,
input scale b (`:scale=`). Variants: the common keys (tiny, size, scale, schedule, ...).
"""

from jaxdiff.training.config import apply_variant, base_config, make_tiny, parse_variant


def _tiny(c):
    make_tiny(c, "DiT-tiny/2", image_size=8, overrides=dict(depth=1, hidden_size=32, num_heads=2))


def get_config(arg=None):
    v = parse_variant(arg)
    c = base_config()
    c.total_steps = 2000
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.sample_every_steps = 1000
    c.eval_every_steps = 1000
    c.data.name = "photo_crops"
    c.data.image_size = 32
    c.data.channels = 3
    c.data.num_classes = 16
    c.data.batch_size = 64
    size = v.get("size", 32)
    c.model.name = "DiT-S/4"
    c.model.overrides = dict(depth=6, hidden_size=192, num_heads=6, patch_size=max(1, size // 4))
    c.noise.schedule = "cosine"
    c.noise.target = "eps"
    c.noise.weighting = "snr"
    c.noise.normalize_input = True
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.optim.decay = "cosine"
    c.ema.decays = (0.999,)
    c.sampling.method = "ddim"
    c.sampling.steps = 50
    c.sampling.num_grid = 64
    c.sampling.batch_size = 128
    c.eval.quality_num_samples = 512
    return apply_variant(c, v, _tiny)
