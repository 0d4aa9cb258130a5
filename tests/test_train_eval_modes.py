"""`--mode=evaluate` (FID + digits metric) and the digits metric rising with training."""

import json
import os

import jax
import numpy as np
import pytest
from tiny_config import digits, tiny_run_config

from jaxdiff.evaluation import fid, inception, inception_convert
from jaxdiff.training import generate, loop, outputs, runner


@pytest.mark.slow
def test_evaluate_mode_logs_fid_and_digits_metric(tiny_run_copy, tmp_path):
    c, wd = tiny_run_config(), tiny_run_copy
    # Random Inception weights in the port's own format; reference stats from real digits.
    net = inception.FIDInceptionV3()
    params = net.init(jax.random.key(0), np.zeros((1, 75, 75, 3), np.float32))["params"]
    weights = str(tmp_path / "inception.npz")
    inception_convert.save_params(params, weights)
    from jaxdiff.data.digits import load_digits

    real, _ = load_digits(image_size=8, channels=1, split="test")
    real_u8 = np.clip(np.round((real[:16] + 1) * 127.5), 0, 255).astype(np.uint8)
    extractor = fid.load_inception(weights)
    st = fid.image_statistics(extractor, real_u8, batch_size=8)
    ref = str(tmp_path / "ref.npz")
    fid.save_stats(ref, st["mu"], st["sigma"])
    out = runner.evaluate(c, wd, num_samples=16, fid_stats=ref, inception_weights=weights)
    assert np.isfinite(out["eval/fid"]) and out["eval/fid"] > 0
    # The same 16 samples (the evaluate key, the checkpoint's EMA weights) through
    # fid.image_statistics give the same FID and Inception Score.
    exp, state, _ = outputs.restore_for_inference(c, wd)
    key = jax.random.fold_in(jax.random.key(c.seed), 0xF1D)
    u8, _ = generate.sample_many(exp, generate.sampling_params(state), key, 16, uint8=True)
    gen = fid.image_statistics(extractor, u8, batch_size=16)  # the runner's batch
    want = fid.frechet_distance(gen["mu"], gen["sigma"], st["mu"], st["sigma"])
    np.testing.assert_allclose(out["eval/fid"], want, rtol=1e-6)
    np.testing.assert_allclose(out["eval/inception_score"], gen["is_mean"], rtol=1e-6)
    assert np.isfinite(out["eval/digits_fd"]) and 0.0 <= out["eval/digits_accuracy"] <= 1.0
    last = json.loads(open(os.path.join(wd, "metrics.jsonl")).read().splitlines()[-1])
    assert last["step"] == 4 and last["eval/fid"] == out["eval/fid"]
    assert last["eval/digits_fd"] == out["eval/digits_fd"]


@pytest.mark.slow
def test_short_training_improves_digits_metric(tmp_path):
    c = digits.get_config("tiny")
    c.total_steps, c.sample_every_steps, c.eval_every_steps = 300, 0, 300
    c.checkpoint_every_steps, c.log_every_steps = 300, 50
    c.model.overrides = dict(depth=2, hidden_size=64, num_heads=2)
    c.optim.lr, c.ema.decays = 2e-3, (0.99,)
    c.sampling.steps, c.eval.quality_num_samples = 20, 200
    wd = str(tmp_path / "run")
    loop.train(c, wd, stop_at_step=1, devices=jax.devices()[:1])
    exp, state, _ = outputs.restore_for_inference(c, wd, devices=jax.devices()[:1])
    before = outputs.evaluate_quality(exp, state, wd)
    loop.train(c, wd, devices=jax.devices()[:1])
    recs = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
    after = [r for r in recs if "eval/digits_fd" in r][-1]
    assert after["step"] == 300
    assert after["eval/digits_fd"] < 0.5 * before["eval/digits_fd"], (before, after)


def test_sample_mode_uses_init_from_without_a_checkpoint(tiny_run, tmp_path):
    """An empty work dir with init_from samples another run's EMA weights, untouched."""
    c, src = tiny_run_config(), tiny_run
    exp, trained, _ = outputs.restore_for_inference(c, src, devices=jax.devices()[:2])
    c2 = digits.get_config("tiny")
    c2.init_from = src
    wd = str(tmp_path / "fresh")
    exp2, state, step = outputs.restore_for_inference(c2, wd, devices=jax.devices()[:2])
    assert step == 0 and isinstance(state, outputs.InferenceState)
    for a, b in zip(jax.tree_util.tree_leaves(state.ema[0]),
                    jax.tree_util.tree_leaves(trained.ema[0]), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    res = runner.sample(c2, wd, num_samples=4)
    assert np.load(res["npz"])["images"].shape == (4, c.data.image_size, c.data.image_size, 1)
    assert not os.path.exists(os.path.join(wd, "checkpoints", "0"))
    c3 = digits.get_config("tiny")  # neither a checkpoint nor init_from: a clear error
    with pytest.raises(ValueError, match="init_from"):
        outputs.restore_for_inference(c3, str(tmp_path / "empty"), devices=jax.devices()[:2])
