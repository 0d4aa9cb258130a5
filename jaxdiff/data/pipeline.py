"""The Grain input pipeline: a global example order sharded per host at the index level.

With N examples, global batch B, P processes and local batch b = B / P, an epoch has
S = ⌊N / B⌋ steps (the remainder is dropped at the global-batch level). The global stream
position of host i's j-th example at step k is

    k·B + i·b + j,   epoch e = ⌊k / S⌋,   position in epoch p = (k mod S)·B + i·b + j,

and the record read there is `index_shuffle(p, max_index=N−1, seed=(seed + e) mod 2³²)`
(a bijection of [0, N) per epoch, so the first S·B positions are distinct records). So host
i's batch at step k is rows [i·b, (i+1)·b) of the single-host batch at step k, whatever P is,
and each host reads only its own records. A random flip is a pure function of
(seed, epoch, record), so the order and the augmentation never depend on the number of hosts
or worker processes, and an iterator restored from `get_state()` continues exactly.
"""

from __future__ import annotations

import sys
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from jaxdiff.data.latent_format import posterior_noise
from jaxdiff.data.sources import config_get, make_source

_FLIP_SALT = 0x46_4C_49_50  # "FLIP": separates the flip stream from any other use of the seed
_MASK64 = 2**64 - 1


def global_position(step: int, process_index: int, j: int, global_batch: int, local_batch: int):
    """Position in the global example stream of host `process_index`'s j-th example at `step`.

    k·B + i·b + j (see the module docstring).
    """
    return step * global_batch + process_index * local_batch + j


