"""Bad input: one line ``config error: <field>: ...; allowed: ...``, exit status 2, before
anything is compiled or written — through the real command line (in-process)."""

import os

import pytest

from jaxdiff import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "configs", "digits.py")

# (overrides on configs/digits.py:tiny, the field the one line must name)
CASES = [
    (["--config.sampling.guidance_scale=nan"], "sampling.guidance_scale"),
    (["--config.sampling.guidance_scale=-1"], "sampling.guidance_scale"),
    (["--config.sample_every_steps=-1"], "sample_every_steps"),
    (["--config.eval_every_steps=-3"], "eval_every_steps"),
    (["--config.optim.grad_clip=-1"], "optim.grad_clip"),
    (["--config.optim.weight_decay=-1"], "optim.weight_decay"),
    (["--config.optim.b1=1.5"], "optim.b1"),
    (["--config.optim.b2=1.0"], "optim.b2"),
    (["--config.keep_every_steps=-2"], "keep_every_steps"),
    (["--config.train.self_cond_rate=2"], "train.self_cond_rate"),
    (["--config.optim.warmup_steps=100"], "optim.warmup_steps"),  # > total_steps = 6
    (["--config.sampling.num_grid=0"], "sampling.num_grid"),
    (["--config.sampling.eta=-1"], "sampling.eta"),
    (["--config.sampling.method=heun", "--config.sampling.churn=-1"], "sampling.churn"),
    (["--config.sampling.churn=40"], "sampling.churn"),  # ddim takes no churn
    (
        [
            "--config.sampling.method=heun",
            "--config.sampling.s_tmin=2",
            "--config.sampling.s_tmax=1",
        ],
        "sampling.s_tmax",
    ),
    (["--config.sampling.s_noise=1.007"], "sampling.s_noise"),  # ddim takes no noise scale
    (["--config.sampling.method=euler", "--config.sampling.s_noise=nan"], "sampling.s_noise"),
    (["--config.data.num_classes=5"], "data.num_classes"),
    (["--config.seed=99999999999999999999"], "seed"),
    (["--config.seed=-1"], "seed"),
    (["--config.init_from=/nonexistent/run"], "init_from"),
    (["--config.keep_checkpoints=0"], "keep_checkpoints"),
    (["--config.total_steps=0"], "total_steps"),
    (["--config.log_every_steps=0"], "log_every_steps"),
    (["--config.checkpoint_every_steps=0"], "checkpoint_every_steps"),
    (["--config.optim.lr=0"], "optim.lr"),
    (["--config.optim.lr=inf"], "optim.lr"),
    (["--config.optim.lr=nan"], "optim.lr"),
    (["--config.optim.eps=0"], "optim.eps"),
    (["--config.optim.name=sgd"], "optim.name"),
    (["--config.optim.decay=exp"], "optim.decay"),
    (["--config.optim.grad_accum_steps=0"], "optim.grad_accum_steps"),
    (["--config.optim.grad_accum_steps=3"], "optim.grad_accum_steps"),  # 16 % 3
    (["--config.ema.decays=(1.0,)"], "ema.decays"),
    (["--config.train.label_dropout=1.0"], "train.label_dropout"),
    (["--config.train.compute_dtype=float16"], "train.compute_dtype"),
    (["--config.on_nonfinite=ignore"], "on_nonfinite"),
    (["--config.data.image_size=0"], "data.image_size"),
    (["--config.data.channels=2"], "data.channels"),
    (["--config.data.batch_size=0"], "data.batch_size"),
    (["--config.data.latent_scale=0"], "data.latent_scale"),
    (["--config.data.latent_sample=mode"], "data.latent_sample"),
    (["--config.data.kind=video"], "data.kind"),
    (["--config.model.name=DiT-Q/2"], "model.name"),
    (["--config.model.overrides.hidden_size=30"], "model.overrides"),
    (["--config.noise.schedule=laplase"], "noise.schedule"),
    (
        ["--config.noise.schedule=laplace", "--config.noise.schedule_params.b=-1"],
        "noise.schedule_params",
    ),  # fmt: skip
    (["--config.noise.input_scale=0"], "noise.input_scale"),
    (["--config.noise.target=score"], "noise.target"),
    (["--config.noise.weighting=p2"], "noise.weighting"),
    (["--config.noise.weight_mode=both"], "noise.weight_mode"),
    (["--config.noise.timesteps=adaptiv"], "noise.timesteps"),
    (
        ["--config.noise.weighting=min_snr", "--config.noise.weighting_params.gamma=-5"],
        "noise.weighting_params",
    ),  # fmt: skip
    (["--config.sampling.method=euler_ancestral"], "sampling.method"),
    (["--config.sampling.steps=0"], "sampling.steps"),
    (["--config.sampling.schedule=foo"], "sampling.schedule"),
    (["--config.sampling.variance=learned"], "sampling.variance"),
    (["--config.sampling.guidance_channels=2"], "sampling.guidance_channels"),
    (
        ["--config.sampling.guidance_lam_min=3", "--config.sampling.guidance_lam_max=1"],
        "sampling.guidance_lam_min",
    ),  # fmt: skip
    (["--config.sampling.batch_size=0"], "sampling.batch_size"),
    (  # guidance needs the null class, which only label dropout trains
        ["--config.train.label_dropout=0", "--config.sampling.guidance_scale=1.5"],
        "sampling.guidance_scale",
    ),  # fmt: skip
    (["--config.eval.fid_stats=/nonexistent.npz"], "eval.fid_stats"),
    (["--config.eval.num_samples=0"], "eval.num_samples"),
    (["--config.mesh.shape=(3,1)"], "mesh.shape"),
    (["--config.noise.shedule=laplace"], "noise.shedule"),
    (["--config.samplng.steps=3"], "samplng"),
    (["--config.diagnostics.num_bins=0"], "diagnostics.num_bins"),
    (["--config.diagnose_every_steps=-1"], "diagnose_every_steps"),
    (["--config.eval.quality_num_samples=1"], "eval.quality_num_samples"),
    (["--config.total_steps=abc"], "total_steps"),
    (["--config.data.batch_size=1.5"], "data.batch_size"),
]
VARIANTS = [
    ("tyni", "variant"),
    ("tiny,shedule=laplace", "variant"),
    ("tiny,scale=-1", "variant scale"),
    ("tiny,scale=abc", "variant scale"),
    ("tiny,model=DiT-Q/2", "variant model"),
    ("tiny,steps=0", "variant steps"),
    ("tiny,schedule=foo", "variant schedule"),
]


