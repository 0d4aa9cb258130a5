"""Orbax checkpoints: atomic, keep-last-N plus periodic keepers, with data position and config.

A checkpoint is an Orbax composite of
- ``state``: the :class:`TrainState` as a nested dict (params, EMA, optimizer, sampler, RNG);
- ``data``: the Grain iterator state of every host (optional);
- ``config``: the resolved config as JSON.
Orbax writes into a temporary directory and renames it when complete, so a crash never
leaves a half-written checkpoint that looks finished. If the latest checkpoint cannot be
read (corrupted files), restoring warns and falls back to the one before.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import flax
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def _grain_args():
    import grain.checkpoint as gc

    return gc.CheckpointSave, gc.CheckpointRestore


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with fallback on unreadable checkpoints."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, keep_period: int | None = None):
        directory = os.path.abspath(directory) if "://" not in directory else directory
        self.directory = directory
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            keep_period=keep_period or None,
            create=True,
            enable_async_checkpointing=False,
        )
        self.manager = ocp.CheckpointManager(directory, options=options)

    def all_steps(self) -> list[int]:
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def save(
        self, step: int, state, data_iter=None, config: dict | None = None, force: bool = False
    ):
        items = {"state": ocp.args.StandardSave(flax.serialization.to_state_dict(state))}
        if data_iter is not None:
            save_cls, _ = _grain_args()
            items["data"] = save_cls(data_iter)
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        saved = self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)
        self.manager.wait_until_finished()
        return saved

    def restore(self, step: int, abstract_state, data_iter=None):
        """Restores ``step`` into the structure (and shardings) of ``abstract_state``."""
        target = flax.serialization.to_state_dict(abstract_state)
        items = {"state": ocp.args.StandardRestore(target)}
        if data_iter is not None:
            _, restore_cls = _grain_args()
            items["data"] = restore_cls(data_iter)
        out = self.manager.restore(int(step), args=ocp.args.Composite(**items))
        return flax.serialization.from_state_dict(abstract_state, out["state"])

    def restore_latest(self, abstract_state, data_iter=None) -> tuple[Any, int] | None:
        """The newest readable checkpoint as ``(state, step)``, or None if there is none.

        A checkpoint that fails to restore is skipped with a warning and renamed to
        ``<step>.unreadable`` (kept for inspection, out of the manager's way) so that
        training can save that step again.
        """
        bad = []
        result = None
        for step in reversed(self.all_steps()):
            try:
                result = self.restore(step, abstract_state, data_iter), step
                break
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                msg = (
                    f"checkpoint {step} in {self.directory} is unreadable "
                    f"({type(e).__name__}: {e}); falling back to the previous one"
                )
                log.warning(msg)
                print(f"WARNING: {msg}", flush=True)
                bad.append(step)
        if bad:
            self._quarantine(bad)
        return result

    def _quarantine(self, steps):
        if jax.process_index() == 0:
            for step in steps:
                src = os.path.join(self.directory, str(step))
                dst = f"{src}.unreadable"
                while os.path.exists(dst):
                    dst += "_"
                os.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxdiff_checkpoint_quarantine")
        self.manager.reload()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(abstract_state, shardings):
    """ShapeDtypeStructs carrying the shardings a restore should place arrays with."""
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )


def load_params(path: str, abstract_params=None):
    """Params (and EMA if present) from another run's work dir or checkpoint dir.

    Accepts a work dir (uses its latest checkpoint), a ``checkpoints`` dir, one step dir, or
    a directory written by ``python -m jaxdiff.models.convert`` (params only).
    Returns the restored ``state`` dict as saved (numpy arrays).
    """
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, "model.json")):  # a converted official DiT
        from jaxdiff.models.convert import load_converted

        _, variables = load_converted(path)
        return {"params": variables["params"]}
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    if os.path.isdir(os.path.join(path, "state")):
        step_dir = path
    else:
        steps = [int(d) for d in os.listdir(path) if d.isdigit()]
        if not steps:
            raise ValueError(f"init_from: no checkpoint found under {path!r}")
        step_dir = os.path.join(path, str(max(steps)))
    ckptr = ocp.StandardCheckpointer()
    return ckptr.restore(os.path.join(step_dir, "state"))
