"""One command-line style for every ``python -m jaxdiff.*`` tool: absl flags.

Each tool defines its flags on a fresh ``absl.flags.FlagValues`` (so it also runs in-process,
e.g. from a test or a notebook, as ``tool.cli(argv) -> exit status``) and a body that gets the
parsed flags and the positional arguments. :func:`run` prints ``--help``, turns a flag error or
a :class:`jaxdiff.errors.ConfigError` into one line on stderr with exit status 2 and a
:class:`jaxdiff.errors.RunError` into ``error: ...`` with status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import flags

from jaxdiff.errors import ConfigError, RunError

Define = Callable[[flags.FlagValues], None]
Body = Callable[[flags.FlagValues, list[str]], int | None]


def run(
    argv: Sequence[str], define: Define, body: Body, usage: str, positional: tuple[int, int]
) -> int:
    """Parses ``argv`` with the flags ``define`` adds, checks the number of positional
    arguments is in ``[lo, hi]`` and runs ``body``; returns the exit status."""
    fv = flags.FlagValues()
    define(fv)
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(f"usage: {usage}\n\n{fv.get_help()}")
        return 0
    try:
        args = fv(list(argv))[1:]
        lo, hi = positional
        if not lo <= len(args) <= hi:
            raise flags.Error(f"expected {lo}..{hi} positional arguments, got {args}")
        status = body(fv, args)
    except (flags.Error, ConfigError) as e:
        first = (str(e).strip().splitlines() or [""])[0]  # config_flags may append a traceback
        print(f"error: {first}\nusage: {usage}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return int(status or 0)