def run_cli(capsys, args, workdir):
    status = main.cli(["jaxdiff.main", f"--workdir={workdir}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err


@pytest.mark.parametrize("args,field", CASES, ids=lambda x: x if isinstance(x, str) else None)
def test_invalid_value_is_one_line_exit_2(args, field, tmp_path, capsys):
    workdir = tmp_path / "w"
    status, err = run_cli(capsys, [f"--config={DIGITS}:tiny", *args], workdir)
    assert status == 2, err
    assert len(err) == 1, err
    assert err[0].startswith(f"config error: {field}"), err[0]
    assert "Traceback" not in err[0]
    assert not workdir.exists()  # nothing written


@pytest.mark.parametrize("variant,field", VARIANTS)
def test_bad_variant_is_one_line_naming_the_key(variant, field, tmp_path, capsys):
    status, err = run_cli(capsys, [f"--config={DIGITS}:{variant}"], tmp_path / "w")
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"config error: {field}"), err[0]
    if field == "variant":  # an unknown key lists the allowed ones
        allowed = "batch, model, patch, scale, schedule, size, steps, target, tiny, weighting"
        assert f"allowed: {allowed}" in err[0]


def test_workdir_problems(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    status, err = run_cli(capsys, [f"--config={DIGITS}:tiny"], a_file)
    assert status == 2 and err == [
        f"config error: --workdir: '{a_file}' is a file; allowed: a directory"
    ]
    status, err = main.cli(["jaxdiff.main", f"--config={DIGITS}:tiny"]), None
    assert status == 2
    assert capsys.readouterr().err.startswith("config error: --workdir: required")
    status, err = run_cli(capsys, ["--config=configs/nope.py"], tmp_path / "w")
    assert status == 2 and err[0].startswith(
        "config error: --config: no such config file 'configs/nope.py'"
    )
    assert "configs/digits.py" in err[0]


@pytest.mark.parametrize(
    "override,line",
    [
        ("optim.lr=abc", "optim.lr: cannot read 'abc'; allowed: a number"),
        ("data.random_flip=maybe", "data.random_flip: cannot read 'maybe'; allowed: true or false"),
        ("total_steps=1.5", "total_steps: cannot read '1.5'; allowed: an integer"),
        ("optim=1", "optim: is a section; allowed: b1, b2, decay"),
        ("optim.lrr=1", "optim.lrr: no such field in optim; allowed: b1, b2, decay"),
        ("nosuch.x=1", "nosuch: no such field in config; allowed: "),
        ("optim.lr.x=1", "optim.lr.x: no such field in optim.lr"),
    ],
)
def test_override_errors_name_the_field(tmp_path, capsys, override, line):
    """--config.<field>=value is read as the field's type by jaxdiff.cli (no absl message is
    parsed): a bad one is one line naming the field."""
    status, err = run_cli(capsys, [f"--config={DIGITS}:tiny", f"--config.{override}"], tmp_path)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"config error: {line}"), err


def test_overrides_are_read_as_the_fields_types():
    from jaxdiff import cli

    config = cli.load_config(f"{DIGITS}:tiny", REPO)
    for path, raw in [
        ("optim.lr", "3e-4"), ("total_steps", "7"), ("data.random_flip", "true"),
        ("ema.decays", "(0.9, 0.99)"), ("noise.schedule_params.b", "0.25"),
        ("data.data_dir", "/x"), ("model.overrides.depth", "3"), ("sampling.method", "euler"),
    ]:  # fmt: skip
        cli.apply_override(config, path, raw)
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)
    assert config.total_steps == 7 and config.data.random_flip is True
    assert config.ema.decays == (0.9, 0.99) and config.noise.schedule_params.b == 0.25
    assert config.data.data_dir == "/x" and config.sampling.method == "euler"
    assert config.model.overrides.depth == 3
    cli.apply_override(config, "model.overrides.mlp_ratio", "2.0")  # an open section
    assert config.model.overrides.mlp_ratio == 2.0
    assert cli.split_overrides(["m", "--config.a.b", "1", "--workdir=w", "--config.c=2"]) == (
        ["m", "--workdir=w"], [("a.b", "1"), ("c", "2")],
    )  # fmt: skip


