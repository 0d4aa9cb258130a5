"""Every full-scale grid runs as written: each job validates (the config part of
``--mode=check``, in-process) apart from the placeholders a site fills, and the grids hold the
papers' settings the project can meet (experiments/<study>/README.md, "paper vs this grid")."""

import importlib
import shlex

import pytest

from experiments import common, jobcheck
from jaxdiff.errors import ConfigError
from jaxdiff.training.config import noise_config

STUDIES = ("hang_schedules", "min_snr", "chen_input_scaling", "adaptive_timesteps")


def _commands(grid: common.Grid) -> list[list[str]]:
    return [
        common.command(c, s, common.run_dir("/tmp/out", c, s), grid)
        for c in grid.cells
        for s in grid.seeds
    ]


def _configs(name: str) -> dict:
    """cell name -> the resolved config of its job (seed 0)."""
    grid = importlib.import_module(f"experiments.{name}").STUDY.grids["full"]
    return {c.name: jobcheck.job_config(common.command(c, 0, "/tmp/w", grid)) for c in grid.cells}


@pytest.mark.parametrize("name", STUDIES)
def test_every_job_of_every_full_grid_validates(name):
    grid = importlib.import_module(f"experiments.{name}").STUDY.grids["full"]
    commands = _commands(grid)
    counts = jobcheck.check_grid(commands)
    assert set(counts) <= set(jobcheck.PLACEHOLDERS)
    assert {"INCEPTION_WEIGHTS"} < set(counts)  # FID needs the weights and the statistics
    assert any(p.startswith("FID_STATS_") for p in counts)
    assert all(n <= len(commands) for n in counts.values())


def test_a_leaked_schedule_parameter_is_refused_naming_the_job():
    """The defect the hang grid had: cosine rows on a base config holding Laplace's b, mu."""
    bad = common.Cell((("row", "cosine"),), "configs/imagenet256_latent_dit.py",
                      ("--config.noise.schedule=cosine",))  # fmt: skip
    grid = common.fid_grid([bad], (0,), eval_every=10, num_samples=10, **common.LATENTS)
    with pytest.raises(ConfigError) as e:
        jobcheck.check_grid(_commands(grid))
    assert e.value.field == "job 1 (configs/imagenet256_latent_dit.py): noise.schedule_params"
    assert "unknown parameter(s) ['b', 'mu']" in str(e.value)


def test_an_unknown_path_is_not_a_placeholder():
    cell = common.Cell((("row", "x"),), "configs/imagenet256_latent_dit.py:schedule=cosine")
    grid = common.fid_grid([cell], (0,), eval_every=10, num_samples=10, fid_stats="FID_STAT",
                           data_dir="LATENTS_DIR", vae="VAE_DIR")  # fmt: skip
    with pytest.raises(ConfigError, match="eval.fid_stats: no such file 'FID_STAT'"):
        jobcheck.check_grid(_commands(grid))


def test_hang_rows_hold_exactly_their_own_schedule_parameters():
    configs = _configs("hang_schedules")
    params = {n: noise_config(c)["schedule_params"] for n, c in configs.items()}
    assert params["row=cosine"] == {} and params["row=flow"] == {}
    assert params["row=laplace"] == {"mu": 0.0, "b": 0.5}
    assert params["row=laplace_b1"] == {"mu": 0.0, "b": 1.0}
    assert params["row=cauchy"] == {"mu": 0.0, "gamma": 1.0}
    assert params["row=edm"] == {"p_mean": -1.2, "p_std": 1.2}
    assert params["row=laplace_by_weight"] == {"mu": 0.0, "b": 0.5}
    targets = {n: (c.noise.target, c.noise.schedule) for n, c in configs.items()}
    for target in ("eps", "x0"):  # "consistent across prediction targets"
        assert targets[f"row=cosine_{target}"] == (target, "cosine")
        assert targets[f"row=laplace_{target}"] == (target, "laplace")
    assert all(c.eval.num_samples == 10_000 for c in configs.values())  # FID-10K


