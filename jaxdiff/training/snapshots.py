"""Snapshots of the post-hoc EMA profiles (EDM2) in ``WORKDIR/ema_snapshots/<step>/``.

Every ``ema.posthoc.every`` steps (and at ``total_steps``) the training loop saves the
profiles of the train state (``state.posthoc``, one tree per ``ema.posthoc.std``) through the
same :class:`~jaxdiff.training.checkpoint.Checkpointer` as the checkpoints: Orbax writes a
temporary directory and renames it when complete (atomic), every array is fingerprinted at
save and verified on read, a non-finite snapshot is refused. Snapshots are never deleted
(``max_to_keep=None``; ``keep_checkpoints`` applies to ``checkpoints/`` only).

Each snapshot's ``config`` item holds ``{"version", "step", "std", "gamma"}``. Resuming:
the profiles live in the train state, so a resumed run writes the snapshots an uninterrupted
one would; a snapshot that already exists (written before a kill, after the checkpoint the
run resumes from) is kept, not rewritten. When the run goes back with ``restore_step``,
snapshots after that step are set aside as ``<step>.superseded`` (renamed, not deleted).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxdiff.errors import ConfigError
from jaxdiff.training.checkpoint import Checkpointer, CorruptCheckpoint, warn
from jaxdiff.training.experiment import posthoc_stds
from jaxdiff.training.posthoc import std_to_gamma

SNAPSHOT_DIR = "ema_snapshots"
SNAPSHOT_VERSION = 1


def snapshot_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), SNAPSHOT_DIR)


def snapshot_due(config, step: int) -> bool:
    """Whether the loop saves a snapshot after ``step`` updates."""
    if not posthoc_stds(config):
        return False
    return step % int(config.ema.posthoc.every) == 0 or step == int(config.total_steps)


class SnapshotWriter:
    """Saves ``state.posthoc`` as snapshots (asynchronously, like the checkpoints)."""

    def __init__(self, workdir: str, config):
        self.stds = posthoc_stds(config)
        self.gammas = [float(g) for g in std_to_gamma(self.stds)]
        directory = snapshot_dir(workdir)
        self.ckpt = Checkpointer(directory, max_to_keep=None, async_save=True)
        if jax.process_index() == 0 and self.ckpt.removed_temps:
            removed = ", ".join(self.ckpt.removed_temps)
            warn(f"removed unfinished EMA snapshot writes of a killed run: {removed}")
        self.existing = set(self.ckpt.all_steps())

    @classmethod
    def open(cls, workdir: str, config, start: int, superseded) -> SnapshotWriter | None:
        """The writer of a run resuming at ``start`` (None when post-hoc EMA is off);
        ``superseded``: the checkpoints set aside by ``restore_step`` (then the snapshots
        after ``start`` are set aside too)."""
        if not posthoc_stds(config):
            return None
        writer = cls(workdir, config)
        newer = sorted(s for s in writer.existing if s > start)
        if superseded and newer:
            moved = [writer.ckpt.set_aside(s, ".superseded") for s in newer]
            writer.existing -= set(newer)
            warn(f"restore_step={start}: newer EMA snapshots set aside as {moved}")
        return writer

    def save(self, step: int, state) -> bool:
        """Saves the profiles of ``state`` as snapshot ``step`` unless it exists."""
        if step in self.existing:
            return False
        meta = {"version": SNAPSHOT_VERSION, "step": int(step), "std": list(self.stds),
                "gamma": self.gammas}  # fmt: skip
        self.ckpt.save(step, {"profiles": state.posthoc}, config=meta)
        self.existing.add(step)
        return True

    def close(self) -> None:
        self.ckpt.close()


# --- reading --------------------------------------------------------------------------------


def snapshot_steps(workdir: str) -> list[int]:
    """The steps of the finished snapshots of ``workdir`` (sorted; [] if none)."""
    directory = snapshot_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def open_snapshots(workdir: str) -> Checkpointer:
    """A read-only checkpointer of ``workdir``'s snapshots (ConfigError if there are none)."""
    if not snapshot_steps(workdir):
        raise ConfigError(
            "workdir",
            f"no EMA snapshots in {snapshot_dir(workdir)}",
            "a work dir trained with ema.posthoc.std set, e.g. (0.05, 0.1)",
        )
    return Checkpointer(snapshot_dir(workdir), max_to_keep=None, read_only=True)


def read_meta(ckpt: Checkpointer, step: int) -> dict:
    """``{"step", "std", "gamma", ...}`` of snapshot ``step``."""
    meta = ckpt.read_config(step)
    if not isinstance(meta, dict) or "gamma" not in meta:
        raise CorruptCheckpoint(step, "EMA snapshot without its profile description")
    return meta


def read_profiles(ckpt: Checkpointer, step: int) -> list:
    """The verified profiles of snapshot ``step`` as NumPy trees (one per σ_rel)."""
    tree = ckpt.state_metadata(step)
    device = jax.local_devices(backend="cpu")[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    abstract = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding), tree
    )
    restored, _ = ckpt.restore(step, abstract)
    profiles = restored["profiles"]
    return [jax.tree_util.tree_map(np.asarray, profiles[k]) for k in sorted(profiles, key=int)]
