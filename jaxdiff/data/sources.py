"""Random-access data sources: the embedded digits, TFDS datasets, image folders, latents.

Every source has `len(source)` and `source[i] -> {"image": float32 (H, W, C), "label": int32}`,
already preprocessed (decoded, cropped/resized to `data.image_size`, scaled to [-1, 1]) but
not augmented, so Grain can read any record by index in any process. TFDS datasets are read
through `tfds.data_source` (array_record files, no TensorFlow needed at read time).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from jaxdiff.data import digits as digits_lib
from jaxdiff.data import latent_format
from jaxdiff.data import photo_crops as photo_crops_lib
from jaxdiff.errors import ConfigError

SOURCE_NAMES = ("digits", "photo_crops", "imagefolder", "latents", "<any TFDS dataset name>")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

LATENT_SAMPLE_MODES = ("sample", "mean")
ENCODE_COMMAND = ".venv/bin/python -m jaxdiff.encode --config=IMAGE_CONFIG --vae=VAE_DIR --out=OUT"


def config_get(data_config: Any, key: str) -> Any:
    """``data.<key>`` of an ml_collections ConfigDict or a plain dict. Every field is required
    (the base config, ``jaxdiff.training.config.base_config``, holds them all): a missing one
    raises ConfigError naming it, never a silent default."""
    try:
        return data_config[key]
    except (KeyError, AttributeError, TypeError):
        raise ConfigError(
            f"data.{key}", "missing", "start from jaxdiff.training.config.base_config()"
        ) from None


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """ADM/DiT center crop: uint8 (H, W, C) -> uint8 (size, size, C).

    While the short side is at least 2·size, halve the image with a box filter; then resize
    bicubically so the short side equals `size`; then crop the central size×size square
    (Dhariwal & Nichol 2021, `center_crop_arr`; also used by DiT).
    """
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    while min(pil.size) >= 2 * size:
        pil = pil.resize(tuple(s // 2 for s in pil.size), resample=Image.Resampling.BOX)
    scale = size / min(pil.size)
    pil = pil.resize(tuple(round(s * scale) for s in pil.size), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(pil)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    arr = arr[top : top + size, left : left + size]
    return arr[..., None] if arr.ndim == 2 else arr


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of uint8 (H, W, C) to (size, size, C), ignoring the aspect ratio."""
    if image.shape[:2] == (size, size):
        return image
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    arr = np.asarray(pil.resize((size, size), resample=Image.Resampling.BICUBIC))
    return arr[..., None] if arr.ndim == 2 else arr


def preprocess_image(
    image: np.ndarray, *, image_size: int, channels: int, center_crop: bool
) -> np.ndarray:
    """uint8 (H, W, C) or (H, W) -> float32 (image_size, image_size, channels) in [-1, 1].

    Center crop then resize (`center_crop=True`) or a plain resize; grey is replicated to
    RGB and RGB is reduced to grey with ITU-R 601 luma (PIL's "L") when `channels` asks;
    then x / 127.5 − 1.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[:2] != (image_size, image_size):
        image = (center_crop_resize if center_crop else resize_square)(image, image_size)
    if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif channels == 1 and image.shape[-1] == 3:
        image = np.asarray(Image.fromarray(image).convert("L"))[..., None]
    return image.astype(np.float32) / 127.5 - 1.0


class ArraySource:
    """In-memory source over (images, labels) arrays, e.g. the digits."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"image": self.images[index], "label": np.int32(self.labels[index])}

    def __repr__(self) -> str:
        return f"ArraySource(n={len(self)}, shape={self.images.shape[1:]})"


class MappedSource:
    """Applies `fn(record) -> example` to each record of a random-access source."""

    def __init__(self, source: Any, fn: Callable[[Any], dict[str, np.ndarray]], name: str):
        self.source, self.fn, self.name = source, fn, name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.fn(self.source[int(index)])

    def __repr__(self) -> str:
        return f"MappedSource({self.name}, n={len(self)})"


