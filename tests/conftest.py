"""Test configuration: CPU only, 8 simulated devices for the sharding tests."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

# One persistent XLA compilation cache for the whole run (subprocesses and pytest-xdist
# workers included: they share the run's id), so the many tiny identical train steps compile
# once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id:
        cache = os.path.join(tempfile.gettempdir(), f"jaxdiff-xla-cache-{run_id}")
        os.makedirs(cache, exist_ok=True)
    else:
        cache = tempfile.mkdtemp(prefix="jaxdiff-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Triton (pulled in by torch._dynamo, which diffusers imports) segfaults when its native
# library is loaded after TensorFlow's (tfds.testing imports TensorFlow). Load it first
# when the torch extra is installed; without it the tests that need torch skip themselves
# (pytest.importorskip), and CI (JAXDIFF_FAIL_ON_SKIP=1) fails on any skip.
try:
    import torch  # noqa: F401
    import triton  # noqa: F401
except ModuleNotFoundError:  # the torch extra (or Triton, on a CPU-only torch) is absent
    pass

# JAXDIFF_FAIL_ON_SKIP=1: a run with a skipped test exits with status 1 (tests/fail_on_skip.py).
import shutil  # noqa: E402

import pytest  # noqa: E402
from fail_on_skip import (  # noqa: E402, F401
    pytest_collectreport,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One work dir of ``configs/digits.py:tiny`` trained 4 steps on one device, shared by the
    whole run: checkpoints 2 and 4, a metrics row per step, ``config.json``, no sample grid.
    Read it only; a test that writes into a work dir takes ``tiny_run_copy``."""
    import jax
    from tiny_config import tiny_run_config

    from jaxdiff.training import loop

    workdir = str(tmp_path_factory.mktemp("tiny_run") / "run")
    loop.train(tiny_run_config(), workdir, devices=jax.devices()[:1])
    return workdir


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    """A private copy of ``tiny_run`` that the test may change."""
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_run, workdir)
    return workdir
