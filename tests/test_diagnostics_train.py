"""Diagnostics of real digits checkpoints: a trained model has a lower ELBO than an untrained
one, and diagnose / diagnose_workdir write the JSON, PNG and TensorBoard outputs."""

import json
import math
import os
import sys

import numpy as np
import pytest

from jaxdiff import diagnostics as dg
from jaxdiff.data import load_digits
from jaxdiff.diagnostics.workdir import diagnose_workdir
from jaxdiff.errors import ConfigError
from jaxdiff.training import generate, loop
from jaxdiff.training.experiment import build_experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import digits  # noqa: E402

SETTINGS = dict(
    num_examples=128, num_bins=32, loss_examples=16, elbo_samples=8, grad_var_examples=4
)


def _config(steps):
    c = digits.get_config("tiny")
    c.total_steps = steps
    c.sample_every_steps = 0
    c.log_every_steps = steps
    c.checkpoint_every_steps = steps
    return c


def _check_outputs(result, workdir, step):
    path = os.path.join(workdir, "diagnostics", f"step_{step}.json")
    with open(path) as f:
        saved = json.load(f)
    assert set(saved) == set(dg.JSON_KEYS)
    assert saved["step"] == step
    assert saved["elbo_bpd"] == pytest.approx(result["elbo_bpd"])
    assert set(saved["elbo_terms"]) == {
        "prior", "prior_se", "reconstruction", "reconstruction_se", "diffusion",
        "diffusion_se", "total_se",
    }  # fmt: skip
    assert len(saved["loss_per_lambda"]) == 32 and len(saved["grad_var_per_lambda"]) == 32
    for row in saved["loss_per_lambda"]:
        assert set(row) == {"lam_lo", "lam_hi", "mse_eps", "mse_x0", "mse_v", "weighted"}
        assert all(math.isfinite(v) for v in row.values())
    for row in saved["grad_var_per_lambda"]:
        assert set(row) == {"lam_lo", "lam_hi", "grad_var"} and row["grad_var"] > 0
    assert saved["settings"]["decoder_used"] == "discrete"
    assert saved["settings"]["examples_used"] == 128
    assert os.path.getsize(os.path.join(workdir, "diagnostics", f"step_{step}.png")) > 1000


@pytest.mark.slow
def test_trained_checkpoint_has_lower_elbo(tmp_path):
    config = _config(100)
    untrained_dir = str(tmp_path / "untrained")
    exp = build_experiment(config)
    params = generate.sampling_params(exp.init_state())
    before = dg.diagnose(exp, params, untrained_dir, 0, settings=SETTINGS)
    _check_outputs(before, untrained_dir, 0)

    workdir = str(tmp_path / "trained")
    loop.train(config, workdir)
    after = diagnose_workdir(config, workdir, settings=SETTINGS)
    _check_outputs(after, workdir, 100)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))

    se = math.hypot(before["elbo_terms"]["total_se"], after["elbo_terms"]["total_se"])
    gap = before["elbo_nats_per_dim"] - after["elbo_nats_per_dim"]
    assert gap > 4 * se, (before["elbo_bpd"], after["elbo_bpd"], se)
    # The held-out training objective improves too (mean over the bins).
    mean_weighted = lambda r: np.mean([b["weighted"] for b in r["loss_per_lambda"]])  # noqa: E731
    assert mean_weighted(after) < mean_weighted(before)


def test_heldout_batch_is_a_fixed_test_subset():
    c = digits.get_config("tiny")
    s = dg.resolve_settings({"num_examples": 1000, "seed": 3})
    images, labels = dg.heldout_batch(c, s)
    assert images.shape == (270, 8, 8, 1) and labels.shape == (270,)  # the whole test split
    test_images, _ = load_digits(8, 1, "test")
    assert sorted(map(bytes, images)) == sorted(map(bytes, test_images))
    again, _ = dg.heldout_batch(c, s)
    np.testing.assert_array_equal(images, again)
    small, small_labels = dg.heldout_batch(c, dg.resolve_settings({"num_examples": 16}))
    assert small.shape[0] == 16 and set(small_labels) <= set(range(10))
    c.model.class_conditional = False
    _, null = dg.heldout_batch(c, dg.resolve_settings({"num_examples": 16}))
    assert (null == c.data.num_classes).all()


@pytest.mark.slow
def test_training_diagnoses_every_n_steps_and_diagnose_mode(tmp_path, capsys):
    """diagnose_every_steps writes diagnostics/step_<N>.json during training with its ELBO in
    metrics.jsonl; --mode=diagnose diagnoses the newest checkpoint of the work dir."""
    from jaxdiff import main

    workdir = str(tmp_path / "run")
    config = _config(4)
    config.diagnose_every_steps = 2
    config.diagnostics.update(SETTINGS)
    # training never imports diagnostics: the periodic diagnosis is the caller's hook
    with pytest.raises(ConfigError, match="diagnostics hook") as err:
        loop.train(config, workdir)
    assert err.value.field == "diagnose_every_steps"
    loop.train(config, workdir, diagnose=dg.training_hook)
    for step in (2, 4):
        assert os.path.exists(os.path.join(workdir, "diagnostics", f"step_{step}.json"))
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    diag = [r for r in rows if "diagnostics/elbo_bpd" in r]
    assert [r["step"] for r in diag] == [2, 4]
    assert all(math.isfinite(r["diagnostics/elbo_bpd"]) for r in diag)

    settings = ",".join(f"--config.diagnostics.{k}={v}" for k, v in SETTINGS.items()).split(",")
    argv = ["jaxdiff.main", f"--config={REPO}/configs/digits.py:tiny", f"--workdir={workdir}",
            "--mode=diagnose", "--config.diagnostics.seed=1", *settings]  # fmt: skip
    assert main.cli(argv) == 0
    out = capsys.readouterr().out
    assert '"elbo_bpd"' in out
    # the diagnosis made during training is kept; the new one goes next to it
    new = os.path.join(workdir, "diagnostics", "step_4_1.json")
    assert f"Diagnostics: {new}" in out
    with open(os.path.join(workdir, "diagnostics", "step_4.json")) as f:
        assert json.load(f)["settings"]["seed"] == 0
    with open(new) as f:
        assert json.load(f)["settings"]["seed"] == 1
    assert os.path.exists(os.path.join(workdir, "diagnostics", "step_4_1.png"))
