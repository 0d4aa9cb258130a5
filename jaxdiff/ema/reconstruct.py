"""The EMA at any σ_rel (or classic decay) from a run's post-hoc EMA snapshots (EDM2).

:func:`reconstruct` solves EDM2's least squares over the power-function profiles of every
snapshot up to the target step (`jaxdiff.training.posthoc.solve_coefficients`) and sums the
snapshots with those coefficients in float64, one snapshot in memory at a time.
:func:`write_weights` writes the result where ``init_from`` and ``--mode=sample|evaluate``
(through ``init_from``) load weights: ``<out>/state`` (an Orbax tree ``{"params": ...}``,
what `jaxdiff.training.checkpoint.load_params` reads from a step directory) and
``<out>/posthoc.json`` (target, snapshots, coefficients, fit error, fingerprints).
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxdiff.errors import ConfigError
from jaxdiff.training import posthoc, snapshots
from jaxdiff.training.integrity import fingerprints

POSTHOC_DIR = "posthoc"


def out_name(std: float, step: int | None = None) -> str:
    """``std_0.070`` (the newest snapshot step) or ``std_0.070_step_2000``."""
    name = f"std_{std:.3f}"
    return name if step is None else f"{name}_step_{int(step)}"


def default_out(workdir: str, std: float, step: int | None = None) -> str:
    return os.path.join(os.path.abspath(workdir), POSTHOC_DIR, out_name(std, step))


def target_std(std: float | None, decay: float | None, step: int) -> float:
    """The σ_rel asked for: ``std``, or that of a classic EMA with ``decay`` at ``step``."""
    if (std is None) == (decay is None):
        raise ConfigError("--std", "give exactly one of --std and --decay")
    if decay is not None:
        if not 0.0 < decay < 1.0:
            raise ConfigError("--decay", f"got {decay}", "a value in (0, 1)")
        std = posthoc.decay_to_std(decay, step)
    if not 0.0 < std < posthoc.MAX_STD:
        raise ConfigError("--std", f"got {std:g}", f"a value in (0, {posthoc.MAX_STD:.4f})")
    return float(std)


def resolve_step(ckpt, step: int | None) -> int:
    """``step`` if it is a snapshot's step, the newest snapshot's if None."""
    steps = ckpt.all_steps()
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ConfigError("--step", f"no EMA snapshot at step {step}", steps)
    return int(step)


def fit_error(steps, gammas, target_step, target_gamma, x) -> float:
    """‖Σ x_i p_i − p_r‖ / ‖p_r‖ of the profiles (0: the target is reproduced exactly)."""
    t, g = np.asarray(steps, np.float64), np.asarray(gammas, np.float64)
    a = posthoc.profile_inner(t[:, None], g[:, None], t[None, :], g[None, :])
    b = posthoc.profile_inner(t, g, target_step, target_gamma)
    c = posthoc.profile_inner(target_step, target_gamma, target_step, target_gamma)
    return float(np.sqrt(max(x @ a @ x - 2.0 * x @ b + c, 0.0) / c))


def reconstruct(
    workdir: str, std: float | None = None, *, decay: float | None = None, step: int | None = None
) -> tuple[dict, dict]:
    """``(params, info)``: the EMA with σ_rel ``std`` (or the classic ``decay``) at snapshot
    ``step`` (default: the newest) as a NumPy tree, and what was used to make it."""
    ckpt = snapshots.open_snapshots(workdir)
    try:
        step = resolve_step(ckpt, step)
        std = target_std(std, decay, step)
        gamma = float(posthoc.std_to_gamma(std))
        used = [s for s in ckpt.all_steps() if s <= step]
        metas = [snapshots.read_meta(ckpt, s) for s in used]
        t = np.array([m["step"] for m in metas for _ in m["gamma"]], np.float64)
        g = np.array([x for m in metas for x in m["gamma"]], np.float64)
        x = posthoc.solve_coefficients(t, g, step, gamma)
        total, i = None, 0
        for s in used:
            for tree in snapshots.read_profiles(ckpt, s):
                coef = x[i]
                i += 1
                part = jax.tree_util.tree_map(lambda a, c=coef: c * a.astype(np.float64), tree)
                total = part if total is None else jax.tree_util.tree_map(np.add, total, part)
        dtypes = jax.tree_util.tree_map(lambda a: a.dtype, tree)
    finally:
        ckpt.close()
    params = jax.tree_util.tree_map(lambda a, d: a.astype(d), total, dtypes)
    info = {
        "std": std, "gamma": gamma, "step": step, "decay": decay,
        "snapshots": used, "snapshot_std": metas[-1]["std"],
        "coefficients": [float(v) for v in x],
        "fit_error": fit_error(t, g, step, gamma, x),
    }  # fmt: skip
    return params, info


def write_weights(out: str, params, info: dict) -> str:
    """Writes ``params`` (and ``info``) to ``out`` atomically: into a temporary directory
    renamed when complete; a previous ``out`` is replaced only after that."""
    out = os.path.abspath(out)
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(tmp, "state"), {"params": params})
        ckptr.wait_until_finished()
    prints, _ = fingerprints({"params": params})
    with open(os.path.join(tmp, "posthoc.json"), "w") as f:
        json.dump({**info, "fingerprints": prints}, f, indent=1)
    old = f"{out}.old-{os.getpid()}"
    if os.path.exists(out):
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
