"""End to end on latents: encode digits with a tiny VAE, train the `:tiny` latent config on
them, sample, decode and write a grid."""

import os
import sys

import jax
import numpy as np

from jaxdiff import encode
from jaxdiff.models import vae as vae_lib
from jaxdiff.training import loop, runner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import imagenet256_latent_dit  # noqa: E402


def test_tiny_latent_config_trains_samples_and_decodes(tmp_path):
    ae = vae_lib.vae_from_config(
        dict(block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4)
    )
    variables = ae.init(jax.random.key(1), np.zeros((1, 16, 16, 3), np.float32))
    vae_dir = str(vae_lib.save_vae(ae, variables, str(tmp_path / "vae")))
    digits = dict(name="digits", image_size=16, channels=3, num_classes=10)
    latents = str(tmp_path / "latents")
    encode.encode_dataset(digits, vae_dir, latents, batch_size=64, chunk_size=512, progress=False)

    c = imagenet256_latent_dit.get_config("tiny")
    c.data.data_dir, c.data.vae, c.data.num_classes = latents, vae_dir, 10
    c.data.image_size = 16 // ae.downsample_factor  # 8×8×4 latents of 16×16 digits
    c.total_steps, c.sample_every_steps = 2, 2
    wd = str(tmp_path / "run")
    out = loop.train(c, wd, devices=jax.devices()[:2])
    assert out["step"] == 2 and np.isfinite(out["metrics"]["train/loss"])
    assert os.path.exists(os.path.join(out["samples"], "step_0000002.png"))
    res = runner.sample(c, wd, num_samples=4)
    images = np.load(res["npz"])["images"]
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8  # decoded to pixels
