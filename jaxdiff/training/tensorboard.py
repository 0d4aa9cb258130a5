"""TensorBoard event files without TensorFlow.

A training process writes its TensorBoard scalars and images here: `Event` protos framed as
TFRecords by tensorboard's own `RecordWriter` (the `tensorboard` package, without importing
TensorFlow), the file format TensorBoard reads. Going through TensorFlow instead (clu's metric
writers) costs every `jaxdiff.main` process about 7 s of imports on a 2-core CPU before anything
runs, and TensorFlow's console notices.

`SummaryWriter` has the methods of clu's metric writers that the project uses
(`write_scalars`, `write_images`, `flush`, `close`), so a clu writer can stand in for it
wherever one is passed (`jaxdiff.diagnostics.diagnose(writer=...)`).
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import threading
import time

import jax
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter


def png(image: np.ndarray) -> bytes:
    """PNG bytes of an HWC image (uint8, or float in [0, 1]); C ∈ {1, 3, 4}."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"an image is HWC with C in 1, 3, 4; got shape {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="PNG")
    return buf.getvalue()


_FILE_COUNTER = itertools.count()


class SummaryWriter:
    """Scalars and images of one run into ``logdir/events.out.tfevents.*`` (thread-safe)."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_FILE_COUNTER)}.v2"
        )
        self.path = os.path.join(logdir, name)
        self._lock = threading.Lock()
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed by close())
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def _write(self, event: event_pb2.Event) -> None:
        data = event.SerializeToString()
        with self._lock:
            if self._file is None:
                raise ValueError(f"{self.path} is closed")
            self._records.write(data)

    def _summary(self, step: int, values: list) -> None:
        summary = summary_pb2.Summary(value=values)
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def write_scalars(self, step: int, scalars: dict) -> None:
        """``{tag: number}`` at ``step``."""
        value = summary_pb2.Summary.Value
        values = [value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
        self._summary(step, values)

    def write_images(self, step: int, images: dict) -> None:
        """``{tag: images}``, each NHWC (or HWC), uint8 or float in [0, 1]; a batch of N > 1
        is written as tags ``tag/0`` … ``tag/N−1``."""
        values = []
        for tag, batch in images.items():
            batch = np.asarray(batch)
            batch = batch[None] if batch.ndim == 3 else batch
            for i, image in enumerate(batch):
                encoded = summary_pb2.Summary.Image(
                    height=image.shape[0],
                    width=image.shape[1],
                    colorspace=image.shape[2],
                    encoded_image_string=png(image),
                )
                values.append(
                    summary_pb2.Summary.Value(
                        tag=tag if len(batch) == 1 else f"{tag}/{i}", image=encoded
                    )
                )
        self._summary(step, values)

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class NullWriter:
    """The writer of processes other than process 0: writes nothing."""

    def write_scalars(self, step: int, scalars: dict) -> None:
        pass

    def write_images(self, step: int, images: dict) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_writer(logdir: str, primary: bool = True) -> SummaryWriter | NullWriter:
    """A `SummaryWriter` on process 0 (``primary``), a `NullWriter` elsewhere."""
    return SummaryWriter(logdir) if primary else NullWriter()


class ReportProgress:
    """A training-loop hook: every ``every_secs`` seconds of training, the steps per second
    since the last report as the TensorBoard scalar ``steps_per_sec``."""

    def __init__(self, writer, every_secs: float = 60.0):
        self.writer, self.every_secs = writer, every_secs
        self.last: tuple[float, int] | None = None

    def __call__(self, step: int) -> None:
        now = time.perf_counter()
        if self.last is None:
            self.last = (now, step)
            return
        t0, s0 = self.last
        if now - t0 >= self.every_secs and step > s0:
            if self.writer is not None:
                self.writer.write_scalars(step, {"steps_per_sec": (step - s0) / (now - t0)})
            self.last = (now, step)


class Profile:
    """A training-loop hook: a `jax.profiler` trace of ``num_steps`` steps into ``logdir``
    (for TensorBoard's profile plugin), starting after ``first_step`` steps of the run (so
    that compilation is not in it)."""

    def __init__(self, logdir: str, num_steps: int = 5, first_step: int = 10):
        self.logdir, self.num_steps, self.first_step = logdir, num_steps, first_step
        self.calls, self.started, self.active, self.done = 0, 0, False, False

    def __call__(self, step: int) -> None:
        self.calls += 1
        if self.done:
            return
        if not self.active and self.calls >= self.first_step:
            jax.profiler.start_trace(self.logdir)
            self.active, self.started = True, self.calls
        elif self.active and self.calls - self.started >= self.num_steps:
            self.finish()

    def finish(self) -> None:
        """Stops a trace still running (a run shorter than the profile)."""
        if self.active:
            jax.profiler.stop_trace()
            self.active, self.done = False, True