def test_a_broken_config_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(arg=None):\n    raise RuntimeError('boom\\nmore')\n")
    status, err = run_cli(capsys, [f"--config={bad}"], tmp_path / "w")
    assert status == 2 and err == [
        f"config error: --config: cannot load '{bad}' (RuntimeError: boom); allowed: "
        + ", ".join(f"configs/{n}" for n in sorted(os.listdir(os.path.join(REPO, "configs")))
                    if n.endswith(".py"))
    ]  # fmt: skip


def test_help_lists_configs_and_fields(capsys):
    assert main.cli(["jaxdiff.main", "--help"]) == 0
    out = capsys.readouterr().out
    assert "configs/digits.py" in out and "configs/cifar10.py" in out
    for field in ("noise.schedule", "data.batch_size", "total_steps", "sampling.steps"):
        assert field in out


def test_light_tailed_importance_proposal_warns_at_start(tmp_path, capsys, monkeypatch):
    """The pathological example (cosine target, Laplace proposal: E[w²] ~ 1e9) warns once,
    before training; a heavier-tailed proposal does not."""
    from jaxdiff.training import runner

    monkeypatch.setattr(runner, "run", lambda *a, **k: None)  # stop after the checks
    base = [f"--config={DIGITS}:tiny", "--config.noise.timesteps=importance"]
    status, err = run_cli(capsys, [*base, "--config.noise.timesteps_params.proposal=laplace"],
                          tmp_path / "w")  # fmt: skip
    assert status == 0 and len(err) == 1 and err[0].startswith("warning: noise.timesteps_params")
    assert "lighter tails" in err[0] and "cauchy" in err[0]
    status, err = run_cli(capsys, [*base, "--config.noise.timesteps_params.proposal=cauchy"],
                          tmp_path / "w2")  # fmt: skip
    assert status == 0 and err == []
