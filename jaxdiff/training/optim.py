"""Optimizers (AdamW, LAMB) with warm-up / decay learning-rate schedules and clipping."""

from __future__ import annotations

import optax

OPTIMIZERS = ("adamw", "lamb")
DECAYS = ("constant", "cosine", "linear")


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    """Linear warm-up over ``optim.warmup_steps`` then ``optim.decay`` to 0 at ``total_steps``."""
    lr = float(optim_config.lr)
    warmup = int(optim_config.get("warmup_steps", 0))
    decay = optim_config.get("decay", "constant")
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
    b1 = float(optim_config.get("b1", 0.9))
    b2 = float(optim_config.get("b2", 0.999))
    wd = float(optim_config.get("weight_decay", 0.0))
    if name == "adamw":
        opt = optax.adamw(
            schedule, b1=b1, b2=b2, eps=float(optim_config.get("eps", 1e-8)), weight_decay=wd
        )
    else:
        opt = optax.lamb(
            schedule, b1=b1, b2=b2, eps=float(optim_config.get("eps", 1e-6)), weight_decay=wd
        )
    clip = optim_config.get("grad_clip", 0.0)
    if clip and clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(float(clip)), opt)
    return opt
