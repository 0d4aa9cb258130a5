"""Orbax checkpoints that are verified on restore and never destroyed by a failed one.

A checkpoint ``<dir>/<step>/`` is an Orbax composite of
- ``state``: the :class:`TrainState` as a nested dict (params, EMA, optimizer, sampler, RNG);
- ``data``: the Grain iterator state of every host (optional);
- ``config``: the resolved config as JSON;
- ``integrity``: a fingerprint of every array of ``state`` (:mod:`jaxdiff.training.integrity`;
  independent of the sharding), verified after every restore;
- ``loop``: the loop's in-progress logging window (optional), so a resumed run logs the
  rows an uninterrupted one would.

Orbax writes into ``<step>.orbax-checkpoint-tmp*`` and renames it when complete, so a crash
never leaves a half-written checkpoint that looks finished. With ``async_save`` the arrays
are copied to host memory before :meth:`Checkpointer.save` returns and written in the
background; a failed write (disk full, ...) is reported as a one-line :class:`RunError`
naming the checkpoint, the directory and the cause.

Restoring checks, in order: the saved array shapes and dtypes against the target
(a mismatch is :class:`IncompatibleCheckpoint`, never corruption), the read itself, and the
fingerprints. Only a checkpoint whose read or fingerprints fail is :class:`CorruptCheckpoint`;
the caller may then set it aside (:meth:`Checkpointer.set_aside`, a rename; nothing is ever
deleted except by the keep-last-N policy after a newer save has completed).
"""

from __future__ import annotations

import errno
import logging
import os
import re
from typing import Any

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jaxdiff.errors import ConfigError, RunError
from jaxdiff.models.convert import load_converted
from jaxdiff.training.integrity import fingerprints, path_str

log = logging.getLogger(__name__)

# Suffixes of checkpoint directories set aside (renamed, kept): corrupt ones and ones newer
# than an explicit ``restore_step``.
SET_ASIDE_SUFFIXES = (".corrupt", ".superseded")
INTEGRITY_VERSION = 1


class CorruptCheckpoint(Exception):  # noqa: N818 - a condition, caught by the resume logic
    """A checkpoint whose files cannot be read or whose arrays fail their fingerprints."""

    def __init__(self, step: int, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"checkpoint {step} is corrupt: {reason}")


class IncompatibleCheckpoint(RunError):
    """A readable checkpoint that does not fit the current config (shapes, dtypes, tree)."""


def _grain_args():
    import grain.checkpoint as gc

    return gc.CheckpointSave, gc.CheckpointRestore


# --- errors -------------------------------------------------------------------------------

_CAUSES = (
    (errno.ENOSPC, "No space left on device"),
    (errno.EDQUOT, "Disk quota exceeded"),
    (errno.EROFS, "Read-only file system"),
    (errno.EACCES, "Permission denied"),
    (errno.EIO, "Input/output error"),
)


def short_cause(exc: BaseException, limit: int = 160) -> str:
    """One line for an exception: a known OS cause if found anywhere in its chain or text,
    else its type and first line (TensorStore specs and tracebacks cut off)."""
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for err in chain:
        if isinstance(err, OSError) and err.errno is not None:
            return f"{os.strerror(err.errno)} ({type(err).__name__})"
    text = " ".join(str(err) for err in chain)
    for _, words in _CAUSES:
        if words.lower() in text.lower():
            return words
    first = (str(exc).strip().splitlines() or [""])[0]
    first = re.sub(r"\s*\[source locations=.*", "", first)
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _is_environmental(exc: BaseException) -> bool:
    """Errors that say nothing about the checkpoint's files (memory, permissions)."""
    if isinstance(exc, MemoryError | PermissionError):
        return True
    text = str(exc)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "PERMISSION_DENIED" in text


# --- the checkpointer ---------------------------------------------------------------------


def _unfinished_writes(directory: str) -> list[str]:
    """Names of the temporary directories of unfinished Orbax writes in ``directory``."""
    if "://" in directory or not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if ".orbax-checkpoint-tmp" in n)


