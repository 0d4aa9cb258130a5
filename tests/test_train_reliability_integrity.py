"""Array fingerprints: equal to a NumPy reference, independent of sharding, sensitive to a bit."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdiff.training.integrity import fingerprints


def _np_mix(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def reference(x: np.ndarray) -> str:
    """The documented formula in NumPy uint32 arithmetic (wrapping mod 2³²)."""
    x = np.ascontiguousarray(x).ravel()
    if x.dtype == np.bool_:
        u = x.astype(np.uint32)
    elif x.dtype.itemsize == 8:
        u = x.view(np.uint32)
    else:
        u = x.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize]).astype(np.uint32)
    i = np.arange(u.size, dtype=np.uint32)
    with np.errstate(over="ignore"):
        a = _np_mix(u ^ _np_mix(i + np.uint32(0x9E3779B9))).sum(dtype=np.uint32)
        b = _np_mix(u + np.uint32(0x632BE5AB) * (i + np.uint32(1))).sum(dtype=np.uint32)
    return f"{int(a):08x}{int(b):08x}"


DTYPES = [np.float32, ml_dtypes.bfloat16, np.float16, np.int32, np.uint32, np.int8, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_fingerprint_equals_numpy_reference(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((7, 13)) * 100).astype(dtype)
    prints, bad = fingerprints({"x": jnp.asarray(x), "s": jnp.asarray(x[0, 0])})
    assert prints == {"x": reference(x), "s": reference(x[:1, :1])} and bad == []


def test_fingerprint_is_independent_of_sharding_and_names_nonfinite():
    x = np.random.default_rng(1).standard_normal((16, 24)).astype(np.float32)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("a", "b"))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("a", "b")))
    assert fingerprints({"w": sharded})[0] == fingerprints({"w": jnp.asarray(x)})[0]
    y = x.copy()
    y[3, 5] = np.nan
    assert fingerprints({"p": {"w": jnp.asarray(y)}})[1] == ["p/w"]


def test_every_single_bit_flip_changes_both_lanes():
    x = np.random.default_rng(2).standard_normal(64).astype(np.float32)
    base = fingerprints({"x": jnp.asarray(x)})[0]["x"]
    bits = x.view(np.uint32)
    for k in range(0, 64 * 32, 37):  # a spread of positions and bit indices
        flipped = bits.copy()
        flipped[k // 32] ^= np.uint32(1 << (k % 32))
        got = fingerprints({"x": jnp.asarray(flipped.view(np.float32))})[0]["x"]
        assert got[:8] != base[:8] and got[8:] != base[8:]
    # Swapping two elements (same multiset of values) is detected too.
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert fingerprints({"x": jnp.asarray(swapped)})[0]["x"] != base
