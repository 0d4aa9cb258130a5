"""``--mode=check``: is this run ready to start, and what will it take? Compiles nothing.

:func:`check_inputs` finds the data, weights and FID statistics a config names (existence
only: nothing is read), :func:`check_workdir` that the work dir is usable (writable, not
held by another trainer, any checkpoint in it resumable with this config), :func:`plan`
describes the run: the model and its parameter count, steps, global batch and batch per
device, the mesh, the memory of the train state per device (params, optimiser, EMA) and a
rough activation estimate. Shapes come from ``jax.eval_shape`` and ``jax.make_jaxpr`` (traced,
never compiled). Every problem is a :class:`jaxdiff.errors.ConfigError` (one line, exit
status 2). ``jaxdiff.main`` runs :func:`check_inputs` before every mode too, so a missing
dataset stops training before the model is built.
"""

from __future__ import annotations

import fcntl
import functools
import glob
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxdiff import models
from jaxdiff.data.availability import check_data
from jaxdiff.diffusion import make_noise_spec
from jaxdiff.errors import ConfigError
from jaxdiff.training import resume
from jaxdiff.training.config import build_model, noise_config
from jaxdiff.training.optim import make_optimizer
from jaxdiff.training.sharding import partition_specs, resolve_mesh_shape


def check_inputs(config, *, data: bool = True) -> list[str]:
    """Raises ConfigError for a missing dataset (``data``), ``init_from``, ``data.vae``,
    ``eval.fid_stats`` or ``eval.inception_weights``; returns one line per input found."""
    lines = [f"data:        {check_data(config.data)}"] if data else []
    init_from = config.get("init_from", "")
    if init_from and not os.path.isdir(init_from):
        raise ConfigError("init_from", f"no such directory {init_from!r}", "a work dir or weights")
    vae = config.data.get("vae", "")
    if vae and not os.path.isdir(vae):
        raise ConfigError("data.vae", f"no such directory {vae!r}", "an SD-VAE dir or ''")
    weights = [f"init_from {init_from}"] * bool(init_from) + [f"vae {vae}"] * bool(vae)
    lines.append(f"weights:     {', '.join(weights) or 'none (trained from scratch)'}")
    for field in ("eval.fid_stats", "eval.inception_weights"):
        path = config.eval.get(field.split(".")[1], "")
        if path and not os.path.isfile(path):
            raise ConfigError(field, f"no such file {path!r}", "an existing file or ''")
    stats, incept = config.eval.fid_stats, config.eval.inception_weights
    if stats and not incept:
        raise ConfigError(
            "eval.inception_weights", "required with eval.fid_stats", "the pytorch-fid weights"
        )
    lines.append(f"FID:         {f'{stats} with {incept}' if stats else 'off (no eval.fid_stats)'}")
    return lines


def _probe_lock(path: str) -> str | None:
    """The holder text of a lock file another process holds, else None (nothing changed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
    except OSError:  # a file system without locks
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return None


def check_workdir(config, workdir: str) -> str:
    """Raises ConfigError (field ``--workdir``) unless ``workdir`` can be created or written,
    is not held by another trainer and holds no checkpoint this config may not resume.
    Creates and changes nothing; returns one line describing it."""
    workdir = os.path.abspath(workdir)
    if not os.path.exists(workdir):
        parent = os.path.dirname(workdir)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError("--workdir", f"cannot create {workdir!r}: {parent!r} is not writable")
        return f"work dir:    {workdir} (new)"
    if not os.path.isdir(workdir):
        raise ConfigError("--workdir", f"{workdir!r} is a file", "a directory")
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ConfigError("--workdir", f"{workdir!r} is not writable", "a writable directory")
    for path in sorted(glob.glob(os.path.join(workdir, ".lock", "process_*"))):
        holder = _probe_lock(path)
        if holder is not None:
            raise ConfigError(
                "--workdir", f"{workdir!r} is in use by another trainer ({holder})",
                "a work dir no trainer holds (wait for it, stop it, or use another)",
            )  # fmt: skip
    step = _newest_checkpoint(os.path.join(workdir, "checkpoints"))
    if step is None:
        return f"work dir:    {workdir} (no checkpoint: starts at step 0)"
    _check_resumable(config, workdir, step)
    return f"work dir:    {workdir} (resumes from checkpoint {step})"


def _newest_checkpoint(directory: str) -> int | None:
    if not os.path.isdir(directory):
        return None
    steps = [int(n) for n in os.listdir(directory) if n.isdigit()]
    return max(steps) if steps else None


def _check_resumable(config, workdir: str, step: int) -> None:
    from jaxdiff.training.checkpoint import Checkpointer, CorruptCheckpoint  # noqa: PLC0415

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=None, read_only=True)
    try:
        saved = ckpt.read_config(step)
    except CorruptCheckpoint as e:
        raise ConfigError("--workdir", f"checkpoint {step} is unreadable ({e.reason})") from None
    finally:
        ckpt.close()
    if saved is None or config.get("resume_policy", "strict") == "allow_changes":
        return
    changes = resume.config_changes(saved, resume.config_json(config))
    if changes:
        what = ", ".join(f"{f}: {o!r} -> {n!r}" for f, o, n in changes)
        raise ConfigError(
            "--workdir",
            f"checkpoint {step} in {workdir} was saved with a different config ({what})",
            "the saved values, a new --workdir, or --config.resume_policy=allow_changes",
        )


# --------------------------------------------------------------------------------- plan
def _bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def _per_device_bytes(tree, mesh_shape: dict, config) -> int:
    """Bytes of ``tree`` on one device under the config's partition rules."""
    mesh = types.SimpleNamespace(shape=mesh_shape)  # partition_specs reads only mesh.shape
    rules = [tuple(r) for r in config.mesh.partition_rules]
    specs = partition_specs(tree, mesh, rules=rules, min_fsdp_size=int(config.mesh.min_fsdp_size))
    total = 0
    leaves = jax.tree_util.tree_leaves(tree)
    spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda s: isinstance(s, PartitionSpec))
    for leaf, spec in zip(leaves, spec_leaves, strict=True):
        split = 1
        for axis in spec:
            for name in (axis,) if isinstance(axis, str) else axis or ():
                split *= mesh_shape[name]
        total += int(np.prod(leaf.shape)) * leaf.dtype.itemsize // split
    return total


