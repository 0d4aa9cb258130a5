"""The Grain pipeline: host-count invariance, shards, resume (state and Orbax), workers,
image folders, flips and errors."""

import os

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from tiny_config import data_fields

from jaxdiff.data import make_iterator, make_source, pipeline, sources


def _digits_config(batch_size=8, **kw):
    cfg = data_fields(
        name="digits", image_size=8, channels=1, batch_size=batch_size, random_flip=True
    )
    cfg.update(kw)
    return cfg


def _take(it, n):
    return [next(it) for _ in range(n)]


class _IndexSource:
    """Record i is an 2×2 image whose pixels and label both equal i (identifies records)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = np.full((2, 2, 1), float(i), np.float32)
        image[0, 0, 0] = -1.0  # asymmetric, so a flip is visible
        return {"image": image, "label": np.int32(i)}


def _index_stream(n, global_batch, process_index, process_count, steps, seed=0, shuffle=True):
    ds = pipeline.make_dataset(
        data_fields(batch_size=global_batch, random_flip=False),
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        shuffle=shuffle,
        source=_IndexSource(n),
    )
    it = iter(ds)
    return np.stack([next(it)["label"] for _ in range(steps)])  # (steps, local_batch)


@pytest.mark.parametrize("process_count", [2, 4])
def test_global_batch_independent_of_process_count(process_count):
    cfg = _digits_config(batch_size=512)  # 1527 // 512 = 2 steps per epoch: 5 steps span 3 epochs
    single = _take(make_iterator(cfg, process_index=0, process_count=1, seed=3), 5)
    hosts = [
        _take(make_iterator(cfg, process_index=i, process_count=process_count, seed=3), 5)
        for i in range(process_count)
    ]
    b = 512 // process_count
    for step in range(5):
        for i in range(process_count):
            for key in ("image", "label"):
                local = hosts[i][step][key]
                assert local.shape[0] == b
                np.testing.assert_array_equal(local, single[step][key][i * b : (i + 1) * b])


def test_batch_format():
    batch = next(make_iterator(_digits_config(image_size=16, channels=3), process_count=1))
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_shards_disjoint_and_complete_per_epoch():
    n, global_batch, p = 103, 8, 2
    steps_per_epoch = n // global_batch  # 12; 7 records dropped per epoch
    streams = [_index_stream(n, global_batch, i, p, 3 * steps_per_epoch) for i in range(p)]
    epochs = []
    for e in range(3):
        rows = slice(e * steps_per_epoch, (e + 1) * steps_per_epoch)
        shards = [set(s[rows].ravel().tolist()) for s in streams]
        assert not shards[0] & shards[1]
        union = shards[0] | shards[1]
        assert len(union) == steps_per_epoch * global_batch and union <= set(range(n))
        epochs.append(np.concatenate([s[rows] for s in streams], axis=1).ravel())
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    # Different seeds give different orders; no shuffling gives the identity order.
    assert not np.array_equal(_index_stream(n, 8, 0, 1, 4, seed=1), _index_stream(n, 8, 0, 1, 4))
    ordered = _index_stream(n, global_batch, 0, 1, steps_per_epoch + 1, shuffle=False)
    np.testing.assert_array_equal(ordered[:steps_per_epoch].ravel(), np.arange(96))
    np.testing.assert_array_equal(ordered[-1], np.arange(8))  # epoch 2 restarts at record 0


def test_random_flip_is_a_fair_deterministic_coin():
    src = _IndexSource(64)
    cfg = data_fields(batch_size=64, random_flip=True)
    ds = pipeline.make_dataset(cfg, seed=5, process_index=0, process_count=1, source=src)
    batch = next(iter(ds))
    flipped = batch["image"][:, 0, 1, 0] == -1.0  # the marked corner moved to the right
    for row, label in enumerate(batch["label"]):
        f = pipeline.flip_decision(5, 0, int(label))
        original = src[int(label)]["image"]
        np.testing.assert_array_equal(batch["image"][row], original[:, ::-1] if f else original)
    assert 16 <= flipped.sum() <= 48


@pytest.mark.parametrize("skip", [1, 4])  # 4 crosses the epoch boundary (3 steps per epoch)
def test_resume_from_state(skip):
    cfg = _digits_config(batch_size=500)
    it = make_iterator(cfg, process_index=1, process_count=2, seed=7)
    _take(it, skip)
    state = it.get_state()
    expected = _take(it, 3)
    fresh = make_iterator(cfg, process_index=1, process_count=2, seed=7)
    fresh.set_state(state)
    for a, b in zip(_take(fresh, 3), expected, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_resume_through_orbax_checkpoint(tmp_path):
    cfg = _digits_config(batch_size=16)
    it = make_iterator(cfg, process_index=0, process_count=1, seed=1)
    _take(it, 3)
    options = ocp.CheckpointManagerOptions(max_to_keep=2)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as mngr:
        mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    expected = _take(it, 2)
    fresh = make_iterator(cfg, process_index=0, process_count=1, seed=1)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as mngr:
        assert mngr.latest_step() == 3
        mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    for a, b in zip(_take(fresh, 2), expected, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["image"], b["image"])


def test_worker_processes_give_the_same_batches():
    cfg = _digits_config(batch_size=4)
    expected = _take(make_iterator(cfg, process_index=0, process_count=1), 3)
    it = make_iterator(dict(cfg, worker_count=1), process_index=0, process_count=1)
    try:
        got = _take(it, 2)
        state = it.get_state()
        got.append(next(it))
    finally:
        it.close()
    fresh = make_iterator(dict(cfg, worker_count=1), process_index=0, process_count=1)
    try:
        fresh.set_state(state)
        got.append(next(fresh))
    finally:
        fresh.close()
    for a, b in zip(got, expected + expected[2:], strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def _write_folder(root):
    rng = np.random.default_rng(0)
    for cls, count in [("zebra", 3), ("apple", 2)]:
        os.makedirs(root / cls)
        for k in range(count):
            arr = rng.integers(0, 256, size=(10 + k, 14, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{k}.png")
    (root / "apple" / "notes.txt").write_text("not an image")


def test_imagefolder(tmp_path):
    _write_folder(tmp_path)
    cfg = data_fields(name="imagefolder", data_dir=str(tmp_path), image_size=8, channels=3)
    cfg.update(batch_size=5, center_crop=True, random_flip=False)
    src = make_source(cfg, "train")
    assert len(src) == 5 and src.classes == ["apple", "zebra"]
    labels = sorted(int(src[i]["label"]) for i in range(len(src)))
    assert labels == [0, 0, 1, 1, 1]
    ex = src[0]
    assert ex["image"].shape == (8, 8, 3) and ex["image"].dtype == np.float32
    batch = next(make_iterator(cfg, process_index=0, process_count=1, shuffle=False))
    np.testing.assert_array_equal(batch["label"], [0, 0, 1, 1, 1])
    assert batch["image"].shape == (5, 8, 8, 3)
    grey = make_source(dict(cfg, channels=1), "train")[4]["image"]
    assert grey.shape == (8, 8, 1) and -1.0 <= grey.min() and grey.max() <= 1.0


def test_center_crop_against_numpy():
    # A 8×16 image: the central 8×8 square is white, the side quarters black; the short side
    # already equals the target size, so the crop is exact.
    image = np.zeros((8, 16, 3), np.uint8)
    image[:, 4:12] = 255
    np.testing.assert_array_equal(sources.center_crop_resize(image, 8), image[:, 4:12])
    out = sources.preprocess_image(image, image_size=8, channels=3, center_crop=True)
    np.testing.assert_array_equal(out, np.ones((8, 8, 3), np.float32))
    # Halving with a box filter (32×64 -> 16×32 -> crop) keeps a 2×2-block pattern's means.
    big = np.kron(np.arange(16 * 32).reshape(16, 32) % 251, np.ones((2, 2))).astype(np.uint8)
    out = sources.center_crop_resize(big[..., None].repeat(3, -1), 16)
    np.testing.assert_array_equal(out[..., 0], (np.arange(16 * 32).reshape(16, 32) % 251)[:, 8:24])


def test_errors():
    with pytest.raises(ValueError, match="data.name"):
        make_source(data_fields(name="no_such_dataset_xyz", image_size=8, channels=1), "train")
    with pytest.raises(ValueError, match="data.batch_size"):
        make_iterator(_digits_config(batch_size=6), process_index=0, process_count=4)
    with pytest.raises(ValueError, match="data.batch_size"):
        make_iterator(_digits_config(batch_size=4096), process_index=0, process_count=1)
    with pytest.raises(ValueError, match="data.channels"):
        make_source(_digits_config(channels=2), "train")
    with pytest.raises(ValueError, match="data.data_dir"):
        make_source(data_fields(name="imagefolder", data_dir=None, channels=3), "train")
