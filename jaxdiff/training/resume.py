"""Which checkpoint a run continues from, and whether the current config may continue it.

Before anything is restored, the config saved with the checkpoint is compared with the
current one. Fields that may change on resume are listed in :data:`RESUMABLE` (patterns:
``a.b`` exactly, ``a.*`` everything under ``a``); any other difference refuses the resume with
one line naming each field and both values, and nothing on disk is changed.
``resume_policy="allow_changes"`` resumes anyway (the arrays must still have the saved shapes).

Sampling and evaluation (:data:`INFERENCE_RESUMABLE`) also ignore training-only fields
(optimizer, train.*, seed, batch size, loss weighting).

A corrupt checkpoint (unreadable, or failing its fingerprints) is skipped for the newest one
that verifies; when training continues, the corrupt one is set aside as ``<step>.corrupt``
(renamed, kept). With ``restore_step=N`` training continues from checkpoint N and the newer
ones are set aside as ``<step>.superseded``. A run never starts from step 0 while any
checkpoint (or set-aside checkpoint) exists.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Callable
from typing import Any

from jaxdiff.errors import ConfigError, RunError
from jaxdiff.training.checkpoint import Checkpointer, CorruptCheckpoint, warn
from jaxdiff.training.config import base_config

RESUME_POLICIES = ("strict", "allow_changes")

# Fields a resumed training run may change: the length of the run, the learning-rate
# schedule, how often things happen, what is sampled and evaluated, how the work is laid out
# on the devices, and where the data is read from.
RESUMABLE = (
    "total_steps",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "keep_every_steps",
    "sample_every_steps",
    "eval_every_steps",
    "diagnose_every_steps",
    "ema.posthoc.every",
    "diagnostics.*",
    "stop_check_every_steps",
    "on_nonfinite",
    "profile",
    "init_from",
    "resume_policy",
    "restore_step",
    "optim.lr",
    "optim.warmup_steps",
    "optim.decay",
    "optim.grad_accum_steps",
    "sampling.*",
    "eval.*",
    "mesh.*",
    "data.data_dir",
    "data.worker_count",
    "data.num_threads",
)

# Sampling and evaluation read only the network and what its outputs mean.
INFERENCE_RESUMABLE = RESUMABLE + (
    "seed",
    "optim.*",
    "train.*",
    "ema.warmup",
    "data.batch_size",
    "data.random_flip",
    "data.center_crop",
    "noise.weighting",
    "noise.weighting_params.*",
    "noise.weight_mode",
)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: d}


def config_json(config) -> dict:
    """The config as plain JSON types (what is saved with each checkpoint)."""
    return json.loads(config.to_json_best_effort())


def _allowed(field: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(field, p) for p in patterns)


def config_changes(saved: dict, current: dict, patterns=RESUMABLE) -> list[tuple[str, Any, Any]]:
    """``[(field, saved value, current value)]`` for every difference not in ``patterns``.

    A field present on one side only (added to the code since) counts when its value differs
    from the default in :func:`base_config`.
    """
    a, b = flatten(saved), flatten(current)
    defaults = flatten(config_json(base_config()))
    missing = object()
    out = []
    for field in sorted(set(a) | set(b)):
        old, new = a.get(field, missing), b.get(field, missing)
        if old == new or _allowed(field, patterns):
            continue
        if old is missing or new is missing:
            present = new if old is missing else old
            if field in defaults and defaults[field] == present:
                continue
        out.append(
            (field, "(unset)" if old is missing else old, "(unset)" if new is missing else new)
        )
    return out


def _describe(changes) -> str:
    return ", ".join(f"{f}: {json.dumps(o)} -> {json.dumps(n)}" for f, o, n in changes)


def check_config(ckpt: Checkpointer, step: int, config, patterns=RESUMABLE) -> None:
    """RunError (one line) when checkpoint ``step`` was saved with an incompatible config."""
    policy = config.get("resume_policy", "strict")
    if policy not in RESUME_POLICIES:
        raise ConfigError("resume_policy", f"unknown {policy!r}", RESUME_POLICIES)
    saved = ckpt.read_config(step)
    if saved is None:
        return
    changes = config_changes(saved, config_json(config), patterns)
    if not changes:
        return
    if policy == "allow_changes":
        warn(
            f"resuming checkpoint {step} with changed settings (saved -> now): {_describe(changes)}"
        )
        return
    raise RunError(
        f"checkpoint {step} in {ckpt.directory} was saved with a different config "
        f"(saved -> now): {_describe(changes)}. Use the saved values, start a new --workdir, or "
        "pass --config.resume_policy=allow_changes to resume anyway"
    )


@dataclasses.dataclass
class Restored:
    state: Any
    step: int
    data_iter: Any
    loop_window: dict | None
    superseded: list = dataclasses.field(default_factory=list)


def _list(names) -> str:
    return ", ".join(str(n) for n in names)


def _no_checkpoint(ckpt: Checkpointer) -> None:
    """RunError if set-aside checkpoints exist although no restorable one does."""
    aside = ckpt.set_aside_names()
    if aside:
        raise RunError(
            f"no restorable checkpoint in {ckpt.directory}, only set-aside ones "
            f"({_list(aside)}); refusing to start over from step 0. To start over, use a new "
            "--workdir or move that checkpoints directory away; to use one, rename it back to "
            "its step number"
        )


def _candidates(ckpt: Checkpointer, config, steps: list[int]) -> tuple[list[int], list[int]]:
    """(steps to try, newest first; steps to set aside as superseded once one restores)."""
    wanted = int(config.get("restore_step", 0) or 0)
    if not wanted:
        return steps[::-1], []
    if wanted not in steps:
        raise RunError(
            f"restore_step={wanted}: no such checkpoint in {ckpt.directory}; "
            f"available: {_list(steps)}"
        )
    newer = [s for s in steps if s > wanted]
    if newer:
        try:
            again = (ckpt.read_config(newer[-1]) or {}).get("restore_step") == wanted
        except CorruptCheckpoint:
            again = False
        if again:  # a rerun of the command that already went back to ``wanted``
            print(
                f"restore_step={wanted} was applied before (checkpoints {_list(newer)} came "
                f"after it); resuming from the newest (to go back to {wanted} again, move the "
                f"newer ones out of {ckpt.directory})",
                flush=True,
            )
            return steps[::-1], []
    return [wanted], newer


def restore_for_training(
    ckpt: Checkpointer, config, abstract_state, make_data_iter: Callable[[], Any]
) -> Restored | None:
    """The checkpoint to continue from (None: there is none, start fresh).

    Tries the newest (or ``restore_step``) first; refuses (RunError, nothing changed) on an
    incompatible config, or when every candidate is corrupt. After a restore succeeds, the
    corrupt ones tried before it are set aside as ``.corrupt`` and, with ``restore_step``,
    the newer ones as ``.superseded``.
    """
    steps = ckpt.all_steps()
    if not steps:
        _no_checkpoint(ckpt)
        return None
    candidates, newer = _candidates(ckpt, config, steps)
    corrupt: list[CorruptCheckpoint] = []
    for step in candidates:
        try:
            check_config(ckpt, step, config)
            data_iter = make_data_iter()  # a fresh iterator for each attempt
            state, window = ckpt.restore(step, abstract_state, data_iter)
        except CorruptCheckpoint as e:
            corrupt.append(e)
            continue
        for e in corrupt:
            name = ckpt.set_aside(e.step, ".corrupt")
            warn(f"{e}; set aside as {name} in {ckpt.directory}")
        if corrupt:
            warn(f"resuming from checkpoint {step}, the newest that verifies")
        moved = [ckpt.set_aside(s, ".superseded") for s in newer]
        if moved:
            warn(f"restore_step={step}: newer checkpoints set aside as {_list(moved)}")
        return Restored(state, step, data_iter, window, moved)
    reasons = "; ".join(f"{e.step}: {e.reason}" for e in corrupt)
    raise RunError(
        f"every checkpoint tried in {ckpt.directory} is corrupt ({reasons}); nothing was "
        "changed. Restore one from a backup, or start over in a new --workdir"
    )


def restore_read_only(ckpt: Checkpointer, config, abstract_state) -> tuple[Any, int] | None:
    """``(state, step)`` for sampling / evaluation: like training, but nothing is renamed."""
    steps = ckpt.all_steps()
    if not steps:
        _no_checkpoint(ckpt)
        return None
    wanted = int(config.get("restore_step", 0) or 0)
    if wanted and wanted not in steps:
        raise RunError(
            f"restore_step={wanted}: no such checkpoint in {ckpt.directory}; "
            f"available: {_list(steps)}"
        )
    corrupt = []
    for step in [wanted] if wanted else steps[::-1]:
        try:
            check_config(ckpt, step, config, INFERENCE_RESUMABLE)
            state, _ = ckpt.restore(step, abstract_state)
        except CorruptCheckpoint as e:
            warn(f"{e} ({ckpt.directory}); trying the one before")
            corrupt.append(e)
            continue
        return state, step
    raise RunError(
        f"every checkpoint tried in {ckpt.directory} is corrupt "
        f"({'; '.join(f'{e.step}: {e.reason}' for e in corrupt)})"
    )
