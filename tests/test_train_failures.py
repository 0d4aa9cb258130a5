"""Failures: corrupt checkpoints fall back, SIGTERM checkpoints, NaN halts, bad configs."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tiny_config import REPO, digits, poison_batch, tiny

from jaxdiff.errors import RunError
from jaxdiff.training import checkpoint, experiment, loop


def _corrupt(step_dir):
    """Overwrite every file of the state item with garbage."""
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage")


def test_corrupt_latest_checkpoint_falls_back(tmp_path, capsys):
    wd = str(tmp_path / "run")
    loop.train(tiny(total_steps=4, checkpoint_every_steps=2), wd)
    ckdir = os.path.join(wd, "checkpoints")
    assert sorted(int(s) for s in os.listdir(ckdir) if s.isdigit()) == [2, 4]
    _corrupt(os.path.join(ckdir, "4"))
    exp = experiment.build_experiment(tiny())
    ck = checkpoint.Checkpointer(ckdir)
    abstract = checkpoint.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    state, step = ck.restore_latest(abstract)
    assert step == 2 and int(state.step) == 2
    assert "checkpoint 4 is corrupt" in capsys.readouterr().out
    assert sorted(os.listdir(ckdir)) == ["2", "4"]  # reading renames nothing
    # Training resumes from step 2 and finishes; the corrupt checkpoint is kept, set aside.
    out = loop.train(tiny(total_steps=4, checkpoint_every_steps=2), wd)
    assert out["step"] == 4
    assert sorted(os.listdir(ckdir)) == ["2", "4", "4.corrupt"]


def test_sigterm_leaves_a_restorable_checkpoint(tmp_path):
    wd = str(tmp_path / "run")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    cmd = [
        sys.executable, "-m", "jaxdiff.main", "--config=configs/digits.py:tiny",
        f"--workdir={wd}", "--config.total_steps=100000", "--config.checkpoint_every_steps=100000",
        "--config.sample_every_steps=0",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    metrics = os.path.join(wd, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "checkpoint saved" in out and "Run the same command again to resume" in out
    assert "Finished at step" not in out
    steps = [int(s) for s in os.listdir(os.path.join(wd, "checkpoints")) if s.isdigit()]
    assert len(steps) == 1 and steps[0] >= 1
    exp = experiment.build_experiment(tiny(total_steps=100000))
    ck = checkpoint.Checkpointer(os.path.join(wd, "checkpoints"))
    abstract = checkpoint.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    state, step = ck.restore_latest(abstract)
    assert int(state.step) == step == steps[0]


def test_nan_halts_naming_step_and_lambda_range(tmp_path, monkeypatch):
    poison_batch(monkeypatch, 2)
    with pytest.raises(loop.NonFiniteLossError, match=r"at step 2 .*λ range was \[-?\d") as e:
        loop.train(tiny(total_steps=4, checkpoint_every_steps=100), str(tmp_path / "run"))
    assert isinstance(e.value, RunError)  # main.py prints it as one line, exit status 1


def test_nan_skip_mode_keeps_params(tmp_path, monkeypatch):
    poison_batch(monkeypatch, 2)
    out = loop.train(tiny(total_steps=3, on_nonfinite="skip"), str(tmp_path / "run"))
    assert out["step"] == 3
    exp = experiment.build_experiment(tiny())
    ck = checkpoint.Checkpointer(os.path.join(str(tmp_path / "run"), "checkpoints"))
    state, _ = ck.restore_latest(
        checkpoint.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    )
    assert all(
        np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(jax.device_get(state.params))
    )


BAD_FIELDS = [
    ("noise.schedule", "nope", "noise.schedule"),
    ("noise.input_scale", -1.0, "noise.input_scale"),
    ("noise.target", "score", "noise.target"),
    ("noise.weighting", "magic", "noise.weighting"),
    ("model.name", "DiT-Q/3", "model"),
    ("data.image_size", 9, "patch"),
    ("data.batch_size", 15, "data.batch_size"),
    ("optim.name", "sgdx", "optim.name"),
    ("optim.lr", 0.0, "optim.lr"),
    ("on_nonfinite", "explode", "on_nonfinite"),
    ("ema.decays", (1.5,), "ema.decays"),
    ("mesh.shape", (3, 1), "mesh.shape"),
    ("train.compute_dtype", "float8", "train.compute_dtype"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS)
def test_invalid_config_field_names_the_field(field, value, message):
    c = digits.get_config("tiny")
    sec, _, name = field.rpartition(".")
    (c[sec] if sec else c)[name] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        experiment.build_experiment(c, devices=jax.devices()[:2])


def test_config_json_is_saved(tmp_path):
    wd = str(tmp_path / "run")
    loop.train(tiny(total_steps=1), wd)
    saved = json.load(open(os.path.join(wd, "config.json")))
    assert saved["model"]["name"] == "DiT-tiny/2" and saved["total_steps"] == 1
