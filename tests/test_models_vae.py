"""SD-VAE port: parity with diffusers' AutoencoderKL, weight-import errors, Orbax round trip.

The reference is diffusers' PyTorch `AutoencoderKL` (an implementation we did not write) with
random weights (norm scales/biases perturbed too, so a mis-mapped norm cannot hide), saved
with its own `save_pretrained` and loaded through `vae.load_vae`.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxdiff.models import convert, vae

# The torch extra (pytest without it skips this module).
torch = pytest.importorskip("torch")
TorchAutoencoderKL = pytest.importorskip("diffusers").AutoencoderKL

SMALL = dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8)
SD_WIDTHS = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)


def save_diffusers_vae(path, seed: int, scaling_factor: float = 0.18215, **arch):
    """A diffusers AutoencoderKL with random weights, saved by save_pretrained into `path`."""
    torch.manual_seed(seed)
    n = len(arch["block_out_channels"])
    model = TorchAutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=4,
        scaling_factor=scaling_factor,
        **arch,
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def torch_reference(model, x: np.ndarray, z: np.ndarray):
    """diffusers' posterior mean, logvar of x and decoding of z, all NHWC numpy."""
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)
    with torch.no_grad():
        post = model.encode(nchw(x)).latent_dist
        return nhwc(post.mean), nhwc(post.logvar), nhwc(model.decode(nchw(z)).sample)


def rel_err(a, b) -> float:
    """max |a − b| / max |b|."""
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def assert_parity(path, model, size: int, batch: int):
    ae, variables = vae.load_vae(path)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    f = ae.downsample_factor
    z = rng.normal(size=(batch, size // f, size // f, 4)).astype(np.float32)
    mean_t, logvar_t, image_t = torch_reference(model, x, z)
    mean, logvar = jax.jit(lambda v, x: ae.apply(v, x, method="encode"))(variables, x)
    image = jax.jit(lambda v, z: ae.apply(v, z, method="decode"))(variables, z)
    assert mean.shape == mean_t.shape == (batch, size // f, size // f, 4)
    assert image.shape == image_t.shape == x.shape
    assert rel_err(mean, mean_t) <= 1e-4
    assert rel_err(logvar, logvar_t) <= 1e-4
    assert rel_err(image, image_t) <= 1e-4
    return ae, variables


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small_vae")
    return path, save_diffusers_vae(path, seed=0, scaling_factor=0.5, **SMALL)


def test_small_config_parity_with_diffusers(small):
    path, model = small
    ae, _ = assert_parity(path, model, size=16, batch=2)
    assert ae.scaling_factor == 0.5  # read from config.json, not the SD default
    assert ae.block_out_channels == (32, 64, 64) and ae.norm_num_groups == 8


def test_sd_vae_widths_parity_with_diffusers(tmp_path):
    model = save_diffusers_vae(tmp_path, seed=1, **SD_WIDTHS)
    ae, _ = assert_parity(tmp_path, model, size=32, batch=1)
    assert ae.downsample_factor == 8 and ae.scaling_factor == 0.18215


def copy_with_weights(src, dst, state: dict[str, np.ndarray]):
    """A diffusers-layout dir at dst with src's config.json and the given weights."""
    dst.mkdir()
    shutil.copy(src / vae.CONFIG_FILE, dst / vae.CONFIG_FILE)
    save_file(state, str(dst / vae.WEIGHTS_FILE))
    return dst


def test_old_attention_names_load_identically(small, tmp_path):
    path, _ = small
    state = load_file(path / vae.WEIGHTS_FILE)
    old = {}
    for key, value in state.items():
        for new, name in [("to_q", "query"), ("to_k", "key"), ("to_v", "value")]:
            key = key.replace(f".{new}.", f".{name}.")
        if ".to_out.0." in key:  # the oldest checkpoints store it as a 1x1 conv
            key, value = key.replace(".to_out.0.", ".proj_attn."), value
            value = value[:, :, None, None] if value.ndim == 2 else value
        old[key] = np.ascontiguousarray(value)
    assert any(".query." in k for k in old) and any(".proj_attn." in k for k in old)
    _, ref = vae.load_vae(path)
    _, got = vae.load_vae(copy_with_weights(path, tmp_path / "old", old))
    jax.tree.map(np.testing.assert_array_equal, got, ref)


@pytest.mark.parametrize(
    "mutation, key",
    [
        ("missing", "decoder.up_blocks.2.resnets.0.conv_shortcut.weight"),
        ("unknown", "encoder.mid_block.resnets.2.conv1.weight"),
        ("shape", "encoder.down_blocks.1.resnets.0.conv1.weight"),
        ("duplicate", "encoder.mid_block.attentions.0.query.weight"),
    ],
)
def test_bad_weights_raise_naming_the_key(small, tmp_path, mutation, key):
    path, _ = small
    state = load_file(path / vae.WEIGHTS_FILE)
    if mutation == "missing":
        del state[key]
    elif mutation == "unknown":
        state[key] = np.zeros((64, 64, 3, 3), np.float32)
    elif mutation == "shape":
        state[key] = np.zeros((64, 32, 1, 1), np.float32)
    else:
        state[key] = state["encoder.mid_block.attentions.0.to_q.weight"]
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        vae.load_vae(copy_with_weights(path, tmp_path / "bad", state))


@pytest.mark.parametrize(
    "field, value",
    [
        (
            "down_block_types",
            ["DownEncoderBlock2D", "AttnDownEncoderBlock2D", "DownEncoderBlock2D"],
        ),
        ("act_fn", "gelu"),
        ("norm_num_groups", 12),
        ("norm_type", "spatial"),
    ],
)
def test_bad_config_raises_naming_the_field(small, field, value):
    config = json.loads((small[0] / vae.CONFIG_FILE).read_text())
    config[field] = value
    with pytest.raises(ValueError, match=field):
        vae.vae_from_config(config)


def test_orbax_round_trip_and_cli(small, tmp_path):
    path, _ = small
    ae, variables = vae.load_vae(path)
    assert convert.cli(["convert", "--vae", str(path), "--out", str(tmp_path / "cli")]) == 0
    ae2, variables2 = vae.load_vae(tmp_path / "cli")
    assert ae2 == ae
    jax.tree.map(np.testing.assert_array_equal, variables2, variables)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(ae2.apply(variables2, x), ae.apply(variables, x))
    # save_vae's config.json is itself a diffusers config: diffusers builds the same network.
    config = TorchAutoencoderKL.load_config(tmp_path / "cli")
    assert tuple(TorchAutoencoderKL.from_config(config).config.block_out_channels) == (32, 64, 64)
    both = ["convert", "--vae", str(path), "--dit", "x.pt", "--out", str(tmp_path / "both")]
    assert convert.cli(both) == 2 and not (tmp_path / "both").exists()


def test_bfloat16_compute_stays_close_and_returns_float32(small):
    path, _ = small
    ae, variables = vae.load_vae(path)
    ae16, _ = vae.load_vae(path, dtype=jnp.bfloat16)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    ref, out = ae.apply(variables, x), ae16.apply(variables, x)
    assert out.dtype == jnp.float32
    assert 0 < rel_err(out, np.asarray(ref)) < 0.1
