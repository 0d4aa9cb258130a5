"""The fail-on-skip plugin CI runs with: JAXDIFF_FAIL_ON_SKIP=1 turns any skip (in a test or a
module skipped at import) into exit status 1; without it skips pass as usual."""

import os
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))

PASSING = "def test_passes():\n    pass\n"
SKIPPING = "import pytest\n\n\ndef test_skips():\n    pytest.skip('no extra here')\n"
MODULE_SKIP = "import pytest\n\npytest.importorskip('jaxdiff_no_such_module')\n"


def _pytest(directory, env_value):
    env = {k: v for k, v in os.environ.items() if k != "JAXDIFF_FAIL_ON_SKIP"}
    env["PYTHONPATH"] = TESTS
    if env_value is not None:
        env["JAXDIFF_FAIL_ON_SKIP"] = env_value
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "fail_on_skip", "-p", "no:cacheprovider"]
    out = subprocess.run([*cmd, str(directory)], cwd=directory, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    return out.returncode, out.stdout + out.stderr


def _suite(path, **files):
    path.mkdir()
    for name, text in files.items():
        (path / f"{name}.py").write_text(text)
    return path


def test_any_skip_fails_the_run_only_when_asked(tmp_path):
    skips = _suite(tmp_path / "skips", test_a=PASSING, test_b=SKIPPING)
    module = _suite(tmp_path / "module", test_a=PASSING, test_c=MODULE_SKIP)
    clean = _suite(tmp_path / "clean", test_a=PASSING)
    for suite in (skips, module):
        rc, text = _pytest(suite, "1")
        assert rc == 1 and "JAXDIFF_FAIL_ON_SKIP=1: 1 skipped" in text, text
        rc, text = _pytest(suite, None)
        assert rc == 0 and "JAXDIFF_FAIL_ON_SKIP" not in text, text
    rc, text = _pytest(clean, "1")
    assert rc == 0 and "1 passed" in text, text
