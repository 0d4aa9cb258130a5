"""Claims evaluated on synthetic learning curves (values chosen so every effect, p and bound is
known by hand), the report written from fake work dirs, and the index read from verdicts."""

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy import stats as sps

from experiments import claims, common, index, report, stats
from experiments.claims import Claim

M = "eval/digits_fd"
STEPS = (250, 500, 750, 1000)


def _curves(cells: dict, seeds=range(5), wall_per_step=None) -> list[dict]:
    """cells: name -> f(seed, step) -> value; wall-clock = step × wall_per_step[name] (1 s)."""
    out = []
    for name, f in cells.items():
        for s in seeds:
            for step in STEPS:
                wall = step * (wall_per_step or {}).get(name, 1.0)
                out.append({"cell": name, "seed": s, "step": step, "wall_s": wall, "metric": M,
                            "value": f(s, step)})  # fmt: skip
    return out


def test_claim_validation():
    with pytest.raises(ValueError, match="kind"):
        Claim("x", "p", M, "a", "b", kind="best")
    with pytest.raises(ValueError, match="needs target"):
        Claim("x", "p", M, "a", "b", kind="steps_to_target")
    with pytest.raises(ValueError, match="direction"):
        Claim("x", "p", M, "a", "b", direction="down")
    with pytest.raises(ValueError, match="unique"):
        claims.evaluate([Claim("x", "p", M, "a", "b")] * 2, [])