def record_index(position: int, *, num_records: int, global_batch: int, seed: int, shuffle: bool):
    """(epoch, record) read at global stream `position`.

    epoch e = ⌊position / (S·B)⌋ with S = ⌊N / B⌋; within the epoch, position p maps to
    `index_shuffle(p, N − 1, (seed + e) mod 2³²)` when shuffling, to p itself otherwise.
    """
    per_epoch = (num_records // global_batch) * global_batch
    epoch, p = divmod(int(position), per_epoch)
    if not shuffle:
        return epoch, p
    record = grain.experimental.index_shuffle(
        p, max_index=num_records - 1, seed=(seed + epoch) % 2**32, rounds=4
    )
    return epoch, int(record)


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 integer hash (Steele et al. 2014), on 64-bit words."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def flip_decision(seed: int, epoch: int, record: int) -> bool:
    """Whether to flip `record` horizontally in `epoch`: a fair coin from (seed, epoch, record).

    The top bit of SplitMix64 chained over (salt, seed, epoch, record).
    """
    h = _FLIP_SALT
    for word in (seed, epoch, record):
        h = _splitmix64(h ^ (word & _MASK64))
    return bool(h >> 63)


class HostShardDataset(grain.MapDataset):
    """The examples host `process_index` reads, in order: local element m is global position
    global_position(m // b, i, m % b, B, b). Length num_epochs·S·b (sys.maxsize if None)."""

    def __init__(
        self,
        source: Any,
        *,
        global_batch: int,
        process_index: int,
        process_count: int,
        seed: int,
        shuffle: bool,
        random_flip: bool,
        num_epochs: int | None,
    ):
        super().__init__()
        self._source = source
        self._n = len(source)
        self._global_batch = global_batch
        self._local_batch = global_batch // process_count
        self._process_index = process_index
        self._seed, self._shuffle, self._random_flip = seed, shuffle, random_flip
        self._steps_per_epoch = self._n // global_batch
        self._length = (
            sys.maxsize
            if num_epochs is None
            else num_epochs * self._steps_per_epoch * self._local_batch
        )

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return (
            f"HostShardDataset(n={self._n}, B={self._global_batch}, b={self._local_batch}, "
            f"host={self._process_index})"
        )

    def locate(self, index: int) -> tuple[int, int]:
        """(epoch, record index) of local element `index`."""
        step, j = divmod(int(index), self._local_batch)
        pos = global_position(step, self._process_index, j, self._global_batch, self._local_batch)
        return record_index(
            pos,
            num_records=self._n,
            global_batch=self._global_batch,
            seed=self._seed,
            shuffle=self._shuffle,
        )

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        if index >= self._length:
            return None
        epoch, record = self.locate(index)
        example = dict(self._source[record])
        image = np.asarray(example["image"], dtype=np.float32)
        if "latent_std" in example:  # z = μ + σ·ε from an encoded posterior (latent sources)
            eps = posterior_noise(self._seed, epoch, record, image.shape)
            image = image + np.asarray(example["latent_std"], np.float32) * eps
        if self._random_flip and flip_decision(self._seed, epoch, record):
            image = image[:, ::-1]
        return {
            "image": np.ascontiguousarray(image),
            "label": np.asarray(example["label"], np.int32),
        }


def _check_sizes(global_batch: int, process_count: int, num_records: int) -> int:
    if not isinstance(global_batch, int | np.integer) or global_batch < 1:
        raise ValueError(f"data.batch_size must be a positive integer, got {global_batch!r}")
    if global_batch % process_count:
        raise ValueError(
            f"data.batch_size={global_batch} is not divisible by process_count={process_count}"
        )
    if num_records < global_batch:
        raise ValueError(
            f"data.batch_size={global_batch} is larger than the dataset ({num_records} examples)"
        )
    return global_batch // process_count


def _mark_flags_parsed() -> None:
    """Grain worker processes read absl flags; outside absl.app they are unparsed (grain #1355)."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_dataset(
    data_config: Any,
    *,
    split: str = "train",
    seed: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    shuffle: bool = True,
    num_epochs: int | None = None,
    source: Any = None,
) -> grain.IterDataset:
    """The per-host Grain IterDataset of batches {"image": (b, H, W, C), "label": (b,)}.

    See `make_iterator`. `source` overrides `make_source(data_config, split)`.
    """
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    source = make_source(data_config, split) if source is None else source
    global_batch = config_get(data_config, "batch_size")
    local_batch = _check_sizes(global_batch, process_count, len(source))
    ds = HostShardDataset(
        source,
        global_batch=int(global_batch),
        process_index=int(process_index),
        process_count=int(process_count),
        seed=int(seed),
        shuffle=shuffle,
        random_flip=bool(config_get(data_config, "random_flip")),
        num_epochs=num_epochs,
    )
    # Whole local batches are the elements that threads and worker processes produce: worker
    # w of W makes batches w, w + W, ... and Grain interleaves them back in order, so the
    # stream never depends on worker_count or num_threads.
    batches = ds.batch(local_batch, drop_remainder=True)
    threads = int(config_get(data_config, "num_threads") or 0)
    read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(2, 2 * threads))
    iter_ds = batches.to_iter_dataset(read)
    workers = int(config_get(data_config, "worker_count") or 0)
    if workers > 0:
        _mark_flags_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter_ds


def make_iterator(data_config: Any, **kwargs: Any) -> grain.DatasetIterator:
    """A checkpointable iterator of this host's batches: ``iter(make_dataset(...))`` with the
    same keywords (split, seed, process_index, process_count, shuffle, num_epochs).

    Yields {"image": float32 (b, H, W, C) in [-1, 1], "label": int32 (b,)} with
    b = data.batch_size // process_count (defaults: jax.process_index()/process_count()).
    The global batch at step k is the same examples in the same order for any process_count;
    host i gets its rows [i·b, (i+1)·b). `get_state()` / `set_state(state)` (JSON-able dicts)
    resume exactly; inside an Orbax checkpoint use `grain.checkpoint.CheckpointSave(it)` /
    `CheckpointRestore(it)`. `num_epochs=None` repeats forever, reshuffling every epoch.
    """
    return iter(make_dataset(data_config, **kwargs))


def steps_per_epoch(data_config: Any, split: str = "train") -> int:
    """⌊N / B⌋: full global batches in one epoch of `split`."""
    return len(make_source(data_config, split)) // int(config_get(data_config, "batch_size"))
