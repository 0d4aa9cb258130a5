"""User-facing errors: one line each, printed by ``jaxdiff.main`` without a traceback.

- :class:`ConfigError` — a bad config value, found before anything is compiled. Printed as
  ``config error: <field>: <problem>; allowed: <values>``; exit status 2.
- :class:`RunError` — the run cannot proceed safely (work dir locked by another trainer, a
  checkpoint from an incompatible config, every checkpoint corrupt, disk full, ...). Printed
  as ``error: <message>``; exit status 1. Nothing on disk is changed by raising it.

Both are ``ValueError`` / ``RuntimeError`` subclasses, so library callers that catch those
keep working. ``--verbosity=1`` (or higher) on the command line shows the traceback too.
:func:`over_defaults` reads a config section (``noise``, ``diagnostics``) onto its defaults,
refusing fields it does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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


def over_defaults(section: str, value: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``{**defaults, **value}`` for a config section ``value`` (ConfigDict or mapping).

    Raises ValueError ``<section> must be a ConfigDict or dict`` for anything else and
    ``<section>: unknown field(s) [...]; known: [...]`` for a field not in ``defaults``.
    """
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ValueError(f"{section} must be a ConfigDict or dict, got {type(value).__name__}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise ValueError(f"{section}: unknown field(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **value}
