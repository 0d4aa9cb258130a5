"""The work directory: its lock, its metrics log, its log file, and leftovers of killed saves.

- :class:`WorkdirLock`: an OS file lock (``fcntl.flock``) on ``WORKDIR/.lock/process_<i>``,
  held for the whole run by each host's process and released by the kernel when the process
  dies; a second trainer on the same work dir fails at once naming the holder (pid, host).
- :class:`MetricsLog`: ``metrics.jsonl`` (one JSON object per row; non-finite values as
  ``null``) plus TensorBoard; :meth:`MetricsLog.truncate_after` drops the rows past a restored
  step atomically (temporary file + rename), so a resumed run's log equals an uninterrupted one.
- :func:`setup_logging`: third-party logs (Orbax, absl, JAX, TensorFlow's native notices)
  go to ``WORKDIR/train.log``; the console keeps the progress bar and jaxdiff's own lines.
Unfinished checkpoint writes a killed run left (``*.orbax-checkpoint-tmp*``) are removed by
Orbax itself when the run's writer opens its checkpoint directory (``Checkpointer``).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import math
import os
import socket

import numpy as np
from absl import logging as absl_logging

from jaxdiff.errors import RunError
from jaxdiff.training.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

LOG_FILE = "train.log"


# --- lock ---------------------------------------------------------------------------------


class WorkdirLock:
    """Exclusive per-host lock of a work dir; use as a context manager."""

    def __init__(self, workdir: str, process_index: int = 0):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, ".lock", f"process_{process_index}")
        self._fd: int | None = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(
                f"work dir {self.workdir} is in use by another trainer ({holder}); wait for it "
                "to finish or stop it, or use another --workdir"
            ) from None
        except OSError as e:  # a file system without locks: run, but say so
            log.warning("cannot lock %s (%s); not protected against a second trainer", self.path, e)
        os.ftruncate(fd, 0)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        os.pwrite(
            fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {stamp}".encode(), 0
        )
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --- metrics ------------------------------------------------------------------------------


def json_value(v):
    """A JSON-safe value: numbers as float/int (non-finite as None), arrays as lists."""
    if isinstance(v, dict):
        return {k: json_value(x) for k, x in v.items()}
    if isinstance(v, str | bool) or v is None:
        return v
    a = np.asarray(v)
    if a.ndim:
        return [json_value(x) for x in a.tolist()]
    if np.issubdtype(a.dtype, np.integer):
        return int(a)
    f = float(a)
    return f if math.isfinite(f) else None


class MetricsLog:
    """``metrics.jsonl`` and TensorBoard scalars/images (written by process 0 only)."""

    def __init__(self, workdir: str, primary: bool = True, tensorboard: bool = True):
        self.primary = primary
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.writer = None
        if primary and tensorboard:
            self.writer = SummaryWriter(workdir)

    def truncate_after(self, step: int, dropped_to: str | None = None) -> int:
        """Drops rows with ``step`` > ``step`` (and unparsable ones) atomically; returns how
        many. ``dropped_to``: a file the dropped rows are appended to."""
        if not self.primary or not os.path.exists(self.path):
            return 0
        keep, drop = [], []
        with open(self.path) as f:
            for line in f:
                try:
                    ok = int(json.loads(line)["step"]) <= step
                except (ValueError, KeyError, TypeError):
                    ok = False  # a torn last line of a killed run
                (keep if ok else drop).append(line if line.endswith("\n") else line + "\n")
        if not drop:
            return 0
        if dropped_to:
            with open(dropped_to, "a") as f:
                f.writelines(drop)
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(drop)

    def last_value(self, key: str, default=None):
        """The value of ``key`` in the last row that has it (``default`` if none)."""
        value = default
        if not os.path.exists(self.path):
            return value
        with open(self.path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and row.get(key) is not None:
                    value = row[key]
        return value

    def write(self, step: int, scalars: dict, **fields):
        """One row: ``scalars`` (numbers, to TensorBoard too) and extra JSON ``fields``."""
        if not self.primary:
            return
        row = {"step": int(step), **{k: json_value(v) for k, v in scalars.items()}}
        row.update({k: json_value(v) for k, v in fields.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        if self.writer is not None:
            self.writer.write_scalars(int(step), {k: float(v) for k, v in scalars.items()})

    def write_image(self, step: int, name: str, image: np.ndarray):
        """One HWC uint8 image to TensorBoard."""
        if self.writer is not None:
            self.writer.write_images(int(step), {name: image[None]})

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# --- logging ------------------------------------------------------------------------------

_state: dict = {}


class _ConsoleFilter(logging.Filter):
    """On the console: jaxdiff's warnings and errors only (everything is in the log file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("jaxdiff") and record.levelno >= logging.WARNING


def setup_logging(workdir: str, verbosity: int = 0) -> str | None:
    """Sends library logs to ``WORKDIR/train.log``; returns its path (None if unwritable).

    Python logging (absl, Orbax, JAX, TensorFlow) goes to the file at INFO (absl's verbosity
    is set to INFO); console handlers then pass only jaxdiff's warnings and errors (all
    records with ``verbosity`` > 0).
    Training never imports TensorFlow (TensorBoard files are written by
    `jaxdiff.training.tensorboard`); TFDS data does, silently under the TF_CPP_MIN_LOG_LEVEL=3
    and TF_ENABLE_ONEDNN_OPTS=0 that `jaxdiff.main` sets. Calling it again moves the file.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(os.path.abspath(workdir), LOG_FILE)
        handler = logging.FileHandler(path)
    except OSError:
        return None
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    old = _state.get("handler")
    if old is not None:
        root.removeHandler(old)
        old.close()
    for h in root.handlers:
        if verbosity <= 0 and not any(isinstance(f, _ConsoleFilter) for f in h.filters):
            h.addFilter(_ConsoleFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    absl_logging.set_verbosity(absl_logging.DEBUG if verbosity > 1 else absl_logging.INFO)
    _state["handler"] = handler
    logging.captureWarnings(True)
    return path
