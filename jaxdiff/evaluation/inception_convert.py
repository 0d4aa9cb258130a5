"""Convert pytorch-fid's `pt_inception-2015-12-05-*.pth` weights to the Flax port's params.

A torch unit `P.conv.weight (O, I, kH, kW)` + `P.bn.{weight, bias, running_mean,
running_var}` becomes `params[P]["conv"] = {kernel (kH, kW, I, O), bias (O,)}` with the
BatchNorm (eps = 1e-3) folded in, in float64 before the cast to float32:

    s = γ / sqrt(var + eps),   W' = W·s (per output channel),   b' = β − mean·s.

`fc.weight (1008, 2048)`, `fc.bias` become `params["fc"] = {kernel (2048, 1008), bias}`.
The port's own format is a flat `.npz` with keys like `Mixed_5b/branch1x1/conv/kernel`.

    python -m jaxdiff.evaluation.inception_convert PT_INCEPTION.pth OUT.npz
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from jaxdiff.cli import run
from jaxdiff.evaluation import inception

FORMAT_KEY = "__jaxdiff_format__"
FORMAT_VALUE = "fid_inception_v3/1"
_IGNORED_PREFIXES = ("AuxLogits.",)
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def fold_batchnorm(
    weight: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float = inception.BN_EPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold eval-mode BatchNorm into a bias-free conv; torch OIHW weight → Flax HWIO kernel.

    Returns (kernel (kH, kW, I, O) float32, bias (O,) float32) with
    kernel = W·γ/√(var+eps) and bias = β − mean·γ/√(var+eps).
    """
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    kernel = np.asarray(weight, np.float64) * scale[:, None, None, None]
    bias = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return kernel.transpose(2, 3, 1, 0).astype(np.float32), bias.astype(np.float32)


def _unit_prefixes(state_dict: Mapping[str, np.ndarray]) -> list[str]:
    """Prefixes `P` of every conv unit, i.e. keys `P.conv.weight`."""
    return sorted(k[: -len(".conv.weight")] for k in state_dict if k.endswith(".conv.weight"))


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
    """pytorch-fid FID Inception state dict (name → array) → the port's nested params.

    Raises ValueError if a key is unused or a parameter the port needs is missing or has
    the wrong shape.
    """
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    flat: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()
    for prefix in _unit_prefixes(sd):
        names = [f"{prefix}.conv.weight"] + [
            f"{prefix}.bn.{n}" for n in ("weight", "bias", "running_mean", "running_var")
        ]
        missing = [n for n in names if n not in sd]
        if missing:
            raise ValueError(f"state dict lacks {missing}")
        kernel, bias = fold_batchnorm(*(sd[n] for n in names))
        path = (*prefix.split("."), "conv")
        flat[(*path, "kernel")], flat[(*path, "bias")] = kernel, bias
        used.update(names)
    if "fc.weight" in sd and "fc.bias" in sd:
        flat[("fc", "kernel")] = sd["fc.weight"].T.astype(np.float32)
        flat[("fc", "bias")] = sd["fc.bias"].astype(np.float32)
        used.update(("fc.weight", "fc.bias"))
    unused = [
        k
        for k in sd
        if k not in used
        and not k.startswith(_IGNORED_PREFIXES)
        and not k.endswith(_IGNORED_SUFFIXES)
    ]
    if unused:
        raise ValueError(f"unexpected keys in the Inception state dict: {sorted(unused)[:10]}")
    params = traverse_util.unflatten_dict(flat)
    check_params(params)
    return params


def check_params(params: Mapping) -> None:
    """Raise ValueError unless `params` has exactly the port's tree, shapes and float32."""
    expected = traverse_util.flatten_dict(inception.param_shapes(), sep="/")
    got = traverse_util.flatten_dict(dict(params), sep="/")
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise ValueError(f"Inception params mismatch: missing {missing[:10]}, extra {extra[:10]}")
    for key, spec in expected.items():
        if tuple(np.shape(got[key])) != tuple(spec.shape):
            raise ValueError(
                f"Inception param {key} has shape {np.shape(got[key])}, want {spec.shape}"
            )


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a torch `.pth` state dict (`torch.load(weights_only=True)`) as NumPy arrays."""
    import torch  # only the converter needs PyTorch

    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def save_params(params: Mapping, path: str | os.PathLike) -> None:
    """Write the port's params as a flat `.npz` (keys `a/b/c`, plus a format marker)."""
    check_params(params)
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    arrays = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    with open(os.fspath(path), "wb") as f:
        np.savez(f, **arrays, **{FORMAT_KEY: np.array(FORMAT_VALUE)})


def _read_port_npz(path: str) -> dict[str, np.ndarray] | None:
    """The flat arrays of the port's `.npz`, or None if `path` is not one (e.g. a torch zip)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError):
        return None
    if not hasattr(archive, "files"):
        return None
    with archive:
        if FORMAT_KEY not in archive.files:
            return None
        return {k: archive[k] for k in archive.files if k != FORMAT_KEY}


def load_params(path: str | os.PathLike) -> dict:
    """Load Inception params from the port's `.npz` or pytorch-fid's `.pth` (converted).

    The format is recognised by content: a NumPy zip archive with the format marker is the
    port's file; anything else is read with `torch.load(weights_only=True)`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no Inception weights at {path!r}")
    flat = _read_port_npz(path)
    if flat is not None:
        params = traverse_util.unflatten_dict(flat, sep="/")
        check_params(params)
        return params
    return convert_state_dict(load_torch_state_dict(path))


USAGE = "python -m jaxdiff.evaluation.inception_convert PT_INCEPTION.pth OUT.npz"


def _convert(fv, args: list[str]) -> None:
    del fv
    save_params(load_params(args[0]), args[1])
    print(f"wrote {args[1]}")


def cli(argv: list[str]) -> int:
    """Converts pytorch-fid's weights file to the port's `.npz`; returns the exit status."""
    return run(argv, lambda fv: None, _convert, USAGE, (2, 2))


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
