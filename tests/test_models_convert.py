"""Official-DiT import: parity with diffusers' DiTTransformer2DModel, CLI round trip.

The reference is diffusers (an implementation we did not write, which loads the official
weights). Two diffusers conventions differ from official DiT and are aligned here, both
checked against the official formulas written out in NumPy:
- its per-block timestep projection uses `downscale_freq_shift=1` (frequencies
  10000^(−k/(half−1))); official DiT uses 10000^(−k/half), so we set it to 0;
- its second / third LayerNorm use `norm_eps` (default 1e-5); official DiT uses 1e-6.
"""

import argparse
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.models.convert import cli, load_converted, load_official_dit

# The torch extra (pytest without it skips this module).
torch = pytest.importorskip("torch")
DiTTransformer2DModel = pytest.importorskip("diffusers").DiTTransformer2DModel
get_2d_sincos_pos_embed = pytest.importorskip("diffusers.models.embeddings").get_2d_sincos_pos_embed

DEPTH, HIDDEN, HEADS, PATCH, SIZE, CH, CLASSES = 2, 64, 4, 2, 16, 4, 10


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official DiT names/shapes (learn_sigma, class dropout > 0)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: 0.1 * torch.randn(*shape, generator=g)
    d, out = HIDDEN, PATCH * PATCH * 2 * CH
    grid = SIZE // PATCH
    pos = torch.as_tensor(
        np.asarray(get_2d_sincos_pos_embed(d, grid, base_size=grid, output_type="np"))
    )
    sd = {
        "pos_embed": pos.float()[None],
        "x_embedder.proj.weight": rnd(d, CH, PATCH, PATCH),
        "x_embedder.proj.bias": rnd(d),
        "t_embedder.mlp.0.weight": rnd(d, 256),
        "t_embedder.mlp.0.bias": rnd(d),
        "t_embedder.mlp.2.weight": rnd(d, d),
        "t_embedder.mlp.2.bias": rnd(d),
        "y_embedder.embedding_table.weight": rnd(CLASSES + 1, d),
        "final_layer.adaLN_modulation.1.weight": rnd(2 * d, d),
        "final_layer.adaLN_modulation.1.bias": rnd(2 * d),
        "final_layer.linear.weight": rnd(out, d),
        "final_layer.linear.bias": rnd(out),
    }
    for i in range(DEPTH):
        for name, shape in [
            ("attn.qkv", (3 * d, d)),
            ("attn.proj", (d, d)),
            ("mlp.fc1", (4 * d, d)),
            ("mlp.fc2", (d, 4 * d)),
            ("adaLN_modulation.1", (6 * d, d)),
        ]:
            sd[f"blocks.{i}.{name}.weight"] = rnd(*shape)
            sd[f"blocks.{i}.{name}.bias"] = rnd(shape[0])
    return sd


