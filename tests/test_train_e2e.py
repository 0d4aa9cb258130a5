"""End to end: the tiny digits config trains, checkpoints, samples and resumes exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tiny_config import REPO, tiny

from jaxdiff.training import loop


def losses(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "train/loss" in rec:
                out[rec["step"]] = rec["train/loss"]
    return [out[k] for k in sorted(out)]


def test_resume_equals_uninterrupted(tmp_path):
    n = 3
    straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
    loop.train(tiny(total_steps=2 * n, checkpoint_every_steps=100), straight)
    first = loop.train(tiny(total_steps=2 * n, checkpoint_every_steps=100), resumed, stop_at_step=n)
    assert first["step"] == n
    second = loop.train(tiny(total_steps=2 * n, checkpoint_every_steps=100), resumed)
    assert second["step"] == 2 * n
    a, b = losses(straight), losses(resumed)
    assert len(a) == 2 * n and len(b) == 2 * n
    assert a == b  # bit-exact: same params, RNG and data position after the restart
    assert all(np.isfinite(a))


def test_cli_trains_samples_and_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    cmd = [
        sys.executable,
        "-m",
        "jaxdiff.main",
        "--config=configs/digits.py:tiny",
        f"--workdir={workdir}",
    ]
    r = subprocess.run(
        cmd + ["--config.total_steps=4"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Checkpoints:" in r.stdout and "Samples:" in r.stdout
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "4"
    pngs = [f for f in os.listdir(os.path.join(workdir, "samples")) if f.endswith(".png")]
    assert pngs, "no sample grid written"
    # Second invocation resumes from step 4 and continues to 6.
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resuming from step 4" in r.stdout
    assert [json.loads(x)["step"] for x in open(os.path.join(workdir, "metrics.jsonl"))][-1] == 6
    # Sampling mode writes a grid and a uint8 .npz.
    r = subprocess.run(
        cmd + ["--mode=sample", "--num_samples=8"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    npz = [f for f in os.listdir(os.path.join(workdir, "samples")) if f.endswith(".npz")]
    assert npz
    data = np.load(os.path.join(workdir, "samples", npz[0]))
    assert data["images"].dtype == np.uint8 and data["images"].shape == (8, 8, 8, 1)


@pytest.mark.parametrize("schedule", ["laplace", "cauchy"])
def test_schedule_override_trains(tmp_path, schedule):
    c = tiny(total_steps=2)
    c.noise.schedule = schedule
    out = loop.train(c, str(tmp_path / schedule))
    assert out["step"] == 2 and np.isfinite(out["metrics"]["train/loss"])
