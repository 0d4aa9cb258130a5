"""The full-scale grid of min_snr: the Min-SNR paper's ImageNet-256 latent setting.

From the official code's training and inference scripts (TiankaiHang/Min-SNR-Diffusion-Training,
configs/in256/*.sh): batch 8×32 = 256, AdamW lr 1e-4 with β = (0.99, 0.99) and weight decay
0.03, no warm-up, constant rate, no gradient clipping, class-label dropout 0.15, the cosine
schedule, EMA 0.9999; samples by EDM's Heun sampler, 50 steps, guidance 1.5; FID-50K against
ADM's ImageNet-256 reference batch. Trained to 1M steps and scored every 50K; the speed-up is
measured as the steps each arm needs to reach FID 10 (``Grid.targets``). Every target (ε, x0,
v) × every weighting, with the γ sweep {1, 5, 10, 20}. The README's "paper vs this grid"
table lists the differences (a DiT-B/2 for their ViT-B, continuous time, Heun on the cosine
λ grid for EDM's ρ = 7 σ grid).
"""

from __future__ import annotations

from experiments import common

CONFIG = "configs/imagenet256_latent_dit.py:schedule=cosine"
TARGETS = ("eps", "x0", "v")
WEIGHTINGS = (  # (cell label, weighting, gamma)
    ("snr", "snr", None), ("x0", "x0", None), ("max_snr1", "max_snr", 1.0),
    ("min_snr1", "min_snr", 1.0), ("min_snr5", "min_snr", 5.0), ("min_snr10", "min_snr", 10.0),
    ("min_snr20", "min_snr", 20.0), ("soft_min_snr5", "soft_min_snr", 5.0),
)  # fmt: skip
RECIPE = (  # the official scripts' settings the base config does not already have
    "--config.optim.b1=0.99",
    "--config.optim.b2=0.99",
    "--config.optim.weight_decay=0.03",
    "--config.optim.grad_clip=0.0",
    "--config.optim.warmup_steps=0",
    "--config.optim.decay=constant",
    "--config.train.label_dropout=0.15",
    "--config.sampling.method=heun",
    "--config.sampling.schedule=cosine",
    "--config.sampling.steps=50",
    "--config.sampling.guidance_scale=1.5",
)
TOTAL_STEPS = 1_000_000
EVAL_EVERY = 50_000
FID_SAMPLES = 50_000  # FID-50K, the official inference scripts' --num 50000
FID_TARGET = 10.0  # the speed-up: steps to FID 10


def cell(target: str, label: str, weighting: str, gamma) -> common.Cell:
    flags = [*RECIPE, f"--config.noise.target={target}", f"--config.noise.weighting={weighting}"]
    if gamma is not None:
        flags.append(f"--config.noise.weighting_params.gamma={gamma}")
    return common.Cell((("target", target), ("weighting", label)), CONFIG, tuple(flags))


def grid() -> common.Grid:
    """Every target × weighting, seed 0, FID-50K every 50K steps to 1M, target FID 10."""
    return common.fid_grid(
        [cell(t, *w) for t in TARGETS for w in WEIGHTINGS],
        (0,),
        total_steps=TOTAL_STEPS,
        eval_every=EVAL_EVERY,
        num_samples=FID_SAMPLES,
        targets=(("eval/fid", FID_TARGET),),
        **common.LATENTS,
    )
