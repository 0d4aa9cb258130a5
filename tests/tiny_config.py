"""Shared by the tests: the repository root on sys.path, the tiny digits config, the config of
the suite's shared trained work dir (tests/conftest.py's ``tiny_run``), test-model helpers."""

import os
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from configs import digits  # noqa: E402
from jaxdiff.training import loop  # noqa: E402


def tiny(**overrides):
    """``configs/digits.py:tiny`` without periodic sampling, with dotted-key overrides
    (``tiny(**{"optim.lr": 1e-2}, total_steps=4)``)."""
    c = digits.get_config("tiny")
    c.sample_every_steps = 0
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return c


def noise_fields(**fields):
    """The base config's ``noise`` section (every field, as ``make_noise_spec`` requires) as a
    plain dict, with ``fields`` changed."""
    from jaxdiff.training.config import base_config, noise_config

    return {**noise_config(base_config()), **fields}


def data_fields(**fields):
    """The base config's ``data`` section (every field, as the data layer requires) as a plain
    dict, with ``fields`` changed."""
    from jaxdiff.training.config import base_config

    return {**base_config().data.to_dict(), **fields}


def tiny_run_config(**overrides):
    """The config of the suite's shared trained work dir (the ``tiny_run`` fixture): 4 steps,
    checkpoints 2 and 4, a metrics row every step; resuming it needs the same config."""
    return tiny(**{"total_steps": 4, "checkpoint_every_steps": 2, **overrides})


@jax.jit
def perturbed(variables, scale=0.05, seed=7):
    """Noise of standard deviation ``scale`` on every parameter, so that zero-initialised
    layers (adaLN-Zero, RIN's self-conditioning LayerNorm) carry signal in the tests."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    )


# RIN widths small enough to run every registry entry quickly
RIN_TINY = dict(
    num_blocks=1,
    block_depth=1,
    num_latents=4,
    latent_dim=16,
    interface_dim=8,
    latent_heads=2,
    rw_heads=2,
)


def poison_batch(monkeypatch, bad_call: int) -> None:
    """Make the ``bad_call``-th global batch of ``loop.train`` all-NaN (the data iterator stays
    the real one)."""
    real = loop.global_batch
    calls = {"n": 0}

    def poisoned(local, mesh):
        calls["n"] += 1
        if calls["n"] == bad_call:
            local = dict(local, image=np.full_like(local["image"], np.nan))
        return real(local, mesh)

    monkeypatch.setattr(loop, "global_batch", poisoned)
