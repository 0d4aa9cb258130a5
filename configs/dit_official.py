"""The official DiT checkpoints (Peebles & Xie 2023) sampled with the paper's FID-50K protocol.

Give the converted checkpoint as ``--config.init_from=DIR`` (``python -m jaxdiff.models.convert
--dit DiT-XL-2-256x256.pt --out DIR``) and the SD-VAE as ``--config.data.vae=DIR``; without a
training checkpoint in the work dir, ``--mode=sample`` / ``--mode=evaluate`` use those weights.
The protocol of the official ``sample_ddp.py``:

- the 1000-step linear-β DDPM respaced to 250 evenly spread steps (``sampling.schedule =
  "ddpm_linear"``, guided-diffusion's ``space_timesteps(1000, "250")``), the network
  evaluated at the original integer steps;
- ancestral DDPM with the checkpoint's learned-range variance (``sampling.variance =
  "learned"``), no clipping of x̂0;
- classifier-free guidance 1.5 on the first 3 latent channels only (the official code's
  choice, ``sampling.guidance_channels = 3``; ``:all_channels`` guides all 4);
- latents divided by 0.18215 and decoded by the SD-VAE (the paper uses sd-vae-ft-ema), images
  to uint8, 50,000 samples; FID against the ADM reference batch
  (``VIRTUAL_imagenet256_labeled.npz``, its ``mu``/``sigma``) with the FID Inception port.

Variants: ``:512`` (DiT-XL/2 512×512, 64×64 latents), ``:cfg=S``, ``:all_channels``,
``:sample_steps=N`` (respaced to N steps), ``:tiny`` (a tiny learned-σ DiT for tests), and
the common keys of every config (``:steps=`` is the number of training steps).
The network here is DiT-XL/2 with a learned σ and the official timestep conditioning; a
converted checkpoint in ``init_from`` brings its own architecture (checked against ``data``).
Training with this config fine-tunes the mean (our continuous-time loss); the σ head is kept.
It reads SD-VAE latents of ImageNet written by ``python -m jaxdiff.encode`` (see
docs/data.md): ``data.name = "latents"``, ``--config.data.data_dir=OUT`` (the encoder's
``--out``, 32×32×4 latents of 256 px images; 64×64×4 for ``:512``).
"""

from jaxdiff.training.config import apply_variant, base_config, flag, make_tiny, parse_variant

VARIANTS = {"512": flag, "cfg": float, "all_channels": flag, "sample_steps": int}


def _official_model(c, name: str) -> None:
    c.model.name = name
    c.model.overrides = {"learn_sigma": True, "conditioning": "ddpm_linear"}


def _tiny(c, v):
    make_tiny(c, "DiT-tiny/2", image_size=8)
    _official_model(c, "DiT-tiny/2")
    c.data.num_classes = 10
    c.sampling.steps = int(v.get("sample_steps", 4))


def get_config(arg=None):
    v = parse_variant(arg, VARIANTS)
    c = base_config()
    c.init_from = ""  # the converted official checkpoint: --config.init_from=DIR
    c.data.name = "latents"  # the jaxdiff.encode output: --config.data.data_dir=OUT
    c.data.kind = "latent"
    c.data.image_size = 64 if v.get("512") else 32
    c.data.channels = 4
    c.data.num_classes = 1000
    c.data.latent_scale = 0.18215
    c.data.vae = ""  # a diffusers-layout sd-vae-ft-ema dir, or its converted form
    c.data.batch_size = 256
    _official_model(c, "DiT-XL/2")
    c.noise.target = "eps"
    c.noise.weighting = "snr"  # unweighted ε-MSE, the DiT L_simple (for fine-tuning)
    c.sampling.method = "ddpm"
    c.sampling.schedule = "ddpm_linear"
    c.sampling.steps = int(v.get("sample_steps", 250))
    c.sampling.variance = "learned"
    c.sampling.clip_x0 = False
    c.sampling.guidance_scale = float(v.get("cfg", 1.5))
    c.sampling.guidance_channels = None if v.get("all_channels") else 3
    c.sampling.batch_size = 64
    c.sampling.num_grid = 64
    c.eval.num_samples = 50_000
    return apply_variant(c, v, lambda c: _tiny(c, v))
