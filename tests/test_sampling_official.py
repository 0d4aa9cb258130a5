"""The official DiT sampling protocol: respaced 1000-step linear-β DDPM, learned-range
variance, CFG on the first channels, and sampling/evaluating a converted checkpoint.

The reference for the sampler is diffusers' ``DDPMScheduler`` (``variance_type=
"learned_range"`` on custom timesteps), an implementation we did not write, run step by step
with the same noise draws; the respacing is checked against its closed form.
"""

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.evaluation.precision_recall import precision_recall
from jaxdiff.models import conditioning, convert
from jaxdiff.sampling import (
    cfg_denoise_fn,
    guided_prediction,
    learned_range_variance,
    respaced_betas,
    respaced_logsnr,
    respaced_timesteps,
    sample,
    space_timesteps,
)
from jaxdiff.training import generate, outputs, runner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import dit_official  # noqa: E402
from jaxdiff.training.validate import validate_config  # noqa: E402


@pytest.fixture
def torch():
    """PyTorch, from the torch extra: a test that asks for it is skipped without it."""
    return pytest.importorskip("torch")


@pytest.fixture
def official(torch):
    """test_models_convert (official-format DiT weights; needs the torch extra)."""
    return pytest.importorskip("test_models_convert")


# ----------------------------------------------------------------------------- respacing


def test_even_respacing_is_the_rounded_linspace():
    # One section of 1000 steps keeping N: positions j·999/(N−1), rounded (no .5 ties here).
    for n in (250, 100, 50, 2):
        want = [round(j * 999 / (n - 1)) for j in range(n)]
        assert space_timesteps(1000, str(n)) == want
    # Positions are accumulated (as the official code does): for 27 steps, 13·999/26 = 499.5
    # is reached as 499.4999… and rounds to 499, where the closed form's round gives 500.
    assert space_timesteps(1000, "27")[13] == 499
    assert space_timesteps(1000, "1") == [0]
    assert space_timesteps(1000, "1000") == list(range(1000))
    np.testing.assert_array_equal(respaced_timesteps("250")[[0, 1, -2, -1]], [999, 995, 4, 0])


def test_sectioned_and_ddim_respacing():
    # "10,16,20" on 300 steps: sections [0,100), [100,200), [200,300).
    got = space_timesteps(300, "10,16,20")
    assert got[:10] == [round(j * 99 / 9) for j in range(10)]
    assert got[10:26] == [100 + round(j * 99 / 15) for j in range(16)]
    assert got[26:] == [200 + round(j * 99 / 19) for j in range(20)]
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    # 1001 steps do not split evenly: the first section is one step longer.
    assert space_timesteps(1001, "2,2") == [0, 500, 501, 1000]
    for bad in ("ddim999", "0", "abc", "2000"):
        with pytest.raises(ValueError, match="section_counts"):
            space_timesteps(1000, bad)


