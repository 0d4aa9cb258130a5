"""Process-level settings of the XLA backends: the one place that sets them.

XLA reads ``XLA_FLAGS`` when its backend starts, so :func:`configure_xla_for_cpu` must run
before the first JAX computation (``jaxdiff.main`` and every benchmark call it first). The
flags configure only XLA's CPU compiler: a GPU or TPU trace is not changed by them.
"""

from __future__ import annotations

import os

# XLA:CPU flags that (with `fast_grad` dense layers) bring a DiT train step on a CPU close to
# PyTorch's speed (benchmarks/RESULTS.md).
FAST_CPU_XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_dot "
    "--xla_cpu_enable_concurrency_optimized_scheduler=false"
)


def configure_xla_for_cpu(enable: bool = True) -> str:
    """Prepends :data:`FAST_CPU_XLA_FLAGS` to ``XLA_FLAGS`` (once; flags a user set later in
    the variable win) and returns the resulting value. ``enable=False`` leaves it unchanged."""
    current = os.environ.get("XLA_FLAGS", "")
    if enable and "xla_cpu_experimental_ynn_fusion_type" not in current:
        os.environ["XLA_FLAGS"] = f"{FAST_CPU_XLA_FLAGS} {current}".strip()
    return os.environ.get("XLA_FLAGS", "")
