"""Two real processes joined by jax.distributed on localhost train like one with 8 devices."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxdiff.training import checkpoint, experiment, loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import digits  # noqa: E402
from tests.multihost_worker import configure  # noqa: E402

STEPS = 4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(workdir):
    recs = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r["train/loss"] for r in recs if "train/loss" in r]


def _config(setup="plain"):
    return configure(digits.get_config("tiny"), STEPS, setup)


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["plain", "stateful"])
def test_two_processes_match_one_process_with_8_devices(tmp_path, setup):
    """Losses, params and (for "stateful") the adaptive sampler's and the learned weighting's
    states of two processes × 4 devices equal one process with 8."""
    multi = str(tmp_path / "multi")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    worker = os.path.join(REPO, "tests", "multihost_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(port), str(i), multi, str(STEPS), setup],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-4000:]}"
        assert f"process {i} done" in out

    single = str(tmp_path / "single")
    assert jax.device_count() == 8
    loop.train(_config(setup), single, devices=jax.devices()[:8])
    a, b = _losses(multi), _losses(single)
    assert len(a) == len(b) == STEPS
    np.testing.assert_allclose(a, b, rtol=1e-5)

    # The checkpoint both processes wrote restores in this single process.
    exp = experiment.build_experiment(_config(setup), devices=jax.devices()[:8])
    ck = checkpoint.Checkpointer(os.path.join(multi, "checkpoints"))
    abstract = checkpoint.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    step = ck.all_steps()[-1]
    state, _ = ck.restore(step, abstract)
    assert step == STEPS and int(state.step) == STEPS
    ck2 = checkpoint.Checkpointer(os.path.join(single, "checkpoints"))
    ref, _ = ck2.restore(ck2.all_steps()[-1], abstract)
    trees = lambda s: (s.params, s.sampler_state, s.weighting_state)  # noqa: E731
    leaves = jax.tree_util.tree_leaves(trees(state))
    assert len(leaves) > len(jax.tree_util.tree_leaves(state.params)) or setup == "plain"
    for x, y in zip(leaves, jax.tree_util.tree_leaves(trees(ref)), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    if setup == "stateful":
        assert int(state.sampler_state["num_updates"]) == STEPS // 2
