"""One process of the two-process test (run by tests/test_train_multihost.py, not by pytest).

usage: python tests/multihost_worker.py PORT PROCESS_ID WORKDIR TOTAL_STEPS [SETUP]

SETUP "stateful": the adaptive timestep sampler (updated every 2 steps) and EDM2's learned
uncertainty weighting, whose states live in the train state.
"""

import os
import sys

if __name__ == "__main__":  # (the test imports `configure` from here, without these)
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


TINY_ADAPTIVE = dict(update_every=2, num_levels=8, num_selected=2, queue_size=3,
                     channels=(4, 8), hidden_width=16, hidden_depth=1, pool_size=2)  # fmt: skip


def configure(c, total: int, setup: str = "plain"):
    """The tiny digits config of the two-process test (shared with the one-process run)."""
    c.total_steps = total
    c.checkpoint_every_steps = total
    c.sample_every_steps = 0
    if setup == "stateful":
        c.noise.timesteps = "adaptive"
        for k, v in TINY_ADAPTIVE.items():
            c.noise.timesteps_params[k] = v
        c.noise.learned_weighting = "uncertainty"
    return c


def main():
    port, pid, workdir, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    setup = sys.argv[5] if len(sys.argv) > 5 else "plain"
    from jaxdiff.distributed import init_distributed

    init_distributed(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    from configs import digits
    from jaxdiff.training import loop

    loop.train(configure(digits.get_config("tiny"), total, setup), workdir)
    print(f"process {pid} done", flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
