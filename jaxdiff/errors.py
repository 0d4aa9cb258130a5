"""User-facing errors: one line each, printed by ``jaxdiff.main`` without a traceback.

- :class:`ConfigError` — a bad config value, found before anything is compiled. Printed as
  ``config error: <field>: <problem>; allowed: <values>``; exit status 2.
- :class:`RunError` — the run cannot proceed safely (work dir locked by another trainer, a
  checkpoint from an incompatible config, every checkpoint corrupt, disk full, ...). Printed
  as ``error: <message>``; exit status 1. Nothing on disk is changed by raising it.

Both are ``ValueError`` / ``RuntimeError`` subclasses, so library callers that catch those
keep working. ``--verbosity=1`` (or higher) on the command line shows the traceback too.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config field with an invalid value: ``<field>: <problem>; allowed: <values>``."""

    def __init__(self, field: str, problem: str, allowed: object = None):
        self.field, self.problem, self.allowed = field, problem, allowed
        msg = f"{field}: {problem}"
        if allowed is not None:
            if isinstance(allowed, list | tuple | set | frozenset):
                allowed = ", ".join(str(a) for a in allowed)
            msg += f"; allowed: {allowed}"
        super().__init__(msg)


class RunError(RuntimeError):
    """The run stops before doing anything unsafe; the message says what to do."""