class Checkpointer:
    """``ocp.CheckpointManager`` with fingerprints, verified restores and one-line errors.

    ``max_to_keep`` ≥ 1 newest checkpoints are kept, plus every multiple of ``keep_period``;
    older ones are deleted only after a newer save has completed. ``read_only`` opens an
    existing directory for restoring (sampling, evaluation) without creating or changing it.
    """

    def __init__(
        self,
        directory: str,
        *,
        max_to_keep: int | None = 3,
        keep_period: int | None = None,
        async_save: bool = False,
        read_only: bool = False,
    ):
        if max_to_keep is not None and max_to_keep < 1:
            raise ConfigError(
                "keep_checkpoints", f"{max_to_keep} would delete every checkpoint", ">= 1"
            )
        directory = os.path.abspath(directory) if "://" not in directory else directory
        self.directory = directory
        self.read_only = read_only
        # A writer (one per work dir, under its lock) lets Orbax remove the unfinished writes a
        # killed run left; their names are kept for the run's console warning.
        self.removed_temps = [] if read_only else _unfinished_writes(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            keep_period=keep_period or None,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
        )
        self.manager = ocp.CheckpointManager(directory, options=options)
        self._pending: int | None = None  # step of a save that may still be writing

    def all_steps(self) -> list[int]:
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def set_aside_names(self) -> list[str]:
        """Directories set aside earlier (``<step>.corrupt``, ``.superseded``, ...)."""
        if not os.path.isdir(self.directory):
            return []
        names = [n for n in os.listdir(self.directory) if n.endswith(SET_ASIDE_SUFFIXES)]
        return sorted(names, key=lambda n: (int(re.match(r"\d*", n).group() or -1), n))

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(int(step)))

    # --- saving ---------------------------------------------------------------------------

    def save(self, step: int, state, data_iter=None, config=None, loop=None, force=True) -> bool:
        """Saves ``state`` (and the data position, config and loop window) as ``step``.

        Refuses (RunError) a state holding a non-finite value. Asynchronous when the
        checkpointer was built with ``async_save``: returns once the arrays are on the host.
        """
        self.wait()  # surfaces an earlier background failure under its own step
        state_dict = flax.serialization.to_state_dict(state)
        prints, bad = fingerprints(state_dict)
        if bad:
            raise RunError(
                f"refusing to save checkpoint {step}: non-finite values in {len(bad)} arrays "
                f"({', '.join(bad[:3])}); the newest checkpoint stays {self._newest()}"
            )
        items = {
            "state": ocp.args.StandardSave(state_dict),
            "integrity": ocp.args.JsonSave({"version": INTEGRITY_VERSION, "arrays": prints}),
        }
        if data_iter is not None:
            save_cls, _ = _grain_args()
            items["data"] = save_cls(data_iter)
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        if loop is not None:
            items["loop"] = ocp.args.JsonSave(loop)
        try:
            saved = self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)
        except Exception as e:  # noqa: BLE001 - reported as one line, older ones intact
            raise self._save_error(step, e) from e
        self._pending = int(step)
        return saved

    def wait(self):
        """Blocks until a background save has finished; its failure becomes a RunError."""
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._save_error(step, e) from e

    def _newest(self) -> str:
        steps = [s for s in self.all_steps() if s != self._pending]
        return str(steps[-1]) if steps else "none"

    def _save_error(self, step: int, exc: BaseException) -> RunError:
        log.error("writing checkpoint %s failed", step, exc_info=exc)
        try:
            older = [s for s in self.all_steps() if s < int(step)]
        except Exception:  # noqa: BLE001 - the directory itself may be unreachable
            older = []
        kept = f"older checkpoints are intact (newest: {older[-1]})" if older else "none older"
        return RunError(
            f"could not write checkpoint {step} in {self.directory}: {short_cause(exc)}; "
            f"{kept}. Fix the cause and run the same command again to resume"
        )

    # --- restoring ------------------------------------------------------------------------

    def read_config(self, step: int) -> dict | None:
        """The config saved with ``step`` (None if it has none); CorruptCheckpoint if unreadable."""
        if not os.path.isdir(os.path.join(self.step_dir(step), "config")):
            return None
        return self._read_json(step, "config")

    def _read_json(self, step: int, item: str):
        try:
            out = self.manager.restore(int(step), args=ocp.args.Composite(**{
                item: ocp.args.JsonRestore()
            }))  # fmt: skip
        except Exception as e:  # noqa: BLE001
            if _is_environmental(e):
                raise RunError(f"could not read checkpoint {step}: {short_cause(e)}") from e
            raise CorruptCheckpoint(step, f"{item} unreadable ({short_cause(e)})") from e
        return out[item]

    def state_metadata(self, step: int):
        """The array metadata tree (shapes, dtypes) of ``step``'s state, read without its
        arrays; CorruptCheckpoint if it is missing or unreadable."""
        path = epath.Path(self.step_dir(step)) / "state"
        try:
            meta = ocp.StandardCheckpointHandler().metadata(path)
        except Exception as e:  # noqa: BLE001 - missing or truncated metadata files
            raise CorruptCheckpoint(step, f"metadata unreadable ({short_cause(e)})") from e
        meta = getattr(meta, "tree", meta)
        if meta is None:
            raise CorruptCheckpoint(step, "metadata missing")
        return meta

    def check_shapes(self, step: int, abstract_state) -> None:
        """IncompatibleCheckpoint unless ``step`` holds exactly the arrays of the target."""
        saved = _shapes(self.state_metadata(step))
        wanted = _shapes(flax.serialization.to_state_dict(abstract_state))
        problems = [f"{k} missing" for k in wanted if k not in saved]
        problems += [f"{k} unexpected" for k in saved if k not in wanted]
        problems += [
            f"{k} saved as {saved[k][1]}{list(saved[k][0])}, needed {wanted[k][1]}"
            f"{list(wanted[k][0])}"
            for k in wanted
            if k in saved and saved[k] != wanted[k]
        ]
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise IncompatibleCheckpoint(
                f"checkpoint {step} in {self.directory} does not fit the current config: "
                f"{'; '.join(problems[:3])}{more}"
            )

    def restore(self, step: int, abstract_state, data_iter=None) -> tuple[Any, dict | None]:
        """``(state, loop window or None)`` of ``step``, placed like ``abstract_state``.

        Raises IncompatibleCheckpoint (shapes differ; nothing was read), CorruptCheckpoint
        (a read or fingerprint failed), or RunError (memory, permissions). ``data_iter`` is
        restored last, only after the state verified.
        """
        self.check_shapes(step, abstract_state)
        target = flax.serialization.to_state_dict(abstract_state)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
        try:
            restored = self.manager.restore(int(step), args=args)["state"]
        except Exception as e:  # noqa: BLE001
            if _is_environmental(e):
                raise RunError(f"could not read checkpoint {step}: {short_cause(e)}") from e
            log.info("restoring checkpoint %s failed", step, exc_info=e)
            raise CorruptCheckpoint(step, f"arrays unreadable ({short_cause(e)})") from e
        self._verify(step, restored)
        loop_window = None
        if os.path.isdir(os.path.join(self.step_dir(step), "loop")):
            loop_window = self._read_json(step, "loop")
        if data_iter is not None:
            _, restore_cls = _grain_args()
            try:
                self.manager.restore(
                    int(step), args=ocp.args.Composite(data=restore_cls(data_iter))
                )
            except Exception as e:  # noqa: BLE001
                raise CorruptCheckpoint(step, f"data position unreadable ({short_cause(e)})") from e
        return flax.serialization.from_state_dict(abstract_state, restored), loop_window

    def _verify(self, step: int, state_dict) -> None:
        if not os.path.isdir(os.path.join(self.step_dir(step), "integrity")):
            raise CorruptCheckpoint(step, "its integrity fingerprints are missing")
        saved = self._read_json(step, "integrity")
        arrays = saved.get("arrays", {}) if isinstance(saved, dict) else {}
        prints, _ = fingerprints(state_dict)
        wrong = [k for k, v in prints.items() if arrays.get(k) != v]
        if wrong:
            more = f" (+{len(wrong) - 2} more)" if len(wrong) > 2 else ""
            raise CorruptCheckpoint(
                step, f"checksum mismatch in {len(wrong)} arrays: {', '.join(wrong[:2])}{more}"
            )

    def set_aside(self, step: int, suffix: str) -> str | None:
        """Renames ``<step>`` to ``<step><suffix>`` (a free name; nothing is deleted)."""
        dst = None
        if jax.process_index() == 0:
            src = self.step_dir(step)
            dst = f"{src}{suffix}"
            n = 1
            while os.path.exists(dst):
                n += 1
                dst = f"{src}{suffix}{n}"
            os.rename(src, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jaxdiff_set_aside_{step}")
        self.manager.reload()
        return os.path.basename(dst) if dst else None

    def close(self):
        """Waits for a background save (its failure raises RunError) and closes."""
        try:
            self.wait()
        finally:
            self.manager.close()


def _shapes(tree) -> dict[str, tuple[tuple, str]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in flat:
        shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
        dtype = getattr(leaf, "dtype", None)
        out[path_str(path)] = (shape, str(np.dtype(dtype)) if dtype else "?")
    return out


def warn(message: str) -> None:
    """A short warning on the console (process 0) and in the log."""
    log.warning(message)
    if jax.process_index() == 0:
        print(f"WARNING: {message}", flush=True)


def abstract_with_shardings(abstract_state, shardings):
    """ShapeDtypeStructs carrying the shardings a restore should place arrays with."""
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )


def load_params(path: str):
    """Params (and EMA if present) from another run's work dir or checkpoint dir.

    Accepts a work dir (uses its latest checkpoint), a ``checkpoints`` dir, one step dir, or
    a directory written by ``python -m jaxdiff.models.convert`` (params only).
    Returns the restored ``state`` dict as saved (numpy arrays).
    """
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, "model.json")):  # a converted official DiT
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
