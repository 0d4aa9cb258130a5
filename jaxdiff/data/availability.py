"""Whether the data a config names is there, without reading it.

:func:`check_data` looks only at what exists on disk: a TFDS dataset is prepared (as
array_record) in ``data.data_dir``, an image folder or a ``jaxdiff.encode`` latents directory
exists with its ``meta.json``. It raises :class:`jaxdiff.errors.ConfigError` naming the field
and what to do, so ``jaxdiff.main`` (``--mode=check`` and before training builds anything)
prints one line with exit status 2 instead of a traceback after the model is built.
The embedded datasets (digits, photo_crops) are always there.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging as absl_logging

from jaxdiff.data import latent_format
from jaxdiff.data.sources import ENCODE_COMMAND, config_get
from jaxdiff.errors import ConfigError

EMBEDDED = ("digits", "photo_crops")


def check_data(data_config: Any, split: str = "train") -> str:
    """Raises ConfigError unless ``data_config``'s dataset can be read; returns a short
    description of where it is (for the plan)."""
    name = config_get(data_config, "name")
    data_dir = config_get(data_config, "data_dir")
    if name in EMBEDDED:
        return f"{name} (embedded)"
    if name == "imagefolder":
        if not data_dir or not os.path.isdir(data_dir):
            raise ConfigError(
                "data.data_dir", f"no such directory {data_dir!r}", "a folder of class folders"
            )
        return f"image folder {data_dir}"
    if name == "latents":
        tfds_name = config_get(data_config, "tfds_name")
        if tfds_name:
            return check_tfds(tfds_name, data_dir, field="data.tfds_name")
        split_dir = os.path.join(data_dir, split) if data_dir else None
        if not split_dir or latent_format.read_meta(split_dir) is None:
            raise ConfigError(
                "data.data_dir",
                f"{data_dir!r} has no {split!r} split with a {latent_format.META_FILE}",
                f"the --out of `{ENCODE_COMMAND}`, or data.tfds_name",
            )
        return f"latents {split_dir}"
    return check_tfds(name, data_dir)


def check_tfds(name: str, data_dir: str | None, field: str = "data.name") -> str:
    """Raises ConfigError unless TFDS dataset ``name`` is prepared as array_record in
    ``data_dir`` (TFDS's default when None); returns where it is."""
    import tensorflow_datasets as tfds  # noqa: PLC0415 - only real datasets need it

    from jaxdiff.data import prepare  # noqa: PLC0415 - imports tensorflow_datasets

    if data_dir and not os.path.isdir(data_dir):
        raise ConfigError("data.data_dir", f"no such directory {data_dir!r}", "a TFDS data_dir")
    # TFDS warns through absl about a version folder without dataset_info.json: the
    # not-prepared case, which this function reports in one line of its own
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(field, f"{name!r} is not a TFDS dataset", "a TFDS dataset name") from None
    except (ValueError, AssertionError) as err:  # e.g. an unknown config or version
        raise ConfigError(field, " ".join(str(err).split())) from None
    finally:
        absl_logging.set_verbosity(level)
    if not prepared:
        message = prepare.not_prepared_message(name, builder, field)
        raise ConfigError(field, message.removeprefix(f"{field}: "))
    fmt = builder.info.file_format
    if fmt is not None and fmt.value != prepare.ARRAY_RECORD:
        raise ConfigError(
            "data.data_dir",
            f"TFDS dataset {name!r} in {builder.data_dir} is in {fmt.value} format, which "
            "cannot be read by index",
            f"array_record: {prepare.prepare_command(name, 'NEW_DATA_DIR')}",
        )
    return f"TFDS {name} in {builder.data_dir}"
