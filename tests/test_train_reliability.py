"""Nothing a user trained is lost: config mismatches, corruption, disk full, restore_step."""

import errno
import hashlib
import json
import os

import jax
import numpy as np
import pytest
import tiny_config
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from jaxdiff.errors import ConfigError, RunError
from jaxdiff.training import checkpoint, experiment, loop, outputs, resume, runner

DEV = jax.devices()[:1]


# the config of tests/conftest.py's shared work dir (`tiny_run`, copied per test as `run`)
tiny = tiny_config.tiny_run_config


@pytest.fixture
def run(tiny_run_copy):
    return tiny_run_copy


def snapshot(workdir):
    """{relative path: sha256} of every file under ``workdir`` (except the log file)."""
    out = {}
    for root, _, files in os.walk(workdir):
        for f in files:
            path = os.path.join(root, f)
            if f != "train.log":
                out[os.path.relpath(path, workdir)] = hashlib.sha256(
                    open(path, "rb").read()
                ).hexdigest()
    return out


def rows(workdir):
    return [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]


MISMATCHES = [
    ("model.overrides.hidden_size", 64, "model.overrides.hidden_size: 32 -> 64"),
    ("data.batch_size", 8, "data.batch_size: 16 -> 8"),
    ("data.image_size", 16, "data.image_size: 8 -> 16"),
    ("noise.schedule", "laplace", 'noise.schedule: "cosine" -> "laplace"'),
    ("seed", 3, "seed: 0 -> 3"),
]


@pytest.mark.parametrize("field,value,message", MISMATCHES)
def test_incompatible_resume_is_refused_and_changes_nothing(run, field, value, message):
    before = snapshot(run)
    with pytest.raises(RunError) as e:
        loop.train(tiny(**{field: value}), run, devices=DEV)
    text = str(e.value)
    assert message in text and "resume_policy=allow_changes" in text and "\n" not in text
    assert snapshot(run) == before  # every checkpoint byte-identical, config.json kept


def test_sample_and_evaluate_with_a_wrong_model_refuse(run):
    before = snapshot(run)
    c = tiny(**{"model.overrides.hidden_size": 64})
    with pytest.raises(RunError, match="model.overrides.hidden_size"):
        runner.sample(c, run, num_samples=2)
    with pytest.raises(RunError, match="model.overrides.hidden_size"):
        runner.evaluate(c, run, num_samples=2)
    # Forcing it still reads nothing into the wrong shapes and renames nothing.
    c.resume_policy = "allow_changes"
    with pytest.raises(checkpoint.IncompatibleCheckpoint, match="does not fit"):
        outputs.restore_for_inference(c, run, devices=DEV)
    assert snapshot(run) == before


@pytest.mark.slow
def test_allowed_changes_resume(run):
    out = loop.train(
        tiny(total_steps=6, **{"optim.lr": 5e-4, "log_every_steps": 2}), run, devices=DEV
    )
    assert out["step"] == 6
    assert json.load(open(os.path.join(run, "config.json")))["optim"]["lr"] == 5e-4


def test_config_changes_table():
    base = resume.config_json(tiny())
    other = resume.config_json(tiny(**{"optim.lr": 1.0, "sampling.steps": 9, "optim.b1": 0.5}))
    assert resume.config_changes(base, other) == [("optim.b1", 0.9, 0.5)]
    # A field added to the code since the checkpoint was saved counts only if not default.
    del base["stop_check_every_steps"]
    assert resume.config_changes(base, resume.config_json(tiny())) == []
    changed = resume.config_json(tiny(stop_check_every_steps=3, **{"train.self_cond_rate": 0.5}))
    assert resume.config_changes(base, changed) == [("train.self_cond_rate", 0.9, 0.5)]


def test_keep_checkpoints_zero_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        checkpoint.Checkpointer(str(tmp_path / "c"), max_to_keep=0)
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        loop.train(tiny(keep_checkpoints=0), str(tmp_path / "run"), devices=DEV)
    assert not os.path.exists(str(tmp_path / "run" / "checkpoints" / "2"))


def _largest_file(directory):
    files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs]
    return max(files, key=os.path.getsize)