class _ImageRecord:
    """Picklable record -> example function for TFDS image datasets."""

    def __init__(self, data_config: Any):
        self.image_key = config_get(data_config, "image_key")
        self.label_key = config_get(data_config, "label_key")
        self.kwargs = dict(
            image_size=int(config_get(data_config, "image_size")),
            channels=int(config_get(data_config, "channels")),
            center_crop=bool(config_get(data_config, "center_crop")),
        )

    def __call__(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        image = preprocess_image(record[self.image_key], **self.kwargs)
        label = record[self.label_key] if self.label_key else 0
        return {"image": image, "label": np.int32(label)}


class _LatentRecord:
    """Picklable record -> example function for pre-encoded latents (float, no resizing).

    A record with `data.image_key` gives image = latent_scale · record[image_key]. A
    posterior record (`mean` and `std`, or `mean` and `logvar`, e.g. from
    `jaxdiff.encode`) gives image = s·μ and, when `data.latent_sample == "sample"`, also
    "latent_std" = s·σ: the pipeline then returns s·μ + s·σ·ε = s·(μ + σ·ε) with ε a pure
    function of (seed, epoch, record) (`latent_format.posterior_noise`).
    """

    def __init__(self, data_config: Any):
        self.image_key = config_get(data_config, "image_key")
        self.label_key = config_get(data_config, "label_key")
        self.scale = float(config_get(data_config, "latent_scale"))
        self.sample = config_get(data_config, "latent_sample")
        if self.sample not in LATENT_SAMPLE_MODES:
            raise ValueError(
                f"data.latent_sample must be one of {list(LATENT_SAMPLE_MODES)}, "
                f"got {self.sample!r}"
            )

    def __call__(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        label = np.int32(record[self.label_key] if self.label_key else 0)
        if self.image_key in record or "mean" not in record:
            latent = np.asarray(record[self.image_key], dtype=np.float32) * self.scale
            return {"image": latent, "label": label}
        example = {"image": np.asarray(record["mean"], np.float32) * self.scale, "label": label}
        if self.sample == "sample":
            if "std" in record:
                std = np.asarray(record["std"], np.float32)
            else:
                std = np.exp(0.5 * np.asarray(record["logvar"], np.float32))
            example["latent_std"] = std * self.scale
        return example


class ImageFolderSource:
    """A folder `root/class_name/*.png|jpg` (or `root/split/class_name/...`), read with PIL.

    Classes are the sorted subfolder names and a label is the class's index in that order;
    files are sorted by path so the index -> file map is deterministic.
    """

    def __init__(self, root: str, data_config: Any):
        self.root = root
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.files: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(root, name)
            for fname in sorted(os.listdir(folder)):
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    self.files.append((os.path.join(folder, fname), label))
        if not self.files:
            raise ValueError(f"data.data_dir={root!r} holds no class folders with images")
        self.kwargs = _ImageRecord(data_config).kwargs

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        path, label = self.files[int(index)]
        mode = "L" if self.kwargs["channels"] == 1 else "RGB"
        with Image.open(path) as pil:
            image = np.asarray(pil.convert(mode))
        return {"image": preprocess_image(image, **self.kwargs), "label": np.int32(label)}

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.root!r}, n={len(self)}, classes={len(self.classes)})"


def _digits_source(data_config: Any, split: str) -> ArraySource:
    images, labels = digits_lib.load_digits(
        int(config_get(data_config, "image_size")), int(config_get(data_config, "channels")), split
    )
    return ArraySource(images, labels)


def _photo_crops_source(data_config: Any, split: str) -> photo_crops_lib.PhotoCrops:
    num_classes = config_get(data_config, "num_classes")
    if num_classes is not None and int(num_classes) < photo_crops_lib.NUM_CLASSES:
        raise ValueError(
            f"data.num_classes={num_classes} but photo_crops has "
            f"{photo_crops_lib.NUM_CLASSES} classes (one per photo)"
        )
    fov = config_get(data_config, "field_of_view")
    return photo_crops_lib.PhotoCrops(
        config_get(data_config, "image_size"), config_get(data_config, "channels"), split, 0, fov
    )


def _imagefolder_source(data_config: Any, split: str) -> ImageFolderSource:
    root = config_get(data_config, "data_dir")
    if not root or not os.path.isdir(root):
        raise ValueError(f"data.data_dir must be an image folder for imagefolder, got {root!r}")
    if os.path.isdir(os.path.join(root, split)):
        root = os.path.join(root, split)
    elif split != "train":
        logging.warning("imagefolder %s has no %r subfolder; using all its images", root, split)
    source = ImageFolderSource(root, data_config)
    num_classes = config_get(data_config, "num_classes")
    if num_classes is not None and len(source.classes) > int(num_classes):
        raise ValueError(
            f"data.num_classes={num_classes} but {root!r} has {len(source.classes)} classes"
        )
    return source


