"""Every benchmark script runs: one tiny step of each (its ``--smoke`` flag), as its own
process, leaving benchmarks/RESULTS.md untouched, and the parity the scripts report holds."""

import glob
import hashlib
import os
import re
import subprocess
import sys

import pytest
from tiny_config import REPO

BENCHMARKS = os.path.join(REPO, "benchmarks")
# script: its arguments for one tiny run
SMOKE = {
    "adaptive.py": ["--smoke"],
    "diagnostics.py": ["--smoke"],
    "ema.py": ["--smoke"],
    "fid.py": ["--smoke"],
    "loop.py": ["--smoke"],
    "models.py": ["--smoke"],
    "samplers.py": ["--smoke", "--methods=ddim,dpmpp_2m"],  # (each method compiles)
    "scaling.py": ["--smoke"],
    "train_step.py": ["--smoke"],
    "vae.py": ["--smoke"],
}  # fmt: skip


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.exists(path) else None


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {os.path.basename(p) for p in glob.glob(os.path.join(BENCHMARKS, "*.py"))}
    assert scripts - {"common.py", "__init__.py"} == set(SMOKE)


def _run(script):
    results = os.path.join(BENCHMARKS, "RESULTS.md")
    before = _digest(results)
    # one CPU device (not the suite's 8 simulated ones), as a user runs them
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, script), *SMOKE[script]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert _digest(results) == before, f"{script} --smoke wrote benchmarks/RESULTS.md"
    return proc.stdout


def _table(out):
    """The rows of the last markdown table printed, as lists of cell strings."""
    rows = [line for line in out.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows if "---" not in r]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_one_tiny_step(script):
    out = _run(script)
    table = _table(out)
    assert len(table) >= 2, out[-2000:]  # a header and a row at least
    numbers = [float(c) for row in table[1:] for c in row if re.fullmatch(r"-?\d+(\.\d+)?", c)]
    assert numbers and all(x == x for x in numbers)  # (no NaN)
    if script == "fid.py":  # the JAX port's features equal pytorch-fid's (same weights)
        diff = float(re.search(r"max \|Δfeature\| / max \|feature\| = (\S+)\.", out).group(1))
        assert diff < 1e-3, diff
    if script == "vae.py":  # the JAX port equals diffusers' AutoencoderKL (same weights)
        diffs = [float(row[-1]) for row in table[1:] if row[-1] != "—"]
        assert len(diffs) == 2 and max(diffs) < 1e-3, diffs