_MATMULS = ("dot_general", "conv_general_dilated")


def _intermediate_bytes(jaxpr, only=None) -> int:
    """Bytes of the values a jaxpr computes (nested calls included, scans × length): every
    value, or only the outputs of the primitives named in ``only``."""
    total = 0
    for eqn in jaxpr.eqns:
        if only is None or eqn.primitive.name in only:
            total += sum(
                int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize
                for v in eqn.outvars
                if hasattr(v.aval, "shape")
            )
        times = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += times * _intermediate_bytes(inner, only)
    return total


def _size(n: float) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def plan(config, num_devices: int) -> list[str]:
    """The plan of ``config`` on ``num_devices`` devices (lines to print). Traces the model's
    initialisation and forward pass abstractly; compiles and allocates nothing."""
    model = build_model(config)
    spec = make_noise_spec(noise_config(config))
    optimizer = make_optimizer(config.optim, config.total_steps)
    from jaxdiff.training.experiment import _init_state  # noqa: PLC0415

    state = jax.eval_shape(functools.partial(_init_state, config, model, spec, optimizer))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
    shape = resolve_mesh_shape(config.mesh.shape, config.mesh.axes, num_devices)
    mesh_shape = dict(zip(config.mesh.axes, shape, strict=True))
    batch, accum = int(config.data.batch_size), int(config.optim.grad_accum_steps)
    per_device = batch // num_devices
    micro = per_device // accum
    parts = {
        "params": state.params,
        "optimiser": state.opt_state,
        f"EMA ×{len(state.ema)}": state.ema,
        "sampler": (state.sampler_state, state.weighting_state),
    }
    sizes = {k: _per_device_bytes(v, mesh_shape, config) for k, v in parts.items()}
    act_lo, act_hi = _activation_bytes(config, model, state.params, micro)
    d = config.data
    lines = [
        f"model:       {config.model.name} ({n_params:,} parameters, {_size(_bytes(state.params))}"
        f" float32), input {d.image_size}×{d.image_size}×{d.channels}",
        f"steps:       {config.total_steps:,} (warm-up {config.optim.warmup_steps:,}, "
        f"{config.optim.name} lr {config.optim.lr:g}, decay {config.optim.decay})",
        f"batch:       {batch} global, {per_device} per device"
        + (f" ({accum} micro-batches of {micro})" if accum > 1 else ""),
        f"mesh:        {num_devices} device(s) as {mesh_shape}",
        "memory/dev:  state "
        + ", ".join(f"{k} {_size(v)}" for k, v in sizes.items() if v)
        + f" = {_size(sum(sizes.values()))}; activations ≈ {_size(act_lo)} to {_size(act_hi)}"
        f" ({config.train.compute_dtype}, micro-batch {micro}: matmul outputs to all forward "
        "intermediates)",
    ]
    return lines


def _activation_bytes(config, model, params, micro: int) -> tuple[int, int]:
    """A rough range of the activation memory of ``micro`` examples' forward pass: the bytes
    of its matmul and convolution outputs (about what the backward pass must keep) and of all
    its intermediates (an upper bound: XLA fuses and frees much of it)."""
    d = config.data
    dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
    apply = models.make_apply_fn(model, compute_dtype=dtype)
    x = jax.ShapeDtypeStruct((max(micro, 1), d.image_size, d.image_size, d.channels), jnp.float32)
    lam = jax.ShapeDtypeStruct((max(micro, 1),), jnp.float32)
    y = jax.ShapeDtypeStruct((max(micro, 1),), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.key(0))
    jaxpr = jax.make_jaxpr(functools.partial(apply, train=True))(params, x, lam, y, key)
    return _intermediate_bytes(jaxpr.jaxpr, _MATMULS), _intermediate_bytes(jaxpr.jaxpr)


def run_check(config, workdir: str, num_devices: int) -> list[str]:
    """Everything ``--mode=check`` does after the config is validated: the lines to print."""
    lines = check_inputs(config)
    lines.append(check_workdir(config, workdir))
    return [*plan(config, num_devices), *lines]