def diffusers_dit(sd: dict[str, torch.Tensor]) -> DiTTransformer2DModel:
    """diffusers DiT holding the official weights (names mapped as diffusers' converter does)."""
    model = DiTTransformer2DModel(
        num_attention_heads=HEADS,
        attention_head_dim=HIDDEN // HEADS,
        in_channels=CH,
        out_channels=2 * CH,
        num_layers=DEPTH,
        sample_size=SIZE,
        patch_size=PATCH,
        num_embeds_ada_norm=CLASSES,
        norm_eps=1e-6,
    ).eval()
    new = {
        "pos_embed.proj.weight": sd["x_embedder.proj.weight"],
        "pos_embed.proj.bias": sd["x_embedder.proj.bias"],
        "proj_out_1.weight": sd["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": sd["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": sd["final_layer.linear.weight"],
        "proj_out_2.bias": sd["final_layer.linear.bias"],
    }
    for i in range(DEPTH):
        t, b = f"transformer_blocks.{i}", f"blocks.{i}"
        for wb in ("weight", "bias"):
            emb = f"{t}.norm1.emb"
            new[f"{emb}.timestep_embedder.linear_1.{wb}"] = sd[f"t_embedder.mlp.0.{wb}"]
            new[f"{emb}.timestep_embedder.linear_2.{wb}"] = sd[f"t_embedder.mlp.2.{wb}"]
            new[f"{t}.norm1.linear.{wb}"] = sd[f"{b}.adaLN_modulation.1.{wb}"]
            q, k, v = sd[f"{b}.attn.qkv.{wb}"].chunk(3, dim=0)
            new[f"{t}.attn1.to_q.{wb}"], new[f"{t}.attn1.to_k.{wb}"] = q, k
            new[f"{t}.attn1.to_v.{wb}"] = v
            new[f"{t}.attn1.to_out.0.{wb}"] = sd[f"{b}.attn.proj.{wb}"]
            new[f"{t}.ff.net.0.proj.{wb}"] = sd[f"{b}.mlp.fc1.{wb}"]
            new[f"{t}.ff.net.2.{wb}"] = sd[f"{b}.mlp.fc2.{wb}"]
        new[f"{t}.norm1.emb.class_embedder.embedding_table.weight"] = sd[
            "y_embedder.embedding_table.weight"
        ]
        model.transformer_blocks[i].norm1.emb.time_proj.downscale_freq_shift = 0
    missing, unexpected = model.load_state_dict(new, strict=False)
    assert not unexpected and all("pos_embed.pos_embed" in m for m in missing), missing
    return model


def official_timestep_embedding(t: np.ndarray, dim: int = 256) -> np.ndarray:
    """Official DiT TimestepEmbedder.timestep_embedding in NumPy: [cos, sin], freqs /half."""
    half = dim // 2
    freqs = np.exp(-math.log(10000) * np.arange(half) / half)
    args = t[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], axis=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    sd = official_state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "dit.pt"
    # laid out like a train.py checkpoint
    torch.save({"model": {}, "ema": sd, "opt": {}, "args": argparse.Namespace(model="DiT")}, path)
    return sd, path


def inputs(seed=1, batch=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, SIZE, SIZE, CH)).astype(np.float32)
    t = np.array([0, 417, 999])[:batch]
    y = np.array([3, 9, CLASSES])[:batch]  # the last one is the null class
    return x, t, y


def test_diffusers_reference_matches_official_conventions(checkpoint):
    sd, _ = checkpoint
    ref = diffusers_dit(sd)
    t = torch.tensor([0.0, 417.0, 999.0])
    got = ref.transformer_blocks[0].norm1.emb.time_proj(t).numpy()
    official = official_timestep_embedding(t.numpy())
    np.testing.assert_allclose(got, official, atol=1e-4)  # float32 phase error at t = 999
    proj = ref.transformer_blocks[0].norm1.emb.time_proj
    proj.downscale_freq_shift = 1  # diffusers' own setting is not the official embedding
    assert np.abs(proj(t).numpy() - official).max() > 0.1
    proj.downscale_freq_shift = 0
    for block in ref.transformer_blocks:
        assert block.norm1.norm.eps == 1e-6 and block.norm3.eps == 1e-6
    assert ref.norm_out.eps == 1e-6


def test_converted_dit_matches_diffusers(checkpoint):
    sd, path = checkpoint
    model, variables = load_official_dit(path, num_heads=HEADS)
    assert (model.hidden_size, model.depth, model.patch_size, model.image_size) == (
        HIDDEN,
        DEPTH,
        PATCH,
        SIZE,
    )
    assert model.learn_sigma and model.num_classes == CLASSES
    assert model.conditioning == "ddpm_linear"
    x, t, y = inputs()
    ours = np.asarray(model.apply(variables, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
    with torch.no_grad():
        ref = diffusers_dit(sd)(
            torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t), torch.from_numpy(y)
        ).sample
    ref = ref.permute(0, 2, 3, 1).numpy()
    assert ours.shape == ref.shape == (3, SIZE, SIZE, 2 * CH)
    assert np.abs(ref).max() > 0.1  # a non-trivial forward pass
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel <= 1e-4, rel
    # the wrong number of heads must not pass the comparison
    wrong, wrong_vars = load_official_dit(path, num_heads=1)
    bad = np.asarray(wrong.apply(wrong_vars, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
    assert np.abs(bad - ref).max() / np.abs(ref).max() > 1e-3


def test_cli_writes_orbax_checkpoint(checkpoint, tmp_path):
    sd, path = checkpoint
    plain = tmp_path / "plain.pt"  # a bare state dict, as the released DiT-XL-2-*.pt files
    torch.save(sd, plain)
    argv = ["convert", "--dit", str(plain), "--out", str(tmp_path / "conv"), f"--num_heads={HEADS}"]
    assert cli(argv) == 0
    model, variables = load_converted(tmp_path / "conv")
    ref_model, ref_vars = load_official_dit(path, num_heads=HEADS)
    assert model == ref_model
    x, t, y = inputs()
    a = model.apply(variables, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y))
    b = ref_model.apply(ref_vars, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
