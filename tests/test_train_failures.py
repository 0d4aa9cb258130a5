"""Bad configs name the field; the resolved config is saved in the work dir.

(Corrupt checkpoints: test_train_reliability.py; SIGTERM, NaN halt and skip:
test_train_reliability_loop.py; the skip's whole state: test_train_step.py.)"""

import json
import os

import jax
import pytest
from tiny_config import digits

from jaxdiff.training import experiment

BAD_FIELDS = [
    ("noise.schedule", "nope", "noise.schedule"),
    ("noise.input_scale", -1.0, "noise.input_scale"),
    ("noise.target", "score", "noise.target"),
    ("noise.weighting", "magic", "noise.weighting"),
    ("model.name", "DiT-Q/3", "model"),
    ("data.image_size", 9, "patch"),
    ("data.batch_size", 15, "data.batch_size"),
    ("optim.name", "sgdx", "optim.name"),
    ("optim.lr", 0.0, "optim.lr"),
    ("on_nonfinite", "explode", "on_nonfinite"),
    ("ema.decays", (1.5,), "ema.decays"),
    ("mesh.shape", (3, 1), "mesh.shape"),
    ("train.compute_dtype", "float8", "train.compute_dtype"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS)
def test_invalid_config_field_names_the_field(field, value, message):
    c = digits.get_config("tiny")
    sec, _, name = field.rpartition(".")
    (c[sec] if sec else c)[name] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        experiment.build_experiment(c, devices=jax.devices()[:2])


def test_config_json_is_saved(tiny_run):
    saved = json.load(open(os.path.join(tiny_run, "config.json")))
    assert saved["model"]["name"] == "DiT-tiny/2" and saved["total_steps"] == 4
    assert saved["checkpoint_every_steps"] == 2 and saved["sample_every_steps"] == 0