def test_respaced_grid_matches_discrete_alphas():
    """β of the respaced process from ᾱ (float64 closed form) vs the λ grid."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    kept = space_timesteps(1000, "25")
    lam = respaced_logsnr("25")  # sampling order: noisiest first
    np.testing.assert_allclose(lam, np.log(abar[kept] / (1 - abar[kept]))[::-1], rtol=1e-12)
    beta_r = respaced_betas("25")
    np.testing.assert_allclose(np.cumprod(1 - beta_r), abar[kept], rtol=1e-12)
    # The "large" variance of a step λ_k → λ_prev is that β: 1 − γ_k/γ_prev.
    gamma = 1 / (1 + np.exp(-lam))
    np.testing.assert_allclose(1 - gamma[:-1] / gamma[1:], beta_r[::-1][:-1], rtol=1e-9)
    # The official conditioning map returns the integer steps exactly (float32).
    t = np.asarray(conditioning.ddpm_timestep_from_logsnr(jnp.asarray(respaced_logsnr("250"))))
    np.testing.assert_array_equal(t, respaced_timesteps("250").astype(np.float32))


def test_learned_range_variance_endpoints_and_interpolation():
    lam, lam_next = jnp.float32(-1.3), jnp.float32(0.4)
    g, gn = jax.nn.sigmoid(lam), jax.nn.sigmoid(lam_next)
    large = 1 - g / gn
    small = (1 - gn) / (1 - g) * large
    v = jnp.asarray([-1.0, 1.0, 0.0, 0.5])
    got = np.asarray(learned_range_variance(v, lam, lam_next))
    want = [small, large, math.sqrt(small * large), small**0.25 * large**0.75]
    np.testing.assert_allclose(got, np.asarray(want, np.float64), rtol=1e-5)


# ----------------------------------------------------------------------------- parity


def _toy_numpy(x, t):
    """A deterministic 'network' (elementwise, any layout): ε and v ∈ [−1, 1] channels."""
    eps = 0.6 * np.sin(x + t / 300.0) + 0.1 * x
    v = np.cos(2.0 * x - t / 500.0)
    return eps, v


def _toy_jax(x, lam):
    t = conditioning.ddpm_timestep_from_logsnr(lam)[:, None, None, None]
    eps = 0.6 * jnp.sin(x + t / 300.0) + 0.1 * x
    v = jnp.cos(2.0 * x - t / 500.0)
    return jnp.concatenate([eps, v], axis=-1)


def _our_noise(key, shape, steps):
    """The draws ``sample`` makes (documented order): z_T, then one per ancestral step."""
    k_init, k_steps = jax.random.split(key)
    keys = jax.random.split(k_steps, steps)
    z = jax.random.normal(k_init, shape, jnp.float32)
    return np.asarray(z), [np.asarray(jax.random.normal(k, shape, jnp.float32)) for k in keys]


@pytest.mark.parametrize("section_counts", ["25", "250"])
def test_learned_variance_ddpm_matches_diffusers_scheduler(section_counts, monkeypatch, torch):
    DDPMScheduler = pytest.importorskip("diffusers").DDPMScheduler
    scheduling_ddpm = pytest.importorskip("diffusers.schedulers.scheduling_ddpm")

    shape = (2, 4, 4, 3)
    key = jax.random.key(7)
    steps = len(space_timesteps(1000, section_counts))
    ours = sample(key, _toy_jax, shape, None, None, lams=respaced_logsnr(section_counts),
                  method="ddpm", target="eps", variance="learned")  # fmt: skip

    z, draws = _our_noise(key, shape, steps)
    sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        variance_type="learned_range",
        clip_sample=False,
        prediction_type="epsilon",
    )
    sched.set_timesteps(timesteps=[int(t) for t in respaced_timesteps(section_counts)])
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    queue = [nchw(d) for d in draws]
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda *a, **k: queue.pop(0))
    x = nchw(z).double()
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    sched.one = sched.one.double()
    for t in sched.timesteps:
        eps, v = _toy_numpy(x.numpy(), float(t))
        out = torch.from_numpy(np.concatenate([eps, v], axis=1))
        x = sched.step(out, t, x).prev_sample
    want = x.numpy().transpose(0, 2, 3, 1)
    assert len(queue) == 1  # steps − 1 draws used; the last step adds no noise
    np.testing.assert_allclose(np.asarray(ours), want, rtol=2e-4, atol=2e-4)


def test_sampler_evaluates_the_network_at_the_grid():
    """A recording denoiser sees exactly the grid's λ, in order, for every method."""
    grid = respaced_logsnr("10").astype(np.float32)
    heun = [grid[0]] + [g for g in grid[1:-1] for _ in range(2)] + [grid[-1], grid[-1]]
    for method, want in (("ddpm", grid), ("ddim", grid), ("heun", heun)):
        seen = []

        def record(x, lam, seen=seen):
            jax.debug.callback(lambda v: seen.append(float(v[0])), lam, ordered=True)
            return jnp.zeros_like(x)

        sample(jax.random.key(0), record, (1, 2, 2, 1), None, None, lams=grid, method=method)
        jax.effects_barrier()
        np.testing.assert_array_equal(np.asarray(seen, np.float32), np.asarray(want), method)
    with pytest.raises(ValueError, match="increasing"):
        sample(jax.random.key(0), record, (1, 2, 2, 1), None, None, lams=grid[::-1])
    with pytest.raises(ValueError, match="len"):
        sample(jax.random.key(0), record, (1, 2, 2, 1), None, 5, lams=grid)


def test_guidance_on_the_first_channels_only():
    rng = np.random.default_rng(0)
    cond, uncond = (jnp.asarray(rng.normal(size=(2, 3, 3, 8)), jnp.float32) for _ in range(2))
    lam = jnp.zeros(2)
    got = np.asarray(guided_prediction(cond, uncond, lam, 1.5, channels=3))
    # The official forward_with_cfg: guided ε on channels [0, 3), the rest conditional.
    want = np.asarray(cond).copy()
    want[..., :3] = np.asarray(uncond + 1.5 * (cond - uncond))[..., :3]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    both = np.asarray(guided_prediction(cond, uncond, lam, 1.5))
    np.testing.assert_allclose(both, np.asarray(uncond + 1.5 * (cond - uncond)), rtol=1e-6)
    model_fn = lambda x, lam, y: jnp.concatenate([x * (1 + y[:, None, None, None])] * 2, -1)
    x = jnp.ones((2, 2, 2, 4))
    out = cfg_denoise_fn(model_fn, jnp.asarray([1, 2]), 9, 2.0, channels=4)(x, jnp.zeros(2))
    # cond rows: x·(1+y); null rows: x·10; mean channels guided, variance channels cond.
    y = np.asarray([1, 2])[:, None, None, None]
    guided = np.broadcast_to(10 + 2.0 * ((1 + y) - 10.0), (2, 2, 2, 4))
    np.testing.assert_allclose(np.asarray(out[..., :4]), guided)
    np.testing.assert_allclose(np.asarray(out[..., 4:]), np.broadcast_to(1.0 + y, (2, 2, 2, 4)))
    with pytest.raises(ValueError, match="channels"):
        cfg_denoise_fn(model_fn, jnp.asarray([1]), 9, 2.0, channels=0)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture
def converted(tmp_path, monkeypatch, torch, official):
    """A tiny official-format DiT (learned σ, 4 latent channels, 8×8) converted to our format."""
    monkeypatch.setattr(official, "SIZE", 8)
    monkeypatch.setattr(official, "DEPTH", 1)
    pt = str(tmp_path / "dit.pt")
    torch.save(official.official_state_dict(seed=3), pt)
    out = str(tmp_path / "converted")
    assert convert.cli(["convert", "--dit", pt, "--out", out]) == 0
    return out


def test_official_config_samples_a_converted_checkpoint(converted, tmp_path, capsys):
    from jaxdiff.evaluation import fid, inception, inception_convert
    from jaxdiff.models import vae as vae_lib

    ae = vae_lib.vae_from_config(
        dict(block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4)
    )
    variables = ae.init(jax.random.key(1), np.zeros((1, 16, 16, 3), np.float32))
    vae_dir = str(vae_lib.save_vae(ae, variables, str(tmp_path / "vae")))

    c = dit_official.get_config("tiny")
    assert (c.sampling.schedule, c.sampling.variance, c.sampling.guidance_channels) == (
        "ddpm_linear",
        "learned",
        3,
    )
    c.init_from, c.data.vae = converted, vae_dir
    wd = str(tmp_path / "run")  # no training: the converted weights are sampled
    res = runner.sample(c, wd, num_samples=4)
    images = np.load(res["npz"])["images"]
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    assert os.path.exists(res["png"]) and images.std() > 0

    # The sampler run by the runner is the protocol: respaced grid + learned σ + CFG on 3
    # channels of the converted network, here recomputed by hand with the public API.
    exp, state, step = outputs.restore_for_inference(c, wd)
    assert step == 0 and not os.path.exists(os.path.join(wd, "checkpoints", "0"))
    model, conv_vars = convert.load_converted(converted)
    labels = jnp.arange(4) % 10

    def model_fn(x, lam, y):
        t = conditioning.ddpm_timestep_from_logsnr(lam)
        return model.apply(conv_vars, x, t, y)

    denoise = cfg_denoise_fn(model_fn, labels, 10, c.sampling.guidance_scale, channels=3)
    key = jax.random.key(5)
    want = sample(key, denoise, (4, 8, 8, 4), None, None, lams=respaced_logsnr("4"),
                  method="ddpm", variance="learned")  # fmt: skip
    got = generate.compiled_sampler(exp, 4, 4)(generate.sampling_params(state), key, labels)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)

    # --mode=evaluate streams the samples through Inception: the same FID as the batch path.
    net = inception.FIDInceptionV3()
    weights = str(tmp_path / "inception.npz")
    params = net.init(jax.random.key(0), np.zeros((1, 75, 75, 3), np.float32))["params"]
    inception_convert.save_params(params, weights)
    ref = str(tmp_path / "ref.npz")  # an ADM-style reference batch: statistics and images
    ext = fid.load_inception(weights)
    st = fid.image_statistics(ext, images, batch_size=4)
    fid.save_stats(ref, st["mu"], st["sigma"], arr_0=images)
    out = runner.evaluate(c, wd, num_samples=6, fid_stats=ref, inception_weights=weights)
    key = jax.random.fold_in(jax.random.key(c.seed), 0xF1D)
    u8, _ = generate.sample_many(exp, generate.sampling_params(state), key, 6, uint8=True)
    st2 = fid.image_statistics(ext, u8, batch_size=6)  # batch shapes 4 and 6 compile once
    np.testing.assert_allclose(
        out["eval/fid"], fid.frechet_distance(st2["mu"], st2["sigma"], st["mu"], st["sigma"]),
        rtol=1e-6,
    )  # fmt: skip
    feats = [np.concatenate([f for f, _ in ext.iterate(x, 6)]) for x in (images, u8)]
    want = precision_recall(*feats)
    assert (out["eval/precision"], out["eval/recall"]) == pytest.approx(want)
    fake = str(tmp_path / "fake.npz")
    np.savez(fake, images=u8)
    assert (
        fid.cli(["fid", "precision_recall", "--weights", weights, ref, fake, "--batch_size=6"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert [float(x.split()[1]) for x in lines] == pytest.approx(want, abs=1e-6)


def test_learned_variance_needs_a_learned_sigma_network():
    c = dit_official.get_config("tiny")
    c.model.overrides = {}
    with pytest.raises(ValueError, match="sampling.variance"):
        validate_config(c, num_devices=1)
    c = dit_official.get_config("tiny")
    c.sampling.guidance_channels = 5
    with pytest.raises(ValueError, match="sampling.guidance_channels"):
        validate_config(c, num_devices=1)
    c = dit_official.get_config("tiny")
    c.sampling.schedule = "ddpm"
    with pytest.raises(ValueError, match="sampling.schedule"):
        validate_config(c, num_devices=1)