def _tfds_source(name: str, data_config: Any, split: str, field: str = "data.name") -> Any:
    """`tfds.data_source` of a dataset already prepared (array_record) in `data.data_dir`.

    Never downloads or prepares: a dataset that is not there raises one ValueError line
    naming it, the data_dir searched and the `jaxdiff.data.prepare` command that prepares
    it. The check runs only when reading fails, so `tfds.testing.mock_data` still works.
    """
    import tensorflow_datasets as tfds  # lazy: only real datasets need it

    from jaxdiff.data import prepare  # lazy: imports tensorflow_datasets

    try:
        builder = tfds.builder(name, data_dir=config_get(data_config, "data_dir"))
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"{field}: {name!r} is not a TFDS dataset (nor one prepared in data.data_dir"
            f"={config_get(data_config, 'data_dir')!r}); data.name is one of {list(SOURCE_NAMES)}"
        ) from None
    except (ValueError, AssertionError) as err:  # e.g. an unknown config or version
        raise ValueError(f"{field}: {' '.join(str(err).split())}") from None
    try:
        return builder.as_data_source(split=split)
    except Exception:
        if not builder.is_prepared():
            raise ValueError(prepare.not_prepared_message(name, builder, field)) from None
        fmt = builder.info.file_format
        if fmt is not None and fmt.value != prepare.ARRAY_RECORD:
            raise ValueError(
                f"data.data_dir: TFDS dataset {name!r} in {builder.data_dir} is in "
                f"{fmt.value} format, which cannot be read by index; prepare it as "
                f"array_record into another data_dir: "
                f"{prepare.prepare_command(name, 'NEW_DATA_DIR')}"
            ) from None
        raise


def make_source(data_config: Any, split: str = "train") -> Any:
    """A Grain random-access source (len / __getitem__) of preprocessed examples.

    `data.name` selects it: "digits" (embedded, in memory), "photo_crops" (embedded crops of
    bundled photos, `jaxdiff.data.photo_crops`; `data.field_of_view` source pixels, default
    128), "imagefolder" (`data.data_dir`
    holds class folders), "latents" (TFDS/array_record dataset `data.tfds_name` of float
    latents under `data.image_key`, or of posterior `mean`/`std`; without `tfds_name`, the
    `jaxdiff.encode` output in `data.data_dir`; multiplied by `data.latent_scale`,
    see `_LatentRecord` for `data.latent_sample`), or any TFDS dataset
    name ("cifar10", "imagenet2012", "imagenet_resized/64x64", "celeb_a", ...) read with
    `tfds.data_source(name, split=split, data_dir=data.data_dir)`.
    Each example is {"image": float32 (H, W, C), "label": int32 scalar}; images are in
    [-1, 1] at `data.image_size` with `data.channels` channels.
    """
    name = config_get(data_config, "name")
    if not name or not isinstance(name, str):
        raise ValueError(f"data.name must be one of {list(SOURCE_NAMES)}, got {name!r}")
    channels = config_get(data_config, "channels")
    if name != "latents" and channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {channels!r}")
    image_size = config_get(data_config, "image_size")
    if name != "latents" and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"data.image_size must be a positive integer, got {image_size!r}")
    if name == "digits":
        return _digits_source(data_config, split)
    if name == "photo_crops":
        return _photo_crops_source(data_config, split)
    if name == "imagefolder":
        return _imagefolder_source(data_config, split)
    if name == "latents":
        return _latents_source(data_config, split)
    return _make_tfds_image_source(name, data_config, split)


def _latents_source(data_config: Any, split: str) -> MappedSource:
    """`data.tfds_name` (TFDS) if set, else the `jaxdiff.encode` output in data_dir/split."""
    tfds_name = config_get(data_config, "tfds_name")
    record_fn = _LatentRecord(data_config)
    if tfds_name:
        raw = _tfds_source(tfds_name, data_config, split, field="data.tfds_name")
        return MappedSource(raw, record_fn, f"latents:{tfds_name}")
    root = config_get(data_config, "data_dir")
    split_dir = os.path.join(root, split) if root else None
    meta = latent_format.read_meta(split_dir) if split_dir else None
    if meta is None:
        raise ValueError(
            f"data.data_dir: data.name='latents' reads the output of `{ENCODE_COMMAND}` "
            f"(--config.data.data_dir=OUT), but data_dir={root!r} has no {split!r} split "
            f"with a {latent_format.META_FILE} (or set data.tfds_name to a TFDS latents dataset)"
        )
    size, channels = config_get(data_config, "image_size"), config_get(data_config, "channels")
    h, w, c = meta["shape"]
    if size is not None and channels is not None and (size, size, channels) != (h, w, c):
        raise ValueError(
            f"data.image_size: the latents in {split_dir} are {h}×{w}×{c} but the config asks "
            f"for {size}×{size}×{channels}; set --config.data.image_size={h} "
            f"--config.data.channels={c} or encode at the matching resolution"
        )
    return MappedSource(latent_format.LatentDirSource(split_dir), record_fn, f"latents:{root}")


def _make_tfds_image_source(name: str, data_config: Any, split: str) -> MappedSource:
    return MappedSource(_tfds_source(name, data_config, split), _ImageRecord(data_config), name)
