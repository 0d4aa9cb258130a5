"""photo_crops: fixed-field-of-view crops of the photos bundled with scikit-image and scikit-learn.

A natural-image dataset that needs no download, for resolution studies (Chen 2023's claim that
the best input scale falls as resolution grows needs images whose extra pixels carry detail).
Each example is a FIELD_OF_VIEW × FIELD_OF_VIEW (128 × 128) square of source pixels from one of
the 16 photos in `PHOTOS`, area-downsampled to `image_size`: pixel (i, j) is the mean of the
f × f source block [top + f·i, top + f·(i+1)) × [left + f·j, left + f·(j+1)), f = 128 / image_size.
So the same index shows the same content at 16, 32 or 64 px, and a 64-px crop averaged over
2 × 2 blocks equals the 32-px crop. The block sums come from per-photo integral images (exact
int32 sums), so a crop costs O(image_size²) whatever the field of view.

The label is the photo's index in `PHOTOS`. Grey photos are replicated to RGB; with
`channels=1` the RGB photos are reduced to ITU-R 601 luma (PIL's "L"). Values are
mean / 127.5 − 1 in [-1, 1].

Splits. Example i of a split shows photo i mod 16, so classes are balanced. Its top-left
corner is drawn uniformly once from a generator seeded with (seed, split, field of view):
the train split uses even top rows only and the test split odd top rows only, so no
(photo, top, left) crop is in both. The content of neighbouring positions overlaps, so the
test split is an independent draw from the same distribution of crops (the reference for
quality metrics), not unseen scenes. Lengths: 512 crops per photo for train (8192), 128 per
photo for test (2048).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

# (name, integer box reduction applied to the photo before cropping). The two largest photos
# are reduced so that a 128-px field of view covers a similar fraction of every scene.
# Left out: cat (the same photo as chelsea), motorcycle's right view (near-duplicate of the
# left one, which would make two classes indistinguishable), the mostly flat or synthetic
# images (cell, clock, page, text, checkerboard, colorwheel, horse, logo), microaneurysms
# (102 px, smaller than the field of view), and those that need a download (brain, eagle,
# cells3d, kidney, lily, skin, ...).
PHOTOS: tuple[tuple[str, int], ...] = (
    ("astronaut", 1),
    ("chelsea", 1),
    ("coffee", 1),
    ("hubble_deep_field", 2),
    ("immunohistochemistry", 1),
    ("retina", 3),
    ("rocket", 1),
    ("motorcycle_left", 1),
    ("china", 1),
    ("flower", 1),
    ("brick", 1),
    ("camera", 1),
    ("coins", 1),
    ("grass", 1),
    ("gravel", 1),
    ("moon", 1),
)
PHOTO_NAMES = tuple(name for name, _ in PHOTOS)
NUM_CLASSES = len(PHOTOS)
FIELD_OF_VIEW = 128
SPLITS = ("train", "test")
PER_CLASS = {"train": 512, "test": 128}
_SPLIT_CODE = {"train": 0, "test": 1}  # also the parity of the split's top rows
SKIMAGE_PIN = "scikit-image==0.26.0"


def _load_raw(name: str) -> np.ndarray:
    """The bundled photo `name` as uint8 (H, W) or (H, W, 3); no network access."""
    if name in ("china", "flower"):
        return load_sample_image(f"{name}.jpg")
    try:
        import skimage.data  # lazy: only this dataset needs scikit-image
    except ImportError as err:
        raise ImportError(
            f"data.name='photo_crops' needs scikit-image ({SKIMAGE_PIN}); install it"
        ) from err
    if name == "motorcycle_left":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


def box_reduce(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor × factor blocks of (H, W, C) (trailing rows/columns dropped), float64."""
    h, w, c = image.shape[0] // factor, image.shape[1] // factor, image.shape[2]
    blocks = image[: h * factor, : w * factor].astype(np.float64)
    return blocks.reshape(h, factor, w, factor, c).mean(axis=(1, 3))


def load_photo(name: str, channels: int = 3) -> np.ndarray:
    """Photo `name` of `PHOTOS` as uint8 (H, W, channels), after its box reduction."""
    factors = dict(PHOTOS)
    if name not in factors:
        raise ValueError(f"unknown photo {name!r}; allowed: {list(PHOTO_NAMES)}")
    image = np.asarray(_load_raw(name))
    if image.ndim == 2:
        image = image[..., None]
    image = image[..., :3]
    if factors[name] > 1:
        image = np.round(box_reduce(image, factors[name])).astype(np.uint8)
    if channels == 1 and image.shape[-1] == 3:
        image = np.asarray(Image.fromarray(image).convert("L"))[..., None]
    elif channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


