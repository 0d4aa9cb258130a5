"""The TensorFlow-free TensorBoard writer (tensorboard's own record framing): its files read
back by TensorBoard's event reader, and a training process that never imports TensorFlow."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from jaxdiff.training import tensorboard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_events_read_back_by_tensorboard(tmp_path):
    w = tensorboard.SummaryWriter(str(tmp_path))
    w.write_scalars(3, {"train/loss": 0.25, "eval/fd": 4})
    w.write_scalars(7, {"train/loss": 0.125})
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (5, 6, 1), dtype=np.uint8)
    rgb = rng.random((2, 4, 3, 3))  # floats in [0, 1], a batch of two
    w.write_images(7, {"samples": gray[None], "pair": rgb})
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write_scalars(8, {"x": 1.0})

    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(3, 0.25), (7, 0.125)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/fd")] == [(3, 4.0)]
    assert sorted(acc.Tags()["images"]) == ["pair/0", "pair/1", "samples"]

    def decoded(tag):
        (event,) = acc.Images(tag)
        assert event.step == 7
        return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))

    np.testing.assert_array_equal(decoded("samples"), gray[..., 0])
    for i in range(2):
        expect = np.clip(np.rint(rgb[i] * 255), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(decoded(f"pair/{i}"), expect)


def test_bad_image_shape_names_it(tmp_path):
    w = tensorboard.SummaryWriter(str(tmp_path))
    with pytest.raises(ValueError, match=r"HWC with C in 1, 3, 4; got shape \(4, 4, 2\)"):
        w.write_images(0, {"x": np.zeros((4, 4, 2), np.uint8)})
    w.close()


def test_training_modules_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "import jaxdiff.main, jaxdiff.training.runner, jaxdiff.training.loop\n"
        "import jaxdiff.diagnostics.workdir\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
