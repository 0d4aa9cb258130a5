"""The loop: kill + resume logs like an uninterrupted run, a non-finite loss halts naming the
step and never saves a bad state, skip keeps the state bitwise, a work-dir lock, SIGTERM saves a
restorable checkpoint (the real CLI), a quiet console, outputs named by settings."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tiny_config import REPO, poison_batch, tiny, tiny_run_config

from jaxdiff.errors import RunError
from jaxdiff.training import checkpoint, experiment, loop, runner

DEV = jax.devices()[:1]


def strict_rows(workdir):
    """metrics.jsonl rows, failing on NaN / Infinity (not JSON)."""

    def refuse(name):
        raise AssertionError(f"metrics.jsonl holds {name}")

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line, parse_constant=refuse) for line in f]


def _restore(workdir, step, c):
    exp = experiment.build_experiment(c, devices=DEV)
    abstract = checkpoint.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    state, _ = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore(step, abstract)
    return jax.device_get(state)


WINDOWED = dict(total_steps=16, log_every_steps=4, checkpoint_every_steps=3)

KILLED_AT_STEP_11 = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import jax
from configs import digits
from jaxdiff.training import loop
c = digits.get_config("tiny")
c.sample_every_steps = 0
c.total_steps, c.log_every_steps, c.checkpoint_every_steps = 16, 4, 3
real, calls = loop.global_batch, [0]
def batch(local, mesh):  # SIGKILL while fetching the 11th batch
    calls[0] += 1
    if calls[0] == 11:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(local, mesh)
loop.global_batch = batch
loop.train(c, {workdir!r}, devices=jax.devices()[:1])
"""


@pytest.mark.slow
def test_kill_and_resume_logs_exactly_the_uninterrupted_rows(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    loop.train(tiny(**WINDOWED), straight, devices=DEV)
    code = KILLED_AT_STEP_11.format(repo=REPO, workdir=killed)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    before = [row["step"] for row in strict_rows(killed)]
    assert before == [4, 8]  # the row of step 8 was written; checkpoint 9 may not be
    out = loop.train(tiny(**WINDOWED), killed, devices=DEV)
    assert out["step"] == 16
    a, b = strict_rows(straight), strict_rows(killed)
    assert [row["step"] for row in b] == [4, 8, 12, 16]  # each step once
    walls = [row.pop("train/wall_s") for row in b]
    assert all(w > 0 for w in walls) and walls == sorted(walls)  # carried over the resume
    for row in a:
        row.pop("train/wall_s")  # (seconds differ between runs)
    assert [sorted(row) for row in a] == [sorted(row) for row in b]
    for x, y in zip(a, b, strict=True):  # every value: window 5..8 continued from the checkpoint
        # (on another CPU, XLA:CPU gave the last window a 2-ulp difference; a wrong window or a
        # step replayed or lost moves these values by 1e-3 or more)
        np.testing.assert_allclose([x[k] for k in sorted(x)], [y[k] for k in sorted(x)], rtol=1e-6)
    assert not [n for n in os.listdir(os.path.join(killed, "checkpoints")) if "tmp" in n]


@pytest.mark.slow
def test_divergence_never_saves_a_nonfinite_checkpoint(tmp_path):
    wd = str(tmp_path / "run")
    c = tiny(total_steps=6, checkpoint_every_steps=1, **{"optim.lr": 1e38})
    with pytest.raises(loop.NonFiniteLossError, match=r"at step \d+ .*λ range was \[-?\d") as e:
        loop.train(c, wd, devices=DEV)
    assert isinstance(e.value, RunError)  # main.py prints it as one line, exit status 1
    text = str(e.value)
    bad = int(text.split("at step ")[1].split(" ")[0])
    assert "on_nonfinite=skip" in text and "\n" not in text
    steps = checkpoint.Checkpointer(os.path.join(wd, "checkpoints")).all_steps()
    assert steps and max(steps) == bad - 1  # saved up to the step before the bad one
    for step in steps:  # huge perhaps, but finite
        state = _restore(wd, step, c)
        leaves = jax.tree_util.tree_leaves((state.params, state.ema, state.opt_state))
        assert all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.inexact))


