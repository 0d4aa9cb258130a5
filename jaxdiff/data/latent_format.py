"""On-disk format of encoded latent datasets (written by `jaxdiff.encode`), its reader and writer.

A split lives in `<dir>/<split>/`:

    meta.json                      {"num_records", "num_chunks", "chunk_size", "shape", ...}
    chunk-00000.array_record       records [0, r), chunk c holds source images
    chunk-00001.array_record       [c·K, min((c+1)·K, N)) (two records per image with flips)
    ...

Each array_record record is one example packed as raw little-endian bytes,
`mean (h·w·c float32) | std (h·w·c float32) | label (int64)`, with (h, w, c) = meta["shape"].
Chunk files appear only once complete (written under a temporary name, then renamed), so a
chunk file that exists is finished. The reader concatenates the chunks in order.
"""

from __future__ import annotations

import glob
import json
import os
import uuid
from typing import Any

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

META_FILE = "meta.json"
FORMAT = "jaxdiff-latents-v1"
_EPS_SALT = 0x45_50_53  # "EPS": separates the posterior-noise stream from other seed uses


def chunk_path(split_dir: str, chunk: int) -> str:
    """Path of chunk `chunk` in a split directory."""
    return os.path.join(split_dir, f"chunk-{chunk:05d}.array_record")


def pack_record(mean: np.ndarray, std: np.ndarray, label: int) -> bytes:
    """One example -> bytes: mean (f32) | std (f32) | label (int64), little-endian."""
    return (
        np.ascontiguousarray(mean, dtype="<f4").tobytes()
        + np.ascontiguousarray(std, dtype="<f4").tobytes()
        + np.asarray(label, dtype="<i8").tobytes()
    )


def unpack_record(data: bytes, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """bytes -> {"mean": float32 shape, "std": float32 shape, "label": int64 scalar}."""
    n = int(np.prod(shape))
    want = 8 * n + 8
    if len(data) != want:
        raise ValueError(f"latent record has {len(data)} bytes, expected {want} for {shape}")
    flat = np.frombuffer(data, dtype="<f4", count=2 * n)
    return {
        "mean": flat[:n].reshape(shape).astype(np.float32),
        "std": flat[n:].reshape(shape).astype(np.float32),
        "label": np.frombuffer(data, dtype="<i8", count=1, offset=8 * n)[0],
    }


def read_meta(split_dir: str) -> dict[str, Any] | None:
    """The split's meta.json as a dict, or None when there is none."""
    path = os.path.join(split_dir, META_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def missing_chunks(split_dir: str, meta: dict[str, Any]) -> list[int]:
    """Chunk numbers whose files do not exist yet."""
    return [c for c in range(meta["num_chunks"]) if not os.path.exists(chunk_path(split_dir, c))]


class LatentDirSource:
    """Random-access source over an encoded split: `source[i]` -> {"mean", "std", "label"}.

    Raises ValueError when the split is not complete (some chunks missing). Picklable, so
    Grain worker processes can read it.
    """

    def __init__(self, split_dir: str):
        meta = read_meta(split_dir)
        if meta is None or meta.get("format") != FORMAT:
            raise ValueError(f"{split_dir!r} is not a {FORMAT} split (no valid {META_FILE})")
        missing = missing_chunks(split_dir, meta)
        if missing:
            raise ValueError(
                f"{split_dir!r} is incomplete: {len(missing)} of {meta['num_chunks']} chunks "
                f"missing (first {missing[0]}); finish it with jaxdiff.encode"
            )
        self.split_dir, self.meta = split_dir, meta
        self.shape = tuple(meta["shape"])
        paths = [chunk_path(split_dir, c) for c in range(meta["num_chunks"])]
        self._records = grain.sources.ArrayRecordDataSource(paths)
        if len(self._records) != meta["num_records"]:
            raise ValueError(
                f"{split_dir!r} holds {len(self._records)} records, meta says {meta['num_records']}"
            )

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return unpack_record(self._records[int(index)], self.shape)

    def __repr__(self) -> str:
        return f"LatentDirSource({self.split_dir!r}, n={len(self)}, shape={self.shape})"


def posterior_noise(seed: int, epoch: int, record: int, shape: tuple[int, ...]) -> np.ndarray:
    """ε ~ N(0, I) float32 of `shape`, a pure function of (seed, epoch, record).

    Drawn with NumPy's PCG64 seeded by SeedSequence([salt, seed, epoch, record]) (each word
    taken mod 2⁶⁴), so z = μ + σ·ε is the same for any host count, worker count or resume.
    """
    words = [_EPS_SALT] + [int(w) % 2**64 for w in (seed, epoch, record)]
    return np.random.default_rng(np.random.SeedSequence(words)).standard_normal(
        shape, dtype=np.float32
    )


# ------------------------------------------------------------------------------- writer
def chunk_bounds(chunk: int, chunk_size: int, num_images: int) -> tuple[int, int]:
    """Source image range [c·K, min((c+1)·K, N)) of chunk c."""
    return chunk * chunk_size, min((chunk + 1) * chunk_size, num_images)


def host_chunks(num_chunks: int, process_index: int, process_count: int) -> list[int]:
    """Chunks host i of P encodes: c ≡ i (mod P) (strided, so hosts finish together)."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    return list(range(process_index, num_chunks, process_count))


def pending_chunks(split_dir: str, num_chunks: int, process_index: int, process_count: int):
    """This host's chunks without a file yet; removes their partial (killed) temporary files."""
    todo = []
    for c in host_chunks(num_chunks, process_index, process_count):
        path = chunk_path(split_dir, c)
        if not os.path.exists(path):
            todo.append(c)
            for stale in glob.glob(glob.escape(path) + ".tmp-*"):
                os.remove(stale)
    return todo


def write_chunk(path: str, mean: np.ndarray, std: np.ndarray, labels: np.ndarray) -> None:
    """Write one chunk's records to `path` atomically (temporary file, then rename)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    writer = ArrayRecordWriter(tmp, "group_size:1")
    for m, s, y in zip(mean, std, labels, strict=True):
        writer.write(pack_record(m, s, int(y)))
    writer.close()
    os.replace(tmp, path)


def write_json_atomic(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def check_or_write_meta(split_dir: str, meta: dict) -> None:
    old = read_meta(split_dir)
    if old is None:
        os.makedirs(split_dir, exist_ok=True)
        write_json_atomic(os.path.join(split_dir, META_FILE), meta)
    elif old != meta:
        diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        raise ValueError(
            f"{split_dir!r} was started with different settings ({diff}); "
            "resume with the same config/flags or use a fresh --out"
        )