@pytest.mark.slow
def test_flipped_bytes_are_detected_and_training_falls_back(run, capsys):
    original = {r["step"]: r["train/loss"] for r in rows(run)}
    data = _largest_file(os.path.join(run, "checkpoints", "4", "state"))
    with open(data, "r+b") as f:
        size = os.path.getsize(data)
        f.seek(size // 2 - 50)
        chunk = bytearray(f.read(100))
        f.seek(size // 2 - 50)
        f.write(bytes(b ^ 0xFF for b in chunk))
    out = loop.train(tiny(), run, devices=DEV)
    assert out["step"] == 4
    printed = capsys.readouterr().out
    warnings = [line for line in printed.splitlines() if line.startswith("WARNING")]
    assert 1 <= len(warnings) <= 3 and all(len(w) < 400 for w in warnings), warnings
    assert "checkpoint 4 is corrupt" in printed and "Resuming from step 2" in printed
    names = sorted(os.listdir(os.path.join(run, "checkpoints")))
    assert names == ["2", "4", "4.corrupt"]  # set aside (kept), and saved again
    # The data position and state of checkpoint 2 were restored: the same losses again.
    assert {r["step"]: r["train/loss"] for r in rows(run)} == original


def test_checksum_mismatch_is_corruption_and_reading_renames_nothing(run, capsys):
    path = os.path.join(run, "checkpoints", "4", "integrity", "metadata")
    saved = json.load(open(path))
    key = sorted(saved["arrays"])[0]
    saved["arrays"][key] = "0" * 16
    json.dump(saved, open(path, "w"))
    exp = experiment.build_experiment(tiny(), devices=DEV)
    abstract = checkpoint.abstract_with_shardings(exp.abstract_state, exp.state_shardings)
    ck = checkpoint.Checkpointer(os.path.join(run, "checkpoints"))
    with pytest.raises(checkpoint.CorruptCheckpoint, match="checksum mismatch in 1 arrays"):
        ck.restore(4, abstract)
    state, step = resume.restore_read_only(ck, tiny(), abstract)  # what sampling reads
    assert step == 2 and int(state.step) == 2
    assert "checkpoint 4 is corrupt" in capsys.readouterr().out
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["2", "4"]  # (training does)


def _garble(step_dir):
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage")


def test_all_corrupt_refuses_and_renames_nothing(run):
    for step in (2, 4):
        _garble(os.path.join(run, "checkpoints", str(step)))
    before = snapshot(run)
    with pytest.raises(RunError, match=r"every checkpoint tried .* is corrupt \(4: .*; 2: "):
        loop.train(tiny(), run, devices=DEV)
    assert snapshot(run) == before


def test_only_set_aside_checkpoints_refuse_a_fresh_start(run):
    ckdir = os.path.join(run, "checkpoints")
    for step in ("2", "4"):
        os.rename(os.path.join(ckdir, step), os.path.join(ckdir, step + ".corrupt"))
    with pytest.raises(RunError, match=r"only set-aside ones \(2.corrupt, 4.corrupt\).*step 0"):
        loop.train(tiny(), run, devices=DEV)


@pytest.mark.slow
def test_restore_step_resumes_an_older_checkpoint(run):
    original = {r["step"]: r["train/loss"] for r in rows(run)}
    out = loop.train(tiny(restore_step=2), run, devices=DEV)
    assert out["step"] == 4
    names = sorted(os.listdir(os.path.join(run, "checkpoints")))
    assert "4.superseded" in names and "4" in names and "2" in names
    assert {r["step"]: r["train/loss"] for r in rows(run)} == original  # same steps again
    dropped = [json.loads(x)["step"] for x in open(os.path.join(run, "metrics.superseded.jsonl"))]
    assert dropped == [3, 4]
    # Rerunning the same command continues from the newest instead of going back again.
    out = loop.train(tiny(restore_step=2, total_steps=5), run, devices=DEV)
    assert out["step"] == 5 and sorted(os.listdir(os.path.join(run, "checkpoints"))) == [
        "2", "4", "4.superseded", "5"
    ]  # fmt: skip
    with pytest.raises(RunError, match=r"restore_step=3: no such checkpoint.*available: 2, 4, 5"):
        loop.train(tiny(restore_step=3, total_steps=5), run, devices=DEV)


@pytest.mark.slow
def test_disk_full_is_one_line_and_keeps_older_checkpoints(run, monkeypatch):
    before = {k: v for k, v in snapshot(run).items() if k.startswith("checkpoints")}
    real = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def full(self, x, directory):
        if "/6." in str(directory):
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return await real(self, x, directory)

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full)
    c = tiny(total_steps=6, keep_checkpoints=2)
    with pytest.raises(RunError) as e:
        loop.train(c, run, devices=DEV)
    text = str(e.value)
    ckdir = os.path.join(run, "checkpoints")
    assert "\n" not in text and "checkpoint 6" in text and ckdir in text
    assert "No space left on device" in text and "newest: 4" in text
    after = {k: v for k, v in snapshot(run).items() if k.startswith("checkpoints")}
    assert {k: after.get(k) for k in before} == before  # 2 and 4 intact, byte for byte
    assert any(".orbax-checkpoint-tmp" in n for n in os.listdir(ckdir))
    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", real)
    out = loop.train(c, run, devices=DEV)  # the stale temporary dir is removed at start
    assert out["step"] == 6
    assert sorted(os.listdir(ckdir)) == ["4", "6"]


def test_a_nonfinite_state_is_never_saved(tmp_path):
    exp = experiment.build_experiment(tiny(), devices=DEV)
    state = exp.init_state()
    bad = state.replace(params=jax.tree_util.tree_map(lambda x: x * np.nan, state.params))
    ck = checkpoint.Checkpointer(str(tmp_path / "c"))
    with pytest.raises(RunError, match=r"refusing to save checkpoint 1: non-finite values"):
        ck.save(1, bad)
    ck.close()
    assert ck.all_steps() == []
