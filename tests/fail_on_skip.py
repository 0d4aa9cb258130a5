"""A pytest plugin (loaded by tests/conftest.py): with ``JAXDIFF_FAIL_ON_SKIP=1`` a run that
skipped any test fails with exit status 1.

CI installs every extra, so a skip there means a test silently did not run (e.g. a module
guarded by ``pytest.importorskip("torch")``). Skips are counted from the test reports (setup,
call) and from the collection reports (a module skipped at import); expected failures
(``xfail``) are not skips.
"""

import os

ENV = "JAXDIFF_FAIL_ON_SKIP"
_skipped: list[str] = []


def _enabled() -> bool:
    return os.environ.get(ENV, "") == "1"


def _record(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_runtest_logreport(report):
    _record(report)


def pytest_collectreport(report):
    _record(report)


def pytest_sessionfinish(session, exitstatus):
    if _enabled() and _skipped and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _enabled() and _skipped:
        names = ", ".join(_skipped[:5]) + (", ..." if len(_skipped) > 5 else "")
        terminalreporter.write_line(
            f"{ENV}=1: {len(_skipped)} skipped ({names}); failing the run (exit status 1)",
            red=True,
            bold=True,
        )
