"""Device mesh, partition rules and host<->global batch conversion.

The mesh has axes ``("data", "fsdp")``. Batches are sharded over both axes along their
leading dimension. Parameters are replicated, or sharded along ``"fsdp"`` by partition
rules: explicit ``(regex, PartitionSpec)`` rules first, then (if ``fsdp`` > 1) an automatic
rule that shards the largest dimension divisible by the ``fsdp`` size of every array with at
least ``min_fsdp_size`` elements (big_vision / MaxText style).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdiff.errors import ConfigError

BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(shape: Sequence[int], axes: Sequence[str], num_devices: int) -> tuple:
    """``mesh.shape`` with its -1 entry filled in; ConfigError naming the field if it can't fit."""
    axes = tuple(axes)
    if axes != BATCH_AXES:
        raise ConfigError("mesh.axes", f"got {axes}", [BATCH_AXES])
    shape = [int(s) for s in shape]
    one_per_axis = f"{len(axes)} positive entries (one per axis), at most one -1"
    if len(shape) != len(axes) or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ConfigError("mesh.shape", f"got {tuple(shape)}", one_per_axis)
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if num_devices % known:
            raise ConfigError(
                "mesh.shape", f"{tuple(shape)} does not divide the {num_devices} devices",
                f"entries whose product divides {num_devices}",
            )  # fmt: skip
        shape[shape.index(-1)] = num_devices // known
    if int(np.prod(shape)) != num_devices:
        raise ConfigError(
            "mesh.shape", f"{tuple(shape)} needs {int(np.prod(shape))} devices",
            f"a product of {num_devices} (the devices there are), or one -1",
        )  # fmt: skip
    return tuple(shape)


def make_mesh(
    shape: Sequence[int] = (-1, 1), axes: Sequence[str] = BATCH_AXES, devices=None
) -> Mesh:
    """A mesh over ``devices`` (all by default); one entry of ``shape`` may be -1."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(shape, axes, len(devices))
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), tuple(axes))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: leading dimension split over every mesh axis."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _auto_fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in order:
        if shape[i] % fsdp == 0:
            spec = [None] * len(shape)
            spec[i] = "fsdp"
            return P(*spec)
    return P()


def partition_specs(
    tree: Any,
    mesh: Mesh,
    rules: Sequence[tuple[str, Sequence[str | None]]] = (),
    min_fsdp_size: int = 2**14,
) -> Any:
    """PartitionSpecs for a pytree of arrays (or ShapeDtypeStructs).

    ``rules`` are ``(regex, spec)`` pairs matched (``re.search``) against the "/"-joined
    path of each leaf; the first match wins. Leaves matching no rule get the automatic FSDP
    spec (replicated when the mesh's ``fsdp`` axis has size 1).
    """
    fsdp = mesh.shape["fsdp"]
    compiled = [(re.compile(r), P(*s)) for r, s in rules]

    def spec_for(path, leaf):
        name = _path_str(path)
        for rx, spec in compiled:
            if rx.search(name):
                return spec
        shape = tuple(getattr(leaf, "shape", ()))
        return _auto_fsdp_spec(shape, fsdp, min_fsdp_size)

    return jax.tree_util.tree_map_with_path(spec_for, tree)


def shardings_for(tree: Any, mesh: Mesh, **kwargs) -> Any:
    """NamedShardings for ``tree`` following :func:`partition_specs`."""
    specs = partition_specs(tree, mesh, **kwargs)
    return jax.tree_util.tree_map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P)
    )


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Assembles per-host batches into global arrays sharded over the batch axes.

    Each process passes its own rows (in process order they form the global batch).
    """
    sharding = batch_sharding(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )
