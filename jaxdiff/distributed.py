"""Joining a multi-host job (TPU pods, SLURM, Kubernetes) through ``jax.distributed``."""

from __future__ import annotations

import os

import jax

# Environment variables by which cluster launchers announce a multi-process job.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def init_distributed(coordinator_address=None, num_processes=None, process_id=None) -> None:
    """``jax.distributed.initialize`` when flags or the environment describe a multi-host job.

    Explicit ``coordinator_address`` (host:port of process 0) wins; otherwise SLURM with more
    than one task, or a TPU/cluster environment, lets JAX discover the job itself. A single
    process does nothing.
    """
    if coordinator_address:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if slurm or any(os.environ.get(v) for v in _CLUSTER_ENV):
        jax.distributed.initialize()
