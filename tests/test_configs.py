"""Every shipped config loads, validates and carries its paper's hyperparameters."""

import glob
import importlib.util
import json
import os
import re

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxdiff import noise
from jaxdiff.training import config as config_lib
from jaxdiff.training import generate, loop, outputs
from jaxdiff.training.validate import validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))


def load(path, arg=None):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def test_configs_exist():
    names = {os.path.basename(p) for p in CONFIGS}
    expected = {"digits.py", "cifar10.py", "imagenet64_rin.py", "imagenet64_dit.py",
                "imagenet128_rin.py", "imagenet256_rin.py",
                "imagenet256_latent_dit.py"}  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("variant", [None, "tiny"])
def test_config_validates(path, variant):
    c = load(path, variant)
    validate_config(c, num_devices=8)
    for field in (
        "seed",
        "total_steps",
        "log_every_steps",
        "checkpoint_every_steps",
        "sample_every_steps",
    ):
        assert field in c
    assert {"name", "image_size", "batch_size"} <= set(c.data)
    assert {"schedule", "schedule_params", "input_scale", "target", "weighting",
            "weighting_params", "weight_mode", "timesteps"} <= set(c.noise)  # fmt: skip
    if variant == "tiny":
        assert c.total_steps <= 10 and c.data.batch_size <= 16


def test_paper_hyperparameters():
    rin64 = load(os.path.join(REPO, "configs", "imagenet64_rin.py"))
    assert (rin64.noise.schedule, rin64.noise.input_scale, rin64.noise.target) == (
        "linear",
        1.0,
        "eps",
    )
    assert (rin64.optim.name, rin64.optim.lr, rin64.data.batch_size) == ("lamb", 2e-3, 1024)
    assert rin64.train.self_cond_rate == 0.9 and tuple(rin64.ema.decays) == (0.9999,)
    assert (rin64.sampling.method, rin64.sampling.schedule) == ("ddpm", "cosine")
    hang = load(os.path.join(REPO, "configs", "imagenet256_latent_dit.py"))
    assert (
        hang.model.name == "DiT-B/2" and hang.total_steps == 500_000 and hang.data.batch_size == 256
    )
    assert hang.noise.schedule == "laplace" and hang.noise.schedule_params.b == 0.5
    cifar = load(os.path.join(REPO, "configs", "cifar10.py"))
    assert (cifar.noise.schedule_params.start, cifar.noise.schedule_params.end) == (-3.0, 3.0)
    assert cifar.noise.schedule_params.tau == 0.9 and cifar.optim.lr == 3e-3


def test_variants_and_overrides():
    c = load(
        os.path.join(REPO, "configs", "imagenet64_dit.py"),
        "model=DiT-L/4,schedule=laplace,scale=0.7",
    )
    assert (c.model.name, c.noise.schedule, c.noise.input_scale) == ("DiT-L/4", "laplace", 0.7)
    d = load(os.path.join(REPO, "configs", "digits.py"), "size=32")
    assert d.data.image_size == 32
    # digits' patch variant (16 tokens at every size for Chen's grid) keeps the other widths
    d = load(os.path.join(REPO, "configs", "digits.py"), "size=64,patch=16")
    assert dict(d.model.overrides) == dict(depth=6, hidden_size=192, num_heads=6, patch_size=16)
    d = load(os.path.join(REPO, "configs", "digits.py"), "model=DiT-S/2,patch=4")
    assert dict(d.model.overrides) == dict(patch_size=4)
    # the example: every key applies (it used to train cosine at scale 1.0)
    d = load(os.path.join(REPO, "configs", "digits.py"), "tiny,schedule=laplace,scale=0.5")
    assert (d.noise.schedule, d.noise.input_scale, d.total_steps) == ("laplace", 0.5, 6)
    # Schedule parameters are typed placeholders, overridable by name.
    d.noise.schedule_params.b = 0.75
    assert config_lib.noise_config(d)["schedule_params"] == {"b": 0.75}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar10.py", "imagenet64_rin.py"])
def test_tiny_rin_configs_train_on_mock_data(tmp_path, name):
    """The RIN path (latent self-conditioning in the jitted step) trains end to end, and the
    grid drawn during training is the checkpoint's EMA weights sampled again (RIN's latent
    carry, with guidance one per branch, through training, checkpoint and inference)."""
    c = load(os.path.join(REPO, "configs", name), "tiny")
    c.total_steps = 2
    c.sample_every_steps = 2
    if c.model.class_conditional:  # RIN sampling with guidance: one latent state per branch
        c.sampling.guidance_scale = 2.0
    wd, devices = str(tmp_path / "run"), jax.devices()[:2]
    with tfds.testing.mock_data(num_examples=32):
        out = loop.train(c, wd, devices=devices)
    assert out["step"] == 2
    rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["train/loss"]) and r["train/loss"] > 0 for r in rows)
    grid = np.asarray(Image.open(os.path.join(out["samples"], "step_0000002.png")))
    exp, state, step = outputs.restore_for_inference(c, wd, devices=devices)
    key = jax.random.fold_in(jax.random.key(c.seed), 0x5A4D ^ 2)
    images, _ = generate.sample_many(exp, generate.sampling_params(state), key, c.sampling.num_grid)
    again = np.asarray(Image.open(generate.save_grid(images, str(tmp_path / "again.png"))))
    assert step == 2 and grid.shape == again.shape and grid.std() > 1
    np.testing.assert_allclose(grid.astype(int), again.astype(int), atol=1)


