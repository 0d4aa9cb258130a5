"""``--mode=check``: exit 0 with the plan, or one line ``config error: ...`` and status 2 for a
missing dataset, weights or statistics and an unusable work dir; compiles and writes nothing.
Through the real command line, in-process."""

import os

import jax
import numpy as np
import pytest

from jaxdiff import main
from jaxdiff.training import check
from jaxdiff.training.workdir import WorkdirLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "configs", "digits.py")
LATENT = os.path.join(REPO, "configs", "imagenet256_latent_dit.py")
CIFAR = os.path.join(REPO, "configs", "cifar10.py")


def run_cli(capsys, args, workdir, mode="check"):
    status = main.cli(["jaxdiff.main", f"--workdir={workdir}", f"--mode={mode}", *args])
    out = capsys.readouterr()
    return status, out.out.strip().splitlines(), out.err.strip().splitlines()


def test_check_prints_the_plan_and_creates_nothing(tmp_path, capsys):
    workdir = tmp_path / "new" / "run"
    status, out, err = run_cli(capsys, [f"--config={DIGITS}:tiny"], workdir)
    assert status == 0, err
    assert out[0] == "check: ok"
    lines = {line.split(":", 1)[0]: line for line in out[1:]}
    # DiT-tiny/2 of the tiny variant: depth 1, width 32, 8×8×1 input (counted, not hard-coded
    # elsewhere: the same number jax.eval_shape gives the train state's params)
    assert "DiT-tiny/2 (30,948 parameters" in lines["model"], lines["model"]
    n = jax.device_count()  # the tests' fake CPU devices (conftest)
    assert lines["batch"].startswith(f"batch:       16 global, {16 // n} per device")
    assert f"mesh:        {n} device(s)" in lines["mesh"]
    assert "6" in lines["steps"] and "adamw" in lines["steps"]
    assert "optimiser" in lines["memory/dev"] and "EMA" in lines["memory/dev"]
    assert "digits (embedded)" in lines["data"]
    assert "(new)" in lines["work dir"]
    assert not workdir.exists() and not (tmp_path / "new").exists()


def test_plan_memory_scales_with_devices_and_fsdp():
    fv, err = main.parse(["m", f"--config={DIGITS}", "--workdir=/tmp/unused"])
    assert err is None
    config = fv.config
    one = check.plan(config, 1)
    # the default digits batch 64 over 4 devices: 16 per device
    four = check.plan(config, 4)
    assert "64 global, 64 per device" in one[2] and "64 global, 16 per device" in four[2]
    assert one[3].endswith("{'data': 1, 'fsdp': 1}") and "{'data': 4, 'fsdp': 1}" in four[3]
    with config.unlocked():
        config.mesh.shape = (1, -1)  # all 4 devices on fsdp: large params split 4 ways
        config.mesh.min_fsdp_size = 1
    fsdp = check.plan(config, 4)
    state = lambda line: line.split("state ")[1].split(";")[0]  # noqa: E731
    params = lambda line: float(state(line).split("params ")[1].split()[0])  # noqa: E731
    assert params(fsdp[4]) < params(four[4]) / 3  # MiB per device


@pytest.mark.parametrize(
    "config,args,field,text",
    [
        (f"{LATENT}:tiny", ["--config.data.data_dir=/nonexistent/latents"], "data.data_dir",
         "has no 'train' split"),
        (f"{DIGITS}:tiny", ["--config.init_from=/nonexistent/run"], "init_from", "no such"),
        (f"{DIGITS}:tiny", ["--config.eval.fid_stats=/nonexistent/ref.npz"], "eval.fid_stats",
         "no such file"),
        (f"{LATENT}:tiny", ["--config.data.data_dir=LATENTS_DIR"], "data.data_dir",
         "has no 'train' split"),  # an unfilled placeholder of a full grid
    ],
)  # fmt: skip
def test_missing_inputs_are_one_line_exit_2(config, args, field, text, tmp_path, capsys):
    workdir = tmp_path / "w"
    status, _, err = run_cli(capsys, [f"--config={config}", *args], workdir)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"config error: {field}: ") and text in err[0], err[0]
    assert not workdir.exists()


def test_missing_vae_is_one_line(tmp_path, capsys):
    latents = tmp_path / "latents" / "train"
    latents.mkdir(parents=True)
    (latents / "meta.json").write_text("{}")
    args = [f"--config={LATENT}:tiny", f"--config.data.data_dir={latents.parent}",
            "--config.data.vae=/nonexistent/vae"]  # fmt: skip
    status, _, err = run_cli(capsys, args, tmp_path / "w")
    assert status == 2 and err == [
        "config error: data.vae: no such directory '/nonexistent/vae'; allowed: an SD-VAE dir or ''"
    ]


def test_unprepared_tfds_dataset_stops_training_before_the_model_is_built(tmp_path, capsys):
    """configs/cifar10.py:tiny on a machine without CIFAR-10: one line naming the dataset and
    the command that prepares it, status 2, in --mode=check and when training (issue 26)."""
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    for mode in ("check", "train"):
        workdir = tmp_path / f"w_{mode}"
        args = [f"--config={CIFAR}:tiny", f"--config.data.data_dir={data_dir}"]
        status, _, err = run_cli(capsys, args, workdir, mode=mode)
        assert status == 2 and len(err) == 1, err
        assert err[0].startswith("config error: data.name: TFDS dataset 'cifar10' is not prepared")
        assert "jaxdiff.data.prepare --dataset=cifar10" in err[0]
        assert not workdir.exists()


def test_workdir_held_by_a_trainer_or_not_creatable(tmp_path, capsys):
    workdir = tmp_path / "w"
    workdir.mkdir()
    with WorkdirLock(str(workdir)):
        status, _, err = run_cli(capsys, [f"--config={DIGITS}:tiny"], workdir)
    assert status == 2 and len(err) == 1
    assert err[0].startswith("config error: --workdir: ") and "in use by another trainer" in err[0]
    # released: usable again, and the check took no lock of its own
    status, out, err = run_cli(capsys, [f"--config={DIGITS}:tiny"], workdir)
    assert status == 0 and "no checkpoint" in out[-1], err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, err = run_cli(capsys, [f"--config={DIGITS}:tiny"], blocker / "run")
    assert status == 2 and err[0].startswith("config error: --workdir: cannot create"), err


def test_checkpoint_of_another_config_is_refused(tmp_path, capsys):
    """A checkpoint whose saved config this one may not resume: one line naming the field
    (what training would refuse), unless resume_policy=allow_changes."""
    from jaxdiff.training import resume
    from jaxdiff.training.checkpoint import Checkpointer

    workdir = tmp_path / "w"
    base = [f"--config={DIGITS}:tiny"]
    fv, err = main.parse(["m", *base, f"--workdir={workdir}"])
    ckpt = Checkpointer(str(workdir / "checkpoints"))
    ckpt.save(2, {"w": np.zeros(3, np.float32)}, config=resume.config_json(fv.config))
    ckpt.close()
    status, out, err = run_cli(capsys, base, workdir)
    assert status == 0 and "resumes from checkpoint 2" in out[-1], err
    status, _, err = run_cli(capsys, [*base, "--config.noise.target=eps"], workdir)
    assert status == 2 and len(err) == 1, err
    assert "checkpoint 2" in err[0] and "noise.target: 'v' -> 'eps'" in err[0], err[0]
    allowed = [*base, "--config.noise.target=eps", "--config.resume_policy=allow_changes"]
    assert run_cli(capsys, allowed, workdir)[0] == 0
