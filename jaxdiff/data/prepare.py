"""Prepare a TFDS dataset as array_record files from files you downloaded yourself.

    .venv/bin/python -m jaxdiff.data.prepare --dataset=NAME --data_dir=DATA_DIR \
        --manual_dir=FILES [--download] [--download_dir=SCRATCH]

TFDS's own builder code (`tfds.builder(NAME).download_and_prepare`) reads the original
archives and writes `DATA_DIR/<name>/[<config>/]<version>/` in array_record format, which
`tfds.data_source` (and so `data.name = NAME`, `data.data_dir = DATA_DIR`) reads by index.
No Apache Beam is needed for the datasets documented in docs/data.md.

Where the input files go: `--manual_dir` (default `DATA_DIR/downloads/manual`, TFDS's
default) holds the files under their original names, e.g. `cifar-10-binary.tar.gz`
(cifar10), `ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` (imagenet2012),
`Imagenet64_train_part1_npz.zip`, `Imagenet64_train_part2_npz.zip` and
`Imagenet64_val_npz.zip` (imagenet_resized/64x64). A file TFDS knows a checksum for is
checked against it (size and SHA-256) before use. Without `--download` nothing is fetched
from the network: a missing file stops the command with one line naming it. With
`--download`, TFDS downloads what is missing into `--download_dir` (default
`DATA_DIR/downloads`), which also holds the extracted archives.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds
from absl import flags
from tensorflow_datasets.core.download import download_manager as tfds_dm

from jaxdiff.cli import run
from jaxdiff.errors import ConfigError, RunError

COMMAND = ".venv/bin/python -m jaxdiff.data.prepare"
ARRAY_RECORD = "array_record"
EXAMPLES = "a TFDS name, e.g. cifar10, imagenet2012, imagenet_resized/64x64"


class MissingFileError(RuntimeError):
    """A file the builder needs is neither in the manual dir nor downloaded, and
    downloading is off."""


def data_dir_root(builder: Any) -> str:
    """The data_dir a builder reads from: its versioned dir `ROOT/name/[config/]version`
    minus the name, config and version parts."""
    depth = 3 if builder.builder_config is not None else 2
    path = os.fspath(builder.data_path)
    for _ in range(depth):
        path = os.path.dirname(path)
    return path


def expected_files(builder: Any) -> list[str]:
    """Names of the files the builder downloads (from TFDS's registered checksums).

    `imagenet_resized` registers one list for all its resolutions; only the files of the
    builder's resolution (e.g. `Imagenet64_*` for 64x64) are returned.
    """
    infos = builder.url_infos or {}
    names = sorted({info.filename or url.rsplit("/", 1)[-1] for url, info in infos.items()})
    if builder.name == "imagenet_resized" and builder.builder_config is not None:
        size = builder.builder_config.name.split("x")[0]
        names = [n for n in names if n.startswith(f"Imagenet{size}_")]
    return names


def _download_size(builder: Any, names: Sequence[str]) -> int:
    infos = (builder.url_infos or {}).values()
    return sum(int(i.size) for i in infos if i.filename in names)


def needs_manual_download(builder: Any) -> bool:
    """True when TFDS cannot download the dataset (it has manual download instructions)."""
    return bool(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))


def what_to_download(builder: Any) -> str:
    """Which files go in MANUAL_DIR, and whether `--download` can fetch them instead."""
    if needs_manual_download(builder):
        instructions = " ".join(str(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
        return f"MANUAL_DIR holds your own download ({instructions}); TFDS cannot download it"
    names = expected_files(builder)
    if not names:
        return "MANUAL_DIR holds its files, or --download downloads them"
    mib = _download_size(builder, names) / 2**20
    return (
        f"MANUAL_DIR holds {', '.join(names)}, or replace --manual_dir=MANUAL_DIR by --download "
        f"to download {'it' if len(names) == 1 else 'them'} ({mib:.0f} MiB)"
    )


def prepare_command(name: str, data_dir: str) -> str:
    """The exact shell command that prepares dataset `name` into `data_dir`."""
    return f"{COMMAND} --dataset={name} --data_dir={data_dir} --manual_dir=MANUAL_DIR"


def not_prepared_message(name: str, builder: Any, field: str = "data.name") -> str:
    """One line for `make_source`: dataset, data_dir searched, the command that prepares it."""
    root = data_dir_root(builder)
    return (
        f"{field}: TFDS dataset {name!r} is not prepared in data_dir {root} (no "
        f"{os.fspath(builder.data_dir)}); prepare it with: {prepare_command(name, root)} "
        f"where {what_to_download(builder)}"
    )


@contextlib.contextmanager
def _no_network(manual_dir: str) -> Iterator[None]:
    """Within the block, a TFDS download (a file that is neither in `manual_dir` nor
    already downloaded) raises `MissingFileError` instead of going to the network.

    TFDS has no offline switch; this replaces `DownloadManager._download`, the one method
    that starts a download, for the duration of the block.
    """
    original = tfds_dm.DownloadManager._download

    def refuse(self, resource):
        name = resource.url.rsplit("/", 1)[-1]
        infos = self._url_infos.get(resource.url)
        if infos is not None and infos.filename:
            name = infos.filename
        raise MissingFileError(
            f"{name} is not in --manual_dir={manual_dir} (from {resource.url}); put it there "
            "or pass --download to let TFDS download it"
        )

    tfds_dm.DownloadManager._download = refuse
    try:
        yield
    finally:
        tfds_dm.DownloadManager._download = original


def prepare_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    manual_dir: str | None = None,
    download_dir: str | None = None,
    download: bool = False,
) -> Any:
    """Builds TFDS dataset `name` in `data_dir` as array_record; returns its builder.

    `manual_dir` (default `DATA_DIR/downloads/manual`) holds the input files; `download`
    lets TFDS fetch the missing ones into `download_dir` (default `DATA_DIR/downloads`).
    An already prepared dataset is left as it is. Raises `ConfigError` naming `--dataset`
    (a name or config TFDS does not know), `MissingFileError` (a needed file absent and
    `download` off), TFDS's `NonMatchingChecksumError` (a file that is not the one TFDS
    registered), or ValueError (prepared in a format other than array_record).
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format=ARRAY_RECORD)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError("--dataset", f"{name!r} is not a TFDS dataset", EXAMPLES) from None
    except (ValueError, AssertionError) as err:  # an unknown config or version
        raise ConfigError("--dataset", f"{name!r}: {' '.join(str(err).split())}") from None
    if builder.is_prepared():
        fmt = builder.info.file_format
        if fmt is not None and fmt.value != ARRAY_RECORD:
            raise ValueError(
                f"already prepared in {builder.data_dir} as {fmt.value}, which cannot be "
                "read by index; delete that directory or use another --data_dir"
            )
        return builder
    root = data_dir_root(builder)
    download_dir = download_dir or os.path.join(root, "downloads")
    manual_dir = manual_dir or os.path.join(download_dir, "manual")
    config = tfds.download.DownloadConfig(
        manual_dir=manual_dir,
        try_download_gcs=False,
        compute_stats=tfds.download.ComputeStatsMode.SKIP,
    )
    guard = contextlib.nullcontext() if download else _no_network(manual_dir)
    with guard:
        builder.download_and_prepare(
            download_dir=download_dir, download_config=config, file_format=ARRAY_RECORD
        )
    return builder