def test_final_claims_paired_by_seed_with_holm_over_the_declared_list():
    d = np.array([-0.5, -0.3, -0.4, -0.6, -0.2])  # arm − baseline at the final step, per seed
    base = lambda s, step: 10.0 - step / 200 + s  # noqa: E731 - seeds differ far more than d
    curves = _curves({"arm": lambda s, step: base(s, step) + d[s] * (step == 1000),
                      "base": base, "worse": lambda s, step: base(s, step) + 1.0})  # fmt: skip
    declared = [Claim("arm<base", "p", M, "arm", "base"),
                Claim("worse<base", "p", M, "worse", "base"),
                Claim("missing", "p", M, "nope", "base"),
                Claim("at 500", "p", M, "arm", "base", kind="at_step", step=500)]  # fmt: skip
    r = claims.evaluate(declared, curves)
    assert r[0]["n"] == 5 and r[0]["effect"] == pytest.approx(d.mean())
    mean, lo, hi = stats.t_interval(d)
    assert (r[0]["lo"], r[0]["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    p_t = sps.ttest_1samp(d, 0.0).pvalue  # the reported p: the paired t-test at 4 df
    assert r[0]["p"] == pytest.approx(p_t, rel=1e-10) and r[0]["note"] == "at step 1000"
    assert r[0]["p_exact"] == 2 / 32  # the exact check beside it cannot go below 2/2^5
    # "worse" is base + 1 exactly: zero spread, t-test p = 0
    np.testing.assert_allclose([x["p_holm"] for x in r[:2]], stats.holm([p_t, 0.0, 1, 1])[:2])
    assert r[0]["verdict"] == "reproduced"  # Holm: 0.0097 · 3 < 0.05
    assert r[1]["effect"] == pytest.approx(1.0) and r[1]["verdict"] == "contradicted"
    assert r[2]["n"] == 0 and r[2]["verdict"] == "not run yet" and all(x["m"] == 4 for x in r)
    assert r[3]["effect"] == pytest.approx(0.0) and r[3]["note"] == "at step 500"


def test_verdicts_with_enough_seeds():
    seeds = range(8)
    curves = _curves({"arm": lambda s, step: 5.0 - 0.1 * (s + 1), "base": lambda s, step: 5.0,
                      "bad": lambda s, step: 5.0 + 0.1 * (s + 1)}, seeds)  # fmt: skip
    r = claims.evaluate([Claim("a", "p", M, "arm", "base"), Claim("b", "p", M, "bad", "base")],
                        curves)  # fmt: skip
    assert [x["verdict"] for x in r] == ["reproduced", "contradicted"]
    p_t = sps.ttest_1samp(-0.1 * (np.arange(8) + 1), 0.0).pvalue
    assert r[0]["p_holm"] == pytest.approx(2 * p_t) and r[0]["p_exact"] == pytest.approx(2 / 256)


def test_equal_wallclock_interpolates_in_log_wall_clock():
    # the arm costs 2 s per step: at the baseline's final wall-clock (1000 s) it is at step 500
    curves = _curves({"arm": lambda s, step: 1000.0 / step, "base": lambda s, step: 2000.0 / step},
                     wall_per_step={"arm": 2.0})  # fmt: skip
    (r,) = claims.evaluate([Claim("w", "p", M, "arm", "base", kind="equal_wallclock")], curves)
    # arm at 1000 s = step 500 → 2.0; baseline at 1000 s = step 1000 → 2.0: no difference
    assert r["effect"] == pytest.approx(0.0, abs=1e-12) and r["n"] == 5
    assert r["arm_values"] == pytest.approx([2.0] * 5) and "1000 s" in r["note"]
    # between evaluations: arm 1.5 s/step, w* = 1000 s lies between its steps 500 and 750
    curves = _curves({"arm": lambda s, step: float(step), "base": lambda s, step: 0.0},
                     wall_per_step={"arm": 1.5})  # fmt: skip
    (r,) = claims.evaluate([Claim("w", "p", M, "arm", "base", kind="equal_wallclock")], curves)
    frac = math.log(1000 / 750) / math.log(1125 / 750)
    assert r["effect"] == pytest.approx(500 + frac * 250)


def test_steps_to_target_claim_resolved_and_censored():
    fast = lambda s, step: 8.0 * 250 / step  # noqa: E731 - reaches 4 at step 500
    slow = lambda s, step: 8.0 * 500 / step  # noqa: E731 - reaches 4 at step 1000
    claim = Claim("sp", "p", M, "fast", "slow", kind="steps_to_target", target=4.0)
    (r,) = claims.evaluate([claim], _curves({"fast": fast, "slow": slow}))
    assert r["resolved"] and r["effect"] == pytest.approx(2.0) and r["p_exact"] == 2 / 32
    assert r["lo"] == pytest.approx(2.0) and r["hi"] == pytest.approx(2.0)
    assert report.fmt_effect(r) == "2.00× [2.00, 2.00]"
    never = lambda s, step: 9.0  # noqa: E731
    (r,) = claims.evaluate([claim], _curves({"fast": fast, "slow": never}))
    assert not r["resolved"] and r["lo"] == pytest.approx(2.0) and r["hi"] == math.inf
    assert report.fmt_effect(r) == "> 2× (censored)" and r["verdict"] == "not resolved"
    assert all(b == (1000.0, "right") for b in r["baseline_steps"])
    (r,) = claims.evaluate([claim], _curves({"fast": never, "slow": never}))
    assert report.fmt_effect(r) == "not resolvable on this grid" and math.isnan(r["p"])


def test_trend_claim_is_a_paired_difference_in_differences():
    # log(fd(b=0.5)/fd(b=1)) = −0.2·log2(size/16) + seed noise that cancels within a seed
    def fd(size, b):
        return lambda s, step: (1 + s) * math.exp(-0.2 * math.log2(size / 16) * (b == 0.5))

    cells = {f"size={r},b={b},schedule=cosine": fd(r, b) for r in (16, 32, 64) for b in (1.0, 0.5)}
    claim = Claim("t", "p", M, "b=0.5", "b=1.0", kind="trend", across="size")
    (r,) = claims.evaluate([claim], _curves(cells))
    assert r["effect"] == pytest.approx(-0.2) and r["n"] == 5 and "16, 32, 64" in r["note"]
    ambiguous = {**cells, "size=16,b=0.5,schedule=linear": fd(16, 0.5)}
    with pytest.raises(ValueError, match="both match"):
        claims.evaluate([claim], _curves(ambiguous))


def test_fmt_ci_keeps_the_digits_that_differ():
    assert report.fmt_ci(46.65, 46.0, 47.3) == "46.65 [46.00, 47.30]"
    assert report.fmt_ci(51.65, 51.6, 51.7) == "51.650 [51.600, 51.700]"
    assert report.fmt_ci(0.9587, 0.955, 0.9624) == "0.9587 [0.9550, 0.9624]"
    assert report.fmt_ci(3.0, math.nan, math.nan) == "3.000"
    assert report.fmt_ci(math.nan, 0, 0) == "–"


def _fake_study(tmp_path):
    cells = tuple(common.Cell((("row", r),), "configs/digits.py") for r in ("cosine", "laplace"))
    grid = common.Grid(cells, (0, 1, 2, 3, 4), ("--config.total_steps=1000",), (M,))
    declared = (Claim("laplace<cosine", "Hang et al. 2024", M, "row=laplace", "row=cosine"),
                Claim("speed-up", "x", M, "row=laplace", "row=cosine", kind="steps_to_target",
                      target=4.35))  # fmt: skip
    study = common.Study("fake", "A question?", {"cpu": grid}, claims=declared)
    out = tmp_path / "out"
    for cell in cells:
        for s in grid.seeds:
            wd = common.run_dir(str(out), cell, s)
            os.makedirs(wd)
            with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
                for step in STEPS:
                    value = 3000.0 / step + (1.5 if cell.get("row") == "cosine" else 0) + 0.01 * s
                    f.write(json.dumps({"step": step, "train/wall_s": step * 0.1}) + "\n")
                    f.write(json.dumps({"step": step, M: value}) + "\n")
            with open(os.path.join(wd, "run.json"), "w") as f:
                json.dump({"status": "done"}, f)
    return study, out


def test_report_writes_rows_per_evaluation_verdicts_and_summary(tmp_path):
    study, out = _fake_study(tmp_path)
    results = report.write_outputs(study, "cpu", str(out))
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["study", "cell", "seed", "step", "wall_s", M]
    assert len(rows) == 2 * 5 * len(STEPS) and rows[0]["wall_s"] == "25.0"
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert verdicts["protocol"] == common.PROTOCOL_VERSION and len(verdicts["claims"]) == 2
    assert results[0]["effect"] == pytest.approx(-1.5)
    summary = (out / "summary.md").read_text()
    assert "| laplace<cosine |" in summary and "not resolved" in summary
    assert "2 SE" not in summary and "standard error" not in summary
    assert "sign-flip test's smallest two-sided p is 0.0625" in summary
    assert "## Steps to target" in summary and "| > 1000 |" in summary  # cosine never reaches 4.35
    assert (out / "digits_fd_vs_steps.png").exists()
    # the index reads the verdicts: a current file gives the row, another scale "not run yet"
    results_dir = tmp_path / "root" / "fake" / "results"
    results_dir.mkdir(parents=True)
    (results_dir / "verdicts.json").write_text((out / "verdicts.json").read_text())
    lines = index.rows([study], str(tmp_path / "root"))
    # the same −1.5 on every seed: no spread, the t-test's p is 0
    assert "| -1.500 [-1.500, -1.500] | 5 | cpu | 0.0e+00 | **reproduced** |" in lines[2]
    assert "| > 1.4" in lines[3] and "× (censored) | 5 | cpu |" in lines[3]
    verdicts["scale"] = "smoke"
    (results_dir / "verdicts.json").write_text(json.dumps(verdicts))
    assert all("not run yet" in line for line in index.rows([study], str(tmp_path / "root"))[2:])


def test_chen_best_scale_per_resolution_and_its_trend_claim():
    from experiments import chen_input_scaling as chen

    cells = chen._cells((16, 32), (1.0, 0.5, 0.25), ("cosine",))
    (claim,) = chen.trend_claims(cells, M)
    assert claim.arm == "b=0.25,schedule=cosine" and claim.baseline == "b=1.0,schedule=cosine"
    assert claim.across == "size" and claim.kind == "trend"
    best = {16: 1.0, 32: 0.5}
    rows = [{"cell": c.name, "seed": s, "step": 1000,
             M: 5.0 + abs(c.get("b") - best[c.get("size")]) + 0.01 * s} for c in cells
            for s in range(5)]  # fmt: skip
    found = chen.best_scales(rows, cells, M)
    assert {size: b for (_, size), (_, b, _, _) in found.items()} == best
    for bs, b, freq, n in found.values():
        assert n == 5 and freq[bs.index(b)] == 1.0
    text = chen.describe(rows, [], common.Grid(cells, tuple(range(5)), (), (M,)))
    assert (
        "| schedule=cosine | 32 | 5 | 0.5 | 0.25: 0.00, 0.5: 1.00, 1: 0.00 | [0.5, 0.5] |" in text
    )


def test_index_readme_is_current_and_lists_every_declared_claim():
    studies = index.studies()
    with open(os.path.join(index.HERE, "README.md")) as f:
        readme = f.read()
    assert readme == index.render(studies), "stale: run python -m experiments.index"
    for study in studies:
        assert study.claims, study.name
        for claim in study.claims:
            assert f"| {claim.name} | {claim.paper} |" in readme


def test_every_claim_names_cells_of_its_cpu_grid():
    for study in index.studies():
        grid = study.grids["cpu"]
        names = {c.name for c in grid.cells}
        assert len(grid.seeds) >= 5 and study.grids["cpu"].metrics
        for claim in study.claims:
            assert claim.metric in grid.metrics, (study.name, claim.name)
            if claim.kind == "trend":
                for side in (claim.arm, claim.baseline):
                    kv = set(side.split(","))
                    hits = [c for c in grid.cells if kv <= {f"{k}={v}" for k, v in c.params}]
                    assert len({c.get(claim.across) for c in hits}) >= 2, (study.name, side)
            else:
                assert {claim.arm, claim.baseline} <= names, (study.name, claim.name)


def test_cpu_jobs_validate_and_carry_the_protocol(tmp_path):
    from experiments import digits_grid, jobcheck

    configs = {}
    for study in index.studies():
        grid = study.grids["cpu"]
        jobs = [common.command(c, 0, common.run_dir(str(tmp_path), c, 0), grid) for c in grid.cells]
        assert jobcheck.check_grid(jobs) == {}  # valid as written, no placeholder
        configs.update({(study.name, c.name): jobcheck.job_config(j)
                        for c, j in zip(grid.cells, jobs, strict=True)})  # fmt: skip
    for (name, _), c in configs.items():
        steps = 2000 if name == "chen_input_scaling" else 1000
        assert (c.total_steps, c.eval_every_steps, c.checkpoint_every_steps) == (steps, 250, 250)
        assert (c.optim.name, c.optim.lr, c.optim.warmup_steps, c.optim.decay) == (
            "adamw", 3e-3, 100, "cosine")  # fmt: skip
        assert (c.data.batch_size, c.eval.quality_num_samples, c.keep_checkpoints) == (64, 500, 1)
        assert (c.sampling.method, c.sampling.steps, c.sampling.guidance_scale) == (
            digits_grid.SAMPLER_METHOD, digits_grid.SAMPLER_STEPS, 1.0)  # fmt: skip
    m = configs[("min_snr", "target=x0,weighting=min_snr5")].noise
    assert (m.target, m.weighting, m.weighting_params.gamma) == ("x0", "min_snr", 5.0)
    a = configs[("adaptive_timesteps", "sampler=adaptive_discrete")].noise
    assert (a.timesteps, a.timesteps_params.version) == ("adaptive", "discrete")
    h = configs[("hang_schedules", "row=laplace_by_weight")].noise
    assert (h.schedule, h.timesteps, h.target) == ("laplace", "importance", "v")
    ch = configs[("chen_input_scaling", "size=32,b=0.35,schedule=linear")]
    assert (ch.data.name, ch.data.image_size, ch.model.overrides.patch_size) == ("digits", 32, 8)
    n = ch.noise
    assert (n.schedule, n.input_scale, n.normalize_input, n.target) == ("linear", 0.35, True, "v")
