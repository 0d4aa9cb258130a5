"""Encode an image dataset with the SD-VAE into a latent dataset (posterior mean and std).

    python -m jaxdiff.encode --config=configs/X.py[:variant] --vae=DIR --out=DIR \
        [--split=train] [--batch_size=64] [--flip] [--chunk_size=1024]

Images come from `make_source(config.data, split)` (decode, ADM/DiT centre crop and resize to
`data.image_size`, [-1, 1]); `--flip` also encodes each image's horizontal mirror (records
2i and 2i + 1 are image i and its flip). The source's N images are cut into chunks of K
(`--chunk_size`); chunk c = images [c·K, min((c+1)·K, N)) is written to its own array_record
file (format: `jaxdiff.data.latent_format`), under a temporary name and then renamed, so an
existing chunk file is complete. Host p of P encodes chunks c ≡ p (mod P) on its local
devices (the batch sharded over them with a NamedSharding; hosts never communicate), and a
restarted run skips the chunks that exist: no duplicates, no gaps, and the same bytes as an
uninterrupted run, for any P. Read the result with `data.name = "latents"`,
`data.data_dir = OUT` (see docs/data.md).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from jaxdiff.cli import run
from jaxdiff.data import latent_format
from jaxdiff.data.sources import config_get, make_source
from jaxdiff.distributed import init_distributed
from jaxdiff.errors import ConfigError
from jaxdiff.models import vae as vae_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # its configs/ list


def with_flips(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W, C) -> (2n, H, W, C) interleaving each image with its horizontal mirror."""
    pairs = np.stack([images, images[:, :, ::-1]], axis=1)
    return pairs.reshape(-1, *images.shape[1:]), np.repeat(labels, 2)


def load_images(source: Any, start: int, end: int, pool: concurrent.futures.Executor):
    """Source examples [start, end) -> (float32 images (n, H, W, C), int64 labels (n,))."""
    examples = list(pool.map(source.__getitem__, range(start, end)))
    images = np.stack([np.asarray(e["image"], np.float32) for e in examples])
    return images, np.array([int(e["label"]) for e in examples], np.int64)


def make_encoder(ae: Any, variables: Any, batch_size: int, devices: Sequence[Any] | None = None):
    """`encode(images (n, H, W, C)) -> (mean, std)` NumPy arrays (n, h, w, c), any n.

    One jitted `ae.encode` per batch of `batch_size` images, the batch sharded over `devices`
    (default: this host's devices) along a "batch" mesh axis, parameters replicated;
    `batch_size` is rounded up to a multiple of the device count, and the last batch is
    zero-padded to it so it compiles once. std = exp(logvar / 2).
    """
    devices = list(devices or jax.local_devices())
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    batch_size = -(-batch_size // len(devices)) * len(devices)  # whole rows per device
    mesh = Mesh(np.array(devices), ("batch",))
    data_sharding = NamedSharding(mesh, PartitionSpec("batch"))
    params = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))

    @jax.jit
    def _encode(v, x):
        mean, logvar = ae.apply(v, x, method="encode")
        return mean, jnp.exp(0.5 * logvar)

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pending = []
        for s in range(0, len(images), batch_size):
            x = images[s : s + batch_size]
            pad = batch_size - len(x)
            if pad:
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
            pending.append((len(x) - pad, _encode(params, jax.device_put(x, data_sharding))))
        means = [np.asarray(m)[:k] for k, (m, _) in pending]
        stds = [np.asarray(s)[:k] for k, (_, s) in pending]
        return np.concatenate(means), np.concatenate(stds)

    return encode