def test_min_snr_grid_follows_the_official_recipe():
    configs = _configs("min_snr")
    assert len(configs) == 3 * 8
    gammas = {
        c.noise.weighting_params.gamma for c in configs.values() if c.noise.weighting == "min_snr"
    }
    assert gammas == {1.0, 5.0, 10.0, 20.0}
    for c in configs.values():
        assert (c.optim.b1, c.optim.b2, c.optim.weight_decay) == (0.99, 0.99, 0.03)
        assert c.train.label_dropout == 0.15 and c.total_steps == 1_000_000
        assert c.eval.num_samples == 50_000 and c.noise.schedule == "cosine"
        assert (c.sampling.method, c.sampling.steps, c.sampling.guidance_scale) == ("heun", 50, 1.5)
    grid = importlib.import_module("experiments.min_snr").STUDY.grids["full"]
    assert dict(grid.targets) == {"eval/fid": 10.0}  # the speed-up: steps to FID 10


def test_full_scale_claims_are_measured_on_fid_with_the_grids_target():
    study = importlib.import_module("experiments.min_snr").STUDY
    cpu = common.grid_claims(study.claims, study.grids["cpu"])
    assert cpu == tuple(study.claims)  # the cpu grid logs the claims' own metric
    full = {c.name: c for c in common.grid_claims(study.claims, study.grids["full"])}
    speed = full["min_snr5 speed-up over constant"]
    assert (speed.metric, speed.target, speed.kind) == ("eval/fid", 10.0, "steps_to_target")
    assert full["min_snr5 beats constant, fd"].metric == "eval/fid"
    assert full["min_snr5 beats constant, fd"].target is None
    hang = importlib.import_module("experiments.hang_schedules").STUDY
    mapped = {c.name: c.metric for c in common.grid_claims(hang.claims, hang.grids["full"])}
    assert mapped["laplace beats cosine, fd"] == "eval/fid"
    assert mapped["laplace beats cosine, accuracy"] == "eval/digits_accuracy"  # not logged: not run


def test_chen_grid_one_preprocessing_both_schedules_every_resolution():
    configs = _configs("chen_input_scaling")
    assert len(configs) == 2 * 3 * 4
    keys = {(c.data.image_size, c.noise.schedule, c.noise.input_scale) for c in configs.values()}
    assert keys == {(r, s, b) for r in (64, 128, 256) for s in ("cosine", "linear")
                    for b in (1.0, 0.7, 0.5, 0.35)}  # fmt: skip
    for c in configs.values():
        assert (c.data.name, c.data.center_crop) == ("imagenet2012", True)
        assert c.eval.fid_stats == f"FID_STATS_IMAGENET{c.data.image_size}"
        assert c.model.name == f"RIN-imagenet{c.data.image_size}"


def test_adaptive_grid_uses_the_papers_discrete_ddpm():
    configs = _configs("adaptive_timesteps")
    c = configs["sampler=adaptive"]
    assert c.noise.timesteps == "adaptive" and c.noise.timesteps_params.version == "discrete"
    assert configs["sampler=adaptive_continuous"].noise.timesteps_params.version == "continuous"
    for name, c in configs.items():
        assert c.noise.schedule == ("laplace" if name == "sampler=laplace" else "ddpm_linear")
        assert (c.noise.target, c.sampling.schedule) == ("eps", "ddpm_linear")


def test_full_scale_cli_checks_before_writing_and_lists_placeholders(tmp_path, capsys):
    study = importlib.import_module("experiments.hang_schedules").STUDY
    out = tmp_path / "full"
    assert common.main(study, [study.name, "--scale=full", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    for p in ("LATENTS_DIR", "VAE_DIR", "FID_STATS_IMAGENET256", "INCEPTION_WEIGHTS"):
        assert f"  {p}  (" in printed
    jobs = (out / "jobs.txt").read_text().splitlines()
    assert all(shlex.split(j)[1:3] == ["-m", "jaxdiff.main"] for j in jobs)
    slurm = (out / "slurm_array.sh").read_text()
    check, train = slurm.index('srun bash -c "$CMD --mode=check"'), slurm.index('"$CMD"\n')
    assert check < train

    bad = common.Cell((("row", "cosine"),), "configs/imagenet256_latent_dit.py",
                      ("--config.noise.schedule=cosine",))  # fmt: skip
    grids = {"full": common.fid_grid([bad], (0,), eval_every=1, num_samples=1, **common.LATENTS)}
    broken = common.Study(name="broken", question="?", grids=grids)
    out2 = tmp_path / "broken"
    assert common.main(broken, ["broken", "--scale=full", f"--out={out2}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("config error: job 1 (")
    assert not (out2 / "jobs.txt").exists()
