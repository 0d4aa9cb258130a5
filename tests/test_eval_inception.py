"""Parity of the JAX FID Inception port with pytorch-fid (the independent reference).

pytorch-fid's own `InceptionV3` is built with random weights (its weight download is replaced
by a random state dict) whose BatchNorm statistics are made non-trivial; the state dict is
saved as a `.pth` and read back through the real converter.
"""

import numpy as np
import pytest

from jaxdiff.evaluation import fid, inception, inception_convert

# The torch extra (pytest without it skips this module).
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
fid_score = pytest.importorskip("pytorch_fid.fid_score")
pfi = pytest.importorskip("pytorch_fid.inception")

SIZES = ((299, 299), (40, 56))  # the standard size, and a non-square size that is resized
BATCH = 4


def _random_fid_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """State dict of the FID Inception layout with random weights and non-trivial BatchNorm.

    BatchNorm γ, β are random; running statistics are first calibrated on a random batch
    (so activations keep an O(1) scale through 90+ layers), then perturbed: var × U(0.7, 1.4),
    mean + 0.2·σ·N(0, 1). The FID blocks have the same parameters as torchvision's.
    """
    torch.manual_seed(seed)
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=False
    )
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.data = 0.6 + 0.8 * torch.rand(bn.weight.shape, generator=gen)
        bn.bias.data = 0.2 * torch.randn(bn.bias.shape, generator=gen)
        bn.momentum = None  # running stats = the calibration batch's stats
        bn.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 3, 299, 299, generator=gen) * 2 - 1)
    for bn in bns:
        bn.running_var *= 0.7 + 0.7 * torch.rand(bn.running_var.shape, generator=gen)
        noise = torch.randn(bn.running_mean.shape, generator=gen)
        bn.running_mean += 0.2 * bn.running_var.sqrt() * noise
    return net.state_dict()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(pytorch-fid reference model, path of the saved .pth, the port's extractor)."""
    state_dict = _random_fid_state_dict(seed=0)
    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        reference = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pfi.load_state_dict_from_url = original
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(state_dict, path)
    return reference, path, fid.InceptionFeatures(path)


def _images(seed: int, size: tuple[int, int], n: int = BATCH) -> np.ndarray:
    """Smooth-ish uint8 test images: random blobs plus noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    freq = rng.uniform(1, 6, size=(n, 1, 1, 3))
    phase = rng.uniform(0, 6.3, size=(n, 1, 1, 3))
    base = 0.5 + 0.4 * np.sin(freq * (xx + 2 * yy)[None, ..., None] * 6.3 + phase)
    noisy = base + 0.1 * rng.standard_normal((n, h, w, 3))
    return np.clip(np.round(255 * noisy), 0, 255).astype(np.uint8)


def _reference_features(reference, images: np.ndarray) -> np.ndarray:
    """pytorch-fid's features of uint8 NHWC images (ToTensor convention: /255, NCHW)."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        return reference(x)[0][:, :, 0, 0].numpy()


@pytest.mark.parametrize("size", SIZES)
def test_features_match_pytorch_fid(setup, size):
    reference, _, extractor = setup
    images = _images(seed=size[0], size=size)
    want = _reference_features(reference, images)
    got = extractor(images)
    assert got.shape == (BATCH, inception.FEATURE_DIM)
    assert want.std() > 1.0  # non-degenerate activations: the comparison means something
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel <= 1e-4, rel
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_logits_match_torch_fc(setup):
    reference, path, extractor = setup
    images = _images(seed=7, size=SIZES[0])
    pool, logits = extractor.features_and_logits(images)
    sd = torch.load(path, weights_only=True)
    want = pool @ sd["fc.weight"].numpy().T.astype(np.float64) + sd["fc.bias"].numpy()
    assert logits.shape == (BATCH, inception.NUM_LOGITS)
    np.testing.assert_allclose(logits, want, rtol=0, atol=1e-5 * np.abs(want).max())
    unbiased = extractor.unbiased_logits(logits)
    np.testing.assert_allclose(unbiased, want - sd["fc.bias"].numpy(), atol=1e-4)


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_fid_matches_pytorch_fid(setup):
    reference, _, extractor = setup
    set_a, set_b = _images(seed=1, size=SIZES[0]), _images(seed=2, size=SIZES[0])
    ref_a, ref_b = _reference_features(reference, set_a), _reference_features(reference, set_b)
    want = fid_score.calculate_frechet_distance(
        ref_a.mean(0), np.cov(ref_a, rowvar=False), ref_b.mean(0), np.cov(ref_b, rowvar=False)
    )
    stats_a = fid.compute_statistics(extractor(set_a))
    stats_b = fid.compute_statistics(extractor(set_b))
    # "eigh" halves the cost of this 2048-d test; "sqrtm" equals pytorch-fid in test_eval_fid.
    got = fid.frechet_distance(*stats_a, *stats_b, method="eigh")
    assert want > 0
    assert abs(got - want) <= 1e-3 * abs(want), (got, want)


def test_bilinear_resize_matches_torch_interpolate():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 13, 7, 3)).astype(np.float32)
    for size in ((299, 299), (5, 3), (13, 20), (8, 7)):
        got = np.asarray(inception.resize_bilinear(x, size))
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        want = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_converted_npz_round_trip(setup, tmp_path):
    _, path, extractor = setup
    out = tmp_path / "inception.npz"
    assert inception_convert.cli(["convert", str(path), str(out)]) == 0
    params = inception_convert.load_params(out)
    flat_a = inception_convert.traverse_util.flatten_dict(params)
    flat_b = inception_convert.traverse_util.flatten_dict(extractor.params)
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        np.testing.assert_array_equal(value, np.asarray(flat_b[key]))


def test_fold_batchnorm_matches_torch_unit():
    """One conv+BN unit: the folded Flax kernel/bias reproduce torch's eval output."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, (3, 2), padding=(1, 0), bias=False)
    bn = torch.nn.BatchNorm2d(5, eps=1e-3).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 6, 4)
    with torch.no_grad():
        want = bn(conv(x)).permute(0, 2, 3, 1).numpy()
    kernel, bias = inception_convert.fold_batchnorm(
        conv.weight.detach().numpy(),
        *(t.detach().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)),
    )
    unit = inception.BasicConv(5, (3, 2), padding=(1, 0))
    variables = {"params": {"conv": {"kernel": kernel, "bias": bias}}}
    got = np.asarray(unit.apply(variables, x.permute(0, 2, 3, 1).numpy()))
    np.testing.assert_allclose(got, np.maximum(want, 0), atol=1e-5)


def test_converter_rejects_bad_state_dicts(setup):
    _, path, _ = setup
    sd = inception_convert.load_torch_state_dict(path)
    missing = {k: v for k, v in sd.items() if not k.startswith("Mixed_7c.branch_pool")}
    with pytest.raises(ValueError, match="missing"):
        inception_convert.convert_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected"):
        inception_convert.convert_state_dict({**sd, "extra.weight": np.zeros(3)})
    wrong = dict(sd)
    wrong["fc.weight"] = np.zeros((10, 2048), np.float32)
    with pytest.raises(ValueError, match="shape"):
        inception_convert.convert_state_dict(wrong)


def test_stats_cli_on_pth_weights(setup, tmp_path):
    reference, path, _ = setup
    images = _images(seed=3, size=SIZES[0])
    np.savez(tmp_path / "images.npz", images=images)
    out = tmp_path / "stats.npz"
    status = fid.cli(
        [
            "fid",
            "stats",
            "--weights",
            str(path),
            "--images",
            str(tmp_path / "images.npz"),
            "--out",
            str(out),
            "--batch_size",
            str(BATCH),
        ]
    )
    assert status == 0
    mu, sigma = fid.load_stats(out)
    ref = _reference_features(reference, images).astype(np.float64)
    np.testing.assert_allclose(mu, ref.mean(0), rtol=0, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(sigma, np.cov(ref, rowvar=False), atol=1e-3 * np.abs(sigma).max())
