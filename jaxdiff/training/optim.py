"""Optimizers (AdamW, LAMB) with warm-up / decay learning-rate schedules and clipping."""

from __future__ import annotations

import optax

OPTIMIZERS = ("adamw", "lamb")
DECAYS = ("constant", "cosine", "linear")


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    """Linear warm-up over ``optim.warmup_steps`` then ``optim.decay`` to 0 at ``total_steps``.

    ``optim_config`` is the config's ``optim`` section, every field present (its defaults live
    in ``training.config.base_config`` only; a missing field is an error, not a fallback)."""
    lr = float(optim_config.lr)
    warmup = int(optim_config.warmup_steps)
    decay = optim_config.decay
    if decay not in DECAYS:
        raise ValueError(f"optim.decay: unknown {decay!r}; known: {list(DECAYS)}")
    decay_steps = max(int(total_steps) - warmup, 1)
    if decay == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps)
    elif decay == "linear":
        after = optax.linear_schedule(lr, 0.0, decay_steps)
    else:
        after = optax.constant_schedule(lr)
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(optim_config, total_steps: int) -> optax.GradientTransformation:
    """The optimizer named by ``optim.name`` with gradient clipping by global norm."""
    name = optim_config.name
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown {name!r}; known: {list(OPTIMIZERS)}")
    schedule = learning_rate_schedule(optim_config, total_steps)
    # every field comes from the config (defaults: training.config.base_config, nowhere else)
    b1, b2 = float(optim_config.b1), float(optim_config.b2)
    eps, wd = float(optim_config.eps), float(optim_config.weight_decay)
    make = optax.adamw if name == "adamw" else optax.lamb
    opt = make(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd)
    clip = optim_config.grad_clip
    if clip and clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(float(clip)), opt)
    return opt
