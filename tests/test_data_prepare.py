"""TFDS datasets on a machine without network: the real `cifar10` builder prepares the
archive the user downloaded (here a small archive in the official CIFAR-10 binary layout
written by the test) with `python -m jaxdiff.data.prepare`, training reads it, and a dataset
that is not prepared fails in one line that names the command, never trying the network."""

import hashlib
import io
import os
import re
import shlex
import socket
import sys
import tarfile

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder as inet_builder
from tensorflow_datasets.image_classification import cifar
from tiny_config import data_fields

from jaxdiff.data import make_source, prepare, sources
from jaxdiff.training import loop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import cifar10 as cifar10_config  # noqa: E402
from configs import digits as digits_config  # noqa: E402

_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
_PER_BATCH, _N_TEST = 4, 8  # 5 train batch files of 4 images, one test file of 8
_FILE = "cifar-10-binary.tar.gz"


def _cifar_batch(seed: int, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n records of the CIFAR-10 binary format: label byte, then 32×32 R, G, B planes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    data = b"".join(
        bytes([y]) + x.transpose(2, 0, 1).tobytes() for y, x in zip(labels, images, strict=True)
    )
    return data, images, labels


def write_cifar10_archive(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`cifar-10-binary.tar.gz` as distributed (cifar-10-batches-bin/data_batch_{1..5}.bin,
    test_batch.bin, batches.meta.txt), small; returns {split: (images, labels)}."""
    train = [_cifar_batch(i, _PER_BATCH) for i in range(5)]
    test = _cifar_batch(5, _N_TEST)
    files = {f"data_batch_{i + 1}.bin": b[0] for i, b in enumerate(train)}
    files["test_batch.bin"] = test[0]
    files["batches.meta.txt"] = ("\n".join(_CLASSES) + "\n\n").encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    images = np.concatenate([b[1] for b in train])
    return {"train": (images, np.concatenate([b[2] for b in train])), "test": test[1:]}


@pytest.fixture
def no_network(monkeypatch):
    """Every connection or name lookup raises and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def prepare_cli():
    """Runs `python -m jaxdiff.data.prepare ARGS` in this process: (exit status, its stdout
    on success, else its stderr from the `error:` line on, without the usage line; TFDS's
    progress bars come before)."""

    def run(args, capsys):
        code = prepare.cli(["prepare", *args])
        out, err = capsys.readouterr()
        if code == 0:
            return code, out
        lines = err[err.index("error: ") :].rstrip("\n").splitlines()
        return code, "\n".join(line for line in lines if not line.startswith("usage: "))

    return run


def _command_flags(message: str, manual_dir: str) -> list[str]:
    """The flags of the command in a not-prepared message, MANUAL_DIR filled in."""
    command = re.search(r"prepare it with: (.*?) where ", message).group(1)
    words = shlex.split(command.replace("MANUAL_DIR", manual_dir))
    assert words[:3] == [".venv/bin/python", "-m", "jaxdiff.data.prepare"]
    return words[3:]


def _tiny_cifar10(data_dir: str):
    c = cifar10_config.get_config("tiny")
    c.data.data_dir = data_dir
    c.total_steps, c.sample_every_steps = 2, 0
    return c


def test_unprepared_dataset_is_one_line_naming_the_command(tmp_path, no_network):
    data_dir = str(tmp_path / "tfds")
    cfg = data_fields(name="cifar10", data_dir=data_dir, image_size=16)
    with pytest.raises(ValueError) as err:
        make_source(cfg, "train")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("data.name: TFDS dataset 'cifar10'")
    assert f"not prepared in data_dir {data_dir} " in msg
    want = f".venv/bin/python -m jaxdiff.data.prepare --dataset=cifar10 --data_dir={data_dir}"
    assert want in msg and _FILE in msg and "--download to download it (162 MiB)" in msg
    # The trainer stops with the same line before touching the network.
    with pytest.raises(ValueError, match=re.escape(msg)):
        loop.train(_tiny_cifar10(data_dir), str(tmp_path / "run"), devices=jax.devices()[:1])
    assert not no_network and not os.path.exists(os.path.join(data_dir, "cifar10"))
    # A manual-download dataset says that TFDS cannot download it.
    with pytest.raises(ValueError, match="ILSVRC2012_img_train.tar .*cannot download"):
        make_source(data_fields(name="imagenet2012", data_dir=data_dir), "train")
    with pytest.raises(ValueError, match=r"Imagenet64_val_npz.zip, or .* --download"):
        make_source(data_fields(name="imagenet_resized/64x64", data_dir=data_dir), "train")
    with pytest.raises(ValueError, match="data.name: 'no_such_set' is not a TFDS dataset"):
        make_source(data_fields(name="no_such_set", data_dir=data_dir), "train")
    with pytest.raises(ValueError, match="^data.name: .*BuilderConfig 65x65 not found"):
        make_source(data_fields(name="imagenet_resized/65x65", data_dir=data_dir), "train")
    assert not no_network


def test_prepare_refuses_missing_and_unofficial_files(tmp_path, no_network, prepare_cli, capsys):
    data_dir, manual = str(tmp_path / "tfds"), tmp_path / "manual"
    manual.mkdir()
    args = [f"--data_dir={data_dir}", f"--manual_dir={manual}"]
    code, msg = prepare_cli(["--dataset=cifar10", *args], capsys)
    assert code == 1 and "\n" not in msg
    assert msg.startswith(f"error: cifar10: {_FILE} is not in --manual_dir={manual}")
    # A file that is not the official archive fails TFDS's registered size/SHA-256 check.
    write_cifar10_archive(str(manual / _FILE))
    code, msg = prepare_cli(["--dataset=cifar10", *args], capsys)
    assert code == 1 and "\n" not in msg and msg.startswith("error: cifar10: ")
    assert "has wrong checksum" in msg and "c4a38c50a1bc5f3a" in msg
    # A bad --dataset is a usage error (status 2) naming the flag, as is a missing one.
    code, msg = prepare_cli(["--dataset=no_such_set", *args], capsys)
    assert code == 2 and msg.startswith("error: --dataset: 'no_such_set' is not a TFDS dataset")
    code, msg = prepare_cli(["--dataset=imagenet_resized/65x65", *args], capsys)
    assert code == 2 and "\n" not in msg and "BuilderConfig 65x65 not found" in msg
    code, msg = prepare_cli(args, capsys)
    assert code == 2 and msg.startswith("error: --dataset: required")
    assert not no_network and not tfds.builder("cifar10", data_dir=data_dir).is_prepared()


@pytest.mark.slow
def test_prepared_cifar10_is_read_and_trains(
    tmp_path, monkeypatch, no_network, prepare_cli, capsys
):
    data_dir, manual = str(tmp_path / "tfds"), tmp_path / "manual"
    manual.mkdir()
    want = write_cifar10_archive(str(manual / _FILE))
    # Stand in for the official archive: register this file's size and SHA-256 the way
    # TFDS registers the real one (validation itself stays on, see the test above).
    blob = (manual / _FILE).read_bytes()
    info = tfds.core.download.checksums.UrlInfo(
        size=len(blob), checksum=hashlib.sha256(blob).hexdigest(), filename=_FILE
    )
    (url,) = cifar.Cifar10.url_infos  # the official URL
    monkeypatch.setattr(cifar.Cifar10, "url_infos", {url: info})

    # The command from the not-prepared message, with the user's folder filled in.
    with pytest.raises(ValueError) as err:
        make_source(data_fields(name="cifar10", data_dir=data_dir), "train")
    code, out = prepare_cli(_command_flags(str(err.value), str(manual)), capsys)
    assert code == 0, out
    assert "(test: 8, train: 20)" in out and f"--config.data.data_dir={data_dir}" in out
    builder = tfds.builder("cifar10", data_dir=data_dir)
    assert builder.is_prepared() and builder.info.file_format.value == "array_record"

    for split, (images, labels) in want.items():
        src = make_source(
            data_fields(name="cifar10", data_dir=data_dir, image_size=32, channels=3), split
        )
        assert len(src) == len(images)
        by_bytes = {
            x.tobytes(): y for x, y in zip(images, labels, strict=True)
        }  # TFDS reorders records
        for k in range(len(src)):
            ex = src[k]
            u8 = np.round((ex["image"] + 1.0) * 127.5).astype(np.uint8)
            assert by_bytes.pop(u8.tobytes()) == ex["label"]
        assert not by_bytes  # every image of the archive, each once
    small = make_source(
        data_fields(name="cifar10", data_dir=data_dir, image_size=16, channels=3), "test"
    )[0]
    assert small["image"].shape == (16, 16, 3)

    # A few training steps read it (the digits' tiny DiT, cheap to compile, on CIFAR-10).
    c = digits_config.get_config("tiny")
    c.data.update(name="cifar10", data_dir=data_dir, channels=3, image_size=8, random_flip=True)
    c.total_steps, c.sample_every_steps = 2, 0
    out = loop.train(c, str(tmp_path / "run"), devices=jax.devices()[:1])
    assert out["step"] == 2 and np.isfinite(out["metrics"]["train/loss"])
    assert not no_network


def test_tfrecord_dataset_says_to_prepare_array_record(tmp_path):
    data_dir = str(tmp_path / "tfds")
    builder = JaxdiffTinyTfrecord(data_dir=data_dir, file_format="tfrecord")
    builder.download_and_prepare()
    with pytest.raises(ValueError, match="data.data_dir: .*tfrecord format.*--data_dir=NEW"):
        sources.make_source(data_fields(name="jaxdiff_tiny_tfrecord", data_dir=data_dir), "train")


class JaxdiffTinyTfrecord(tfds.core.GeneratorBasedBuilder):
    """Two 4×4 RGB images (for the tfrecord-format check)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {"image": tfds.features.Image(shape=(4, 4, 3)), "label": np.int64}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            yield i, {"image": np.full((4, 4, 3), i, np.uint8), "label": i}


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _pixels(jpeg: bytes) -> bytes:
    """What make_source returns for these JPEG bytes at 40 px (PIL decode, center crop)."""
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    return sources.preprocess_image(image, image_size=40, channels=3, center_crop=True).tobytes()


def test_imagenet2012_from_the_manual_tars(tmp_path, no_network):
    """ImageNet's own layout (a train tar of per-synset tars, a flat val tar), prepared by
    TFDS's imagenet2012 builder without Beam or network, read by make_source."""
    manual, data_dir = tmp_path / "manual", str(tmp_path / "tfds")
    manual.mkdir()
    names = tfds.builder("imagenet2012").info.features["label"].names  # TFDS's synset order
    train, inner = {}, {}
    for c, synset in [(0, "n01440764"), (7, names[7])]:
        files = {f"{synset}_{i}.JPEG": _jpeg(10 * c + i) for i in range(3)}
        train.update({_pixels(v): c for v in files.values()})
        inner[f"{synset}.tar"] = _tar(files)
    (manual / "ILSVRC2012_img_train.tar").write_bytes(_tar(inner))
    # The label of val image i is line i of TFDS's validation_labels.txt (a synset).
    labels_txt = os.path.join(os.path.dirname(inet_builder.__file__), "validation_labels.txt")
    with open(labels_txt) as f:
        val_synsets = f.read().split()
    val_files = {f"ILSVRC2012_val_{i:08d}.JPEG": _jpeg(100 + i) for i in range(1, 5)}
    val = {_pixels(v): names.index(val_synsets[i]) for i, v in enumerate(val_files.values())}
    (manual / "ILSVRC2012_img_val.tar").write_bytes(_tar(val_files))

    prepare.prepare_dataset("imagenet2012", data_dir, manual_dir=str(manual))
    cfg = data_fields(
        name="imagenet2012", data_dir=data_dir, image_size=40, channels=3, center_crop=True
    )
    for split, want in [("train", train), ("validation", val)]:
        src = make_source(cfg, split)
        got = {src[k]["image"].tobytes(): int(src[k]["label"]) for k in range(len(src))}
        assert len(src) == len(want) and got == want
    assert not no_network