USAGE = (
    f"{COMMAND} --dataset=NAME [--data_dir=DATA_DIR] [--manual_dir=FILES] [--download] "
    "[--download_dir=SCRATCH]"
)


def _define(fv: flags.FlagValues) -> None:
    f = dict(flag_values=fv)
    flags.DEFINE_string("dataset", None, f"TFDS name: {EXAMPLES}", **f)
    flags.DEFINE_string(
        "data_dir", None, "Where to write it (= data.data_dir); TFDS's default if unset", **f
    )
    flags.DEFINE_string(
        "manual_dir", None, "Your downloaded files (default DATA_DIR/downloads/manual)", **f
    )
    flags.DEFINE_bool(
        "download", False, "Let TFDS download missing files (else: never the network)", **f
    )
    flags.DEFINE_string(
        "download_dir", None, "Downloads, extracted archives (default DATA_DIR/downloads)", **f
    )


def _prepare(fv: flags.FlagValues, args: list[str]) -> None:
    """Prepares `--dataset`, then prints where it is and how to train on it. A bad
    `--dataset` is a ConfigError (status 2), a dataset that cannot be prepared (a missing
    or wrong file) a RunError (status 1): one line each."""
    del args
    if not fv.dataset:
        raise ConfigError("--dataset", "required", EXAMPLES)
    try:
        builder = prepare_dataset(
            fv.dataset,
            fv.data_dir,
            manual_dir=fv.manual_dir,
            download_dir=fv.download_dir,
            download=fv.download,
        )
    except ConfigError:
        raise
    except (MissingFileError, tfds_dm.NonMatchingChecksumError, ValueError, AssertionError) as e:
        # AssertionError: TFDS's "manual dir missing or empty" and "no split found"
        raise RunError(f"{fv.dataset}: {' '.join(str(e).split())}") from None
    splits = ", ".join(f"{k}: {v.num_examples}" for k, v in sorted(builder.info.splits.items()))
    print(f"{fv.dataset}: array_record in {builder.data_dir} ({splits})")
    print(
        f"train on it with --config.data.name={fv.dataset} "
        f"--config.data.data_dir={data_dir_root(builder)}"
    )


def cli(argv: Sequence[str]) -> int:
    """``python -m jaxdiff.data.prepare`` for ``argv`` (``argv[0]`` the program); returns
    the exit status."""
    return run(argv, _define, _prepare, USAGE, (0, 0))


if __name__ == "__main__":
    sys.exit(cli(sys.argv))
