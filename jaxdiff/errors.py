"""User-facing errors: one line each, printed by ``jaxdiff.main`` without a traceback.

- :class:`ConfigError` — a bad config value, found before anything is compiled. Printed as
  ``config error: <field>: <problem>; allowed: <values>``; exit status 2.
- :class:`RunError` — the run cannot proceed safely (work dir locked by another trainer, a
  checkpoint from an incompatible config, every checkpoint corrupt, disk full, ...). Printed
  as ``error: <message>``; exit status 1. Nothing on disk is changed by raising it.

Both are ``ValueError`` / ``RuntimeError`` subclasses, so library callers that catch those
keep working. ``--verbosity=1`` (or higher) on the command line shows the traceback too.
:func:`read_section` reads a config section (``noise``, ``diagnostics``), refusing fields it does
not know and, where the section has no defaults of its own, fields that are missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def read_section(
    section: str, value: Any, fields: Sequence[str], *, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A config section ``value`` (ConfigDict or mapping) as a plain dict of exactly ``fields``.

    Without ``defaults`` every field must be present: the base config
    (``jaxdiff.training.config.base_config``) is the one place that holds defaults, and a
    missing field is an error, not a silent fallback. ``defaults`` (a section's own defaults,
    the very values the base config holds, e.g. ``diagnostics``) fills the fields a partial
    override leaves out. Raises :class:`ConfigError` naming the section for anything but a
    mapping, an unknown field (listing the known ones) or a missing one.
    """
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(section, f"got {type(value).__name__}", "a ConfigDict or dict")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(section, f"unknown field(s) {unknown}", sorted(fields))
    out = {**(defaults or {}), **value}
    missing = [f for f in fields if f not in out]
    if missing:
        raise ConfigError(
            f"{section}.{missing[0]}",
            "missing" + (f" (and {missing[1:]})" if missing[1:] else ""),
            "start from jaxdiff.training.config.base_config(), which holds every field",
        )
    return out
