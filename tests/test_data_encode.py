"""jaxdiff.encode: a tiny image folder encoded by a tiny random VAE, interrupted and
resumed, split over 2 simulated processes, run through the CLI, and read back as latents."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from tiny_config import data_fields

from jaxdiff import encode
from jaxdiff.data import latent_format, make_iterator, make_source, sources
from jaxdiff.models import vae as vae_lib

_N, _CHUNK, _BATCH = 13, 3, 2  # 5 chunks, the last one short; batches padded
_VAE_CONFIG = dict(
    block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4
)


def _data_config(root: str) -> dict:
    return data_fields(
        name="imagefolder", data_dir=root, image_size=16, channels=3, center_crop=True
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An image folder of 13 RGB PNGs (20×24, 3 classes) and a tiny random VAE (saved too)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(_N):
        folder = root / f"class{i % 3}"
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    ae = vae_lib.vae_from_config(_VAE_CONFIG)
    variables = ae.init(jax.random.key(1), np.zeros((1, 16, 16, 3), np.float32))
    vae_dir = vae_lib.save_vae(ae, variables, tmp_path_factory.mktemp("vae"))
    return str(root), (ae, variables), str(vae_dir)


def _encode(setup, out, **kw):
    root, vae, _ = setup
    kw = dict(batch_size=_BATCH, chunk_size=_CHUNK, process_index=0, process_count=1) | kw
    return encode.encode_dataset(_data_config(root), vae, str(out), progress=False, **kw)


def _files(out, split="train") -> dict[str, bytes]:
    split_dir = os.path.join(out, split)
    return {f: open(os.path.join(split_dir, f), "rb").read() for f in sorted(os.listdir(split_dir))}


@pytest.fixture(scope="module")
def full(setup, tmp_path_factory):
    """An uninterrupted single-process run, with flips."""
    out = tmp_path_factory.mktemp("full")
    assert _encode(setup, out, flip=True) == [0, 1, 2, 3, 4]
    return str(out)


def test_records_match_direct_encoding(setup, full):
    root, (ae, variables), _ = setup
    src = latent_format.LatentDirSource(os.path.join(full, "train"))
    assert len(src) == 2 * _N and src.shape == (8, 8, 4)
    images = make_source(_data_config(root), "train")
    x = np.stack([images[i]["image"] for i in range(_N)])
    x = np.stack([x, x[:, :, ::-1]], axis=1).reshape(2 * _N, 16, 16, 3)  # image i, then its flip
    mean, logvar = ae.apply(variables, x, method="encode")
    got = [src[i] for i in range(2 * _N)]
    np.testing.assert_allclose(np.stack([g["mean"] for g in got]), mean, rtol=1e-4, atol=1e-5)
    std = np.exp(0.5 * np.asarray(logvar))
    np.testing.assert_allclose(np.stack([g["std"] for g in got]), std, rtol=1e-4, atol=1e-5)
    labels = [int(images[i]["label"]) for i in range(_N)]
    assert [int(g["label"]) for g in got] == list(np.repeat(labels, 2))
    assert not np.allclose(got[0]["mean"], got[1]["mean"])  # the flip is a different image


def test_killed_run_resumes_to_identical_output(setup, full, tmp_path):
    assert _encode(setup, tmp_path, flip=True, max_chunks=2) == [0, 1]  # "killed" after 2 chunks
    stale = latent_format.chunk_path(str(tmp_path / "train"), 2) + ".tmp-dead"
    open(stale, "wb").write(b"half a chunk")  # a chunk that was being written when killed
    with pytest.raises(ValueError, match="incomplete"):
        latent_format.LatentDirSource(str(tmp_path / "train"))
    assert _encode(setup, tmp_path, flip=True) == [2, 3, 4]
    assert _encode(setup, tmp_path, flip=True) == []  # nothing left: no duplicates
    assert not os.path.exists(stale)  # the resumed run removed the partial file
    assert _files(tmp_path) == _files(full)
    with pytest.raises(ValueError, match="different settings"):
        _encode(setup, tmp_path, flip=False)


def test_two_processes_write_disjoint_shards_covering_the_set(setup, full, tmp_path):
    written = [
        _encode(setup, tmp_path, flip=True, process_index=p, process_count=2) for p in (0, 1)
    ]
    assert written == [[0, 2, 4], [1, 3]]
    assert _files(tmp_path) == _files(full)


@pytest.mark.slow
def test_cli_with_saved_vae(setup, tmp_path):
    root, _, vae_dir = setup
    config = tmp_path / "cfg.py"
    config.write_text(
        "import ml_collections\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict(dict(data={_data_config(root)!r}))\n"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jaxdiff.encode", f"--config={config}", f"--vae={vae_dir}"]
    cmd += [f"--out={out}", "--batch_size=4", "--chunk_size=5", "--split=train"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "wrote 3 chunks; 0 missing" in res.stdout
    ref = tmp_path / "ref"
    _encode(setup, ref, batch_size=4, chunk_size=5)
    a, b = (
        latent_format.LatentDirSource(str(out / "train")),
        latent_format.LatentDirSource(str(ref / "train")),
    )
    assert len(a) == len(b) == _N
    for i in range(_N):
        np.testing.assert_allclose(a[i]["mean"], b[i]["mean"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a[i]["std"], b[i]["std"], rtol=1e-4, atol=1e-5)
        assert a[i]["label"] == b[i]["label"]


def test_read_back_as_latents(full):
    raw = latent_format.LatentDirSource(os.path.join(full, "train"))
    cfg = data_fields(
        name="latents",
        data_dir=full,
        latent_scale=0.5,
        batch_size=4,
        image_size=8,
        channels=4,
        random_flip=False,
    )
    for sample in ("mean", "sample"):
        single = make_iterator(
            dict(cfg, latent_sample=sample), process_index=0, process_count=1, shuffle=False
        )
        batches = [next(single) for _ in range(9)]  # 26 // 4 = 6 steps per epoch: into epoch 1
        for k, batch in enumerate(batches):
            assert batch["image"].shape == (4, 8, 8, 4) and batch["image"].dtype == np.float32
            for j in range(4):
                epoch, record = divmod(4 * k + j, 24)
                rec = raw[record]
                want = rec["mean"]
                if sample == "sample":
                    eps = latent_format.posterior_noise(0, epoch, record, (8, 8, 4))
                    want = want + rec["std"] * eps
                np.testing.assert_allclose(batch["image"][j], 0.5 * want, rtol=1e-6, atol=1e-7)
                assert batch["label"][j] == rec["label"]
    # Sampled latents: the same for any host count; ε is fresh each epoch.
    cfg = dict(cfg, latent_sample="sample")
    one = make_iterator(cfg, process_index=0, process_count=1, seed=3)
    two = [make_iterator(cfg, process_index=i, process_count=2, seed=3) for i in range(2)]
    for _ in range(3):
        joined = np.concatenate([next(h)["image"] for h in two])
        np.testing.assert_array_equal(joined, next(one)["image"])
    e0 = latent_format.posterior_noise(3, 0, 5, (8, 8, 4))
    assert not np.allclose(e0, latent_format.posterior_noise(3, 1, 5, (8, 8, 4)))


def test_posterior_records_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    mean, logvar = rng.normal(size=(2, 2, 4)), rng.normal(size=(2, 2, 4))
    fn = sources._LatentRecord(data_fields(latent_scale=2.0))
    ex = fn({"mean": mean, "logvar": logvar, "label": 7})
    np.testing.assert_allclose(ex["image"], 2.0 * mean, rtol=1e-6)
    np.testing.assert_allclose(ex["latent_std"], 2.0 * np.exp(0.5 * logvar), rtol=1e-6)
    assert ex["label"] == 7
    ex = sources._LatentRecord(data_fields(latent_sample="mean"))(
        {"mean": mean, "std": mean, "label": 1}
    )
    assert set(ex) == {"image", "label"}
    with pytest.raises(ValueError, match="data.latent_sample"):
        sources._LatentRecord(data_fields(latent_sample="mode"))
    with pytest.raises(ValueError, match="data.tfds_name"):
        make_source(data_fields(name="latents", data_dir=str(tmp_path)), "train")
    packed = latent_format.pack_record(mean, logvar, 3)
    back = latent_format.unpack_record(packed, (2, 2, 4))
    np.testing.assert_array_equal(back["mean"], mean.astype(np.float32))
    assert back["label"] == 3
    with pytest.raises(ValueError, match="bytes"):
        latent_format.unpack_record(packed[:-1], (2, 2, 4))
    with pytest.raises(ValueError, match="process_index"):
        latent_format.host_chunks(5, 2, 2)