# Every common variant key, a value, and where it must land in the resolved config.
VARIANT_VALUES = {
    "model": ("DiT-S/4", lambda c: (c.model.name, dict(c.model.overrides)) == ("DiT-S/4", {})),
    "schedule": ("laplace", lambda c: c.noise.schedule == "laplace"
                 and config_lib.noise_config(c)["schedule_params"] == {}),
    "scale": ("0.35", lambda c: c.noise.input_scale == 0.35),
    "target": ("x0", lambda c: c.noise.target == "x0"),
    "weighting": ("min_snr", lambda c: c.noise.weighting == "min_snr"),
    "steps": ("123", lambda c: c.total_steps == 123),
    "batch": ("24", lambda c: c.data.batch_size == 24),
    "size": ("48", lambda c: c.data.image_size == 48),
}  # fmt: skip


def test_every_common_key_is_covered():
    assert set(VARIANT_VALUES) | {"tiny"} == set(config_lib.COMMON_VARIANTS)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("key", sorted(VARIANT_VALUES))
@pytest.mark.parametrize("tiny", [False, True])
def test_variant_key_lands_in_the_resolved_config(path, key, tiny):
    value, check = VARIANT_VALUES[key]
    c = load(path, f"tiny,{key}={value}" if tiny else f"{key}={value}")
    assert check(c), (key, value)
    if tiny:
        small = load(path, "tiny")
        assert c.data.batch_size <= 24 and (key == "steps" or c.total_steps == small.total_steps)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("bad", ["tyni", "shedule=laplace", "scale=-1", "steps=many", "size="])
def test_misspelt_or_bad_variant_is_refused(path, bad):
    with pytest.raises(ValueError, match="variant"):
        load(path, bad)


def test_dit_official_extra_variants():
    path = os.path.join(REPO, "configs", "dit_official.py")
    c = load(path, "512,cfg=4.0,all_channels,sample_steps=100,steps=7")
    assert (c.data.image_size, c.sampling.guidance_scale, c.sampling.steps) == (64, 4.0, 100)
    assert c.sampling.guidance_channels is None and c.total_steps == 7
    with pytest.raises(ValueError, match="variant"):  # not a key of the other configs
        load(os.path.join(REPO, "configs", "digits.py"), "cfg=2")


def _allowed(error: str) -> list[str]:
    """The names after "allowed: [...]" in a registry's unknown-parameter error."""
    if "allowed:" not in error:  # a registry entry without parameters
        return []
    return re.findall(r"'([a-z_0-9<>]+)'", error.split("allowed:")[-1])


def test_locked_config_has_a_placeholder_for_every_registered_parameter():
    """Every schedule, weighting, timestep sampler and learned weighting parameter can be set
    on the locked config (--config.noise.<x>_params.<name>=...)."""
    c = config_lib.base_config()
    cosine = noise.get_schedule("cosine")
    # (schedules other test modules register for themselves, named test_*, are not built in)
    for name in [n for n in noise.list_schedules() if not n.startswith("test_")]:
        with pytest.raises(ValueError) as err:
            noise.get_schedule(name, zzz=1.0)
        assert set(_allowed(str(err.value))) <= set(c.noise.schedule_params), name
    for name in noise.list_weightings():
        with pytest.raises(ValueError) as err:
            noise.get_weighting(name, zzz=1.0)
        assert set(_allowed(str(err.value))) <= set(c.noise.weighting_params), name
    for name in noise.list_timestep_samplers():
        with pytest.raises(ValueError) as err:
            noise.get_timestep_sampler(name, cosine, zzz=1.0)
        allowed = set(_allowed(str(err.value))) - {"proposal_params", "proposal_<name>"}
        assert allowed <= set(c.noise.timesteps_params), name
    with pytest.raises(ValueError) as err:
        noise.learned_weighting.get_learned_weighting("uncertainty", zzz=1)
    assert set(_allowed(str(err.value))) <= set(c.noise.learned_weighting_params)
    # each sampler's name works on the locked config with its parameters unset
    for name in noise.list_timestep_samplers():
        d = load(os.path.join(REPO, "configs", "digits.py"), "tiny")
        d.lock()
        d.noise.timesteps = name
        if name == "importance":
            d.noise.timesteps_params.proposal = "laplace"
        validate_config(d, num_devices=1)


def test_guidance_without_label_dropout_is_rejected():
    """Guidance mixes in the null-class prediction, trained only by label dropout: with
    train.label_dropout = 0 (from scratch) it is a config error; unguided sampling, an
    unconditional model or dropout > 0 are fine."""
    from jaxdiff.errors import ConfigError

    def check(dropout, scale, conditional=True):
        c = load(os.path.join(REPO, "configs", "digits.py"), "tiny")
        c.train.label_dropout, c.sampling.guidance_scale = dropout, scale
        c.model.class_conditional = conditional
        validate_config(c, num_devices=1)

    for dropout, scale, conditional in [(0.0, 1.0, True), (0.1, 2.0, True), (0.0, 2.0, False)]:
        check(dropout, scale, conditional)
    with pytest.raises(ConfigError, match="train.label_dropout") as err:
        check(0.0, 1.5)
    assert err.value.field == "sampling.guidance_scale"
