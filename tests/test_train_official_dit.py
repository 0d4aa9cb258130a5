"""A converted official DiT checkpoint is fine-tuned by the trainer and sampled."""

import os
import sys

import jax
import numpy as np
import pytest

from jaxdiff.models import convert
from jaxdiff.training import checkpoint, experiment, loop, runner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import digits  # noqa: E402

# The torch extra (pytest without it skips this module).
torch = pytest.importorskip("torch")
official = pytest.importorskip("test_models_convert")


@pytest.mark.slow
def test_converted_official_dit_fine_tunes_and_samples(tmp_path, monkeypatch):
    # An official-format state dict (learned σ, 10 classes) for 8×8×1 digits.
    monkeypatch.setattr(official, "CH", 1)
    monkeypatch.setattr(official, "SIZE", 8)
    monkeypatch.setattr(official, "DEPTH", 1)
    pt = str(tmp_path / "dit.pt")
    torch.save(official.official_state_dict(), pt)
    out = str(tmp_path / "converted")
    assert convert.cli(["convert", "--dit", pt, "--out", out]) == 0
    model, variables = convert.load_converted(out)
    assert model.conditioning == "ddpm_linear" and model.learn_sigma

    c = digits.get_config("tiny")
    c.total_steps, c.sample_every_steps = 1, 0
    c.init_from = out
    c.optim.lr = 1e-12
    exp = experiment.build_experiment(c, devices=jax.devices()[:1])
    assert exp.model == model  # the architecture comes from the converted checkpoint
    wd = str(tmp_path / "run")
    loop.train(c, wd, devices=jax.devices()[:1])
    abstract = checkpoint.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    ck = checkpoint.Checkpointer(os.path.join(wd, "checkpoints"))
    state, _ = ck.restore(ck.all_steps()[-1], abstract)
    want = jax.tree_util.tree_leaves(variables["params"])
    got = jax.tree_util.tree_leaves(state.params)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    res = runner.sample(c, wd, num_samples=4)
    images = np.load(res["npz"])["images"]
    assert images.shape == (4, 8, 8, 1) and images.dtype == np.uint8