def build_meta(data_config: Any, split: str, ae: Any, num_images: int, image_shape, **kw) -> dict:
    """meta.json contents: everything that fixes the records (so a resume can check it)."""
    x = jax.ShapeDtypeStruct((1, *image_shape), np.float32)
    params_shape = jax.eval_shape(ae.init, jax.random.key(0), x)
    mean_shape = jax.eval_shape(
        lambda v, x: ae.apply(v, x, method="encode")[0], params_shape, x
    ).shape
    flip, chunk_size = bool(kw["flip"]), int(kw["chunk_size"])
    data = {k: config_get(data_config, k) for k in ("name", "data_dir", "tfds_name")}
    data.update({k: config_get(data_config, k) for k in ("image_size", "center_crop")})
    meta = {
        "format": latent_format.FORMAT,
        "split": split,
        "num_images": num_images,
        "num_records": num_images * (2 if flip else 1),
        "flip": flip,
        "chunk_size": chunk_size,
        "num_chunks": -(-num_images // chunk_size),
        "shape": list(mean_shape[1:]),
        "scaling_factor": float(ae.scaling_factor),
        "vae": vae_lib.vae_config(ae),
        "dtype": jax.numpy.dtype(ae.dtype).name,
        "data": data,
    }
    return json.loads(json.dumps(meta))  # normalise tuples etc. as read back from disk


def encode_dataset(
    data_config: Any,
    vae: str | tuple[Any, Any],
    out_dir: str,
    *,
    split: str = "train",
    batch_size: int = 64,
    flip: bool = False,
    chunk_size: int = 1024,
    process_index: int | None = None,
    process_count: int | None = None,
    num_threads: int = 8,
    dtype: str = "float32",
    max_chunks: int | None = None,
    progress: bool = True,
) -> list[int]:
    """Encode `split` of `data_config`'s image dataset into `out_dir/split`; resumable.

    `vae` is a VAE directory (`vae.load_vae`, computing in `dtype`: "float32" or "bfloat16";
    outputs are float32 either way) or an (ae, variables) pair. Encodes this host's
    missing chunks (see the module docstring) and returns their numbers; `max_chunks` stops
    after that many (a test hook that simulates a killed run). Process index/count default
    to jax.process_index()/process_count().
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    if config_get(data_config, "name") == "latents":
        raise ValueError(
            "data.name='latents': encode needs an image dataset; use an image config or "
            "override --config.data.name=... --config.data.image_size=... --config.data.channels=3"
        )
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if isinstance(vae, str | os.PathLike):
        ae, variables = vae_lib.load_vae(vae, dtype=jax.numpy.dtype(dtype))
    else:
        ae, variables = vae
    source = make_source(data_config, split)
    image_shape = np.shape(source[0]["image"])
    if image_shape[-1] != ae.in_channels:
        raise ValueError(f"data.channels={image_shape[-1]} but the VAE takes {ae.in_channels}")
    meta = build_meta(
        data_config, split, ae, len(source), image_shape, flip=flip, chunk_size=chunk_size
    )
    split_dir = os.path.join(out_dir, split)
    latent_format.check_or_write_meta(split_dir, meta)
    todo = latent_format.pending_chunks(split_dir, meta["num_chunks"], pi, pc)[:max_chunks]
    encode = make_encoder(ae, variables, batch_size)
    _run_chunks(source, encode, split_dir, todo, meta, num_threads, progress)
    return todo


def _run_chunks(source, encode, split_dir, todo, meta, num_threads, progress) -> None:
    """Load (one chunk ahead, in threads), encode and write each chunk in `todo`."""
    n, k = meta["num_images"], meta["chunk_size"]
    total = sum(np.diff(latent_format.chunk_bounds(c, k, n)).item() for c in todo)
    bar = tqdm(total=total, unit="img", desc=f"encode {meta['split']}", disable=not progress)
    with (
        concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool,
        concurrent.futures.ThreadPoolExecutor(1) as ahead,
    ):

        def load(i):
            return ahead.submit(
                load_images, source, *latent_format.chunk_bounds(todo[i], k, n), pool
            )

        future = load(0) if todo else None
        for i, c in enumerate(todo):
            images, labels = future.result()
            if i + 1 < len(todo):
                future = load(i + 1)  # read the next chunk while this one encodes
            if meta["flip"]:
                images, labels = with_flips(images, labels)
            mean, std = encode(images)
            latent_format.write_chunk(latent_format.chunk_path(split_dir, c), mean, std, labels)
            bar.update(len(images) // (2 if meta["flip"] else 1))
    bar.close()


USAGE = (
    "python -m jaxdiff.encode --config=configs/X.py[:variant] --vae=DIR --out=DIR "
    "[--split=train] [--batch_size=64] [--flip] [--chunk_size=1024]"
)


def _define(fv: flags.FlagValues) -> None:
    """The command's flags on ``fv`` (a fresh ``FlagValues``: the CLI runs in-process too)."""
    f = dict(flag_values=fv)
    flags.DEFINE_string("config", None, "Image dataset config (configs/X.py[:v]).", **f)
    flags.DEFINE_string("vae", None, "VAE dir (diffusers layout or jaxdiff.models.convert).", **f)
    flags.DEFINE_string("out", None, "Output directory; the split goes to OUT/<split>/.", **f)
    flags.DEFINE_string("split", "train", "Split to encode.", **f)
    flags.DEFINE_integer("batch_size", 64, "Images per encoder call on this host.", **f)
    flags.DEFINE_bool("flip", False, "Also encode each image's horizontal flip.", **f)
    flags.DEFINE_integer("chunk_size", 1024, "Source images per chunk file (resume unit).", **f)
    flags.DEFINE_integer("num_threads", 8, "Image loading threads.", **f)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "VAE compute dtype.", **f)
    flags.DEFINE_bool("all_progress", False, "Progress bars on every host, not only host 0.", **f)
    flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.", **f)
    flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.", **f)
    flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.", **f)


def _data_config(config: Any) -> Any:
    """``config.data`` of ``--config``; a ConfigError naming the field where it cannot be."""
    if "data" not in config:
        raise ConfigError("config.data", "missing", "an image dataset section")
    data = config.data
    if config_get(data, "name") == "latents":
        raise ConfigError(
            "config.data.name",
            "'latents': encode needs an image dataset",
            "an image config, or --config.data.name=... --config.data.image_size=... "
            "--config.data.channels=3",
        )
    return data


def _command(fv: flags.FlagValues, args: list[str], config: Any) -> int:
    del args
    missing = [f"--{name}" for name in ("vae", "out") if fv[name].value is None]
    if missing:
        raise ConfigError(", ".join(missing), "required")
    for name in ("batch_size", "chunk_size", "num_threads"):
        if fv[name].value < 1:
            raise ConfigError(f"--{name}", f"got {fv[name].value}", "a positive integer")
    data = _data_config(config)
    if not os.path.isdir(fv.vae):
        raise ConfigError("--vae", f"no such directory {fv.vae!r}", "a VAE dir")
    init_distributed(fv.coordinator_address, fv.num_processes, fv.process_id)
    written = encode_dataset(
        data,
        fv.vae,
        fv.out,
        split=fv.split,
        batch_size=fv.batch_size,
        flip=fv.flip,
        chunk_size=fv.chunk_size,
        num_threads=fv.num_threads,
        dtype=fv.dtype,
        progress=jax.process_index() == 0 or fv.all_progress,
    )
    split_dir = os.path.join(fv.out, fv.split)
    missing = latent_format.missing_chunks(split_dir, latent_format.read_meta(split_dir))
    print(
        f"host {jax.process_index()}: wrote {len(written)} chunks; {len(missing)} missing overall"
    )
    return 0


def cli(argv: Sequence[str]) -> int:
    """``python -m jaxdiff.encode`` for ``argv`` (``argv[0]`` the program); exit status."""
    return run(argv, _define, _command, USAGE, (0, 0), config_repo=REPO)


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
