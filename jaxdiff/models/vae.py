"""The Stable Diffusion autoencoder (`AutoencoderKL`) in Flax linen, and its weight import.

DiT (Peebles & Xie 2023) and Hang et al. 2024 diffuse in the latent space of the SD VAE
(`stabilityai/sd-vae-ft-mse` / `sd-vae-ft-ema`; Rombach et al. 2022, arXiv:2112.10752):
images (B, H, W, 3) in [-1, 1] map to a diagonal Gaussian posterior over latents
(B, H/8, W/8, 4); diffusion models see `z · scaling_factor` (0.18215 for sd-vae-ft-*).

    ae, variables = load_vae(path)   # diffusers dir (config.json + safetensors) or save_vae's dir
    mean, logvar = ae.apply(variables, x, method="encode")
    image = ae.apply(variables, z, method="decode")   # z unscaled: latents / ae.scaling_factor

The architecture is built from diffusers' `config.json` fields; weights are read with
`safetensors.numpy` (no torch). Parameter paths mirror diffusers' names (see vae_blocks.py).
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.models.vae_blocks import Decoder, Encoder

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"  # Orbax checkpoint written by save_vae
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps logvar to this


class AutoencoderKL(nn.Module):
    """SD-VAE: `encode` x -> (mean, logvar), `decode` z -> image; all NHWC float32.

    Fields are diffusers' `AutoencoderKL` config fields (those that shape the network, plus
    the latent normalisation `scaling_factor` / `shift_factor` / `latents_mean` /
    `latents_std`, carried for the caller). `dtype` is the compute dtype (params stay f32).
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 256
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    dtype: Any = jnp.float32

    def setup(self):
        chans, layers, g = self.block_out_channels, self.layers_per_block, self.norm_num_groups
        attn = self.mid_block_add_attention
        self.encoder = Encoder(chans, layers, self.latent_channels, g, attn, self.dtype)
        self.decoder = Decoder(chans, layers, self.out_channels, g, attn, self.dtype)
        c2 = 2 * self.latent_channels
        if self.use_quant_conv:
            self.quant_conv = nn.Conv(c2, (1, 1), dtype=self.dtype)
        if self.use_post_quant_conv:
            self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1), dtype=self.dtype)

    @property
    def downsample_factor(self) -> int:
        """Spatial reduction of the encoder: 2^(len(block_out_channels) − 1) (8 for SD)."""
        return 2 ** (len(self.block_out_channels) - 1)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, H, W, in) in [-1, 1] -> posterior mean, logvar (B, H/f, W/f, latent).

        logvar is clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution does.
        """
        h = self.encoder(x)
        if self.use_quant_conv:
            h = self.quant_conv(h)
        mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latent z (B, h, w, latent) -> image (B, h·f, w·f, out), roughly in [-1, 1]."""
        if self.use_post_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z).astype(jnp.float32)

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Reconstruction: decode(mean), or decode(mean + σ·ε) with ε ~ N(0, I) from `key`."""
        mean, logvar = self.encode(x)
        z = (
            mean
            if key is None
            else mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        )
        return self.decode(z)


# ----------------------------------------------------------------------------- config
_ARCH_FIELDS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
)
_CHECKED_FIELDS = ("down_block_types", "up_block_types", "act_fn")
_IGNORED_FIELDS = ("force_upcast",)  # a float16 inference hint for diffusers


def vae_from_config(config: dict, dtype: Any = jnp.float32) -> AutoencoderKL:
    """AutoencoderKL from a diffusers `config.json` dict; ValueError on what it cannot build.

    Keys starting with "_" (`_class_name`, `_diffusers_version`, ...) and `force_upcast` are
    ignored; block types must be DownEncoderBlock2D / UpDecoderBlock2D, act_fn silu.
    """
    known = _ARCH_FIELDS + _CHECKED_FIELDS + _IGNORED_FIELDS
    unknown = sorted(k for k in config if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"unknown AutoencoderKL config fields {unknown}; known: {sorted(known)}")
    kw = {k: config[k] for k in _ARCH_FIELDS if k in config}
    for k in ("block_out_channels", "latents_mean", "latents_std"):
        if kw.get(k) is not None:
            kw[k] = tuple(kw[k])
    n = len(kw.get("block_out_channels", AutoencoderKL.block_out_channels))
    for field, allowed in (
        ("down_block_types", "DownEncoderBlock2D"),
        ("up_block_types", "UpDecoderBlock2D"),
    ):
        types = list(config.get(field, [allowed] * n))
        if types != [allowed] * n:
            raise ValueError(f"{field} must be {n} x {allowed!r} (one per block), got {types}")
    if config.get("act_fn", "silu") not in ("silu", "swish"):
        raise ValueError(f"act_fn must be 'silu' (or 'swish'), got {config['act_fn']!r}")
    ae = AutoencoderKL(**kw, dtype=dtype)
    groups = ae.norm_num_groups
    if groups <= 0 or any(c % groups for c in ae.block_out_channels):
        raise ValueError(
            f"norm_num_groups={groups} must divide every block_out_channels {ae.block_out_channels}"
        )
    return ae


def vae_config(ae: AutoencoderKL) -> dict:
    """The diffusers-style config dict of `ae` (what `vae_from_config` reads back)."""
    cfg = {"_class_name": "AutoencoderKL"}
    cfg.update({k: getattr(ae, k) for k in _ARCH_FIELDS})
    n = len(ae.block_out_channels)
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * n
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * n
    cfg["act_fn"] = "silu"
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


# ----------------------------------------------------------------------------- weights
def param_shapes(ae: AutoencoderKL) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{param path: shape} of `ae`'s params, from an abstract (no-FLOP) init."""
    s = ae.downsample_factor
    x = jax.ShapeDtypeStruct((1, s, s, ae.in_channels), jnp.float32)
    tree = jax.eval_shape(ae.init, jax.random.key(0), x)["params"]
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(p.key for p in path): tuple(leaf.shape) for path, leaf in flat}


