"""Import official DiT checkpoints (facebookresearch/DiT state dicts) into jaxdiff.

`load_official_dit(path)` reads a `.pt` state dict (plain, or under "ema" / "model" as in
train.py checkpoints) with `torch.load(weights_only=True)`, infers the architecture from the
tensor shapes and returns `(model, variables)`. The model is conditioned exactly as the
official network: `model.apply(variables, x, t, y)` takes the integer DDPM step t ∈ [0, 999]
(`model.conditioning == "ddpm_linear"`, so trainers and samplers map λ -> t with
`conditioning.ddpm_timestep_from_logsnr`). x and the output are NHWC.

Command line (writes an Orbax checkpoint plus model.json that `load_converted` reads):
    python -m jaxdiff.models.convert --dit DiT-XL-2-256x256.pt --out DIR [--num_heads=H]
    python -m jaxdiff.models.convert --vae SD_VAE_DIR --out DIR   # see jaxdiff.models.vae
torch (an optional extra) is imported only inside the functions reading `.pt` files.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import flags

from jaxdiff.cli import run
from jaxdiff.models import vae
from jaxdiff.models.dit import DiT
from jaxdiff.models.layers import sincos_pos_embed_2d
from jaxdiff.models.registry import model_config, model_from_config

# Heads of the paper's sizes by width (S, B, L, XL); other widths default to 64-wide heads.
_HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1152: 16}


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """torch.load(weights_only=True) -> {name: float32 ndarray}; unwraps "ema" / "model".

    train.py checkpoints also hold an argparse.Namespace ("args"), allowed as a safe global.
    """
    import torch

    with torch.serialization.safe_globals([argparse.Namespace]):
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("ema", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    return {k.removeprefix("module."): v.float().numpy() for k, v in sd.items()}


def infer_dit_config(sd: dict[str, np.ndarray], num_heads: int | None = None) -> dict:
    """DiT constructor kwargs from official parameter shapes (heads are not in the shapes)."""
    proj = sd["x_embedder.proj.weight"]  # (D, C, p, p)
    hidden, in_ch, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    n_tokens = sd["pos_embed"].shape[1]
    grid = int(round(n_tokens**0.5))
    out_ch = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
    if out_ch not in (in_ch, 2 * in_ch):
        raise ValueError(f"output channels {out_ch} are neither C={in_ch} nor 2C")
    return dict(
        image_size=grid * patch,
        patch_size=patch,
        in_channels=in_ch,
        hidden_size=hidden,
        depth=depth,
        num_heads=num_heads or _HEADS_BY_WIDTH.get(hidden, max(hidden // 64, 1)),
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
        num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1,
        learn_sigma=out_ch == 2 * in_ch,
        conditioning="ddpm_linear",
    )


def _linear(sd: dict, name: str) -> dict:
    """torch Linear (out, in) -> {"kernel": (in, out), "bias": (out,)}."""
    return {"kernel": sd[f"{name}.weight"].T, "bias": sd[f"{name}.bias"]}


def dit_params_from_state_dict(sd: dict[str, np.ndarray], model: DiT) -> dict:
    """Official DiT names/layouts -> our Flax params tree (see dit.py for the names)."""
    w = sd["x_embedder.proj.weight"]  # (D, C, p, p) -> (p, p, C, D) -> (p·p·C, D)
    params = {
        "x_embedder": {
            "kernel": w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]),
            "bias": sd["x_embedder.proj.bias"],
        },
        "t_embedder": {
            "mlp_0": _linear(sd, "t_embedder.mlp.0"),
            "mlp_2": _linear(sd, "t_embedder.mlp.2"),
        },
        "y_embedder": {"embedding_table": sd["y_embedder.embedding_table.weight"]},
        "final_layer": {
            "adaLN_modulation": _linear(sd, "final_layer.adaLN_modulation.1"),
            "linear": _linear(sd, "final_layer.linear"),
        },
    }
    for i in range(model.depth):
        b = f"blocks.{i}"
        params[f"blocks_{i}"] = {
            "adaLN_modulation": _linear(sd, f"{b}.adaLN_modulation.1"),
            "attn": {"qkv": _linear(sd, f"{b}.attn.qkv"), "proj": _linear(sd, f"{b}.attn.proj")},
            "mlp": {"fc1": _linear(sd, f"{b}.mlp.fc1"), "fc2": _linear(sd, f"{b}.mlp.fc2")},
        }
    pos = sincos_pos_embed_2d(model.hidden_size, model.image_size // model.patch_size)
    if not np.allclose(sd["pos_embed"][0], pos, atol=1e-4):
        raise ValueError("checkpoint pos_embed is not the fixed 2-D sin-cos embedding DiT uses")
    return jax.tree.map(lambda a: np.ascontiguousarray(a, np.float32), params)


def load_official_dit(path: str | pathlib.Path, num_heads: int | None = None) -> tuple[DiT, dict]:
    """(model, variables) from an official DiT checkpoint; model takes integer DDPM steps.

    num_heads: needed only for widths outside the paper's sizes (default: 64-wide heads).
    """
    sd = read_state_dict(path)
    model = DiT(**infer_dit_config(sd, num_heads))
    return model, {"params": dit_params_from_state_dict(sd, model)}


def save_converted(model, variables: dict, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Write `out_dir/model.json` (constructor kwargs) and an Orbax checkpoint `out_dir/params`."""
    out = pathlib.Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps(model_config(model), indent=2))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(out / "params", variables, force=True)
    return out


def load_converted(out_dir: str | pathlib.Path) -> tuple[DiT, dict]:
    """Read back what `save_converted` (or the CLI) wrote: (model, variables)."""
    out = pathlib.Path(out_dir).absolute()
    model = model_from_config(json.loads((out / "model.json").read_text()))
    with ocp.StandardCheckpointer() as ckpt:
        variables = ckpt.restore(out / "params")
    return model, variables


USAGE = "python -m jaxdiff.models.convert (--dit OFFICIAL.pt | --vae DIFFUSERS_DIR) --out DIR"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("dit", None, "official DiT .pt state dict", flag_values=fv)
    flags.DEFINE_string("vae", None, "diffusers AutoencoderKL dir (config.json + safetensors)",
                        flag_values=fv)  # fmt: skip
    flags.DEFINE_string("out", None, "output directory", flag_values=fv)
    flags.DEFINE_integer("num_heads", None, "DiT heads (default: from the size)", flag_values=fv)


def _convert(fv: flags.FlagValues, args: list[str]) -> None:
    del args
    if bool(fv.dit) == bool(fv.vae) or not fv.out:
        raise flags.Error("give exactly one of --dit or --vae, and --out")
    if fv.vae:
        ae, variables = vae.load_vae(fv.vae)
        print(f"wrote {vae.save_vae(ae, variables, fv.out)} ({vae.vae_config(ae)})")
        return
    model, variables = load_official_dit(fv.dit, fv.num_heads)
    out = save_converted(model, variables, fv.out)
    print(f"wrote {out} ({model_config(model)})")


def cli(argv: list[str]) -> int:
    """The command line (``argv[0]`` is the program); returns the exit status."""
    return run(argv, _define, _convert, USAGE, (0, 0))


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
