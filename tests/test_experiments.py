"""The study drivers: each smoke grid trains and writes results.csv (the right columns and
cells), curves.csv, verdicts.json (every declared claim), summary.md and a plot; finished runs
are skipped; the full scale writes one command per grid point plus a SLURM array, and
aggregates work dirs made by tiny runs."""

import csv
import json
import os
import shlex

import pytest

from experiments import adaptive_timesteps, chen_input_scaling, common, hang_schedules, min_snr
from jaxdiff import main

STUDIES = [chen_input_scaling, hang_schedules, min_snr, adaptive_timesteps]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("module", STUDIES, ids=lambda m: m.STUDY.name)
def test_smoke_grid_writes_results_summary_and_plots(module, tmp_path):
    study = module.STUDY
    out = tmp_path / "out"
    argv = [study.name, "--scale=smoke", f"--out={out}"]
    assert common.main(study, argv) == 0
    grid = study.grids["smoke"]
    rows = _rows(out / "results.csv")
    assert list(rows[0])[:5] == ["study", "cell", "seed", "step", "wall_s"]
    assert set(grid.metrics) <= set(rows[0])
    assert {r["cell"] for r in rows} == {c.name for c in grid.cells} and len(grid.cells) == 2
    assert all(r["study"] == study.name and float(r[grid.metrics[0]]) >= 0 for r in rows)
    assert _rows(out / "curves.csv")
    summary = (out / "summary.md").read_text()
    assert "## Claims" in summary and grid.cells[0].name in summary and "2 SE" not in summary
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert [c["name"] for c in verdicts["claims"]] == [c.name for c in study.claims]
    assert any(p.endswith(".png") for p in os.listdir(out))
    # finished runs are skipped: a second invocation trains nothing (run.json unchanged)
    marks = {
        c.name: (out / "runs" / c.slug / "seed_0" / "run.json").read_text() for c in grid.cells
    }
    assert common.main(study, argv) == 0
    for c in grid.cells:
        assert (out / "runs" / c.slug / "seed_0" / "run.json").read_text() == marks[c.name]


@pytest.mark.slow
def test_full_scale_writes_jobs_and_aggregates_finished_work_dirs(tmp_path, capsys):
    study = min_snr.STUDY
    out = tmp_path / "full"
    assert common.main(study, [study.name, "--scale=full", f"--out={out}"]) == 0
    grid = study.grids["full"]
    jobs = (out / "jobs.txt").read_text().splitlines()
    assert len(jobs) == len(grid.cells) * len(grid.seeds)
    assert all(" -m jaxdiff.main " in j and "--config.seed=" in j for j in jobs)
    slurm = (out / "slurm_array.sh").read_text()
    assert f"#SBATCH --array=1-{len(jobs)}" in slurm and "srun" in slurm
    # Two grid points finished by tiny runs in the work dirs the job list names: the first
    # writes an evaluation row like a full run's (FID), the aggregate reads both.
    for i, job in enumerate(jobs[:2]):
        workdir = next(a.split("=", 1)[1] for a in shlex.split(job) if a.startswith("--workdir="))
        config = os.path.join(common.REPO, "configs", "digits.py")
        argv = ["jaxdiff.main", f"--config={config}:tiny", f"--workdir={workdir}",
                "--config.total_steps=2", "--config.sample_every_steps=0"]  # fmt: skip
        assert main.cli(argv) == 0
        with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": 2, "eval/fid": 100.0 + i}) + "\n")
    assert common.main(study, [study.name, "--scale=full", f"--out={out}", "--aggregate"]) == 0
    rows = _rows(out / "results.csv")
    assert [float(r["eval/fid"]) for r in rows] == [100.0, 101.0]
    assert [r["cell"] for r in rows] == [c.name for c in grid.cells[:2]]
    assert "target=eps,weighting=snr" in (out / "summary.md").read_text()