_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def diffusers_module_path(key: str) -> tuple[tuple[str, ...], str]:
    """diffusers name -> (our module path, leaf "weight"/"bias").

    `encoder.down_blocks.0.resnets.1.conv1.weight` -> (("encoder", "down_blocks_0",
    "resnets_1", "conv1"), "weight"); old attention names query/key/value/proj_attn become
    to_q/to_k/to_v/to_out.0.
    """
    key = re.sub(
        r"(attentions\.\d+)\.(query|key|value|proj_attn)\.",
        lambda m: f"{m.group(1)}.{_OLD_ATTENTION_NAMES[m.group(2)]}.",
        key,
    )
    module, _, leaf = key.rpartition(".")
    return tuple(re.sub(r"\.(\d+)", r"_\1", module).split(".")), leaf


def diffusers_name(path: tuple[str, ...]) -> str:
    """Our param path -> its (new-style) diffusers name; inverse of `diffusers_module_path`."""
    *module, leaf = path
    names = [re.sub(r"_(\d+)$", r".\1", m) for m in module]
    return ".".join(names + ["weight" if leaf in ("kernel", "scale") else leaf])


def torch_layout(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Our kernel shape in PyTorch's layout: HWIO -> OIHW, (in, out) -> (out, in)."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape))


def _to_flax(array: np.ndarray, target_ndim: int) -> np.ndarray:
    """PyTorch weight -> Flax layout: conv OIHW -> HWIO, linear (out, in) -> (in, out).

    A 1×1-conv attention weight (out, in, 1, 1) of old LDM checkpoints serves a Dense layer.
    """
    if target_ndim == 4 and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if target_ndim == 2 and array.ndim == 4 and array.shape[2:] == (1, 1):
        array = array[:, :, 0, 0]
    return array.T if target_ndim == 2 and array.ndim == 2 else array


def params_from_diffusers(state: dict[str, np.ndarray], ae: AutoencoderKL) -> dict:
    """diffusers AutoencoderKL state dict (numpy) -> our params tree for `ae`.

    Raises ValueError naming the key for an unknown key, a missing key, a key given twice
    (old and new attention names) or a shape that disagrees with the config.
    """
    expected = param_shapes(ae)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    source: dict[tuple[str, ...], str] = {}
    for key in sorted(state):
        module, leaf = diffusers_module_path(key)
        leaves = ("kernel", "scale") if leaf == "weight" else (leaf,)
        path = next((module + (n,) for n in leaves if module + (n,) in expected), None)
        if path is None:
            raise ValueError(f"unknown VAE weight {key!r} (no such parameter in this config)")
        if path in source:
            raise ValueError(f"VAE weights {source[path]!r} and {key!r} set the same parameter")
        source[path] = key
        value = _to_flax(np.asarray(state[key], np.float32), len(expected[path]))
        if value.shape != expected[path]:
            raise ValueError(
                f"VAE weight {key!r} has shape {tuple(state[key].shape)}, the config needs "
                f"{torch_layout(expected[path])}"
            )
        flat[path] = np.ascontiguousarray(value)
    missing = [diffusers_name(p) for p in expected if p not in flat]
    if missing:
        raise ValueError(
            f"missing VAE weights {missing[:8]}" + (" ..." if len(missing) > 8 else "")
        )
    return _unflatten(flat)


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
    """{("a", "b"): v} -> {"a": {"b": v}}."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


# ----------------------------------------------------------------------------- files
def _vae_dir(path: str | pathlib.Path) -> pathlib.Path:
    """The directory holding config.json: `path` itself or its `vae/` (a pipeline dir)."""
    path = pathlib.Path(path).absolute()
    if not (path / CONFIG_FILE).exists() and (path / "vae" / CONFIG_FILE).exists():
        path = path / "vae"
    if not (path / CONFIG_FILE).exists():
        raise ValueError(f"{path} holds no {CONFIG_FILE} (a diffusers AutoencoderKL dir?)")
    return path


def load_vae(path: str | pathlib.Path, dtype: Any = jnp.float32) -> tuple[AutoencoderKL, dict]:
    """(ae, variables) from a diffusers-layout dir (config.json + safetensors) or a save_vae dir."""
    path = _vae_dir(path)
    ae = vae_from_config(json.loads((path / CONFIG_FILE).read_text()), dtype)
    if (path / WEIGHTS_FILE).exists():
        from safetensors.numpy import load_file

        return ae, {"params": params_from_diffusers(load_file(path / WEIGHTS_FILE), ae)}
    if (path / PARAMS_DIR).exists():
        return ae, {"params": _restore_params(path / PARAMS_DIR, ae)}
    raise ValueError(f"{path} holds neither {WEIGHTS_FILE} nor an Orbax {PARAMS_DIR}/ checkpoint")


def _restore_params(ckpt_dir: pathlib.Path, ae: AutoencoderKL) -> dict:
    """Orbax params written by save_vae, checked against the config's shapes."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore(ckpt_dir)["params"]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    got = {tuple(p.key for p in path): tuple(np.shape(v)) for path, v in flat}
    want = param_shapes(ae)
    bad = sorted(set(got.items()) ^ set(want.items()))
    if bad:
        raise ValueError(f"{ckpt_dir} does not match {CONFIG_FILE}: first difference {bad[0]}")
    return params


def save_vae(ae: AutoencoderKL, variables: dict, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Write `out_dir/config.json` (diffusers field names) and Orbax `out_dir/params`."""
    import orbax.checkpoint as ocp

    out = pathlib.Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(vae_config(ae), indent=2))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(out / PARAMS_DIR, {"params": variables["params"]}, force=True)
    return out
