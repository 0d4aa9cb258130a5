"""End to end: the tiny digits config trains, checkpoints, samples and resumes exactly."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from tiny_config import REPO, tiny_run_config

from jaxdiff import noise
from jaxdiff.training import loop

DEV = jax.devices()[:1]


def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def losses(workdir):
    out = {r["step"]: r["train/loss"] for r in rows(workdir) if "train/loss" in r}
    return [out[k] for k in sorted(out)]


@pytest.mark.slow
def test_resume_equals_uninterrupted(tiny_run, tmp_path):
    """Stopped at step 2 and resumed, a run logs the losses of the uninterrupted shared run."""
    resumed = str(tmp_path / "resumed")
    first = loop.train(tiny_run_config(), resumed, stop_at_step=2, devices=DEV)
    assert first["step"] == 2 and len(losses(resumed)) == 2
    second = loop.train(tiny_run_config(), resumed, devices=DEV)
    assert second["step"] == 4
    a, b = losses(tiny_run), losses(resumed)
    assert len(a) == 4 and len(set(a)) == 4  # a loss per step, each step a new one
    assert a == b  # bit-exact: same params, RNG and data position after the restart


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["laplace", "cauchy"])
def test_schedule_override_trains_on_its_lambdas(tiny_run, tmp_path, schedule):
    """The same seed draws the same t as the shared cosine run: each step's λ range is the
    overriding schedule's λ at the t where cosine's range ended, and the losses move."""
    c = tiny_run_config(total_steps=2)
    c.noise.schedule = schedule
    out = loop.train(c, str(tmp_path / schedule), devices=DEV)
    assert out["step"] == 2
    ref, got = rows(tiny_run)[:2], rows(str(tmp_path / schedule))
    scale = c.noise.input_scale
    cosine = noise.input_scaled(noise.get_schedule("cosine"), scale)
    new = noise.input_scaled(noise.get_schedule(schedule), scale)
    for r, g in zip(ref, got, strict=True):
        assert r["step"] == g["step"] and np.isfinite(g["train/loss"])
        assert abs(g["train/loss"] - r["train/loss"]) > 1e-4
        for k in ("train/lam_min", "train/lam_max"):
            want = float(new.logsnr(cosine.t_from_logsnr(np.float32(r[k]))))
            np.testing.assert_allclose(g[k], want, rtol=1e-4, atol=1e-3, err_msg=k)
