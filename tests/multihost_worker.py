"""One process of the two-process test (run by tests/test_train_multihost.py, not by pytest).

usage: python tests/multihost_worker.py PORT PROCESS_ID WORKDIR TOTAL_STEPS
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main():
    port, pid, workdir, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    from jaxdiff.distributed import init_distributed

    init_distributed(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    from configs import digits
    from jaxdiff.training import loop

    c = digits.get_config("tiny")
    c.total_steps = total
    c.checkpoint_every_steps = total
    c.sample_every_steps = 0
    loop.train(c, workdir)
    print(f"process {pid} done", flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
