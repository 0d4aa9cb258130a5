"""Shared pieces of the benchmark scripts: the command line, machine description and
RESULTS.md appending."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import types
from collections.abc import Callable, Sequence

from absl import flags

from jaxdiff import cli

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def run_main(
    argv: Sequence[str] | None,
    define: Callable[[flags.FlagValues], None],
    body: Callable[[types.SimpleNamespace], int | None],
    usage: str,
) -> int:
    """``main(argv)`` of a benchmark script in jaxdiff's one command-line style
    (:func:`jaxdiff.cli.run`: absl flags on a fresh ``FlagValues``, ``--help``, ``error: ...``
    with status 2 for a bad flag); returns the exit status.

    ``argv`` holds the arguments without the program name (``None``: ``sys.argv[1:]``), so
    ``main(["--smoke"])`` runs in-process. ``body`` gets the flag values as a namespace whose
    attributes are the flag names with ``-`` read as ``_`` (``--no-append``: ``args.no_append``);
    it may change them (``--smoke`` sets its tiny sizes that way).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    program = os.path.basename(sys.argv[0]) or "benchmark"

    def run_body(fv: flags.FlagValues, positional: list[str]) -> int | None:
        del positional
        values = {name.replace("-", "_"): value for name, value in fv.flag_values_dict().items()}
        return body(types.SimpleNamespace(**values))

    return cli.run([program, *args], define, run_body, usage, (0, 0))


def machine() -> str:
    """One line describing the host: CPU model, cores, memory, accelerator, versions."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    dev = jax.devices()[0]
    accel = f"{dev.platform}: {getattr(dev, 'device_kind', '')} × {jax.device_count()}"
    gpu = ""
    if dev.platform == "gpu":
        try:
            gpu = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            pass
    load = ", ".join(f"{a:.1f}" for a in os.getloadavg())
    torch = ""
    try:
        import torch as _torch

        torch = f"; torch {_torch.__version__} ({_torch.get_num_threads()} threads)"
    except ImportError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}, load average {load}; JAX {jax.__version__} on "
        f"{accel}"
        + (f" ({gpu})" if gpu else "")
        + torch
        + f"; Python {platform.python_version()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )


def append_results(title: str, table: str, notes: str = "") -> None:
    """Appends a dated section to benchmarks/RESULTS.md."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with open(RESULTS, "a") as f:
        f.write(f"\n## {title} ({stamp})\n\nMachine: {machine()}\n\n{table}\n")
        if notes:
            f.write(f"\n{notes}\n")


def markdown_table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