@functools.lru_cache(maxsize=2)
def integral_images(channels: int) -> tuple[np.ndarray, ...]:
    """Per photo, S (H+1, W+1, C) int32 with S[y, x] = sum of photo[:y, :x] (S[0] = S[:, 0] = 0).

    255·H·W < 2³¹ for every photo, so the sums are exact.
    """
    result = []
    for name in PHOTO_NAMES:
        photo = load_photo(name, channels).astype(np.int64)
        table = np.zeros((photo.shape[0] + 1, photo.shape[1] + 1, channels), np.int64)
        table[1:, 1:] = photo.cumsum(0).cumsum(1)
        assert table[-1, -1].max() < 2**31, name
        table = table.astype(np.int32)
        table.setflags(write=False)
        result.append(table)
    return tuple(result)


def area_crop(table: np.ndarray, top: int, left: int, field: int, size: int) -> np.ndarray:
    """float32 (size, size, C) in [-1, 1]: the field × field crop at (top, left), box-averaged.

    Block sums by inclusion–exclusion on the integral image `table`; then mean/127.5 − 1.
    """
    f = field // size
    rows = top + f * np.arange(size + 1)
    cols = left + f * np.arange(size + 1)
    t = table[np.ix_(rows, cols)]
    sums = t[1:, 1:] - t[:-1, 1:] - t[1:, :-1] + t[:-1, :-1]
    return (sums * (2.0 / (255.0 * f * f)) - 1.0).astype(np.float32)


def crop_positions(
    split: str, seed: int = 0, field_of_view: int = FIELD_OF_VIEW, channels: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, tops, lefts), int32 (N,) each, of the crops of `split` (see the module doc).

    `channels` only picks which cached photos to measure; the positions do not depend on it.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown photo_crops split {split!r}; allowed: {list(SPLITS)}")
    n = PER_CLASS[split] * NUM_CLASSES
    labels = (np.arange(n) % NUM_CLASSES).astype(np.int32)
    parity = _SPLIT_CODE[split]
    rng = np.random.default_rng((int(seed), parity, int(field_of_view)))
    shapes = np.array([t.shape[:2] for t in integral_images(channels)]) - 1  # (H, W) per photo
    room = shapes[labels] - field_of_view  # the largest top / left
    if room.min() < 1:
        raise ValueError(f"field_of_view={field_of_view} is larger than a photo")
    tops = 2 * rng.integers(0, (room[:, 0] - parity) // 2 + 1) + parity
    lefts = rng.integers(0, room[:, 1] + 1)
    return labels, tops.astype(np.int32), lefts.astype(np.int32)


def check_image_size(image_size: int, field_of_view: int = FIELD_OF_VIEW) -> None:
    """ValueError unless image_size divides field_of_view (area downsampling by an integer)."""
    allowed = [s for s in range(1, field_of_view + 1) if field_of_view % s == 0]
    if not isinstance(image_size, int | np.integer) or image_size not in allowed:
        raise ValueError(
            f"data.image_size for photo_crops must divide the field of view {field_of_view}: "
            f"one of {allowed}, got {image_size!r}"
        )


class PhotoCrops:
    """Random-access source: `source[i] -> {"image": float32 (S, S, C), "label": int32}`."""

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        split: str = "train",
        seed: int = 0,
        field_of_view: int = FIELD_OF_VIEW,
    ):
        check_image_size(image_size, field_of_view)
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels!r}")
        self.image_size, self.channels, self.split = int(image_size), int(channels), split
        self.field_of_view = int(field_of_view)
        self.labels, self.tops, self.lefts = crop_positions(
            split, seed, field_of_view, self.channels
        )
        self._tables = integral_images(self.channels)

    def __getstate__(self) -> dict:
        """Pickles without the integral images (Grain workers rebuild them from the wheel)."""
        return {k: v for k, v in self.__dict__.items() if k != "_tables"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._tables = integral_images(self.channels)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """float32 (S, S, C) in [-1, 1]: crop `index`."""
        label = self.labels[index]
        table = self._tables[label]
        top, left = int(self.tops[index]), int(self.lefts[index])
        return area_crop(table, top, left, self.field_of_view, self.image_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} crops")
        index %= len(self)
        return {"image": self.image(index), "label": np.int32(self.labels[index])}

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, S, S, C) float32, labels (N,) int32) of the crops at `indices`."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        shape = (len(indices), self.image_size, self.image_size, self.channels)
        images = np.empty(shape, np.float32)
        for k, i in enumerate(indices):
            images[k] = self.image(int(i))
        return images, self.labels[indices]

    def __repr__(self) -> str:
        return (
            f"PhotoCrops({self.split}, n={len(self)}, {self.image_size}px, "
            f"fov={self.field_of_view}, classes={NUM_CLASSES})"
        )
