"""End to end on latents: encode digits with a tiny VAE, train the `:tiny` latent config on
them, sample, decode and write a grid; decoded samples are the VAE decoder's values."""

import json
import os
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from tiny_config import data_fields

from jaxdiff import encode
from jaxdiff.models import vae as vae_lib
from jaxdiff.training import experiment, generate, loop, runner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import imagenet256_latent_dit  # noqa: E402


def tiny_vae(path: str):
    """A random-weight SD-VAE-style autoencoder (f = 2, 4 latent channels) saved at ``path``:
    (module, variables, dir)."""
    ae = vae_lib.vae_from_config(
        dict(block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4)
    )
    variables = ae.init(jax.random.key(1), np.zeros((1, 16, 16, 3), np.float32))
    return ae, variables, str(vae_lib.save_vae(ae, variables, path))


@pytest.mark.slow
def test_tiny_latent_config_trains_samples_and_decodes(tmp_path):
    ae, _, vae_dir = tiny_vae(str(tmp_path / "vae"))
    digits = data_fields(name="digits", image_size=16, channels=3, num_classes=10)
    latents = str(tmp_path / "latents")
    encode.encode_dataset(digits, vae_dir, latents, batch_size=64, chunk_size=512, progress=False)

    c = imagenet256_latent_dit.get_config("tiny")
    c.data.data_dir, c.data.vae, c.data.num_classes = latents, vae_dir, 10
    c.data.image_size = 16 // ae.downsample_factor  # 8×8×4 latents of 16×16 digits
    c.total_steps, c.sample_every_steps = 2, 2
    wd = str(tmp_path / "run")
    out = loop.train(c, wd, devices=jax.devices()[:2])
    assert out["step"] == 2
    rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2] and all(r["train/loss"] > 0 for r in rows)
    # the grid of 16×16 decoded digits (not 8×8 latent previews): 4×4 tiles, 1-pixel padding
    grid = Image.open(os.path.join(out["samples"], "step_0000002.png"))
    cols = int(np.ceil(np.sqrt(c.sampling.num_grid)))
    assert grid.width % (cols * 17 + 1) == 0 and grid.mode == "RGB"
    res = runner.sample(c, wd, num_samples=4)
    saved = np.load(res["npz"])
    images = saved["images"]
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8  # decoded to pixels
    np.testing.assert_array_equal(saved["labels"], np.arange(4))  # balanced class labels
    assert len(np.unique(images)) > 16  # decoded values, not a constant or saturated image


def test_decoded_latents_are_the_vae_decoder_of_z_over_the_scale(tmp_path):
    """``decode_latents(exp, z)`` = clip(decoder(z / data.latent_scale), -1, 1) of the VAE in
    ``data.vae`` (the module and weights it was saved from), and ``sample_images`` returns the
    sampler's latents decoded that way."""
    ae, variables, vae_dir = tiny_vae(str(tmp_path / "vae"))
    c = imagenet256_latent_dit.get_config("tiny")
    c.data.vae, c.data.num_classes, c.data.latent_scale = vae_dir, 10, 0.5
    exp = experiment.build_experiment(c, devices=jax.devices()[:1])
    decode = jax.jit(lambda z: ae.apply(variables, z, method="decode"))
    z = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype(np.float32)
    got = np.asarray(generate.decode_latents(exp, z))
    want = np.clip(np.asarray(decode(z / 0.5)), -1.0, 1.0)
    assert got.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.mean(np.abs(want) < 1.0) > 0.5  # mostly unclipped: the values are compared
    assert np.abs(np.clip(np.asarray(decode(z)), -1, 1) - want).max() > 1e-2  # the scale shows

    params = exp.init_state().params
    key, labels = jax.random.key(2), np.arange(4, dtype=np.int32)
    latents = generate.compiled_sampler(exp, 4, 2)(params, key, labels)
    images = generate.sample_images(exp, params, key, labels, steps=2)
    want = np.clip(np.asarray(decode(np.asarray(latents) / 0.5)), -1.0, 1.0)
    np.testing.assert_allclose(images, want, rtol=1e-5, atol=1e-6)