@pytest.mark.slow
def test_skip_keeps_params_ema_and_optimizer_bitwise(tmp_path, monkeypatch):
    wd = str(tmp_path / "run")
    c = tiny(total_steps=3, checkpoint_every_steps=1, on_nonfinite="skip")
    poison_batch(monkeypatch, 2)
    assert loop.train(c, wd, devices=DEV)["step"] == 3
    s1, s2, s3 = (_restore(wd, s, c) for s in (1, 2, 3))
    assert int(s2.step) == 2
    for field in ("params", "ema", "opt_state", "sampler_state"):
        a, b = (
            jax.tree_util.tree_leaves(getattr(s1, field)),
            jax.tree_util.tree_leaves(getattr(s2, field)),
        )
        assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b, strict=True))
    moved = jax.tree_util.tree_leaves(s3.params)  # the next good step updates again
    assert all(np.all(np.isfinite(x)) for x in moved)
    assert not all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(s2.params), moved, strict=True)
    )
    row = {r["step"]: r for r in strict_rows(wd)}[2]
    assert row["train/loss"] is None and row["train/nonfinite_steps"] == 1


@pytest.mark.slow
def test_lock_quiet_console_and_sigterm_resume_hint(tmp_path, capsys):
    wd = str(tmp_path / "run")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    cmd = [
        sys.executable, "-m", "jaxdiff.main", "--config=configs/digits.py:tiny",
        f"--workdir={wd}", "--config.total_steps=1000000",
        "--config.checkpoint_every_steps=1000000", "--config.sample_every_steps=0",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = os.path.join(wd, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
        time.sleep(0.5)
    try:
        with pytest.raises(RunError, match=rf"in use by another trainer \(pid {proc.pid} on host"):
            loop.train(tiny(), wd, devices=DEV)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "checkpoint saved at step" in out and "Run the same command again to resume" in out
    assert "Finished at step" not in out
    noise = [
        line for line in err.splitlines()
        if line.strip() and not line.lstrip("\r").startswith("train:")
    ]  # fmt: skip
    assert not noise, noise[:5]  # no INFO lines, no oneDNN notice, no λ-bin values
    log_text = open(os.path.join(wd, "train.log")).read()
    assert "Saving checkpoint" in log_text  # Orbax's INFO lines went to the file
    # One restorable checkpoint at the step reached; the lock died with the process: a new
    # trainer resumes from it at once.
    steps = checkpoint.Checkpointer(os.path.join(wd, "checkpoints")).all_steps()
    assert len(steps) == 1 and steps[0] >= 1
    c = tiny(total_steps=steps[0] + 1)
    assert int(_restore(wd, steps[0], c).step) == steps[0]
    assert loop.train(c, wd, devices=DEV)["step"] == steps[0] + 1
    assert f"Resuming from step {steps[0]}" in capsys.readouterr().out


@pytest.mark.slow
def test_sample_and_evaluate_outputs_are_named_by_settings(tiny_run_copy):
    wd = tiny_run_copy
    c = tiny_run_config()
    first = runner.sample(c, wd, num_samples=4)
    again = runner.sample(c, wd, num_samples=4)
    c.sampling.guidance_scale, c.sampling.steps = 1.5, 3
    other = runner.sample(c, wd, num_samples=4)
    names = [os.path.basename(p["png"]) for p in (first, again, other)]
    assert names == [
        "sample_0000004_ddim4_cfg1.png",
        "sample_0000004_ddim4_cfg1_2.png",
        "sample_0000004_ddim3_cfg1.5.png",
    ]
    assert all(os.path.exists(p["npz"]) for p in (first, again, other))
    runner.evaluate(c, wd, num_samples=8)
    row = strict_rows(wd)[-1]
    assert row["step"] == 4 and isinstance(row["eval/digits_fd"], float)
    assert row["settings"]["mode"] == "evaluate" and row["settings"]["tag"] == "ddim3_cfg1.5"
    assert row["settings"]["num_samples"] == 8 and row["settings"]["guidance_scale"] == 1.5


@pytest.mark.slow
def test_the_loop_reads_the_device_only_at_log_and_checkpoint_steps(tmp_path, monkeypatch):
    """12 steps, a row every 6, one checkpoint: two window reads (the old loop read every step)."""
    reads = []
    real = jax.device_get

    def counting(x):
        reads.append(1)
        return real(x)

    monkeypatch.setattr(jax, "device_get", counting)
    c = tiny(total_steps=12, log_every_steps=6, checkpoint_every_steps=12)
    assert loop.train(c, str(tmp_path / "run"), devices=DEV)["step"] == 12
    assert len(reads) == 2, len(reads)
