"""Command-line entry: ``python -m jaxdiff.main --config=configs/X.py[:variant] --workdir=DIR``.

``--mode=train`` (default, resumes from DIR), ``--mode=sample`` or ``--mode=evaluate``.
Multi-host runs (TPU pods, SLURM, Kubernetes) are joined through ``jax.distributed``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/X.py[:variant]).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Work directory (checkpoints, metrics, samples).")
flags.DEFINE_enum("mode", "train", ["train", "sample", "evaluate"], "What to run.")
flags.DEFINE_integer("num_samples", None, "sample/evaluate: number of samples.")
flags.DEFINE_string("fid_stats", None, "evaluate: reference statistics .npz (mu, sigma).")
flags.DEFINE_string("inception_weights", None, "evaluate: pytorch-fid Inception weights file.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from jaxdiff.distributed import init_distributed
    from jaxdiff.models.layers import FAST_CPU_XLA_FLAGS
    from jaxdiff.training import runner

    # XLA:CPU flags that speed up the DiT train step on CPUs (benchmarks/RESULTS.md). XLA
    # reads them when the backend starts, i.e. after this point; other backends ignore them.
    if "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{FAST_CPU_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()

    init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    runner.run(
        FLAGS.config,
        FLAGS.workdir,
        mode=FLAGS.mode,
        num_samples=FLAGS.num_samples,
        fid_stats=FLAGS.fid_stats,
        inception_weights=FLAGS.inception_weights,
    )


if __name__ == "__main__":
    app.run(main)
