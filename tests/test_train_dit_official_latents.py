"""`configs/dit_official.py` trains on the latents `jaxdiff.encode` writes, and says
in one line what to prepare when they are missing or of another size."""

import json
import os
import sys

import jax
import numpy as np
import pytest
from tiny_config import data_fields

from jaxdiff import encode
from jaxdiff.data import latent_format, make_source
from jaxdiff.models import vae as vae_lib
from jaxdiff.training import loop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import dit_official  # noqa: E402


@pytest.mark.slow
def test_dit_official_tiny_trains_on_encoded_latents(tmp_path):
    c = dit_official.get_config("tiny")
    assert (c.data.name, c.data.kind, c.data.channels) == ("latents", "latent", 4)
    with pytest.raises(ValueError) as err:  # nothing encoded yet
        make_source(c.data, "train")
    msg = str(err.value)
    assert msg.startswith("data.data_dir: data.name='latents' reads the output of ")
    assert "python -m jaxdiff.encode --config=IMAGE_CONFIG --vae=VAE_DIR --out=OUT" in msg
    assert "\n" not in msg

    # 8×8×4 latents (the `:tiny` size) of 24 images, 2 classes, in the encoder's on-disk
    # format: meta.json as `encode` builds it for an SD-VAE-shaped encoder (downsampling 2,
    # so 16 px images) and one array_record chunk of posterior means and stds.
    ae = vae_lib.vae_from_config(
        dict(block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4)
    )
    image_data = data_fields(name="imagefolder", data_dir="IMAGES", image_size=16, channels=3)
    meta = encode.build_meta(image_data, "train", ae, 24, (16, 16, 3), flip=False, chunk_size=32)
    assert meta["shape"] == [8, 8, 4]
    latents = tmp_path / "latents"
    os.makedirs(latents / "train")
    (latents / "train" / latent_format.META_FILE).write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(24, 8, 8, 4)).astype(np.float32) * 5.0
    std = rng.uniform(0.01, 0.1, size=(24, 8, 8, 4)).astype(np.float32)
    latent_format.write_chunk(
        latent_format.chunk_path(str(latents / "train"), 0), mean, std, np.arange(24) % 2
    )
    src = make_source(dict(c.data, data_dir=str(latents)), "train")
    assert len(src) == 24 and src[5]["label"] == 1
    np.testing.assert_allclose(src[5]["image"], c.data.latent_scale * mean[5], rtol=1e-6)
    np.testing.assert_allclose(src[5]["latent_std"], c.data.latent_scale * std[5], rtol=1e-6)

    c.data.data_dir = str(latents)
    c.total_steps, c.sample_every_steps = 2, 0
    out = loop.train(c, str(tmp_path / "run"), devices=jax.devices()[:1])
    assert out["step"] == 2 and np.isfinite(out["metrics"]["train/loss"])

    c.data.image_size = 32  # the full config's size: the latents say what they are
    with pytest.raises(ValueError, match=r"^data.image_size: .* 8×8×4 .*image_size=8 "):
        make_source(c.data, "train")
