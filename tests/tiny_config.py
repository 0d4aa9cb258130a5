"""Shared by the training tests: the repository root on sys.path and the tiny digits config."""

import os
import sys

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
