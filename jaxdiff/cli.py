"""One command-line style for every ``python -m jaxdiff.*`` tool: absl flags.

Each tool defines its flags on a fresh ``absl.flags.FlagValues`` (so it also runs in-process,
e.g. from a test or a notebook, as ``tool.cli(argv) -> exit status``) and a body that gets the
parsed flags and the positional arguments. :func:`run` prints ``--help``, turns a flag error or
a :class:`jaxdiff.errors.ConfigError` into one line on stderr with exit status 2 and a
:class:`jaxdiff.errors.RunError` into ``error: ...`` with status 1.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence

import ml_collections
from absl import flags

from jaxdiff.errors import ConfigError, RunError

Define = Callable[[flags.FlagValues], None]
Body = Callable[..., int | None]  # (flag values, positional arguments[, config])


def run(
    argv: Sequence[str],
    define: Define,
    body: Body,
    usage: str,
    positional: tuple[int, int],
    *,
    config_repo: str | None = None,
) -> int:
    """Parses ``argv`` with the flags ``define`` adds, checks the number of positional
    arguments is in ``[lo, hi]`` and runs ``body``; returns the exit status.

    With ``config_repo`` the tool also takes ``--config=configs/X.py[:variant]`` (define it
    as a string flag) and ``--config.<field>=value`` overrides: :func:`load_config` and
    :func:`apply_override` build it, and ``body(fv, args, config)`` receives it."""
    fv = flags.FlagValues()
    define(fv)
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(f"usage: {usage}\n\n{fv.get_help()}")
        return 0
    try:
        overrides = []
        if config_repo is not None:
            argv, overrides = split_overrides(list(argv))
        args = fv(list(argv))[1:]
        lo, hi = positional
        if not lo <= len(args) <= hi:
            raise flags.Error(f"expected {lo}..{hi} positional arguments, got {args}")
        if config_repo is None:
            status = body(fv, args)
        else:
            if not fv.config:
                raise ConfigError("--config", "required", shipped_configs(config_repo))
            config = load_config(fv.config, config_repo)
            for path, raw in overrides:
                apply_override(config, path, raw)
            status = body(fv, args, config)
    except (flags.Error, ConfigError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"error: {first}\nusage: {usage}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return int(status or 0)


# ------------------------------------------------------------------ config files
def _missing_field(config, path: str) -> ConfigError:
    """The error for ``--config.<path>`` naming the first component that does not exist."""
    node, done = config, []
    for part in path.split("."):
        keys = sorted(node.keys()) if hasattr(node, "keys") else []
        if part not in keys:
            where = ".".join(done) or "config"
            return ConfigError(".".join([*done, part]), f"no such field in {where}", keys)
        node, done = node[part], [*done, part]
    return ConfigError(path, "cannot be overridden")


def shipped_configs(repo: str) -> list[str]:
    """``configs/*.py`` of the repository at ``repo`` (relative paths), for error lines."""
    return [
        os.path.relpath(p, repo) for p in sorted(glob.glob(os.path.join(repo, "configs", "*.py")))
    ]


def load_config(spec: str, repo: str):
    """The locked ConfigDict of ``configs/X.py[:variant]``: the file's ``get_config(variant)``
    (``get_config()`` without a variant). A missing or broken file is a ConfigError on
    ``--config`` listing the configs shipped in ``repo``; a bad variant raises the config's
    own ConfigError."""
    path, _, variant = spec.partition(":")
    known = shipped_configs(repo)
    if not path.endswith(".py") or not os.path.isfile(path):
        raise ConfigError("--config", f"no such config file {path!r}", known)
    module_spec = importlib.util.spec_from_file_location(f"_jaxdiff_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        get_config = module.get_config
        config = get_config(variant) if variant else get_config()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the user's file, in one line
        first = (str(e).strip().splitlines() or [""])[0]
        problem = f"cannot load {spec!r} ({type(e).__name__}: {first})"
        raise ConfigError("--config", problem, known) from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError("--config", f"{path}: get_config() returned {type(config).__name__}")
    config.lock()
    return config


_TRUE, _FALSE = ("true", "1", "yes", "t", "y"), ("false", "0", "no", "f", "n")
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          tuple: "a tuple, e.g. (1, 2)", list: "a list, e.g. [1, 2]"}  # fmt: skip


def _parse_value(path: str, raw: str, kind: type):
    """``raw`` read as a value of the field's type ``kind`` (ConfigDict.get_type)."""
    try:
        if kind is bool:
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError
            return raw.lower() in _TRUE
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            return raw
        if kind in (tuple, list):
            value = ast.literal_eval(raw)
            value = value if isinstance(value, tuple | list) else (value,)
            return kind(value)
    except (ValueError, SyntaxError):
        raise ConfigError(path, f"cannot read {raw!r}", _KINDS[kind]) from None
    try:  # an untyped field (None): a Python literal, else the string
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


# Free-form sections: an override may add a key there (the model's constructor checks it).
_OPEN_SECTIONS = ("model.overrides",)


def apply_override(config, path: str, raw: str) -> None:
    """``--config.<path>=<raw>``: the field must exist (or sit in an open section) and the
    value must read as its type; raises ConfigError naming the field otherwise."""
    *parents, last = path.split(".")
    node = config
    for part in parents:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise _missing_field(config, path)
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict):
        raise _missing_field(config, path)
    if last not in node:
        if ".".join(parents) not in _OPEN_SECTIONS:
            raise _missing_field(config, path)
        with node.unlocked():
            node[last] = _parse_value(path, raw, type(None))
        return
    kind = node.get_type(last)
    if kind is ml_collections.ConfigDict:
        raise ConfigError(path, "is a section", sorted(node[last].keys()))
    value = _parse_value(path, raw, kind)
    try:
        node[last] = value
    except (TypeError, ValueError):
        raise ConfigError(path, f"cannot set {raw!r}", _KINDS.get(kind, kind.__name__)) from None


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the absl arguments, the ``--config.<path>=value`` overrides in order)."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            path, eq, raw = arg[len("--config.") :].partition("=")
            if not eq:  # --config.a.b value
                if i + 1 >= len(argv):
                    raise ConfigError(path, "no value given", "--config.<field>=value")
                raw, i = argv[i + 1], i + 1
            overrides.append((path, raw))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides
