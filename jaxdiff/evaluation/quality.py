"""The quality metric of each embedded dataset, chosen from the data config.

`get_quality_metric(data_config, cache_dir)` gives an object with
`score(images, labels=None) -> dict[str, float]` (keys without a prefix: "fd", "accuracy",
"fd_real", "accuracy_real", and for photo_crops "swd", "swd_<res>" and their "_real"
floors), or None for a dataset without one (TFDS, image folders, latents: they use FID).
Metrics are built once per process and setting (the classifier itself is cached in
`cache_dir`), so calling this at every evaluation is cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from jaxdiff.data.sources import config_get
from jaxdiff.evaluation.digits_metric import DigitsMetric
from jaxdiff.evaluation.photo_metric import PhotoMetric


def _digits(image_size: int, channels: int, cache_dir: str | None, fov: int) -> DigitsMetric:
    del fov  # the digits have no field of view
    return DigitsMetric.create(image_size, channels, cache_dir)


def _photo_crops(image_size: int, channels: int, cache_dir: str | None, fov: int) -> PhotoMetric:
    return PhotoMetric.create(image_size, channels, cache_dir, field_of_view=fov)


QUALITY_METRICS: dict[str, Callable[..., Any]] = {
    "digits": _digits,
    "photo_crops": _photo_crops,
}


@functools.lru_cache(maxsize=8)
def _cached(name: str, image_size: int, channels: int, cache_dir: str | None, fov: int) -> Any:
    return QUALITY_METRICS[name](image_size, channels, cache_dir, fov)


def get_quality_metric(data_config: Any, cache_dir: str | None = None) -> Any | None:
    """The metric for `data_config.name` (see `QUALITY_METRICS`), or None if it has none."""
    name = config_get(data_config, "name")
    if name not in QUALITY_METRICS:
        return None
    image_size = config_get(data_config, "image_size")
    channels = config_get(data_config, "channels")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"data.image_size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {channels!r}")
    fov = int(config_get(data_config, "field_of_view"))
    return _cached(name, image_size, int(channels), cache_dir, fov)
